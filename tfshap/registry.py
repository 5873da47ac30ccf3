"""The rule table: for each TensorFlow op type, how DeepSHAP carries multipliers through it.

A rule's ``plan(op, varying)`` is asked once per op at compile time, with one flag per
input saying whether that input varies with the explained inputs. It answers with

* ``KEEP``: the op is linear in its varying inputs; TensorFlow's own gradient is the
  multiplier;
* a gradient name registered with ``tf.RegisterGradient``: the rewrite installs it on the
  op; the gradient function sees the paired batch (first half foreground, second half
  reference) and returns multipliers;
* a :class:`Refusal`: no exact treatment for this use of the op; compiling fails.

Op types with no rule at all are refused too. Nothing falls back to the plain gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Union

import tensorflow as tf

KEEP = None


@dataclass(frozen=True)
class Refusal:
    """Why a registered rule cannot treat this particular op exactly."""

    reason: str


Plan = Union[str, None, Refusal]
PlanFn = Callable[[tf.Operation, "tuple[bool, ...]"], Plan]


@dataclass(frozen=True)
class Rule:
    op_type: str
    family: str
    doc: str
    plan: PlanFn


#: Ops whose outputs do not depend on the values of their inputs (only on shapes), so
#: they stop the propagation of "varies with the inputs".
STRUCTURAL_OPS = frozenset(
    {"Shape", "ShapeN", "Size", "Rank", "ZerosLike", "OnesLike", "BroadcastGradientArgs"}
)

_rules: dict[str, Rule] = {}
_registered_gradients: set[str] = set()


def gradient_name(family: str, op_type: str) -> str:
    """The name under which tfshap registers its gradient function for ``op_type``."""
    return f"tfshap/{family}/{op_type}"


def register_gradient(name: str, fn: Callable) -> str:
    """Register ``fn`` with ``tf.RegisterGradient`` once, under ``name``."""
    if name not in _registered_gradients:
        tf.RegisterGradient(name)(fn)
        _registered_gradients.add(name)
    return name


def register_rule(
    op_type: str,
    family: str,
    gradient: Callable | None = None,
    *,
    plan: PlanFn | None = None,
    doc: str = "",
    replace: bool = False,
) -> Rule:
    """Register how ``op_type`` is treated.

    ``gradient(op, *grads)`` computes multipliers on the paired batch (use
    :mod:`tfshap.pair` to split it). It is registered with ``tf.RegisterGradient`` under
    ``tfshap/<family>/<op_type>``. Without ``plan``, the op always gets ``gradient``, or
    keeps TensorFlow's gradient when ``gradient`` is None (a linear op).
    """
    if not isinstance(op_type, str) or not op_type:
        raise ValueError(f"op_type must be a TensorFlow op type name such as 'Relu', got {op_type!r}")
    if op_type in _rules and not replace:
        raise ValueError(
            f"a rule for {op_type!r} is already registered (family {_rules[op_type].family!r}); "
            "pass replace=True to replace it"
        )
    name = KEEP if gradient is None else register_gradient(gradient_name(family, op_type), gradient)
    if plan is None:
        plan = lambda op, varying: name  # noqa: E731
    rule = Rule(op_type=op_type, family=family, doc=doc or (gradient.__doc__ or "").strip(), plan=plan)
    _rules[op_type] = rule
    return rule


def lookup(op_type: str) -> Rule | None:
    return _rules.get(op_type)


def rules() -> list[Rule]:
    """Every registered rule, sorted by family then op type."""
    return sorted(_rules.values(), key=lambda r: (r.family, r.op_type))


def op_types(family: str | None = None) -> set[str]:
    return {r.op_type for r in _rules.values() if family is None or r.family == family}


def register_many(op_types_: Iterable[str], family: str, **kwargs) -> None:
    for op_type in op_types_:
        register_rule(op_type, family, **kwargs)


HOW_TO_REGISTER = (
    "To add an exact rule: tfshap.register_rule('<OpType>', family='<name>', "
    "gradient=fn) where fn(op, grad) returns multipliers for the paired batch "
    "(see tfshap.pair), or open an issue naming the op and the layer."
)
