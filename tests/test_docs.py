"""Every public callable documents every parameter, in its docstring and in docs/reference.md.

The public surface is what the packages export (``__all__``) and the public methods of the
classes they export. A docstring documents a parameter in a numpy-style ``Parameters``
section (``name : type`` or ``name`` alone on a line, or ``name, other`` for parameters
described together); ``**options`` and ``*args`` are documented by their names too.
docs/reference.md must name every public callable and each of its parameters in backticks.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
MODULES = [
    "tfshap", "tfshap.deep", "tfshap.gradients", "tfshap.keras", "tfshap.plots", "tfshap.sequence", "tfshap.testing",
    "tfshap.beam",
]


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional extra (apache-beam) that is not installed
        pytest.skip(f"{name} needs an optional extra: {exc}")


def _public_callables():
    found = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or inspect.isclass(obj) and issubclass(obj, BaseException):
                continue  # exceptions document their fields as Attributes; users do not construct them
            qualified = f"{module_name}.{name}"
            found[qualified] = obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr != "__call__" or not callable(member):
                        continue
                    found[f"{qualified}.{attr}"] = getattr(obj, attr)
    return found


PUBLIC = _public_callables()


def _parameters(obj) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values() if p.name not in ("self", "cls")]


def _documented(doc: str) -> set[str]:
    """Names in a numpy-style Parameters section."""
    match = re.search(r"Parameters\n\s*-{3,}\n(.*?)(?:\n\s*\n\s*[A-Z][a-z]+\n\s*-{3,}|\Z)", doc, re.S)
    if not match:
        return set()
    names = set()
    for line in match.group(1).splitlines():
        head = re.match(r"^\s{0,8}(\*{0,2}[A-Za-z_][\w, *]*?)\s*(?::|$)", line)
        if head and not line.startswith(" " * 9):
            names.update(part.strip().lstrip("*") for part in head.group(1).split(","))
    return names


def test_the_public_surface_is_found():
    assert {"tfshap.compile", "tfshap.DeepExplainer", "tfshap.GradientExplainer", "tfshap.CompiledExplainer.explain_to",
            "tfshap.keras.AttributionCallback", "tfshap.plots.image"} <= set(PUBLIC)


@pytest.mark.parametrize("qualified", sorted(PUBLIC))
def test_every_parameter_is_in_the_docstring(qualified):
    obj = PUBLIC[qualified]
    parameters = _parameters(obj)
    if not parameters:
        return
    documented = obj.__init__ if inspect.isclass(obj) and "Parameters" not in (obj.__doc__ or "") else obj
    doc = inspect.getdoc(documented) or ""
    if inspect.isclass(obj) and "Parameters" in (obj.__doc__ or ""):
        doc = inspect.getdoc(obj)
    missing = [p for p in parameters if p not in _documented(doc)]
    assert not missing, f"{qualified}: parameters without a Parameters entry in its docstring: {missing}"


def _code_spans() -> list[str]:
    """Every `backticked` span of docs/reference.md (headings' included)."""
    return re.findall(r"`([^`]+)`", REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("qualified", sorted(PUBLIC))
def test_every_callable_and_parameter_is_in_the_reference(qualified):
    spans = _code_spans()
    parts = qualified.split(".")
    names = {".".join(parts[i:]) for i in range(1, len(parts) - 1)} | {parts[-1]}
    named = [span for span in spans
             if any(re.search(rf"(^|[\s.(]){re.escape(name)}(\(|$|\s)", span) for name in names)]
    assert named, f"docs/reference.md does not name {qualified} in backticks"
    for parameter in _parameters(PUBLIC[qualified]):
        assert any(re.search(rf"(?<![\w]){re.escape(parameter)}(?![\w])", span) for span in spans), \
            f"docs/reference.md does not name parameter {parameter!r} of {qualified}"
