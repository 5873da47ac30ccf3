"""Fused batch norm: linear with inference statistics; layer norm when it computes its own moments.

With ``is_training=False`` the op is ``scale · (x − mean) / sqrt(var + eps) + offset`` with
constant statistics: linear. With ``is_training=True`` it normalises every channel by that
channel's own moments over N, H and W. tf_keras ``LayerNormalization`` (float32 or half,
trailing axes) relies on that: it reshapes its input to NCHW ``[1, rows · positions,
features, 1]``, so that every channel is one position of one sample. Then the op is exactly
the decomposition the other Kerases build from Mean, SquaredDifference, Rsqrt and Mul, and
the rule gives the multipliers of that composition of exact rules, per channel:

* ``μ = mean(x)``, ``d = x − μ`` (linear);
* ``v = mean(d²)`` (``d²`` by rescale: ``m = dx + dr = 2·d̄``);
* ``s = rsqrt(v + eps)`` (rescale: ``m_s = Δs / Δv``);
* ``y = d · s`` (two-player: ``m_d = s̄``, ``m_s = d̄``), then the uniform scale and offset.

Any other use reduces the batch axis, mixing a sample's rows with other samples and
references, and is refused. The plan proves the layer-norm layout at compile time: the
input is a reshape of a batch-major tensor, N is 1, and H·W divides one sample's size,
so that no channel straddles two samples.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfshap.pair import cached_multipliers, close, halves, on_foreground, ratio
from tfshap.registry import APPLY, KEEP, Refusal, rule

FUSED_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")

# ---------------------------------------------------------------------------------------
# the layout: a static proof that every channel lies within one sample

#: ``c · B**p``: a dimension in terms of the paired batch size ``B``, unknown when tracing.
Monomial = tuple[int, int]


def _symbolic_shape_value(t: tf.Tensor, depth: int = 0) -> list[Monomial] | None:
    """The value of a small int32/int64 vector (or scalar, as one item) in terms of ``B``.

    Follows the ops Keras builds shapes from: Shape (axis 0 unknown is ``B``), constants,
    StridedSlice, Prod, Mul, Pack, ConcatV2, Cast, Identity. None for anything else.
    """
    static = tf.get_static_value(t)
    if static is not None:
        return [(int(v), 0) for v in np.ravel(static)]
    op = t.op
    if op.type == "Shape":
        return _shape_of(op.inputs[0])
    if depth > 16 or op.type not in _SHAPE_ARITHMETIC:
        return None
    inner = [_symbolic_shape_value(i, depth + 1) for i in op.inputs]
    if any(v is None for v in inner[: _SHAPE_ARITHMETIC[op.type]]):
        return None
    return _shape_arithmetic(op, inner)


#: The shape arithmetic that is followed, and how many leading inputs must be known (-1: all but the last).
_SHAPE_ARITHMETIC = {"Cast": 1, "Identity": 1, "Pack": None, "ConcatV2": -1, "Prod": 1, "Mul": 2, "StridedSlice": 1}


def _shape_arithmetic(op: tf.Operation, inner: list) -> list[Monomial] | None:
    if op.type in ("Cast", "Identity"):
        return inner[0]
    if op.type == "Pack":
        return [v[0] for v in inner] if op.get_attr("axis") == 0 and all(len(v) == 1 for v in inner) else None
    if op.type == "ConcatV2":
        return [m for v in inner[:-1] for m in v]
    if op.type == "Prod":
        return None if op.get_attr("keep_dims") else [_product(inner[0])]
    if op.type == "Mul":
        short, other = sorted(inner, key=len)
        return [_product([short[0], m]) for m in other] if len(short) == 1 else None
    return _strided_slice(op, inner[0])


def _shape_of(t: tf.Tensor) -> list[Monomial] | None:
    dims = t.shape.as_list() if t.shape.rank is not None else None
    if dims is None or None in dims[1:]:
        return None
    return [(1, 1) if d is None else (d, 0) for d in dims]


def _product(items: list[Monomial]) -> Monomial:
    return int(np.prod([c for c, _ in items], dtype=np.int64)), sum(p for _, p in items)


def _strided_slice(op: tf.Operation, vector: list[Monomial]) -> list[Monomial] | None:
    begin, end, strides = (tf.get_static_value(i) for i in op.inputs[1:])
    masks = {name: op.get_attr(name) for name in ("begin_mask", "end_mask", "shrink_axis_mask", "ellipsis_mask", "new_axis_mask")}
    if any(v is None for v in (begin, end, strides)) or len(begin) != 1 or masks["ellipsis_mask"] or masks["new_axis_mask"]:
        return None
    start = None if masks["begin_mask"] & 1 else int(begin[0])
    if masks["shrink_axis_mask"] & 1:
        return [vector[start]] if start is not None and -len(vector) <= start < len(vector) else None
    stop = None if masks["end_mask"] & 1 else int(end[0])
    return vector[start:stop:int(strides[0])]


def _reshape_dims(reshape: tf.Operation) -> list[Monomial] | None:
    """The target shape of a Reshape in terms of ``B``, a ``-1`` resolved; None if unknown."""
    dims = _symbolic_shape_value(reshape.inputs[1])
    source = _shape_of(reshape.inputs[0])
    if dims is None or source is None:
        return None
    unknown = [i for i, (c, _) in enumerate(dims) if c == -1]
    if len(unknown) > 1:
        return None
    if unknown:
        (total_c, total_p), (known_c, known_p) = _product(source), _product([m for m in dims if m[0] != -1])
        if known_c == 0 or total_c % known_c or total_p < known_p:
            return None
        dims[unknown[0]] = (total_c // known_c, total_p - known_p)
    return dims


def _producer(t: tf.Tensor) -> tf.Operation:
    while t.op.type == "Identity":
        t = t.op.inputs[0]
    return t.op


def _layer_norm_layout_refusal(op: tf.Operation) -> str | None:
    """Why a training-mode fused batch norm may mix samples, or None when each channel is in one sample."""
    mixes = f"{op.type} computes its own moments (is_training=True) over N, H and W"
    if op.get_attr("data_format") != b"NCHW" or op.inputs[0].shape.rank != 4:
        return f"{mixes} of a {op.get_attr('data_format').decode()} tensor, which reduces its batch axis and mixes samples"
    reshape = _producer(op.inputs[0])
    if reshape.type != "Reshape":
        return f"{mixes}, and its input is not a reshape of a batch-major tensor, so N mixes samples"
    dims = _reshape_dims(reshape)
    if dims is None or len(dims) != 4:
        return f"{mixes}, and the shape of its input cannot be proved per sample when tracing"
    (n, n_power), _, (h, h_power), (w, w_power) = dims
    per_sample = _product(_shape_of(reshape.inputs[0])[1:])[0]
    if (n, n_power) != (1, 0) or h_power or w_power or h * w <= 0 or per_sample % (h * w):
        return f"{mixes} of a reshape whose channels straddle samples, which mixes them"
    return None


def _uniform_value(t: tf.Tensor) -> float | None:
    """The value of a constant tensor whose entries are all equal (``Fill``, or a constant), else None."""
    static = tf.get_static_value(t)
    if static is None and t.op.type == "Fill":
        static = tf.get_static_value(t.op.inputs[1])
    if static is None or np.size(static) == 0 or not np.all(np.asarray(static) == np.ravel(static)[0]):
        return None
    return float(np.ravel(static)[0])


# ---------------------------------------------------------------------------------------
# the multipliers


def _channels(t: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """An NCHW tensor with N = 1 as ``[C, H·W]``, one channel a row, in ``dtype``."""
    return tf.cast(tf.reshape(t, [tf.shape(t)[1], -1]), dtype)


def _statistics(x: tf.Tensor, eps: float):
    """Per row: d = x − mean(x), v = mean(d²) and s = rsqrt(v + eps)."""
    d = x - tf.reduce_mean(x, -1, keepdims=True)
    v = tf.reduce_mean(tf.square(d), -1, keepdims=True)
    return d, v, tf.math.rsqrt(v + eps)


@cached_multipliers
def _layer_norm_multipliers(op: tf.Operation):
    """Paired d̄, s̄ and m_s = Δs / Δv; each row of the batch is a run of channels (see the plan)."""
    eps = op.get_attr("epsilon")
    x, r = halves(_channels(op.inputs[0], tf.float32 if op.inputs[0].dtype.size < 4 else op.inputs[0].dtype))
    dx, vx, sx = _statistics(x, eps)
    dr, vr, sr = _statistics(r, eps)
    ux, ur = vx + eps, vr + eps
    m_s = ratio(sx - sr, ux - ur, close(ux, ur), -0.5 * tf.math.rsqrt((ux + ur) / 2) ** 3)
    return on_foreground((dx + dr) / 2), on_foreground((sx + sr) / 2), on_foreground(m_s)


# ---------------------------------------------------------------------------------------
# the plan


def plan(op: tf.Operation, varying: tuple[bool, ...]):
    """KEEP with inference statistics (linear); the layer-norm rule where each channel lies in one sample."""
    if any(varying[1:]):
        return Refusal(
            f"its scale, offset, mean or variance varies with the explained inputs, and {op.type} is not linear in them"
        )
    if not op.get_attr("is_training"):
        return KEEP
    reason = _layer_norm_layout_refusal(op)
    if reason:
        return Refusal(reason)
    if any(t.consumers() for t in op.outputs[1:]):
        return Refusal(f"{op.type} (is_training=True) has its batch moments used, which describe many samples")
    if _uniform_value(op.inputs[1]) is None or _uniform_value(op.inputs[2]) is None:
        return Refusal(f"{op.type} (is_training=True) has a scale or offset that is not the same for every channel")
    return APPLY


@rule(*FUSED_BATCH_NORMS, family="normalization", plan=plan)
def layer_norm(op: tf.Operation, grad: tf.Tensor, *unused_grads):
    """inference statistics: m = scale / sqrt(var + eps) (linear); is_training, moments per sample:
    per channel d = x − μ, v = mean(d²), s = rsqrt(v + eps), y = d·s:
    g_d = g·s̄ + (2d̄/n)·m_s·Σ g·d̄, g_x = g_d − mean(g_d)"""
    d_mid, s_mid, m_s = _layer_norm_multipliers(op)
    g = _channels(grad, d_mid.dtype) * _uniform_value(op.inputs[1])
    n = tf.cast(tf.shape(g)[-1], g.dtype)
    through_v = tf.reduce_sum(g * d_mid, -1, keepdims=True) * m_s  # y = d·s → s → v
    g_d = g * s_mid + 2 * d_mid * through_v / n  # y = d·s → d, and v = mean(d²) → d
    g_x = g_d - tf.reduce_mean(g_d, -1, keepdims=True)  # d = x − mean(x)
    return [tf.cast(tf.reshape(g_x, tf.shape(grad)), grad.dtype)] + [None] * (len(op.inputs) - 1)
