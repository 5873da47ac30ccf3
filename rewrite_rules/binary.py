"""Binary elementwise ops with both operands varying: the two-player Shapley rule.

``φa = ½[g(a, rb) − g(ra, rb)] + ½[g(a, b) − g(ra, b)]``, ``φb`` symmetric, ``m = φ / Δ``; then
``φa + φb = g(a, b) − g(ra, rb)`` exactly. A constant operand is its own reference, which
reduces the rule to rescale in the other operand. Broadcasting is undone in one place.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.graph import reapply
from tfshap.pair import cached_multipliers, close, derivative, halves, on_foreground, operand_halves, ratio, unbroadcast, varying_inputs
from tfshap.registry import KEEP, gradient_name, register_gradient, register_rule


def _gradient(multipliers):
    """The gradient function of a binary rule: ``on_foreground(m) · grad`` per varying operand, un-broadcast."""
    cached = cached_multipliers(lambda op: [None if m is None else on_foreground(m) for m in multipliers(op)])

    def gradient(op: tf.Operation, grad: tf.Tensor):
        return [
            None if m is None else unbroadcast(m * grad, tf.shape(op.inputs[index]))
            for index, m in enumerate(cached(op))
        ]

    gradient.__doc__ = multipliers.__doc__
    return gradient


def shapley(op: tf.Operation):
    """φa = ½[g(a, rb) − g(ra, rb)] + ½[g(a, b) − g(ra, b)]; m = φ / Δ; slope at the midpoint where Δ ≈ 0."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    g = lambda p, q: reapply(op, p, q)  # noqa: E731
    g_ab, g_rr = halves(op.outputs[0])
    g_a_rb, g_ra_b = g(a, rb), g(ra, b)
    shape = tf.shape(g_ab)
    m_a = m_b = None
    if va:
        phi_a = 0.5 * (g_a_rb - g_rr) + 0.5 * (g_ab - g_ra_b)
        mid = tf.broadcast_to((a + ra) / 2, shape)
        slope = 0.5 * (derivative(g, mid, rb) + derivative(g, mid, b))
        m_a = ratio(phi_a, tf.broadcast_to(a - ra, shape), tf.broadcast_to(close(a, ra), shape), slope)
    if vb:
        phi_b = 0.5 * (g_ra_b - g_rr) + 0.5 * (g_ab - g_a_rb)
        mid = tf.broadcast_to((b + rb) / 2, shape)
        slope = 0.5 * (derivative(g, ra, mid, wrt=1) + derivative(g, a, mid, wrt=1))
        m_b = ratio(phi_b, tf.broadcast_to(b - rb, shape), tf.broadcast_to(close(b, rb), shape), slope)
    return m_a, m_b


def mul(op: tf.Operation):
    """ma = (b + rb) / 2, mb = (a + ra) / 2 (Shapley for a product, exact)."""
    a, ra = halves(op.inputs[0])
    b, rb = halves(op.inputs[1])
    full = tf.shape(halves(op.outputs[0])[0])
    return tf.broadcast_to((b + rb) / 2, full), tf.broadcast_to((a + ra) / 2, full)


def real_div(op: tf.Operation):
    """ma = ½(1/b + 1/rb), mb = −((a + ra) / 2) / (b · rb) (Shapley for a quotient, exact)."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    full = tf.shape(halves(op.outputs[0])[0])
    m_a = tf.broadcast_to(0.5 * (1 / b + 1 / rb), full) if va else None
    m_b = tf.broadcast_to(-((a + ra) / 2) / (b * rb), full) if vb else None
    return m_a, m_b


def squared_difference(op: tf.Operation):
    """ma = −mb = (a + ra) − (b + rb) (Shapley for (a − b)², exact: Δ(a − b)² = (Δa − Δb)·((a − b) + (ra − rb)))."""
    va, vb = varying_inputs(op)
    a, ra = operand_halves(op, 0)
    b, rb = operand_halves(op, 1)
    m = tf.broadcast_to((a + ra) - (b + rb), tf.shape(halves(op.outputs[0])[0]))
    return (m if va else None), (-m if vb else None)


def _plan(gradient_name: str, linear_when: str):
    """Keep TensorFlow's gradient when only the operands the op is linear in vary."""

    def plan(op: tf.Operation, varying: tuple[bool, ...]):
        va, vb = varying
        if linear_when == "one" and va != vb:
            return KEEP
        if linear_when == "numerator" and va and not vb:
            return KEEP
        return gradient_name

    return plan


def _register(op_type: str, multipliers, linear_when: str = "never"):
    name = register_gradient(gradient_name("shapley", op_type), _gradient(multipliers))
    register_rule(op_type, "shapley", plan=_plan(name, linear_when), doc=multipliers.__doc__.strip())


_register("Mul", mul, linear_when="one")
_register("RealDiv", real_div, linear_when="numerator")
_register("Div", real_div, linear_when="numerator")
_register("DivNoNan", shapley, linear_when="numerator")
_register("SquaredDifference", squared_difference)
for _op_type in ("Maximum", "Minimum", "Pow", "Atan2"):
    _register(_op_type, shapley)
