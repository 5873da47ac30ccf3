"""Helpers shared by the rules: every op sees a paired batch, foreground rows then reference rows.

A rule computes multipliers ``m`` on the halves and returns ``both(m) * grad``, so the
foreground half of the gradient is the DeepLIFT multiplier times the upstream multiplier.
"""

from __future__ import annotations

import weakref

import tensorflow as tf

from . import _tf_private

VARYING_ATTR = "_tfshap_varying"

#: ``|x - r|`` below this many ulps of ``max(|x|, |r|, 1)`` counts as no difference: the
#: ratio ``Δf / Δx`` would be rounding noise, so the derivative at the midpoint is used.
_CLOSE_ULPS = 32


def halves(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Split a paired tensor into its foreground and reference halves."""
    n = tf.shape(t)[0] // 2
    return t[:n], t[n:]


def both(m: tf.Tensor) -> tf.Tensor:
    """The same multiplier for both halves of the pair."""
    return tf.concat([m, m], 0)


def mark_varying(op: tf.Operation, varying: tuple[bool, ...]) -> None:
    _tf_private.set_string_attr(op, VARYING_ATTR, "".join("1" if v else "0" for v in varying))


def varying_inputs(op: tf.Operation) -> tuple[bool, ...]:
    """Which inputs of ``op`` vary with the explained inputs, as decided at compile time."""
    flags = _tf_private.get_string_attr(op, VARYING_ATTR)
    if flags is None:
        raise RuntimeError(f"op {op.name} was not prepared by the tfshap rewrite")
    return tuple(c == "1" for c in flags)


def operand_halves(op: tf.Operation, index: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Foreground and reference values of input ``index``; a constant input is its own reference."""
    t = op.inputs[index]
    return halves(t) if varying_inputs(op)[index] else (t, t)


def close(x: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    """Where ``x`` and ``r`` are equal up to rounding."""
    eps = _CLOSE_ULPS * _eps(x.dtype)
    scale = tf.maximum(tf.maximum(tf.abs(x), tf.abs(r)), tf.ones_like(x))
    return tf.abs(x - r) <= eps * scale


def _eps(dtype: tf.DType) -> float:
    import ml_dtypes  # a TensorFlow dependency; its finfo knows bfloat16, which numpy's does not

    return float(ml_dtypes.finfo(dtype.as_numpy_dtype).eps)


def ratio(numerator: tf.Tensor, delta: tf.Tensor, is_close: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    """``numerator / delta``, or ``fallback`` where ``is_close`` (no 0/0 enters the graph)."""
    safe = tf.where(is_close, tf.ones_like(delta), delta)
    return tf.where(is_close, fallback, numerator / safe)


def derivative(fn, *args: tf.Tensor, wrt: int = 0) -> tf.Tensor:
    """The elementwise derivative of ``fn(*args)`` with respect to ``args[wrt]``."""
    at = args[wrt]
    with tf.GradientTape() as tape:
        tape.watch(at)
        y = fn(*args)
    d = tape.gradient(y, at, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return d


def unbroadcast(grad: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    grad_shape = tf.shape(grad)
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=grad_shape, s1=shape)
    return tf.reshape(tf.reduce_sum(grad, axis=axes), shape)


def cached_multipliers(compute):
    """Compute a rule's multipliers once per op and graph, not once per backward pass.

    The multipliers depend only on the forward values, so every ``tf.gradients`` call in the
    same graph (one per explained output) reuses them. Inside a loop's gradient each body
    gets a graph of its own, and so a cache of its own.
    """

    caches = weakref.WeakKeyDictionary()  # graph being built -> {op name: multipliers}

    def cached(op: tf.Operation):
        cache = caches.setdefault(tf.compat.v1.get_default_graph(), {})
        key = (id(op.graph), op.name)
        if key not in cache:
            cache[key] = compute(op)
        return cache[key]

    return cached
