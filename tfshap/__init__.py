"""tfshap: exact DeepSHAP attributions for TensorFlow 2 and Keras models, as a compiler pass."""

from __future__ import annotations

from . import rewrite_rules as _rules  # noqa: F401  (registers every rule once, at import)
from .attributions import Attributions
from .errors import AdditivityError, CompileError, MaskMismatchError, UnsupportedOpError
from .explainers import CompiledExplainer, DeepExplainer, compile
from .registry import register_rule, rules

__version__ = "0.1.0"

__all__ = [
    "Attributions",
    "AdditivityError",
    "CompileError",
    "CompiledExplainer",
    "DeepExplainer",
    "MaskMismatchError",
    "UnsupportedOpError",
    "compile",
    "register_rule",
    "rules",
]
