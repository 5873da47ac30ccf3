"""The ``tfshap`` console script: it parses the command line before TensorFlow is imported.

``import tfshap`` imports TensorFlow (seconds, and its start-up lines on stderr), and Python
runs a package's ``__init__`` before any of its modules, so ``tfshap.cli`` cannot be the
entry point of a command that answers ``--help``, ``--version`` and usage errors at once.
This module is installed as a top-level package of its own, ``_tfshap_cli`` (its file is in
``tfshap/_console``; see ``package_dir`` in setup.cfg): it makes the ``tfshap`` package object without
running its ``__init__``, imports ``tfshap.cli`` (the standard library only, at import),
parses the arguments, and only then runs the package's ``__init__`` (with TensorFlow's
start-up lines filtered, :mod:`tfshap._quiet`) and the command. ``import tfshap`` itself is
unchanged.
"""

from __future__ import annotations

import importlib.util
import sys

PACKAGE = "tfshap"


def main(argv=None) -> int:
    """Parse ``argv`` with the package uninitialised, then initialise it quietly and run the command."""
    package, spec = _uninitialised_package()
    from tfshap import _quiet, cli

    args = cli.parse_args(argv)  # --help, --version and usage errors exit here
    _quiet.quiet_defaults()
    if spec is not None:
        _initialise(package, spec, _quiet)
    return cli.run(args)


def _uninitialised_package():
    """``(module, spec)``: the package in ``sys.modules``, its ``__init__`` not run; ``(module, None)`` if imported."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE], None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find the {PACKAGE} package")
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    return package, spec


def _initialise(package, spec, quiet) -> None:
    """Run the package's ``__init__`` in the module made above, as ``import`` would have."""
    try:
        with quiet.tensorflow_logs_filtered():
            spec.loader.exec_module(package)
    except BaseException:
        sys.modules.pop(PACKAGE, None)
        raise


if __name__ == "__main__":
    sys.exit(main())
