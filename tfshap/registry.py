"""The rule table: for each TensorFlow op type, how DeepSHAP carries multipliers through it.

Rules register one way: a decorator beside the rule, naming its op types and its family
(the module it lives in), with one helper per shape of rule:

* :func:`linear` (no function: TensorFlow's own gradient is the multiplier),
* :func:`unary` (the multiplier of the one varying input),
* :func:`two_operand` (the multipliers of both operands of an elementwise op),
* :func:`rule` (any gradient function, for everything else).

A rule's *plan* is asked once per op at compile time, with one flag per input saying
whether that input varies with the explained inputs. It answers with exactly one of
:data:`KEEP` (linear in the varying inputs: keep TensorFlow's gradient), :data:`APPLY`
(install this rule's gradient) or a :class:`Refusal`. Anything else, ``None`` included,
is a bug in the rule and raises at once: nothing falls back to the plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from .pair import cached_multipliers, on_foreground, rows_along, unbroadcast, varying_inputs


@dataclass(frozen=True)
class Keep:
    """The op is linear in its varying inputs: TensorFlow's own gradient is the multiplier."""


@dataclass(frozen=True)
class Apply:
    """Install the rule's gradient function on the op."""


@dataclass(frozen=True)
class Refusal:
    """Why a registered rule cannot treat this particular op exactly."""

    reason: str


@dataclass(frozen=True)
class Override:
    """A decided plan: install the gradient registered under ``gradient``."""

    gradient: str


KEEP = Keep()
APPLY = Apply()
Plan = Keep | Apply | Refusal
Decision = Keep | Override | Refusal
PlanFn = Callable[[tf.Operation, "tuple[bool, ...]"], Plan]

#: The rule set every explainer uses unless told otherwise (``tfshap.compile(..., rules=)``).
DEFAULT_RULES = "default"

LINEAR_DOC = "m = ∂out/∂in (linear)"

#: How a rule's gradient reads the rows of the paired batch (see :mod:`tfshap.batch_axis`): along
#: axis 0 only (refused where the rewrite tracked a varying input's rows elsewhere), along the
#: axis its varying inputs share counted from the end (elementwise rules, wherever that axis is),
#: or as its plan found them (a plan that checks the layout itself, or a rule that reads no rows).
LEADING_ROWS, ALIGNED_ROWS, ANY_ROWS = "leading", "aligned", "any"


def always(op: tf.Operation, varying: tuple[bool, ...]) -> Plan:
    """The plan of a rule that treats every use of its op types."""
    return APPLY


@dataclass(frozen=True)
class Rule:
    """How one op type is treated, in one rule set.

    ``xla_inexact`` says why XLA would make the rule's gradient wrong (``jit_compile=True``
    is refused wherever the rule is applied), or is None. ``rows`` says how its gradient reads
    the rows (:data:`LEADING_ROWS`, :data:`ALIGNED_ROWS` or :data:`ANY_ROWS`).
    """

    op_type: str
    family: str
    doc: str
    plan: PlanFn
    gradient: str | None = None
    rules: str = DEFAULT_RULES
    xla_inexact: str | None = None
    rows: str = LEADING_ROWS

    def decide(self, op: tf.Operation, varying: tuple[bool, ...]) -> Decision:
        """The plan for ``op``, with :data:`APPLY` resolved to the registered gradient."""
        plan = self.plan(op, varying)
        if plan is APPLY or isinstance(plan, Apply):
            if self.gradient is None:
                raise TypeError(f"the rule for {self.op_type!r} ({self.family}) applies no gradient function")
            return Override(self.gradient)
        if isinstance(plan, (Keep, Refusal)):
            return plan
        raise TypeError(
            f"the plan of the rule for {self.op_type!r} ({self.family}) returned {plan!r} for op {op.name!r}; "
            "expected KEEP, APPLY or a Refusal"
        )


#: Ops whose outputs depend only on the shapes of their inputs, never on their values: they
#: carry no gradient by design, and stop the propagation of "varies with the inputs".
NOT_DIFFERENTIABLE = frozenset({"Shape", "ShapeN", "Size", "Rank", "ZerosLike", "OnesLike", "BroadcastGradientArgs"})

_rules: dict[tuple[str, str], Rule] = {}
_registered_gradients: set[str] = set()


def gradient_name(family: str, op_type: str, rules: str = DEFAULT_RULES) -> str:
    """The name under which tfshap registers its gradient function for ``op_type``."""
    suffix = "" if rules == DEFAULT_RULES else f"/{rules}"
    return f"tfshap/{family}/{op_type}{suffix}"


