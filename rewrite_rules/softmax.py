"""Softmax and log-softmax, decomposed exactly and without cancellation.

With ``c`` the larger of the two rows' maxima (the same shift for ``x`` and ``r``, a constant
of the pair that carries no credit): ``e = exp(z − c)`` (rescale), ``s = Σ e`` (linear),
``log p = z − c − log s`` (rescale on log), and ``p = exp(log p)`` (rescale on exp). Going
through ``log p`` keeps every multiplier bounded; the quotient ``e / s`` would split
``Δp`` into two terms of size ``e^(max x − max r)`` that cancel.

Both ops ignore a common shift of the logits, ``softmax(z) = softmax(z − mean(z))``, and so
do their rules: they are the rules of that composition, the logits first centred (each row
on its own mean, a linear step) and the multipliers above computed at the centred logits.
Then the multipliers of each output sum to zero over the logits, and an input that moves
every logit by the same amount gets exactly nothing (Shapley's null player), while
``Σ m · Δz = Δ(output)`` still holds exactly.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.pair import cached_multipliers, close, halves, on_foreground, ratio
from tfshap.registry import rule


@cached_multipliers
def _multipliers(op: tf.Operation):
    """Paired m_e, m_log, and for Softmax m_p (log p → p), at the centred logits."""
    x, r = (t - tf.reduce_mean(t, -1, keepdims=True) for t in halves(op.inputs[0]))
    m_e, m_log, c, log_sx, log_sr = _log_normaliser_multipliers(x, r)
    if op.type == "LogSoftmax":
        return on_foreground(m_e), on_foreground(m_log), None
    lx, lr = x - c - log_sx, r - c - log_sr
    px, pr = halves(op.outputs[0])
    m_p = ratio(px - pr, lx - lr, close(lx, lr), tf.exp((lx + lr) / 2))
    return on_foreground(m_e), on_foreground(m_log), on_foreground(m_p)


def _log_normaliser_multipliers(x: tf.Tensor, r: tf.Tensor):
    """m_e (z → e = exp(z − c)) and m_log (s → log s), and log s for both rows."""
    c = tf.stop_gradient(tf.maximum(tf.reduce_max(x, -1, keepdims=True), tf.reduce_max(r, -1, keepdims=True)))
    ex, er = tf.exp(x - c), tf.exp(r - c)
    m_e = ratio(ex - er, x - r, close(x, r), tf.exp((x + r) / 2 - c))
    # log s from each row's own logsumexp: finite even where exp(z − c) underflows.
    log_sx = tf.reduce_logsumexp(x, -1, keepdims=True) - c
    log_sr = tf.reduce_logsumexp(r, -1, keepdims=True) - c
    sx, sr = tf.exp(log_sx), tf.exp(log_sr)
    m_log = ratio(log_sx - log_sr, sx - sr, close(sx, sr), 2 / (sx + sr))
    return m_e, m_log, c, log_sx, log_sr


def _through_log_normaliser(h: tf.Tensor, m_e: tf.Tensor, m_log: tf.Tensor) -> tf.Tensor:
    """Multipliers of z for log p = z̃ − c − log s, z̃ = z − mean(z), given the multipliers h of log p."""
    centred = h - m_e * m_log * tf.reduce_sum(h, -1, keepdims=True)
    return centred - tf.reduce_mean(centred, -1, keepdims=True)  # z̃ = z − mean(z) is linear


@rule("LogSoftmax", family="softmax")
def log_softmax(op: tf.Operation, grad: tf.Tensor):
    """log p = z̃ − c − log s, z̃ = z − mean(z): m_z̃ = g − m_e · m_log · Σ g, m_log = Δlog s / Δs;
    m_z = m_z̃ − mean(m_z̃)."""
    m_e, m_log, _ = _multipliers(op)
    return [_through_log_normaliser(grad, m_e, m_log)]


@rule("Softmax", family="softmax")
def softmax(op: tf.Operation, grad: tf.Tensor):
    """p = exp(log p): m_z̃ = h − m_e · m_log · Σ h with h = g · Δp / Δlog p; m_z = m_z̃ − mean(m_z̃)."""
    m_e, m_log, m_p = _multipliers(op)
    return [_through_log_normaliser(grad * m_p, m_e, m_log)]

