"""Linear ops: TensorFlow's own gradient is the exact multiplier, ``m = ∂out/∂in``.

An op is linear only in some of its inputs (a convolution in its input, not in its
filter; a gather in its params, not in its indices). When any other input varies with the
explained inputs, the rule refuses; an exact rule for that case lives in another family.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfshap.graph import batch_axis_refusal
from tfshap.registry import KEEP, Refusal, register_rule


def linear_in(*indices: int, when=None):
    """Plan for an op linear in the inputs ``indices`` (all inputs when none are given)."""

    def plan(op: tf.Operation, varying: tuple[bool, ...]):
        allowed = set(range(len(varying))) if not indices else set(indices)
        bad = [i for i, v in enumerate(varying) if v and i not in allowed]
        if bad:
            arg_names = [a.name for a in op.op_def.input_arg]
            names = ", ".join(arg_names[i] if i < len(arg_names) else str(i) for i in bad)
            return Refusal(f"its input {names} varies with the explained inputs, and {op.type} is not linear in it")
        if when is not None:
            reason = when(op)
            if reason:
                return Refusal(reason)
        return KEEP

    return plan


def _register(op_types, *indices, when=None, doc="m = ∂out/∂in (linear)"):
    for op_type in op_types:
        register_rule(op_type, "linear", plan=linear_in(*indices, when=when), doc=doc)


# Linear in every input.
_register(
    [
        "Identity", "EnsureShape", "CheckNumerics",
        "AddV2", "Add", "Sub", "Neg", "AddN", "BiasAdd", "BiasAddV1",
        "ConcatV2", "Pack", "Unpack", "Tile", "BroadcastTo",
        "AvgPool", "AvgPool3D",
    ]
)
# Linear in the data input; the others are shapes, axes, paddings or indices.
_register(
    [
        "Reshape", "ExpandDims", "Squeeze", "Transpose", "Slice", "StridedSlice",
        "Pad", "MirrorPad", "ReverseV2", "DepthToSpace", "SpaceToDepth",
        "ResizeNearestNeighbor", "ResizeBilinear", "ExtractImagePatches",
        "ExtractVolumePatches", "Gather", "GatherV2", "GatherNd",
    ],
    0,
)


# Linear in the data input, along axes other than the batch axis.
_register(["Sum", "Mean", "Cumsum"], 0, when=batch_axis_refusal)
_register(["PadV2"], 0, 2)
_register(["Split"], 1)


def _roll_refusal(op: tf.Operation) -> str | None:
    """Why a Roll cannot be treated pair by pair: it rolls along the batch axis (or its axes are not static)."""
    axes, rank = tf.get_static_value(op.inputs[2]), op.inputs[0].shape.rank
    if axes is None or rank is None:
        return "its axes or its input rank are not known when tracing"
    if 0 in {int(a) % rank for a in np.atleast_1d(axes)}:
        return "it rolls along the batch axis, which mixes samples with references"
    return None


# tf.roll moves values: linear in its input; the shift and the axes must not vary.
_register(["Roll"], 0, when=_roll_refusal)


def _innermost(n: int):
    """Refuse a transform of the innermost ``n`` axes where they include the batch axis."""

    def refusal(op: tf.Operation) -> str | None:
        rank = op.inputs[0].shape.rank
        if rank is None:
            return "its input rank is not known when tracing"
        return f"it transforms the innermost {n} axes, which include the batch axis" if rank <= n else None

    return refusal


# Complex numbers and Fourier transforms are linear over the reals (FNet: Re(FFT2D(x + 0i))).
_register(["Complex", "Real", "Imag"])
for _n, _op_types in ((1, ["FFT", "IFFT", "RFFT", "IRFFT"]), (2, ["FFT2D", "IFFT2D"]), (3, ["FFT3D", "IFFT3D"])):
    _register(_op_types, 0, when=_innermost(_n))  # RFFT, IRFFT: the FFT length must not vary
# Scatters into a tensor at indices that do not vary: linear in the tensor and the updates.
_register(["TensorScatterUpdate", "TensorScatterAdd"], 0, 2)

#: What may run between SpaceToBatchND and BatchToSpaceND: a convolution, linear in its input and row by row.
_ATROUS_INNER = {"Conv2D", "DepthwiseConv2dNative"}


def _space_to_batch_refusal(op: tf.Operation) -> str | None:
    """Why a SpaceToBatchND is not the front of a dilated convolution that BatchToSpaceND undoes."""
    for conv in op.outputs[0].consumers():
        if conv.type not in _ATROUS_INNER or any(c.type != "BatchToSpaceND" for c in conv.outputs[0].consumers()):
            return (f"it moves blocks of pixels into the batch axis, and its output goes to {conv.type}, not only to "
                    "a convolution whose output goes back through BatchToSpaceND")
    return None


def _batch_to_space_refusal(op: tf.Operation) -> str | None:
    """Why a BatchToSpaceND is not the back of a dilated convolution (SpaceToBatchND, convolution, BatchToSpaceND)."""
    conv = op.inputs[0].op
    if conv.type not in _ATROUS_INNER or conv.inputs[0].op.type != "SpaceToBatchND":
        return "it moves rows of the batch axis into pixels, and its input is not a convolution of a SpaceToBatchND"
    return None


# TensorFlow's dilated convolution: SpaceToBatchND, a convolution, BatchToSpaceND. Between them the batch axis
# holds blocks of every row, so only a linear convolution may run there (no rule pairs rows).
_register(["SpaceToBatchND"], 0, when=_space_to_batch_refusal)
_register(["BatchToSpaceND"], 0, when=_batch_to_space_refusal)
_register(["SplitV"], 0)
# Linear in one operand while the other is constant (weights).
_register(["Conv2D", "Conv3D", "DepthwiseConv2dNative"], 0, doc="m = ∂out/∂input (constant filter)")
_register(["Conv2DBackpropInput", "Conv3DBackpropInputV2"], 2, doc="m = ∂out/∂input (transposed convolution)")


def _pass_through(op: tf.Operation, *grads):
    """m = 1 for every input: the forward value is the identity."""
    return list(grads)


# tf.custom_gradient wraps its forward ops in an IdentityN whose gradient skips them; the
# forward ops carry the rules, so the gradient must flow through the IdentityN unchanged.
# stop_gradient is the identity in the forward function that is being explained. Snapshot
# is the identity too, and TensorFlow registers no gradient for it.
for _op_type in ("IdentityN", "StopGradient", "PreventGradient", "Snapshot"):
    register_rule(_op_type, "linear", gradient=_pass_through, doc="m = 1 (identity in the forward pass)")