def _register_gradient(name: str, fn: Callable) -> str:
    """Register ``fn`` with ``tf.RegisterGradient`` once, under ``name``, at import."""
    if name not in _registered_gradients:
        tf.RegisterGradient(name)(fn)
        _registered_gradients.add(name)
    return name


def _add(rule: Rule, replace: bool) -> Rule:
    key = (rule.op_type, rule.rules)
    if key in _rules and not replace:
        raise ValueError(
            f"a rule for {rule.op_type!r} is already registered (family {_rules[key].family!r}); "
            "pass replace=True to replace it"
        )
    _rules[key] = rule
    return rule


def _doc_of(fn: Callable | None, doc: str | None) -> str:
    return (doc or (fn.__doc__ if fn is not None else "") or "").strip()


def rule(*op_types: str, family: str, plan: PlanFn = always, rules: str = DEFAULT_RULES,
         xla_inexact: str | None = None, doc: str | None = None, rows: str = LEADING_ROWS):
    """Decorator: ``fn(op, *grads) -> list of input gradients`` is the rule for ``op_types``.

    ``fn`` sees the paired batch (see :mod:`tfshap.pair`) and is registered with
    ``tf.RegisterGradient`` once, under tfshap's own name. Its docstring's first line is
    the formula that ``tfshap rules`` prints. ``rows`` says how it reads the rows.
    """

    def register(fn: Callable) -> Callable:
        for op_type in op_types:
            name = _register_gradient(gradient_name(family, op_type, rules), fn)
            _add(Rule(op_type, family, _doc_of(fn, doc), plan, name, rules, xla_inexact, rows), replace=False)
        return fn

    return register


def linear(*op_types: str, inputs: tuple[int, ...] | None = None, when: Callable | None = None,
           family: str = "linear", doc: str = LINEAR_DOC, plan: PlanFn | None = None) -> None:
    """Register ``op_types`` as linear in the inputs ``inputs`` (every input when None).

    Another input that varies is refused, and so is any use for which ``when(op)`` returns
    a reason; ``plan`` replaces both checks (it returns KEEP or a Refusal).
    """
    for op_type in op_types:
        _add(Rule(op_type, family, doc, plan or linear_plan(inputs, when)), replace=False)


def linear_plan(inputs: tuple[int, ...] | None = None, when: Callable | None = None) -> PlanFn:
    """The plan of an op linear in ``inputs`` (all when None): KEEP, or a refusal naming the other input."""

    def plan(op: tf.Operation, varying: tuple[bool, ...]) -> Plan:
        allowed = set(range(len(varying))) if inputs is None else set(inputs)
        bad = [i for i, v in enumerate(varying) if v and i not in allowed]
        if bad:
            arg_names = [a.name for a in op.op_def.input_arg]
            names = ", ".join(arg_names[i] if i < len(arg_names) else str(i) for i in bad)
            return Refusal(f"its input {names} varies with the explained inputs, and {op.type} is not linear in it")
        reason = when(op) if when is not None else None
        return Refusal(reason) if reason else KEEP

    return plan


def unary(*op_types: str, family: str, plan: PlanFn = always, rules: str = DEFAULT_RULES):
    """Decorator: ``multiplier(op) -> m`` of input 0, shaped like its foreground rows.

    The helper caches ``m`` once per op and graph, puts it on the foreground rows, and
    returns no gradient for the other inputs. The rule is elementwise: it reads the rows
    wherever they lie (:func:`tfshap.pair.rows_along`).
    """

    def register(multiplier: Callable) -> Callable:
        def on_rows(op):
            with rows_along(op):
                return on_foreground(multiplier(op))

        cached = cached_multipliers(on_rows)

        def gradient(op: tf.Operation, grad: tf.Tensor, *unused):
            return [cached(op) * grad] + [None] * (len(op.inputs) - 1)

        gradient.__doc__ = multiplier.__doc__
        rule(*op_types, family=family, plan=plan, rules=rules, rows=ALIGNED_ROWS)(gradient)
        return multiplier

    return register


