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

from tfshap.batch_axis import reading_refusal
from tfshap.graph import ONE, leading_shape, monomial_product, reshape_dims
from tfshap.pair import cached_multipliers, halves, on_foreground, secant
from tfshap.registry import ANY_ROWS, APPLY, KEEP, Refusal, rule

FUSED_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")

# ---------------------------------------------------------------------------------------
# the layout: a static proof that every channel lies within one sample


def _producer(t: tf.Tensor) -> tf.Operation:
    while t.op.type == "Identity":
        t = t.op.inputs[0]
    return t.op


def _layer_norm_layout_refusal(op: tf.Operation) -> str | None:
    """Why a training-mode fused batch norm may mix samples, or None when each channel is in one sample."""
    mixes = f"{op.type} computes its own moments (is_training=True) over N, H and W"
    if op.get_attr("data_format") != b"NCHW" or op.inputs[0].shape.rank != 4:
        return (f"{mixes} of a {op.get_attr('data_format').decode()} tensor, "
                "which reduces its batch axis and mixes samples")
    reshape = _producer(op.inputs[0])
    if reshape.type != "Reshape":
        return f"{mixes}, and its input is not a reshape of a batch-major tensor, so N mixes samples"
    unreadable = reading_refusal(reshape.inputs[0], "tensor", leading=True)
    if unreadable:
        return f"{mixes} of a reshape whose {unreadable.removeprefix('its input ')}"
    dims = reshape_dims(reshape)
    if dims is None or len(dims) != 4:
        return f"{mixes}, and the shape of its input cannot be proved per sample when tracing"
    (n, n_power), _, (h, h_power), (w, w_power) = dims
    per_sample = monomial_product(leading_shape(reshape.inputs[0])[1:])[0]
    if (n, n_power) != ONE or h_power or w_power or h * w <= 0 or per_sample % (h * w):
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
    m_s = secant(sx - sr, ux, ur, -0.5 * tf.math.rsqrt((ux + ur) / 2) ** 3, tf.maximum(tf.abs(sx), tf.abs(sr)))
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


@rule(*FUSED_BATCH_NORMS, family="normalization", plan=plan, rows=ANY_ROWS)  # the plan proves its own layout
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
