"""The pass: give every op on the path from the explained inputs to the output its rule.

:func:`rewrite_traced` runs the traced model on a paired batch inside the graph being
built (a chunk function), installs the rules, and returns what the program needs as a
value, :class:`Rewritten`: the explained output, the tensors attributed to, the report and
the bytes of varying activations per row.
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from . import _tf_private, batch_axis, precision, registry
from .errors import CompileError, OpProblem, UnsupportedOpError
from .graph import (
    BRANCH_OPS,
    CALL_OPS,
    WHILE_OPS,
    reaching_loop_vars,
    reaching_tensors,
    varying_loop_vars,
    varying_tensors,
)
from .pair import mark_rows, mark_varying


@dataclass
class RewriteReport:
    """What the pass did: how many ops each (family, op type) rule treated, and which rules XLA would break."""

    used: Counter = field(default_factory=Counter)
    #: op type -> why XLA would make its applied rule wrong
    xla_inexact: dict = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{op_type} ({family}) ×{n}" for (family, op_type), n in sorted(self.used.items()))

    def xla_refusal(self) -> str | None:
        """Why ``jit_compile=True`` would make these attributions wrong, or None."""
        if not self.xla_inexact:
            return None
        reasons = "; ".join(f"{op_type}: {reason}" for op_type, reason in sorted(self.xla_inexact.items()))
        return f"jit_compile=True cannot explain this model exactly ({reasons}). Expected jit_compile=False or None"


@dataclass
class Rewritten:
    """The traced model on a paired batch, with its rules installed.

    ``output`` is ``(rows, n_outputs)``; ``sources`` are the tensors attributed to (the
    paired model inputs, or the attributed layer's outputs); ``activation_bytes_per_row``
    counts the varying float activations of one row whose size is known when tracing.
    """

    output: tf.Tensor
    sources: list[tf.Tensor]
    report: RewriteReport
    activation_bytes_per_row: int
    #: The least precise float dtype of what varies with the sources (float16 under mixed_float16).
    compute_dtype: tf.DType


def rewrite_traced(traced, paired: list[tf.Tensor], layer_of: Callable[[str], str | None],
                   rule_set: str = registry.DEFAULT_RULES) -> Rewritten:
    """Run ``traced`` on ``paired`` in the graph being built and install the rules of ``rule_set``."""
    graph = tf.compat.v1.get_default_graph()
    first = len(graph.get_operations())
    y, attributed = traced.call(paired)
    ops = graph.get_operations()[first:]
    if attributed is None:
        sources, masks = paired, []
    else:
        sources, masks = attributed, masks_beside_layer(ops, paired, attributed, y, traced.attributed_layer)
    # The masks are computed inside the graph: how many entries of their axis 0 a row owns is not known.
    layouts = [batch_axis.Rows(0)] * len(sources) + [batch_axis.Rows(0, per_row=None)] * len(masks)
    report = rewrite(ops, [*sources, *masks], [y], layer_of, rule_set, layouts)
    return Rewritten(y, list(sources), report, activation_bytes_per_row(ops, sources),
                     precision.compute_dtype(ops, sources, y.dtype))


def masks_beside_layer(ops, paired, attributed, y, layer_name: str) -> list[tf.Tensor]:
    """The masks computed from the inputs other than through the attributed layer.

    They vary too, so the mask rules check that a sample and its reference agree on them;
    an integer model input beside the layer (segment ids, a padding mask) is one. Any float
    path around the layer makes attributions to it incomplete, and is refused.
    """
    around = varying_tensors(ops, paired, blocked=attributed)
    feeding_layer = reaching_tensors(ops, attributed)
    mask_inputs = [t for t in paired if not t.dtype.is_floating and t.ref() not in feeding_layer]
    masks = mask_inputs + [
        t for op in ops for t in op.outputs
        if t.ref() in around and t.ref() not in feeding_layer and not t.dtype.is_floating
    ]
    others = [t for t in paired if all(t is not m for m in mask_inputs)]
    around_layer = "the output depends on the model inputs other than through layer"
    if y.ref() in varying_tensors(ops, others, blocked=[*attributed, *masks]):
        raise CompileError(
            f"{around_layer} {layer_name!r}, so attributions to that layer cannot add up; choose a layer that every "
            "path from the inputs to the output goes through"
        )
    # Indices computed from an input that feeds the layer (token ids looked up a second time) are
    # not a mask beside it: they carry the input's values around the layer.
    from_layer_inputs = varying_tensors(ops, [t for t in others if not t.dtype.is_floating], blocked=attributed)
    reaching_y = reaching_tensors(ops, [y])
    for op in ops:
        if op.type in GATHERS and op.inputs[1].ref() in from_layer_inputs and op.outputs[0].ref() in reaching_y \
                and op.outputs[0].ref() not in feeding_layer:
            raise CompileError(
                f"{around_layer} {layer_name!r}: op {op.name!r} looks up the same inputs again, so attributions to "
                "that layer cannot add up; choose a layer that every path from the inputs to the output goes through"
            )
    return masks


GATHERS = frozenset({"Gather", "GatherV2", "GatherNd", "ResourceGather"})


def activation_bytes_per_row(ops, sources) -> int:
    """Bytes per row of the float tensors that vary with ``sources`` and whose per-row size is known."""
    varying = varying_tensors(ops, sources)
    total = 0
    for op in ops:
        for t in op.outputs:
            if t.ref() in varying and t.dtype.is_floating and t.shape.rank:
                dims = t.shape[1:]
                if dims.is_fully_defined():
                    total += int(np.prod(dims)) * t.dtype.size
    return total


def rewrite(
    ops: Sequence[tf.Operation],
    sources: Sequence[tf.Tensor],
    targets: Sequence[tf.Tensor],
    layer_of: Callable[[str], str | None] = lambda name: None,
    rule_set: str = registry.DEFAULT_RULES,
    layouts: Sequence | None = None,
) -> RewriteReport:
    """Install rules on ``ops`` (topologically ordered) for explaining ``targets`` by ``sources``.

    ``layouts`` says where the rows of each source lie (:mod:`tfshap.batch_axis`; default:
    along axis 0, one entry per row). Raises :class:`UnsupportedOpError` naming every op type
    on the path without an exact treatment, before anything runs.
    """
    report = RewriteReport()
    problems: dict[str, list[tuple[tf.Operation, str]]] = defaultdict(list)
    _rewrite_graph(ops, sources, targets, report, problems, rule_set, layouts)
    if problems:
        raise UnsupportedOpError(
            OpProblem(op_type, len(found), found[0][0].name, layer_of(found[0][0].name), found[0][1])
            for op_type, found in problems.items()
        )
    return report


def _rewrite_graph(ops, sources, targets, report: RewriteReport, problems, rule_set: str, layouts=None) -> None:
    """Plan every op of one graph on the path from ``sources`` to ``targets``; recurse into loop bodies.

    Where the rows of each varying tensor lie is tracked first (:mod:`tfshap.batch_axis`), for the plans.
    """
    varying = varying_tensors(ops, sources)
    reaching = reaching_tensors(ops, targets)
    with batch_axis.tracked(batch_axis.track(ops, sources, varying, layouts)), _reaching(reaching):
        for op in ops:
            flags = tuple(t.ref() in varying for t in op.inputs)
            if not any(flags) or not any(t.ref() in reaching for t in op.outputs):
                continue
            if op.type in registry.NOT_DIFFERENTIABLE:
                continue
            rule = registry.lookup(op.type, rule_set)
            if rule is None:
                problems[op.type].append((op, "no rule is registered"))
                continue
            _plan_op(op, flags, rule, reaching, report, problems, rule_set)


_planning = threading.local()


@contextlib.contextmanager
def _reaching(reaching: set):
    previous = getattr(_planning, "reaching", None)
    _planning.reaching = reaching
    try:
        yield
    finally:
        _planning.reaching = previous


def reaches_targets(t: tf.Tensor) -> bool:
    """Whether the explained output is computed from ``t``, in the graph being planned now (True outside a rewrite)."""
    reaching = getattr(_planning, "reaching", None)
    return reaching is None or t.ref() in reaching


def _plan_op(op, flags, rule, reaching, report: RewriteReport, problems, rule_set: str) -> None:
    """Ask ``rule`` for ``op``'s plan, check that a gradient it installs can read the rows, and install it."""
    decision = rule.decide(op, flags)
    if isinstance(decision, registry.Override):
        reason = batch_axis.apply_refusal(op, flags, rule.rows)
        decision = registry.Refusal(reason) if reason else decision
    if isinstance(decision, registry.Refusal):
        problems[op.type].append((op, decision.reason))
        return
    nested = (report, problems, rule_set)
    if op.type in WHILE_OPS:
        _rewrite_loop_body(op, flags, reaching, *nested)
    elif op.type in BRANCH_OPS:
        _rewrite_branches(op, flags, reaching, *nested)
    elif op.type in CALL_OPS:
        _rewrite_called_function(op, flags, reaching, *nested)
    if isinstance(decision, registry.Override):
        mark_varying(op, flags)
        axes = batch_axis.row_axes(op, flags)
        if axes is not None:
            mark_rows(op, axes)
        _tf_private.override_gradient(op, decision.gradient)
        if rule.xla_inexact:
            report.xla_inexact[op.type] = rule.xla_inexact
    report.used[(rule.family, op.type)] += 1


def _rewrite_loop_body(op, flags, reaching, report, problems, rule_set) -> None:
    """Rules inside a While body see the paired batch just as top-level ops do."""
    bodies = _tf_private.while_body_and_cond(op)
    if bodies is None:
        problems[op.type].append((op, "its body graph cannot be reached (not built by while_v2)"))
        return
    body, cond = bodies
    loop_vars = varying_loop_vars(op, flags)
    if varying_tensors(cond.get_operations(), [cond.inputs[i] for i in loop_vars]).intersection(
        t.ref() for t in cond.outputs
    ):
        problems[op.type].append((op, "its trip count depends on the explained inputs"))
        return
    reached = reaching_loop_vars(op, [i for i, t in enumerate(op.outputs) if t.ref() in reaching])
    _rewrite_graph(
        body.get_operations(),
        [body.inputs[i] for i in sorted(loop_vars)],
        [body.outputs[j] for j in sorted(reached)],
        report,
        problems,
        rule_set,
        [batch_axis.layout_of(op.inputs[i]) for i in sorted(loop_vars)],
    )


def _rewrite_branches(op, flags, reaching, report, problems, rule_set) -> None:
    """Rules inside each branch of an If or Case (whose branch index does not vary)."""
    branches = _tf_private.branch_graphs(op)
    if branches is None:
        problems[op.type].append((op, "its branch graphs cannot be reached (not built by cond_v2)"))
        return
    varying = [i for i, v in enumerate(flags[1:]) if v]  # input 0 picks the branch
    reached = [j for j, t in enumerate(op.outputs) if t.ref() in reaching]
    for branch in branches:
        _rewrite_graph(
            branch.get_operations(),
            [branch.inputs[i] for i in varying],
            [branch.outputs[j] for j in reached],
            report,
            problems,
            rule_set,
            [batch_axis.layout_of(op.inputs[i + 1]) for i in varying],
        )


#: Private, rewritten copies of the functions that call ops run. Each call op names its copy
#: in an attribute, which survives when the call's gradient inlines an enclosing copy (and
#: so copies this op too); the copies live as long as the graph holding the call.
COPY_ATTR = "_tfshap_called_copy"
_copies_kept: "weakref.WeakKeyDictionary[tf.Graph, list]" = weakref.WeakKeyDictionary()
_copies_by_key: "weakref.WeakValueDictionary[str, tf.Graph]" = weakref.WeakValueDictionary()


def called_copy(op: tf.Operation):
    """The rewritten copy of the function ``op`` calls."""
    return _copies_by_key[_tf_private.get_string_attr(op, COPY_ATTR)]


def _rewrite_called_function(op, flags, reaching, report, problems, rule_set) -> None:
    """Rules inside a private copy of a nested ``tf.function``: its own graph is shared with other callers."""
    copy = _tf_private.called_function_copy(op)
    _copies_kept.setdefault(op.graph, []).append(copy)
    _copies_by_key[str(id(copy))] = copy
    _tf_private.set_string_attr(op, COPY_ATTR, str(id(copy)))
    _rewrite_graph(
        copy.get_operations(),
        [copy.inputs[i] for i, v in enumerate(flags) if v],
        [copy.outputs[j] for j, t in enumerate(op.outputs) if t.ref() in reaching],
        report,
        problems,
        rule_set,
        [batch_axis.layout_of(t) for t, v in zip(op.inputs, flags) if v],
    )


def layer_lookup(layer_names: Iterable[str]) -> Callable[[str], str | None]:
    """Map an op name to the innermost Keras layer whose name scope it was created in."""
    names = set(layer_names)

    def layer_of(op_name: str) -> str | None:
        for part in reversed(op_name.split("/")[:-1]):
            # Keras 3 suffixes name scopes it has used before: layer "act" runs in "act_1".
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in names:
                    return candidate
        return None

    return layer_of
