"""Binary elementwise ops with both operands varying: the two-player Shapley rule.

``φa = ½[g(a, rb) − g(ra, rb)] + ½[g(a, b) − g(ra, b)]``, ``φb`` symmetric, ``m = φ / Δ``; then
``φa + φb = g(a, b) − g(ra, rb)`` exactly. A constant operand is its own reference, which
reduces the rule to rescale in the other operand. Broadcasting is undone in one place.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.graph import reapply
from tfshap.pair import derivative, halves, operand_halves, secant, varying_inputs
from tfshap.registry import two_operand


@two_operand("Maximum", "Minimum", "Pow", "Atan2", family="binary")
@two_operand("DivNoNan", family="binary", linear_when="numerator")
def shapley(op: tf.Operation):
    """φa = ½[g(a, rb) − g(ra, rb)] + ½[g(a, b) − g(ra, b)]; m = φ / Δ; slope at the midpoint where Δ ≈ 0 (or φ is
    below g's rounding either way)."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    g = lambda p, q: reapply(op, p, q)  # noqa: E731
    g_ab, g_rr = halves(op.outputs[0])
    g_a_rb, g_ra_b = g(a, rb), g(ra, b)
    shape = tf.shape(g_ab)
    scale = tf.reduce_max(tf.abs(tf.stack([g_ab, g_rr, g_a_rb, g_ra_b])), 0)  # the rounding of g
    m_a = m_b = None
    if va:
        phi_a = 0.5 * (g_a_rb - g_rr) + 0.5 * (g_ab - g_ra_b)
        mid = tf.broadcast_to((a + ra) / 2, shape)
        slope = 0.5 * (derivative(g, mid, rb) + derivative(g, mid, b))
        m_a = secant(phi_a, tf.broadcast_to(a, shape), tf.broadcast_to(ra, shape), slope, scale)
    if vb:
        phi_b = 0.5 * (g_ra_b - g_rr) + 0.5 * (g_ab - g_a_rb)
        mid = tf.broadcast_to((b + rb) / 2, shape)
        slope = 0.5 * (derivative(g, ra, mid, wrt=1) + derivative(g, a, mid, wrt=1))
        m_b = secant(phi_b, tf.broadcast_to(b, shape), tf.broadcast_to(rb, shape), slope, scale)
    return m_a, m_b


@two_operand("Mul", family="binary", linear_when="one")
def mul(op: tf.Operation):
    """ma = (b + rb) / 2, mb = (a + ra) / 2 (Shapley for a product, exact)."""
    a, ra = halves(op.inputs[0])
    b, rb = halves(op.inputs[1])
    full = tf.shape(halves(op.outputs[0])[0])
    return tf.broadcast_to((b + rb) / 2, full), tf.broadcast_to((a + ra) / 2, full)


@two_operand("RealDiv", "Div", family="binary", linear_when="numerator")
def real_div(op: tf.Operation):
    """ma = ½(1/b + 1/rb), mb = −((a + ra) / 2) / (b · rb) (Shapley for a quotient, exact)."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    full = tf.shape(halves(op.outputs[0])[0])
    m_a = tf.broadcast_to(0.5 * (1 / b + 1 / rb), full) if va else None
    m_b = tf.broadcast_to(-((a + ra) / 2) / (b * rb), full) if vb else None
    return m_a, m_b


@two_operand("SquaredDifference", family="binary")
def squared_difference(op: tf.Operation):
    """ma = −mb = (a + ra) − (b + rb) (Shapley for (a − b)², exact:
    Δ(a − b)² = (Δa − Δb)·((a − b) + (ra − rb)))."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    m = tf.broadcast_to((a + ra) - (b + rb), tf.shape(halves(op.outputs[0])[0]))
    return (m if va else None), (-m if vb else None)