def two_operand(*op_types: str, family: str, linear_when: str = "never", rules: str = DEFAULT_RULES):
    """Decorator: ``multipliers(op) -> (m_a, m_b)`` of a binary elementwise op, foreground-shaped.

    ``linear_when`` keeps TensorFlow's gradient where the op is linear in what varies:
    ``"one"`` (only one operand varies: ``a · b``), ``"numerator"`` (only ``a`` varies:
    ``a / b``) or ``"never"``. The helper caches the multipliers, puts them on the
    foreground rows, un-broadcasts each to its operand's shape, and gives a constant
    operand no gradient (``multipliers`` may return None for it). Like :func:`unary`, it
    reads the rows wherever they lie.
    """

    def plan(op: tf.Operation, varying: tuple[bool, ...]) -> Plan:
        va, vb = varying
        if linear_when == "one" and va != vb or linear_when == "numerator" and va and not vb:
            return KEEP
        return APPLY

    def register(multipliers: Callable) -> Callable:
        def on_rows(op):
            with rows_along(op):
                return [None if m is None or not flag else on_foreground(m)
                        for m, flag in zip(multipliers(op), varying_inputs(op))]

        cached = cached_multipliers(on_rows)

        def gradient(op: tf.Operation, grad: tf.Tensor):
            return [None if m is None else unbroadcast(m * grad, tf.shape(op.inputs[i]))
                    for i, m in enumerate(cached(op))]

        gradient.__doc__ = multipliers.__doc__
        rule(*op_types, family=family, plan=plan, rules=rules, rows=ALIGNED_ROWS)(gradient)
        return multipliers

    return register


def register_rule(op_type: str, family: str, gradient: Callable | None = None, *, plan: PlanFn | None = None,
                  doc: str = "", replace: bool = False) -> Rule:
    """Register how ``op_type`` is treated (the public way to add a rule).

    Parameters
    ----------
    op_type : str
        A TensorFlow op type, e.g. ``"Bucketize"``.
    family : str
        A name for the rule's family, shown by ``tfshap rules``.
    gradient : callable, optional
        ``gradient(op, *grads) -> list``: the multipliers of each input times the incoming
        gradient, computed on the paired batch (see :mod:`tfshap.pair`). Registered with
        ``tf.RegisterGradient`` under ``tfshap/<family>/<op_type>``. None: the op is linear
        in every input and keeps TensorFlow's gradient.
    plan : callable, optional
        ``plan(op, varying) -> KEEP | APPLY | Refusal``, asked per op when compiling;
        default: APPLY where ``gradient`` is given, else KEEP.
    doc : str
        The formula shown by ``tfshap rules``; default: ``gradient``'s docstring.
    replace : bool
        Replace an existing rule for ``op_type`` (default: refuse).

    Returns
    -------
    Rule
        The registered rule.

    Raises
    ------
    ValueError
        ``op_type`` is not a non-empty string, or it has a rule and ``replace`` is False.
    """
    if not isinstance(op_type, str) or not op_type:
        raise ValueError(f"op_type must be a TensorFlow op type name such as 'Relu', got {op_type!r}")
    if gradient is not None and not callable(gradient):
        raise ValueError(f"gradient must be a function gradient(op, *grads) or None; got {gradient!r}")
    name = None if gradient is None else _register_gradient(gradient_name(family, op_type), gradient)
    if plan is None:
        plan = always if gradient is not None else linear_plan()
    return _add(Rule(op_type, family, _doc_of(gradient, doc), plan, name), replace=replace)


def unregister_rule(op_type: str, rules: str = DEFAULT_RULES) -> Rule | None:
    """Remove the rule for ``op_type`` (its gradient function stays registered with TensorFlow); returns it."""
    return _rules.pop((op_type, rules), None)


def restore_rule(rule: Rule) -> Rule:
    """Put back a rule that :func:`unregister_rule` returned."""
    return _add(rule, replace=True)


def lookup(op_type: str, rules: str = DEFAULT_RULES) -> Rule | None:
    """The rule for ``op_type`` in the rule set ``rules``, or the default rule where that set has none."""
    return _rules.get((op_type, rules)) or _rules.get((op_type, DEFAULT_RULES))


def rule_sets() -> list[str]:
    """The names of the registered rule sets, the default first."""
    return sorted({key[1] for key in _rules}, key=lambda name: (name != DEFAULT_RULES, name))


def rules(rule_set: str = DEFAULT_RULES) -> list[Rule]:
    """Every registered rule, sorted by family then op type.

    Parameters
    ----------
    rule_set : str
        A rule set (``rule_sets()``): the default rules, with that set's replacements.

    Returns
    -------
    list of Rule
        Each with ``op_type``, ``family``, ``doc`` (its formula) and ``plan``.
    """
    chosen = {op_type: lookup(op_type, rule_set) for op_type, _ in _rules}
    return sorted(chosen.values(), key=lambda r: (r.family, r.op_type))
