"""tfshap: exact DeepSHAP attributions for TensorFlow 2 and Keras models, as a compiler pass."""

from __future__ import annotations

from . import plots, precision, sequence
from . import rewrite_rules as _rules  # noqa: F401  (registers every rule once, at import)
from ._version import __version__ as __version__
from .attributions import Attributions
from .base import CompiledExplainer
from .errors import AdditivityError, CompileError, MaskMismatchError, UnsupportedOpError
from .explainers import DeepExplainer, compile
from .gradients import GradientExplainer
from .registry import register_rule, rules


def __getattr__(name: str):
    """``tfshap.keras`` on first use: it imports both Kerases, which ``import tfshap`` does not need."""
    if name == "keras":
        import importlib

        return importlib.import_module(".keras", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attributions",
    "AdditivityError",
    "CompileError",
    "CompiledExplainer",
    "DeepExplainer",
    "GradientExplainer",
    "MaskMismatchError",
    "UnsupportedOpError",
    "compile",
    "plots",
    "precision",
    "register_rule",
    "rules",
    "sequence",
]
