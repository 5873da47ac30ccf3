"""Models whose batch axis leaves axis 0: every rule finds the rows where they are, or the model is refused.

The paired batch's rows enter along axis 0. A transpose, a stack, an einsum or a matmul can move
them (a mixture of experts runs its experts on ``(experts, tokens, features)``; CLIP's head
multiplies a text matrix by the transposed image embeddings). tfshap tracks them at compile
time (:mod:`tfshap.batch_axis`): elementwise rules read the rows along the moved axis, a
reduction over other axes is accepted and one over the rows' axis refused wherever it is, and
a rule that can only read axis 0 refuses, so that no such model is ever silently off. Each
exact case is checked against the same function written with the rows on axis 0 (the same
rules on the same values: equal attributions), in float64, in both Kerases.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from models._helpers import assert_additive  # noqa: E402

import tfshap  # noqa: E402

L, D, E = 3, 4, 2  # tokens, features, experts


def _model(K, rng, fn, shape, out_shape):
    """``fn`` in a Lambda, then Flatten and a 2-unit Dense head with seeded weights."""
    inp = K.Input(shape)
    hidden = K.layers.Lambda(fn, output_shape=out_shape)(inp)
    model = K.Model(inp, K.layers.Dense(2)(K.layers.Flatten()(hidden)))
    model.set_weights([np.random.default_rng(5).normal(size=w.shape) for w in model.get_weights()])
    return model


def _explain(K, rng, fn, shape, out_shape, background, x):
    return tfshap.compile(_model(K, rng, fn, shape, out_shape), background).explain(x)


def _assert_explained_as(K, rng, fn, reference_fn, shape, out_shape, background, x):
    """``fn`` is explained as ``reference_fn`` (the same function, its rows on axis 0), to float64 rounding."""
    result = _explain(K, rng, fn, shape, out_shape, background, x)
    reference = _explain(K, rng, reference_fn, shape, out_shape, background, x)
    np.testing.assert_allclose(result.outputs, reference.outputs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.values, reference.values, rtol=0, atol=1e-12)
    assert_additive(result, 1e-10)


# -- elementwise rules along a moved axis ---------------------------------------------------------
def _swap(t):
    return tf.transpose(t, [1, 0, 2])


def _gated_by_transpose(t):
    moved = _swap(t)  # (L, rows, D)
    gated = tf.tanh(moved) * tf.sigmoid(2.0 * moved) + tf.maximum(moved, 0.3 * moved)
    return _swap(tf.where(moved > 0.5, gated, tf.exp(moved)))


def _gated(t):
    return tf.where(t > 0.5, tf.tanh(t) * tf.sigmoid(2.0 * t) + tf.maximum(t, 0.3 * t), tf.exp(t))


def _outer_by_transpose(t):
    moved = _swap(tf.tanh(t))  # two varying operands, their rows on axis 1
    return _swap(tf.reduce_sum(tf.einsum("lbd,lbe->lbde", moved, moved), -1))


def _outer(t):
    return tf.reduce_sum(tf.einsum("bld,ble->blde", tf.tanh(t), tf.tanh(t)), -1)


def _stacked_copies(t):
    stack = tf.stack([t, tf.tanh(t)], 0)  # (2, rows, L, D): AltUp's copies
    return tf.reduce_mean(tf.nn.relu(stack) * tf.sigmoid(stack), 0)


def _copies(t):
    return (tf.nn.relu(t) * tf.sigmoid(t) + tf.nn.relu(tf.tanh(t)) * tf.sigmoid(tf.tanh(t))) / 2


@pytest.mark.parametrize("moved, leading", [(_gated_by_transpose, _gated), (_stacked_copies, _copies),
                                            (_outer_by_transpose, _outer)],
                         ids=["transpose", "stack then mean over the copies", "product of two moved operands"])
def test_rules_read_the_rows_where_a_transpose_or_a_stack_moved_them(K64, rng, moved, leading):
    background, x = rng.normal(size=(6, L, D)), rng.normal(size=(3, L, D))
    _assert_explained_as(K64, rng, moved, leading, (L, D), (L, D), background, x)


def test_a_rule_that_reads_rows_on_axis_0_only_refuses_a_moved_batch_axis(K64, rng):
    """Softmax along features, with the rows on axis 1: refused at compile time, naming the transpose."""
    model = _model(K64, rng, lambda t: _swap(tf.nn.softmax(_swap(t), -1)), (L, D), (L, D))
    with pytest.raises(tfshap.UnsupportedOpError, match=r"Softmax.*batch axis was moved to axis 1 by Transpose"):
        tfshap.compile(model, rng.normal(size=(4, L, D)))


def test_a_reduction_over_a_moved_batch_axis_is_refused(K64, rng):
    """A mean over axis 1 of the transposed batch averages samples with references: refused, not read as axis 0."""
    model = _model(K64, rng, lambda t: t - tf.reduce_mean(tf.transpose(t), 1)[None, :], (D,), (D,))
    with pytest.raises(tfshap.UnsupportedOpError, match=r"Mean.*axis 1, the batch axis \(Transpose"):
        tfshap.compile(model, rng.normal(size=(4, D)))


# -- products that move the rows ----------------------------------------------------------------
TEXT = np.random.default_rng(6).normal(size=(5, D))


def _similarity_by_columns(t):
    """CLIP's head: a fixed text matrix times the transposed embeddings (the rows along the columns)."""
    return tf.transpose(tf.tanh(tf.matmul(tf.constant(TEXT, t.dtype), tf.transpose(t))))


def _similarity(t):
    return tf.tanh(tf.matmul(t, tf.constant(TEXT, t.dtype), transpose_b=True))


