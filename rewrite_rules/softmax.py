"""Softmax and log-softmax, decomposed exactly and without cancellation.

**Default rules.** With ``c`` the larger of the two rows' maxima (the same shift for ``x`` and ``r``,
a constant of the pair that carries no credit): ``e = exp(z − c)`` (rescale), ``s = Σ e``
(linear), ``log p = z − c − log s`` (rescale on log), and ``p = exp(log p)`` (rescale on exp).
Going through ``log p`` keeps every multiplier bounded; the quotient ``e / s`` would split
``Δp`` into two terms of size ``e^(max x − max r)`` that cancel.

Both ops ignore a common shift of the logits, ``softmax(z) = softmax(z − w·z)`` for any weights
``w`` summing to 1, and so do their rules: they are the rules of that composition, the logits
first centred by ``z̃ = z − (w·z)·1`` (a linear step, with the same ``w`` for the sample's and the
reference's row: ``w ∝ (p(x) + p(r)) / 2`` over the logits with probability in both rows) and the
multipliers above computed at the centred logits, then taken through the centring:
``m_z = m_z̃ − w · Σ m_z̃``. So the multipliers of each output sum to zero over the logits, and an
input that moves every logit by the same amount gets exactly nothing (Shapley's null player),
while ``Σ m · Δz = Σ m_z̃ · Δz̃ = Δ(output)`` still holds exactly. A logit masked to −1e9 (Keras
masks attention so) has no probability, so ``w`` is 0 there: masked in both rows, it gets
nothing (a uniform mean would hand it ``−mean(m_z̃)``); masked in one row only, its huge
``Δz`` does not move the centred logits (it would take every digit of the others with it).

**The "shapley" rule set: 1-vs-rest.** Per output ``o`` there are two players, its own logit
``a = z_o − d_o`` and the log-sum of the rest ``b = log s_o``, ``s_o = Σ_{j≠o} exp(z_j − d_o)``;
``p_o = σ(a − b)`` (``log p_o = log σ(a − b)``). Their two-player Shapley split is

    φa = ½[g(ax − br) − g(ar − br)] + ½[g(ax − bx) − g(ar − bx)],
    φb = ½[g(ax − bx) − g(ax − br)] + ½[g(ar − bx) − g(ar − br)]      (φa + φb = Δ(output)),

with ``g = σ`` (log σ for LogSoftmax), and ``φb`` reaches the other logits through
``b = log s_o`` as in the default rule: ``M[o, o] = φa / Δa`` and
``M[o, j≠o] = (φb / Δb) · (Δb / Δs_o) · (Δe_j / Δz_j)``. ``φa / Δa`` and ``φb / Δb`` are sums of
divided differences of ``g``, each taken as ``g′`` at the midpoint where its two arguments agree
to rounding (so ``x == r`` gives the true gradient). The shift ``d_o`` is the largest logit
other than ``o`` over both rows (so one row has ``s_o ≥ 1`` and nothing overflows): the overall
maximum for every output but the one holding it, which takes the second largest. ``s_o`` is a
sum of the others where ``o`` is its row's largest (``S − e_o`` would cancel there), else
``S · (1 − p_o)`` with ``p_o ≤ ½``. The backward pass is O(C): with ``κ_o = g_o · (φb/Δb)_o ·
(Δb/Δs)_o`` (``g_o`` the incoming gradient) and ``o*`` the output holding the maximum,
``m_j = g_j · m_a,j + m_e,j · (Σ_{o≠o*} κ_o − κ_j [j≠o*]) + κ_{o*} · m_e2,j [j≠o*]`` (``m_e2`` at
the second shift); then through the centring as above. It is exact in
summation and keeps the null player; on the faithfulness benchmark it comes closer to exact
Shapley values than the default on most samples (BENCHMARKS.md).
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.pair import cached_multipliers, close, halves, on_foreground, ratio
from tfshap.registry import rule

#: The rule set of the 1-vs-rest softmax split (``tfshap.compile(..., rules="shapley")``).
SHAPLEY_RULES = "shapley"


def _centring_weights(op: tf.Operation) -> tf.Tensor:
    """``w ∝ (p(x) + p(r)) / 2`` over the logits with probability in both rows, summing to 1: the same
    weights for both rows of a pair, 0 wherever either row gives a logit no probability (a masked
    logit's exp underflows to exactly 0); over every logit where the rows share no support."""
    px, pr = halves(op.outputs[0])
    if op.type == "LogSoftmax":
        px, pr = tf.exp(px), tf.exp(pr)
    mean = (px + pr) / 2
    shared = tf.where((px > 0) & (pr > 0), mean, tf.zeros_like(mean))
    total = tf.reduce_sum(shared, -1, keepdims=True)
    some = total > tf.cast(1e-6, total.dtype)
    return tf.where(some, shared / tf.where(some, total, tf.ones_like(total)), mean)


def _centred_pair(op: tf.Operation) -> tuple[tf.Tensor, tf.Tensor]:
    """The logits of both rows centred with the pair's weights: ``z − (w·z)·1``."""
    x, r = halves(op.inputs[0])
    w = _centring_weights(op)
    return x - tf.reduce_sum(w * x, -1, keepdims=True), r - tf.reduce_sum(w * r, -1, keepdims=True)


@cached_multipliers
def _multipliers(op: tf.Operation):
    """Paired m_e, m_log, and for Softmax m_p (log p → p), at the centred logits.

    ``log s`` and ``log p`` are computed from logits far larger than themselves, so their two rows
    also count as equal where every logit is equal to rounding.
    """
    x, r = _centred_pair(op)
    w = on_foreground(_centring_weights(op))
    same = tf.reduce_all(close(x, r), -1, keepdims=True)
    m_e, m_log, c, log_sx, log_sr = _log_normaliser_multipliers(x, r, same)
    if op.type == "LogSoftmax":
        return on_foreground(m_e), on_foreground(m_log), None, w
    lx, lr = x - c - log_sx, r - c - log_sr
    px, pr = halves(op.outputs[0])
    m_p = ratio(px - pr, lx - lr, close(lx, lr) | same, tf.exp((lx + lr) / 2))
    return on_foreground(m_e), on_foreground(m_log), on_foreground(m_p), w


def _log_normaliser_multipliers(x: tf.Tensor, r: tf.Tensor, same: tf.Tensor):
    """m_e (z → e = exp(z − c)) and m_log (s → log s), and log s for both rows."""
    c = tf.stop_gradient(tf.maximum(tf.reduce_max(x, -1, keepdims=True), tf.reduce_max(r, -1, keepdims=True)))
    m_e = _exp_multiplier(x, r, c)
    # log s from each row's own logsumexp: finite even where exp(z − c) underflows.
    log_sx = tf.reduce_logsumexp(x, -1, keepdims=True) - c
    log_sr = tf.reduce_logsumexp(r, -1, keepdims=True) - c
    return m_e, _log_multiplier(log_sx, log_sr, same), c, log_sx, log_sr


def _exp_multiplier(x: tf.Tensor, r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """Δexp(z − c) / Δz; exp(midpoint − c) where x and r agree to rounding."""
    return ratio(tf.exp(x - c) - tf.exp(r - c), x - r, close(x, r), tf.exp((x + r) / 2 - c))


def _log_multiplier(log_sx: tf.Tensor, log_sr: tf.Tensor, same: tf.Tensor | bool = False) -> tf.Tensor:
    """Δlog s / Δs from log s; 2 / (sx + sr) where both agree to rounding or ``same`` holds."""
    sx, sr = tf.exp(log_sx), tf.exp(log_sr)
    return ratio(log_sx - log_sr, sx - sr, close(sx, sr) | same, 2 / (sx + sr))


def _through_log_normaliser(h: tf.Tensor, m_e: tf.Tensor, m_log: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Multipliers of z for log p = z̃ − c − log s, z̃ = z − (w·z)·1, given the multipliers h of log p."""
    return _centred(h - m_e * m_log * tf.reduce_sum(h, -1, keepdims=True), w)


def _centred(m: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Through z̃ = z − (w·z)·1, a linear step: m_z = m_z̃ − w · Σ m_z̃."""
    return m - w * tf.reduce_sum(m, -1, keepdims=True)


@rule("LogSoftmax", family="softmax")
def log_softmax(op: tf.Operation, grad: tf.Tensor):
    """log p = z̃ − c − log s, z̃ = z − (w·z)·1, w = (p(x) + p(r))/2: m_z̃ = g − m_e · m_log · Σ g,
    m_log = Δlog s / Δs; m_z = m_z̃ − w · Σ m_z̃."""
    m_e, m_log, _, w = _multipliers(op)
    return [_through_log_normaliser(grad, m_e, m_log, w)]


@rule("Softmax", family="softmax")
def softmax(op: tf.Operation, grad: tf.Tensor):
    """p = exp(log p): m_z̃ = h − m_e · m_log · Σ h with h = g · Δp / Δlog p; m_z = m_z̃ − w · Σ m_z̃,
    w = (p(x) + p(r))/2."""
    m_e, m_log, m_p, w = _multipliers(op)
    return [_through_log_normaliser(grad * m_p, m_e, m_log, w)]


# -- the "shapley" rule set: 1-vs-rest ------------------------------------------------------------
def _sigmoid_slope(t: tf.Tensor) -> tf.Tensor:
    return tf.sigmoid(t) * tf.sigmoid(-t)


#: op type -> (g, g′) of the two-player game p_o = g(a − b).
_TWO_PLAYER = {
    "Softmax": (tf.sigmoid, _sigmoid_slope),
    "LogSoftmax": (tf.math.log_sigmoid, lambda t: tf.sigmoid(-t)),
}


def _log_sum_of_others(z: tf.Tensor) -> tf.Tensor:
    """``log Σ_{j≠o} exp(z_j)`` for every ``o`` of the last axis (at least two entries).

    The row's largest entry sums the others (``S − e_o`` would cancel); every other ``o`` has
    ``p_o ≤ ½``, so ``log S + log1p(−p_o)`` is accurate.
    """
    n = z.shape[-1]
    total = tf.reduce_logsumexp(z, -1, keepdims=True)
    largest = tf.one_hot(tf.argmax(z, -1), n, on_value=True, off_value=False)
    others = total + tf.math.log1p(-tf.where(largest, tf.zeros_like(z), tf.exp(z - total)))
    without = tf.reduce_logsumexp(tf.where(largest, tf.fill(tf.shape(z), tf.constant(-float("inf"), z.dtype)), z), -1,
                                  keepdims=True)
    return tf.where(largest, without, others)


def _divided_difference(g, slope, u: tf.Tensor, v: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """``(g(u) − g(v)) / (u − v)``; ``g′`` at the midpoint where ``u`` and ``v`` agree to rounding or ``same`` holds."""
    return ratio(g(u) - g(v), u - v, close(u, v) | same, slope((u + v) / 2))


@cached_multipliers
def _one_vs_rest_multipliers(op: tf.Operation):
    """Paired ``(m_a, (φb/Δb)·(Δb/Δs), m_e, m_e2, holds_max)`` of the 1-vs-rest split, at the centred logits.

    ``φa / Δa`` and ``φb / Δb`` are taken term by term, each a divided difference of ``g`` judged
    close on its own arguments: ``a`` can be far larger than ``b``, and a quotient of the summed
    differences would divide rounding noise of ``a`` by a ``Δb`` at rounding level. ``b`` is
    computed from logits far larger than itself, so its two rows also count as equal where every
    logit but ``o`` is equal to rounding (and ``a``'s where ``z_o`` is).
    """
    x, r = _centred_pair(op)
    n = x.shape[-1]
    g, slope = _TWO_PLAYER[op.type]
    top = tf.math.top_k(tf.maximum(x, r), 2)
    c, c2 = top.values[..., :1], top.values[..., 1:]
    holds_max = tf.one_hot(top.indices[..., 0], n, on_value=True, off_value=False)
    d = tf.where(holds_max, c2, c)  # the largest logit other than o, over both rows
    ax, ar = x - d, r - d
    bx, br = _log_sum_of_others(x) - d, _log_sum_of_others(r) - d
    same_a = close(x, r)
    far = tf.reduce_sum(tf.cast(~same_a, tf.int32), -1, keepdims=True)
    same_b = far - tf.cast(~same_a, tf.int32) == 0  # every logit but o agrees
    dd = lambda u, v, same: _divided_difference(g, slope, u, v, same)  # noqa: E731
    # φa = ½[g(ax − br) − g(ar − br)] + ½[g(ax − bx) − g(ar − bx)],
    # φb = ½[g(ax − bx) − g(ax − br)] + ½[g(ar − bx) − g(ar − br)]
    m_a = 0.5 * (dd(ax - br, ar - br, same_a) + dd(ax - bx, ar - bx, same_a))
    m_b = -0.5 * (dd(ax - bx, ax - br, same_b) + dd(ar - bx, ar - br, same_b))
    rest = m_b * _log_multiplier(bx, br, same_b)
    m_e, m_e2 = _exp_multiplier(x, r, c), _exp_multiplier(x, r, c2)
    w = _centring_weights(op)
    return tuple(on_foreground(t) for t in (m_a, rest, m_e, m_e2, tf.cast(holds_max, x.dtype), w))


def _one_vs_rest_gradient(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
    """m_j = g_j m_a,j + m_e,j (Σ_{o≠o*} κ_o − κ_j [j≠o*]) + κ_{o*} m_e2,j [j≠o*], κ = g · rest; centred."""
    m_a, rest, m_e, m_e2, holds_max, w = _one_vs_rest_multipliers(op)
    kappa = grad * rest
    others = 1 - holds_max
    kappa_max = tf.reduce_sum(kappa * holds_max, -1, keepdims=True)
    total = tf.reduce_sum(kappa * others, -1, keepdims=True)
    return _centred(grad * m_a + m_e * (total - others * kappa) + others * kappa_max * m_e2, w)


def _two_or_more_classes(op: tf.Operation) -> bool:
    n = op.inputs[0].shape[-1] if op.inputs[0].shape.rank is not None else None
    return n is not None and n >= 2


@rule("Softmax", family="softmax", rules=SHAPLEY_RULES)
def softmax_one_vs_rest(op: tf.Operation, grad: tf.Tensor):
    """1-vs-rest: p_o = σ(a − b), a = z̃_o − d_o, b = log Σ_{j≠o} e^(z̃_j − d_o): two-player Shapley φa, φb;
    M[o, o] = φa/Δa, M[o, j] = (φb/Δb)(Δb/Δs_o)(Δe_j/Δz_j); m_z = m_z̃ − mean(m_z̃)."""
    if not _two_or_more_classes(op):  # one class (p ≡ 1) or an unknown count: the default split
        return softmax(op, grad)
    return [_one_vs_rest_gradient(op, grad)]


@rule("LogSoftmax", family="softmax", rules=SHAPLEY_RULES)
def log_softmax_one_vs_rest(op: tf.Operation, grad: tf.Tensor):
    """1-vs-rest: log p_o = log σ(a − b), two-player Shapley between a = z̃_o − d_o and b = log Σ_{j≠o} e^(z̃_j − d_o);
    then as for Softmax."""
    if not _two_or_more_classes(op):
        return log_softmax(op, grad)
    return [_one_vs_rest_gradient(op, grad)]
