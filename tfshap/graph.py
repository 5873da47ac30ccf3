"""Walking a traced graph: which tensors vary with the explained inputs, which reach the output."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from . import _tf_private
from .registry import NOT_DIFFERENTIABLE


def reapply(op: tf.Operation, *inputs: tf.Tensor) -> tf.Tensor:
    """Run ``op``'s computation again on new inputs, with the same attributes (via ``tf.raw_ops``)."""
    fn = getattr(tf.raw_ops, op.type)
    input_args = op.op_def.input_arg
    kwargs = {arg.name: t for arg, t in zip(input_args, inputs)}
    inferred = {a for arg in input_args for a in (arg.type_attr, arg.number_attr, arg.type_list_attr) if a}
    for attr in op.op_def.attr:
        if attr.name not in inferred:
            kwargs[attr.name] = op.get_attr(attr.name)
    out = fn(**kwargs)
    return out[0] if isinstance(out, (list, tuple)) else out


WHILE_OPS = frozenset({"While", "StatelessWhile"})
BRANCH_OPS = frozenset({"If", "StatelessIf", "Case", "StatelessCase"})
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def varying_tensors(ops: Iterable[tf.Operation], sources: Sequence[tf.Tensor], blocked: Sequence[tf.Tensor] = ()) -> set:
    """Refs of the tensors computed from ``sources`` (in topological ``ops``), never through ``blocked``.

    A loop's outputs vary only where its loop variables do (a fixed point over the body).
    """
    varying = {t.ref() for t in sources}
    blocked_refs = {t.ref() for t in blocked}
    for op in ops:
        if op.type in NOT_DIFFERENTIABLE:
            continue
        flags = [t.ref() in varying for t in op.inputs]
        if not any(flags):
            continue
        outputs = op.outputs
        if op.type in WHILE_OPS and _tf_private.while_body_and_cond(op) is not None:
            loop_vars = varying_loop_vars(op, flags)
            outputs = [t for i, t in enumerate(op.outputs) if i in loop_vars]
        varying.update(t.ref() for t in outputs if t.ref() not in blocked_refs)
    return varying


def reaching_tensors(ops: Sequence[tf.Operation], targets: Sequence[tf.Tensor]) -> set:
    """Refs of the tensors that ``targets`` are computed from (``ops`` in topological order)."""
    reaching = {t.ref() for t in targets}
    for op in reversed(list(ops)):
        reached = [i for i, t in enumerate(op.outputs) if t.ref() in reaching]
        if not reached:
            continue
        inputs = op.inputs
        if op.type in WHILE_OPS and _tf_private.while_body_and_cond(op) is not None:
            inputs = [op.inputs[i] for i in reaching_loop_vars(op, reached)]
        reaching.update(t.ref() for t in inputs)
    return reaching


def varying_loop_vars(op: tf.Operation, flags: Sequence[bool]) -> set[int]:
    """Indices of the loop variables of a While op that vary, given which of its inputs do."""
    body, _ = _tf_private.while_body_and_cond(op)
    body_ops = body.get_operations()
    current = {i for i, v in enumerate(flags) if v}
    while True:
        inside = varying_tensors(body_ops, [body.inputs[i] for i in current])
        grown = current | {j for j, t in enumerate(body.outputs) if t.ref() in inside}
        if grown == current:
            return current
        current = grown


def reaching_loop_vars(op: tf.Operation, reached_outputs: Iterable[int]) -> set[int]:
    """Indices of the loop variables of a While op that the ``reached_outputs`` depend on."""
    body, _ = _tf_private.while_body_and_cond(op)
    body_ops = body.get_operations()
    current = set(reached_outputs)
    while True:
        inside = reaching_tensors(body_ops, [body.outputs[j] for j in current])
        grown = current | {i for i, t in enumerate(body.inputs) if t.ref() in inside}
        if grown == current:
            return current
        current = grown


def reduced_axes(op: tf.Operation) -> list[int] | None:
    """The non-negative axes a reduction ``op(input, axes)`` reduces, or None when not static."""
    axes = tf.get_static_value(op.inputs[1])
    rank = op.inputs[0].shape.rank
    if axes is None or rank is None:
        return None
    return sorted({int(a) % rank for a in np.atleast_1d(axes)})


def batch_axis_refusal(op: tf.Operation) -> str | None:
    """Why a reduction cannot be treated pair by pair, or None when it keeps the batch axis."""
    axes = reduced_axes(op)
    if axes is None:
        return "its reduction axes or its input rank are not known when tracing"
    if 0 in axes:
        return "it reduces over the batch axis, which mixes samples with references"
    return None
