"""TensorFlow's start-up lines, filtered by the level the user asked for (``TF_CPP_MIN_LOG_LEVEL``).

TensorFlow applies ``TF_CPP_MIN_LOG_LEVEL`` only once it has loaded. The static initializers
of its shared libraries log before that (``libtensorflow_framework.so.2`` at ``import
tensorflow``, and its copy inside ``_pywrap_profiler_plugin.so`` later in the same import),
and absl writes every message logged before ``absl::InitializeLog()`` to stderr:
"oneDNN custom operations are on", "Could not find cuda drivers", and absl's own
"WARNING: All log messages before absl::InitializeLog() ...". No environment variable
reaches them, so :func:`tensorflow_logs_filtered` captures file descriptor 2 while
TensorFlow loads and writes back every line except the absl lines below that level.

Standard library only: the command line uses it before anything heavy is imported, and
the Beam workers (:mod:`tfshap.beam`) use it in processes where tfshap may be absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
#: The CLI's default: INFO, WARNING and ERROR lines hidden; FATAL shown.
QUIET_LEVEL = "3"
#: An absl log line: severity letter, MMDD, time (absl 2025 prints "00:00:<epoch seconds>"), thread, file:line].
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]]+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
#: Python loggers that TensorFlow and Keras write to.
PYTHON_LOGGERS = ("tensorflow", "absl")


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it: 0 (everything) when unset or not a number."""
    try:
        return int(os.environ.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


def filter_lines(text: str, level: int) -> str:
    """``text`` without the absl lines of severity below ``level`` (0 I, 1 W, 2 E, 3 F) and their continuations.

    absl's preamble line goes at any level above 0; lines that are not absl's are kept.
    """
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        found = _ABSL_LINE.match(line)
        if found:
            dropping = _SEVERITY[found.group(1)] < level
        elif line.startswith(_ABSL_PREAMBLE):
            dropping = level > 0
        elif dropping and (line.startswith(("Traceback", "  File ")) or re.match(r"^\S+:\d+: \w+: ", line)):
            dropping = False  # Python's own output (a warning, a traceback) is never a continuation
        if not dropping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def tensorflow_logs_filtered():
    """Capture file descriptor 2 inside the block, then write it back through :func:`filter_lines`.

    Does nothing (and captures nothing) when ``TF_CPP_MIN_LOG_LEVEL`` is 0 or unset, or when
    file descriptor 2 cannot be duplicated.
    """
    level = min_log_level()
    try:
        saved = os.dup(2) if level > 0 else None
    except OSError:
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        _flush()
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            text = filter_lines(scratch.read().decode("utf-8", "replace"), level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def import_tensorflow():
    """``import tensorflow`` with its start-up lines filtered (see the module docstring); returns the module."""
    if "tensorflow" not in sys.modules:
        with tensorflow_logs_filtered():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


def quiet_defaults() -> None:
    """The command line's defaults, before TensorFlow is imported: level 3 and the Python loggers at ERROR.

    Nothing changes when the user set ``TF_CPP_MIN_LOG_LEVEL`` (their level then applies to
    both, through :func:`tensorflow_logs_filtered`), nor once TensorFlow is imported; a Python
    logger that already has a level keeps it.
    """
    if "tensorflow" in sys.modules or LEVEL_VARIABLE in os.environ:
        return
    os.environ[LEVEL_VARIABLE] = QUIET_LEVEL
    for name in PYTHON_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