def test_a_product_that_keeps_the_rows_along_its_columns_is_exact(K64, rng):
    background, x = rng.normal(size=(6, D)), rng.normal(size=(3, D))
    _assert_explained_as(K64, rng, _similarity_by_columns, _similarity, (D,), (len(TEXT),), background, x)


# -- a mixture of experts: routing by one-hot top-1 indices, experts on (experts, tokens, features) --
WEIGHTS = np.random.default_rng(7)
ROUTER = np.zeros((D, E))
ROUTER[0] = [4.0, -4.0]  # expert 0 where feature 0 is positive, else expert 1
GATE, UP, DOWN = (WEIGHTS.normal(size=shape) for shape in ((E, D, 6), (E, D, 6), (E, 6, D)))


def _router(tokens):
    probabilities = tf.nn.softmax(tf.matmul(tokens, tf.constant(ROUTER, tokens.dtype)), -1)
    top = tf.math.top_k(probabilities, 1)
    return tf.reduce_sum(tf.one_hot(top.indices, E, dtype=tokens.dtype) * top.values[..., None], 1)  # (tokens, E)


def _moe(t):
    """keras-hub's batched experts: einsum to (experts, tokens, ·), SiLU gating, weighted, summed over experts."""
    tokens = tf.reshape(t, [-1, D])
    routing = tf.transpose(_router(tokens))  # (E, tokens)
    gate = tf.einsum("th,ehm->etm", tokens, tf.constant(GATE, t.dtype))
    up = tf.einsum("th,ehm->etm", tokens, tf.constant(UP, t.dtype))
    out = tf.einsum("etm,emh->eth", gate * tf.sigmoid(gate) * up, tf.constant(DOWN, t.dtype))
    return tf.reshape(tf.reduce_sum(out * routing[:, :, None], 0), tf.shape(t))


def _moe_by_expert(t):
    """The same mixture, one expert at a time, the rows on axis 0 throughout."""
    tokens = tf.reshape(t, [-1, D])
    routing = _router(tokens)
    total = 0.0
    for e in range(E):
        gate = tf.matmul(tokens, tf.constant(GATE[e], t.dtype))
        up = tf.matmul(tokens, tf.constant(UP[e], t.dtype))
        total += tf.matmul(gate * tf.sigmoid(gate) * up, tf.constant(DOWN[e], t.dtype)) * routing[:, e:e + 1]
    return tf.reshape(total, tf.shape(t))


def _routed_data(rng, n, signs):
    """Tokens whose feature 0 has the sign ``signs[token]``: every row routes each token to the same expert."""
    values = rng.normal(size=(n, L, D))
    values[..., 0] = np.abs(values[..., 0]) * np.asarray(signs)
    return values


def test_mixture_of_experts_is_exact_where_sample_and_reference_route_alike(K64, rng):
    background, x = _routed_data(rng, 5, [1, -1, 1]), _routed_data(rng, 3, [1, -1, 1])
    _assert_explained_as(K64, rng, _moe, _moe_by_expert, (L, D), (L, D), background, x)


def test_mixture_of_experts_routing_that_differs_raises_mask_mismatch(K64, rng):
    background, x = _routed_data(rng, 4, [1, -1, 1]), _routed_data(rng, 2, [1, 1, 1])
    explainer = tfshap.compile(_model(K64, rng, _moe, (L, D), (L, D)), background)
    with pytest.raises(tfshap.MaskMismatchError):
        explainer.explain(x)


# -- Qwen3.5's gated RMS norm: a small variance under rsqrt -----------------------------------------
def _gated_rms_norm(scale: float, eps: float, dtype=None):
    """``v · exp(g)`` per head, folded into rows of the head dimension, RMS-normed (``rsqrt(mean(x²) + eps)``)."""

    def fn(t):
        value, g = t[..., :2], t[..., 2:]
        x = value * tf.exp(-tf.nn.softplus(g))
        if dtype is not None:
            x = tf.cast(x, dtype)
        heads = tf.reshape(x * scale, [-1, 2])  # (rows · tokens, head dimension)
        normed = heads * tf.math.rsqrt(tf.reduce_mean(tf.square(heads), -1, keepdims=True) + eps)
        return tf.cast(tf.reshape(normed, [-1, L, 2]), t.dtype)

    return fn


def test_a_small_variance_under_rsqrt_is_exact(K64, rng):
    """Variances near 1e-15 in float64: their changes lie below 32 ulps of 1, where the rsqrt rule took the
    slope at the midpoint for the secant (off by tens of percent); now only changes at the values' own rounding do."""
    background, x = rng.normal(size=(6, L, 4)), rng.normal(size=(3, L, 4))
    result = _explain(K64, rng, _gated_rms_norm(3e-8, 1e-16), (L, 4), (L, 2), background, x)
    assert_additive(result, 1e-10)


def test_qwen3_5_gated_rms_norm_in_float32_is_exact_to_float32_rounding(K64, rng):
    """Qwen3.5 computes its gated delta rule and norm in float32 (eps 1e-6) inside a float64 model; its
    variances lie near 1e-6, whose changes fell below 32 ulps of 1 (3.8e-6) and missed by ~1e-3 relative.

    The tolerance: float32 rounding (2**-23) on each of a few dozen ops per output, on values of the
    output's size: 2**-23 · 2**6 · max|output| (about 8e-6 relative).
    """
    background, x = rng.normal(size=(6, L, 4)), rng.normal(size=(3, L, 4))
    result = _explain(K64, rng, _gated_rms_norm(1e-3, 1e-6, tf.float32), (L, 4), (L, 2), background, x)
    assert_additive(result, 2.0**-23 * 2**6 * np.abs(result.outputs).max())
