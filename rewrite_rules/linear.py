"""Linear ops: TensorFlow's own gradient is the exact multiplier, ``m = ∂out/∂in``.

An op is linear only in some of its inputs (a convolution in its input, not in its
filter; a gather in its params, not in its indices). When any other input varies with the
explained inputs, the rule refuses; an exact rule for that case lives in another family.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfshap.batch_axis import reading_refusal, row_axis, rows_refusal
from tfshap.graph import batch_axis_refusal, reapply
from tfshap.pair import assert_same_for_sample_and_reference, derivative_along, varying_inputs
from tfshap.registry import ANY_ROWS, APPLY, KEEP, NOT_DIFFERENTIABLE, Refusal, linear, lookup, rule

# Linear in every input.
linear(
    "Identity", "EnsureShape", "CheckNumerics",
    "AddV2", "Add", "Sub", "Neg", "AddN", "BiasAdd", "BiasAddV1",
    "ConcatV2", "Pack", "Unpack", "Tile", "BroadcastTo",
    "AvgPool", "AvgPool3D",
)
# Linear in the data input; the others are shapes, axes, paddings or indices.
linear(
    "Reshape", "ExpandDims", "Squeeze", "Transpose", "Slice", "StridedSlice",
    "Pad", "MirrorPad", "ReverseV2", "DepthToSpace", "SpaceToDepth",
    "ResizeNearestNeighbor", "ResizeBilinear", "ExtractImagePatches",
    "ExtractVolumePatches",
    inputs=(0,),
)
# Linear in the data input, along axes other than the batch axis.
linear("Sum", "Mean", "Cumsum", inputs=(0,), when=batch_axis_refusal)
linear("PadV2", inputs=(0, 2))
linear("Split", inputs=(1,))
linear("SplitV", inputs=(0,))


def _roll_refusal(op: tf.Operation) -> str | None:
    """Why a Roll cannot be treated pair by pair: it rolls along the batch axis (or its axes are not static)."""
    axes, rank = tf.get_static_value(op.inputs[2]), op.inputs[0].shape.rank
    if axes is None or rank is None:
        return "its axes or its input rank are not known when tracing"
    return rows_refusal(op.inputs[0], {int(a) % rank for a in np.atleast_1d(axes)}, "it rolls along")


# tf.roll moves values: linear in its input; the shift and the axes must not vary.
linear("Roll", inputs=(0,), when=_roll_refusal)


def _innermost(n: int):
    """Refuse a transform of the innermost ``n`` axes where they include the batch axis."""

    def refusal(op: tf.Operation) -> str | None:
        rank = op.inputs[0].shape.rank
        if rank is None:
            return "its input rank is not known when tracing"
        return rows_refusal(op.inputs[0], range(rank - n, rank), f"it transforms the innermost {n} axes, which include")

    return refusal


# Complex numbers and Fourier transforms are linear over the reals (FNet: Re(FFT2D(x + 0i))).
linear("Complex", "Real", "Imag")
for _n, _op_types in ((1, ["FFT", "IFFT", "RFFT", "IRFFT"]), (2, ["FFT2D", "IFFT2D"]), (3, ["FFT3D", "IFFT3D"])):
    linear(*_op_types, inputs=(0,), when=_innermost(_n))  # RFFT, IRFFT: the FFT length must not vary
# Scatters into a tensor at indices that do not vary: linear in the tensor and the updates.
linear("TensorScatterUpdate", "TensorScatterAdd", inputs=(0, 2))
# Linear in one operand while the other is constant (weights).
linear("Conv2D", "Conv3D", "DepthwiseConv2dNative", inputs=(0,), doc="m = ∂out/∂input (constant filter)")
linear("Conv2DBackpropInput", "Conv3DBackpropInputV2", inputs=(2,), doc="m = ∂out/∂input (transposed convolution)")


# tf.custom_gradient wraps its forward ops in an IdentityN whose gradient skips them; the
# forward ops carry the rules, so the gradient must flow through the IdentityN unchanged.
# stop_gradient is the identity in the forward function that is being explained. Snapshot
# is the identity too, and TensorFlow registers no gradient for it.
@rule("IdentityN", "StopGradient", "PreventGradient", "Snapshot", family="linear", rows=ANY_ROWS)
def pass_through(op: tf.Operation, *grads):
    """m = 1 (identity in the forward pass)"""
    return list(grads)


def _computed_from_floats(t: tf.Tensor) -> bool:
    """Whether ``t`` is computed from a float tensor's values (shapes do not count)."""
    stack, seen = [t], set()
    while stack:
        tensor = stack.pop()
        if tensor.dtype.is_floating:
            return True
        if tensor.ref() in seen or tensor.op.type in NOT_DIFFERENTIABLE:
            continue
        seen.add(tensor.ref())
        stack.extend(tensor.op.inputs)
    return False


