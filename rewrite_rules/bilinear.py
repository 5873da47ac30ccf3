"""Products of two tensors (MatMul, BatchMatMul, Einsum): linear in each operand alone.

With one varying operand the op is linear and keeps TensorFlow's gradient. With both
varying, each operand's multiplier is the gradient taken with the other operand at its
midpoint, ``m_A = ∂out/∂A |_{B̄}``, ``B̄ = (B + rB) / 2``; exact because
``ΔA·B̄ + Ā·ΔB = AB − rA·rB`` for any bilinear product.

Either way every varying operand's batch axis must stay a batch axis of the product,
and the same one for both: a product that sums over the batch axis (``xᵀ·W``), or pairs
each row with every other row (``x·yᵀ`` of rank 2), mixes samples with references and is
refused. The check labels every axis, einsum style, and compares the labels of axis 0.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.graph import reapply
from tfshap.pair import cached_multipliers, halves, on_foreground, varying_inputs
from tfshap.registry import APPLY, KEEP, Refusal, rule


def _batch_labels(rank: int, common: int) -> list[str]:
    """Labels of the leading ``rank`` broadcast axes, aligned to the right among ``common``."""
    return [f"batch{common - rank + i}" for i in range(rank)]


def _matmul_labels(op: tf.Operation) -> tuple[list[list[str]], list[str]] | None:
    """Einsum-style labels of a (batch) matmul's operands and product, or None for unknown ranks."""
    ranks = [t.shape.rank for t in op.inputs[:2]]
    if None in ranks:
        return None
    if op.type == "MatMul":
        swap_a, swap_b = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    else:
        swap_a, swap_b = op.get_attr("adj_x"), op.get_attr("adj_y")
    common = max(ranks) - 2
    a = _batch_labels(ranks[0] - 2, common) + (["k", "i"] if swap_a else ["i", "k"])
    b = _batch_labels(ranks[1] - 2, common) + (["j", "k"] if swap_b else ["k", "j"])
    return [a, b], _batch_labels(common, common) + ["i", "j"]


def _einsum_labels(op: tf.Operation) -> tuple[list[list[str]], list[str]] | None:
    """The labels of an Einsum's equation, an ellipsis expanded to right-aligned batch labels."""
    inputs, _, output = op.get_attr("equation").decode().replace(" ", "").partition("->")  # the op needs "->"
    specs = inputs.split(",")
    ranks = [t.shape.rank for t in op.inputs]
    if None in ranks or len(specs) != len(ranks):
        return None
    spans = [rank - len(spec.replace("...", "")) for spec, rank in zip(specs, ranks)]
    common = max(spans)

    def expand(spec: str, span: int) -> list[str]:
        head, dots, tail = spec.partition("...")
        return list(head) + (_batch_labels(span, common) if dots else []) + list(tail)

    return [expand(s, n) for s, n in zip(specs, spans)], expand(output, common)


LABELS = {
    "MatMul": _matmul_labels,
    "BatchMatMul": _matmul_labels,
    "BatchMatMulV2": _matmul_labels,
    "BatchMatMulV3": _matmul_labels,
    "Einsum": _einsum_labels,
}


def _pairing_refusal(op: tf.Operation, varying: tuple[bool, ...]) -> str | None:
    """Why the product mixes rows of different samples, or None when every row stays with its pair."""
    labelled = LABELS[op.type](op)
    if labelled is None:
        return "the ranks of its operands are not known when tracing"
    operands, output = labelled
    leading = {}
    for index, flag in enumerate(varying):
        if not flag:
            continue
        if not operands[index] or operands[index][0] not in output:
            return f"it sums over the batch axis of its input {_operand_name(op, index)}, which mixes samples with references"
        leading[index] = operands[index][0]
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
    """``on_foreground((A + rA) / 2)`` for each varying operand."""
    return [on_foreground(_midpoint(t)) if flag else None for t, flag in zip(op.inputs, varying_inputs(op))]


def _midpoint(t: tf.Tensor) -> tf.Tensor:
    x, r = halves(t)
    return (x + r) / 2


def plan(op: tf.Operation, varying: tuple[bool, ...]):
    """KEEP with one varying operand (linear); the bilinear rule with both; a refusal where rows mix."""
    reason = _pairing_refusal(op, varying)
    if reason:
        return Refusal(reason)
    return KEEP if sum(varying) == 1 else APPLY  # an Einsum op takes at most two operands


@rule(*LABELS, family="bilinear", plan=plan)
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
        args = [mid if flag and other != index else t for other, (t, flag, mid) in enumerate(zip(op.inputs, flags, mids))]
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
