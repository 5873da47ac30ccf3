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
    # Keras activations
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign",
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
