"""Softmax and log-softmax, decomposed exactly.

With ``c`` the larger of the two rows' maxima (the same shift for ``x`` and ``r``, so it is a
constant of the pair and carries no credit): ``e = exp(z − c)`` (rescale), ``s = Σ e``
(linear), ``p = e / s`` (Shapley for a quotient), ``log p = z − c − log s`` (rescale on log).
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.pair import close, halves, ratio
from tfshap.registry import register_rule


def _shifted_exp(op: tf.Operation):
    """e = exp(z − c) for both halves, with the rescale multiplier m_e of z → e."""
    x, r = halves(op.inputs[0])
    c = tf.stop_gradient(tf.maximum(tf.reduce_max(x, -1, keepdims=True), tf.reduce_max(r, -1, keepdims=True)))
    ex, er = tf.exp(x - c), tf.exp(r - c)
    m_e = ratio(ex - er, x - r, close(x, r), tf.exp((x + r) / 2 - c))
    return ex, er, m_e


def softmax(op: tf.Operation, grad: tf.Tensor):
    """p = e / s: m_z = m_e · (g · ½(1/sx + 1/sr) − Σ g · ē / (sx · sr))."""
    ex, er, m_e = _shifted_exp(op)
    sx, sr = tf.reduce_sum(ex, -1, keepdims=True), tf.reduce_sum(er, -1, keepdims=True)
    m_numerator = 0.5 * (1 / sx + 1 / sr)
    m_denominator = -((ex + er) / 2) / (sx * sr)

    def back(g):
        return m_e * (g * m_numerator + tf.reduce_sum(g * m_denominator, -1, keepdims=True))

    gx, gr = halves(grad)
    return [tf.concat([back(gx), back(gr)], 0)]


def log_softmax(op: tf.Operation, grad: tf.Tensor):
    """log p = z − c − log s: m_z = g − m_e · m_log · Σ g, m_log = Δlog s / Δs."""
    ex, er, m_e = _shifted_exp(op)
    sx, sr = tf.reduce_sum(ex, -1, keepdims=True), tf.reduce_sum(er, -1, keepdims=True)
    m_log = ratio(tf.math.log(sx) - tf.math.log(sr), sx - sr, close(sx, sr), 2 / (sx + sr))

    def back(g):
        return g - m_e * m_log * tf.reduce_sum(g, -1, keepdims=True)

    gx, gr = halves(grad)
    return [tf.concat([back(gx), back(gr)], 0)]


register_rule("Softmax", "softmax", gradient=softmax)
register_rule("LogSoftmax", "softmax", gradient=log_softmax)
