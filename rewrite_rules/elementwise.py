"""Unary elementwise nonlinearities: the rescale rule.

``m = (f(x) - f(r)) / (x - r)``, and ``f'((x + r) / 2)`` where that gives the same ``Δf`` to
rounding (:func:`tfshap.pair.secant`), so that ``m · Δx = Δf`` exactly and ``x == r`` gives the
true gradient.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.graph import reapply
from tfshap.pair import derivative, halves, secant
from tfshap.registry import unary

RESCALE_OPS = (
    # Keras activations (Relu: its own, cheaper form below)
    "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign",
    # elementwise math they and common models lower to
    "Exp", "Expm1", "Log", "Log1p", "Sqrt", "Rsqrt", "Square", "Abs", "Erf", "Erfc",
    "Reciprocal", "Inv", "Sin", "Cos", "Tan", "Atan", "Asinh", "Sinh", "Cosh",
    "Sign", "Floor", "Ceil", "Round",
)


@unary(*RESCALE_OPS, family="elementwise")
def rescale(op: tf.Operation) -> tf.Tensor:
    """m = (f(x) - f(r)) / (x - r); f'((x + r) / 2) where x ≈ r (or Δf below f's rounding either way)."""
    x, r = halves(op.inputs[0])
    fx, fr = halves(op.outputs[0])
    slope_at_midpoint = derivative(lambda t: reapply(op, t), (x + r) / 2)
    return secant(fx - fr, x, r, slope_at_midpoint, tf.maximum(tf.abs(fx), tf.abs(fr)))


@unary("Relu", family="elementwise")
def relu(op: tf.Operation) -> tf.Tensor:
    """m = (relu(x) − relu(r)) / (x − r): 1 or 0 exactly where x and r share a sign; x == r: 1 where x > 0.

    The rescale rule without its closeness test: where both are positive the quotient is
    (x − r) / (x − r) = 1, where neither is it is 0, and where they straddle 0 it is x / (x − r)
    with no cancellation, so no Δx is too small to divide by except 0 itself.
    """
    x, r = halves(op.inputs[0])
    fx, fr = halves(op.outputs[0])
    delta = x - r
    at_x = tf.cast(tf.equal(delta, 0), x.dtype) * tf.cast(x > 0, x.dtype)  # the true gradient where x == r
    return tf.math.divide_no_nan(fx - fr, delta) + at_x