def _gather_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if not any(varying[1:]):
        return KEEP  # linear in params
    if any(varying[2:]):
        return Refusal("its axis varies with the explained inputs")
    if _computed_from_floats(op.inputs[1]):
        return Refusal("its indices are computed from the explained inputs, so a sample and its reference read "
                       "different entries: not linear in them")
    if op.graph is not tf.compat.v1.get_default_graph():
        return Refusal("its indices vary with the explained inputs inside a loop body, where they cannot be checked")
    unreadable = reading_refusal(op.inputs[1], "indices", leading=False)
    if unreadable:
        return Refusal(unreadable)
    # Integer indices from an input beside the attributed layer (segment ids, positions) or
    # computed from the inputs: a mask. The check is added to the traced function itself.
    assert_same_for_sample_and_reference(op, op.inputs[1], row_axis(op.inputs[1]))
    return APPLY


@rule("Gather", "GatherV2", "GatherNd", "ResourceGather", family="linear", plan=_gather_plan, rows=ANY_ROWS,
      xla_inexact="its indices are checked at run time (Assert ops), which XLA drops")
def gather(op: tf.Operation, grad: tf.Tensor):
    """m = ∂out/∂params; indices that vary must be the same for sample and reference (checked)"""
    params = op.inputs[0]
    params_grad = (derivative_along(lambda p: reapply(op, p, *op.inputs[1:]), params, grad)
                   if varying_inputs(op)[0] else None)
    return [params_grad] + [None] * (len(op.inputs) - 1)


def _space_to_batch_refusal(op: tf.Operation) -> str | None:
    """Why the region this SpaceToBatchND opens cannot be explained pair by pair, or None.

    Up to BatchToSpaceND the batch axis holds blocks of every row (block-major), so a rule
    that reads a row's reference would pair the wrong rows: only ops that keep TensorFlow's
    gradient (linear ops, which never read a reference) may sit there.
    """
    stack, seen = list(op.outputs[0].consumers()), set()
    while stack:
        consumer = stack.pop()
        if consumer.name in seen or consumer.type == "BatchToSpaceND":
            continue
        seen.add(consumer.name)
        rule = lookup(consumer.type)
        if rule is None or rule.gradient is not None:
            return (f"its blocks reach {consumer.type} {consumer.name!r} before BatchToSpaceND; between the two the "
                    "batch axis interleaves samples and references, where only linear ops are exact")
        stack.extend(c for t in consumer.outputs for c in t.consumers())
    return None


def _batch_to_space_refusal(op: tf.Operation) -> str | None:
    """Why a BatchToSpaceND does not close a region a SpaceToBatchND opened (through linear ops only), or None."""
    producer = op.inputs[0].op
    while producer.type != "SpaceToBatchND":  # back along the data input (input 0) of each op
        rule = lookup(producer.type)
        if not producer.inputs or rule is None or rule.gradient is not None:
            return ("it moves rows of the batch axis into pixels, and its input does not come from a SpaceToBatchND "
                    "through linear ops only (a dilated convolution), so it would mix samples with references")
        producer = producer.inputs[0].op
    return None


# Dilated convolutions: SpaceToBatchND → convolution → BatchToSpaceND, linear in the data input.
linear("SpaceToBatchND", inputs=(0,), when=_space_to_batch_refusal)
linear("BatchToSpaceND", inputs=(0,), when=_batch_to_space_refusal)
