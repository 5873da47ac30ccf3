"""Products of two tensors (MatMul, BatchMatMul, Einsum): linear in each operand alone.

With one varying operand the op is linear and keeps TensorFlow's gradient. With both
varying, each operand's multiplier is the gradient taken with the other operand at its
midpoint, ``m_A = ∂out/∂A |_{B̄}``, ``B̄ = (B + rB) / 2``; exact because
``ΔA·B̄ + Ā·ΔB = AB − rA·rB`` for any bilinear product.

Either way every varying operand's batch axis must stay a batch axis of the product,
and the same one for both: a product that sums over the batch axis (``xᵀ·W``), or pairs
each row with every other row (``x·yᵀ`` of rank 2), mixes samples with references and is
refused. The check labels every axis, einsum style, and compares the labels of each
operand's batch axis: axis 0, or the axis a transpose, einsum or reshape moved it to
(:mod:`tfshap.batch_axis`), so that ``W·xᵀ`` keeps the rows of ``x`` along its columns.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.batch_axis import Mixed, layout_of, reading_refusal, row_axis
from tfshap.graph import PRODUCT_LABELS, product_labels, reapply
from tfshap.pair import cached_multipliers, halves, on_foreground, rows_of, varying_inputs
from tfshap.registry import ANY_ROWS, APPLY, KEEP, Refusal, rule


def _pairing_refusal(op: tf.Operation, varying: tuple[bool, ...]) -> str | None:
    """Why the product mixes rows of different samples, or None when every row stays with its pair."""
    labelled = product_labels(op)
    if labelled is None:
        return "the ranks of its operands are not known when tracing"
    operands, output = labelled
    leading = {}
    for index, flag in enumerate(varying):
        if not flag:
            continue
        name = _operand_name(op, index)
        if isinstance(layout_of(op.inputs[index]), Mixed):
            return reading_refusal(op.inputs[index], name, leading=False)
        axis = row_axis(op.inputs[index])
        if len(operands[index]) <= axis or operands[index][axis] not in output:
            return f"it sums over the batch axis of its input {name}, which mixes samples with references"
        leading[index] = operands[index][axis]
    if len(set(leading.values())) > 1:
        return (
            "the batch axes of its varying operands are different axes of the product, which pairs "
            "each sample with every other row (a bilinear product across the batch)"
        )
    return None


def _operand_name(op: tf.Operation, index: int) -> str:
    names = [a.name for a in op.op_def.input_arg]
    return names[index] if len(names) == len(op.inputs) else f"{names[0]}[{index}]"


@cached_multipliers
def _midpoints(op: tf.Operation) -> list[tf.Tensor | None]:
    """``on_foreground((A + rA) / 2)`` for each varying operand, its rows where the rewrite found them."""
    return [on_foreground(_midpoint(t, axis), axis) if flag else None
            for t, flag, axis in zip(op.inputs, varying_inputs(op), rows_of(op))]


def _midpoint(t: tf.Tensor, axis: int) -> tf.Tensor:
    x, r = halves(t, axis)
    return (x + r) / 2


def plan(op: tf.Operation, varying: tuple[bool, ...]):
    """KEEP with one varying operand (linear); the bilinear rule with both; a refusal where rows mix."""
    reason = _pairing_refusal(op, varying)
    if reason:
        return Refusal(reason)
    if sum(varying) == 1:
        return KEEP  # linear (an Einsum op takes at most two operands)
    unreadable = [reading_refusal(t, _operand_name(op, i), leading=False)
                  for i, t in enumerate(op.inputs) if varying[i]]
    return Refusal(next(r for r in unreadable if r)) if any(unreadable) else APPLY


@rule(*PRODUCT_LABELS, family="bilinear", plan=plan, rows=ANY_ROWS)
def bilinear(op: tf.Operation, grad: tf.Tensor):
    """one operand varying: m = ∂out/∂in (linear); both: m_A = ∂out/∂A at B̄ = (B + rB)/2,
    m_B = ∂out/∂B at Ā (exact: ΔA·B̄ + Ā·ΔB = AB − rA·rB)."""
    flags = varying_inputs(op)
    mids = _midpoints(op)
    grads = []
    for index, operand in enumerate(op.inputs):
        if not flags[index]:
            grads.append(None)
            continue
        args = [mid if flag and other != index else t
                for other, (t, flag, mid) in enumerate(zip(op.inputs, flags, mids))]
        with tf.GradientTape() as tape:
            tape.watch(operand)
            product = _reapply_product(op, args)
        grads.append(tape.gradient(product, operand, output_gradients=grad))
    return grads


def _reapply_product(op: tf.Operation, args: list[tf.Tensor]) -> tf.Tensor:
    """``op`` on new operands (Einsum takes its operands as one list argument)."""
    if op.type == "Einsum":
        return tf.raw_ops.Einsum(inputs=args, equation=op.get_attr("equation"))
    return reapply(op, *args)
