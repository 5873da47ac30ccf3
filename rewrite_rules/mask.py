"""Masks: boolean and integer tensors computed from the explained inputs.

A mask (``Masking``, ``Embedding(mask_zero=True)``, a padding test) is piecewise constant:
it has no gradient, and DeepSHAP is exact through it only when a sample and its
reference give the same mask, because then every op downstream is the same function of
the float inputs for both rows of the pair. So comparisons and logical ops are kept as
they are, and the two places where a mask re-enters float arithmetic, ``Cast`` to a float
and the condition of ``Select``, check at run time that both halves of every pair agree.
Where they differ, explaining stops with :class:`tfshap.MaskMismatchError`; no value is
returned that would not add up.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.graph import batch_axis_refusal
from tfshap.pair import halves, unbroadcast, varying_inputs
from tfshap.registry import KEEP, Refusal, register_gradient, register_rule

#: Starts the message of the run-time check; the runner turns it into MaskMismatchError.
MISMATCH_MARKER = "tfshap-mask-mismatch"

COMPARISONS = ("Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "IsNan", "IsInf", "IsFinite")
LOGICAL = ("LogicalAnd", "LogicalOr", "LogicalNot")


def same_for_sample_and_reference(op: tf.Operation, mask: tf.Tensor) -> tf.Operation:
    """An op that fails, naming ``op``, unless both halves of the paired ``mask`` are equal."""
    sample, reference = halves(mask)
    return tf.debugging.Assert(tf.reduce_all(tf.equal(sample, reference)), [f"{MISMATCH_MARKER} {op.name}"])


def _checked_select(op: tf.Operation, grad: tf.Tensor):
    """m = ∂out/∂branch, the condition being the same for the sample and its reference (checked)."""
    condition, then_value, else_value = op.inputs
    with tf.control_dependencies([same_for_sample_and_reference(op, condition)]):
        zeros = tf.zeros_like(grad)
        then_grad = tf.where(condition, grad, zeros)
        else_grad = tf.where(condition, zeros, grad)
    flags = varying_inputs(op)
    return [
        None,
        unbroadcast(then_grad, tf.shape(then_value)) if flags[1] else None,
        unbroadcast(else_grad, tf.shape(else_value)) if flags[2] else None,
    ]


_CHECKED_SELECT = {t: register_gradient(f"tfshap/mask/{t}", _checked_select) for t in ("Select", "SelectV2")}


def _cast_plan(op: tf.Operation, varying: tuple[bool, ...]):
    source, target = op.inputs[0].dtype, op.outputs[0].dtype
    if not target.is_floating or source.is_floating:
        return KEEP  # float to float is linear; a cast to a mask or an index passes nothing back
    # A mask re-enters float arithmetic here. TensorFlow never differentiates through a
    # non-float tensor, so the check cannot ride on the gradient: it is added to the traced
    # function itself, whose automatic control dependencies run every stateful op.
    if op.graph is not tf.compat.v1.get_default_graph():
        return Refusal(f"it casts a {source.name} mask to {target.name} inside a loop body, where it cannot be checked")
    same_for_sample_and_reference(op, op.inputs[0])
    return KEEP


def _select_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if not varying[0]:
        return KEEP  # linear in both branches
    if op.type == "Select" and op.inputs[0].shape.rank not in (None, op.inputs[1].shape.rank):
        return Refusal("Select with a vector condition picks whole rows, which cannot be checked pair by pair")
    return _CHECKED_SELECT[op.type]


def _reduction_plan(op: tf.Operation, varying: tuple[bool, ...]):
    reason = batch_axis_refusal(op)
    return Refusal(reason) if reason else KEEP


register_rule("Cast", "mask", plan=_cast_plan,
              doc="m = 1 float to float; a mask cast to float must be the same for sample and reference (checked)")
for _op_type in ("Select", "SelectV2"):
    register_rule(_op_type, "mask", plan=_select_plan,
                  doc="m = ∂out/∂branch; a varying condition must be the same for sample and reference (checked)")
for _op_type in COMPARISONS + LOGICAL:
    register_rule(_op_type, "mask", plan=lambda op, varying: KEEP, doc="a mask: no gradient; checked where it meets floats")
for _op_type in ("Any", "All"):
    register_rule(_op_type, "mask", plan=_reduction_plan, doc="a mask reduced along non-batch axes: no gradient")
