"""Attention end to end: a transformer block, masks, causal attention, x·xᵀ; both Kerases.

The bilinear rule (MatMul/BatchMatMul/Einsum with both operands varying) and the fused
LayerNormalization rule of tf_keras float32 are checked against float64, where tf_keras
takes the decomposed path, and against closed forms.
"""

from __future__ import annotations

import numpy as np

import tfshap

from ._helpers import (
    assert_additive,
    assert_explains_inference,
    explain_bound,
    floatx,
    forward_bound,
    predict,
    random_weights,
    transformer_block,
)

SEQ, DIM, HEADS = 5, 8, 2


def _explain(model, background, x):
    explainer = tfshap.compile(model, background)
    return explainer, explainer.explain(x)


def test_transformer_block_sums_exactly_in_float64_and_float32_tracks_it(K, rng):
    with floatx(K, "float64"):
        model64 = transformer_block(K, SEQ, DIM, HEADS)
    random_weights(model64, rng)
    with floatx(K, "float32"):
        model32 = transformer_block(K, SEQ, DIM, HEADS)
    model32.set_weights(model64.get_weights())
    background, x = rng.normal(size=(8, SEQ, DIM)), rng.normal(size=(3, SEQ, DIM))

    _, exact = _explain(model64, background, x)
    explainer32, approx = _explain(model32, background.astype("float32"), x.astype("float32"))

    assert_additive(exact, 1e-8)
    np.testing.assert_allclose(exact.outputs, predict(model64, x), rtol=0, atol=1e-12)
    # float32 differs from float64 by its roundings only. Besides the kernels and the layer
    # normalisations (counted by the bounds), attention rounds in its scores (a sum over the
    # head's DIM // HEADS features), its softmax and its combination (sums over SEQ positions).
    rows = np.concatenate([background, x])
    attention = DIM // HEADS + 2 * SEQ
    np.testing.assert_allclose(exact.outputs, approx.outputs, rtol=0, atol=forward_bound(model64, rows, attention))
    bound = explain_bound(model64, rows, len(background), exact.values, extra_roundings=2 * attention)
    assert bound < 0.02 * np.abs(exact.values).max()  # tight enough to tell a wrong rule apart
    assert_additive(approx, bound)
    np.testing.assert_allclose(approx.values, exact.values, rtol=0, atol=bound)
    if K.__name__ == "tf_keras":  # float32 LayerNormalization is one FusedBatchNormV3 there
        assert explainer32.program.report.used[("normalization", "FusedBatchNormV3")] == 2


def _masked_cross_attention(K, mask):
    """Query (4, DIM) attends to a context (6, DIM) under a constant attention mask (4, 6)."""
    query, context = K.Input((4, DIM)), K.Input((6, DIM))
    attention = K.layers.MultiHeadAttention(HEADS, DIM // HEADS)

    class MaskedAttention(K.layers.Layer):
        def call(self, q, c):
            return attention(q, c, attention_mask=np.broadcast_to(mask, (1, *mask.shape)))

    attended = MaskedAttention()(query, context)
    out = K.layers.Dense(2)(K.layers.Flatten()(K.layers.LayerNormalization()(attended)))
    return K.Model([query, context], out)


def test_cross_attention_with_a_mask_gives_nothing_to_masked_positions(K64, rng):
    mask = rng.uniform(size=(4, 6)) < 0.7
    mask[:, 0] = True  # every query sees something
    mask[:, 4:] = False  # no query sees the last two context positions
    model = _masked_cross_attention(K64, mask)
    random_weights(model, rng)
    background = [rng.normal(size=(6, 4, DIM)), rng.normal(size=(6, 6, DIM))]
    x = [rng.normal(size=(3, 4, DIM)), rng.normal(size=(3, 6, DIM))]

    _, result = _explain(model, background, x)

    assert_additive(result, 1e-8)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-12)
    query_values, context_values = result.values
    np.testing.assert_array_equal(context_values[:, 4:], 0.0)
    assert np.abs(context_values[:, :4]).min() > 0 and np.abs(query_values).min() > 0


def test_causal_attention_gives_nothing_to_later_positions(K64, rng):
    inp = K64.Input((SEQ, DIM))
    attended = K64.layers.MultiHeadAttention(HEADS, DIM // HEADS)(inp, inp, use_causal_mask=True)
    first_two = K64.layers.Cropping1D((0, SEQ - 2))(K64.layers.LayerNormalization()(attended))
    model = K64.Model(inp, K64.layers.Dense(3)(K64.layers.Flatten()(first_two)))
    random_weights(model, rng)
    background, x = rng.normal(size=(6, SEQ, DIM)), rng.normal(size=(3, SEQ, DIM))

    _, result = _explain(model, background, x)

    assert_additive(result, 1e-8)
    assert_explains_inference(result, model, x, background)
    np.testing.assert_array_equal(result.values[:, 2:], 0.0)  # positions 0 and 1 see only 0 and 1
    assert np.abs(result.values[:, :2]).min() > 0


def test_attention_over_two_axes(K64, rng):
    """Attention over the two middle axes of (3, 2, DIM) inputs: softmax over two axes at once."""
    inp = K64.Input((3, 2, DIM))
    attended = K64.layers.MultiHeadAttention(HEADS, DIM // HEADS, attention_axes=(1, 2))(inp, inp)
    model = K64.Model(inp, K64.layers.Dense(2)(K64.layers.Flatten()(attended)))
    random_weights(model, rng)
    background, x = rng.normal(size=(6, 3, 2, DIM)), rng.normal(size=(3, 3, 2, DIM))

    _, result = _explain(model, background, x)

    assert_additive(result, 1e-8)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-12)


def _gram_model(K, s, d):
    """Flatten(x·xᵀ) and Flatten(einsum('bsd,bse->bde', x, x)) side by side, then Dense(2)."""
    import tensorflow as tf

    class Grams(K.layers.Layer):
        def call(self, x):
            rows = tf.matmul(x, x, transpose_b=True)  # (s, s): BatchMatMulV2 of x with itself
            columns = tf.einsum("bsd,bse->bde", x, x)  # (d, d): Einsum of x with itself
            return tf.concat([tf.reshape(rows, [-1, s * s]), tf.reshape(columns, [-1, d * d])], -1)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], s * s + d * d)

    inp = K.Input((s, d))
    return K.Model(inp, K.layers.Dense(2)(Grams()(inp)))


def test_x_xT_and_einsum_of_x_with_itself_match_the_closed_form(K64, rng):
    """For f = Σ W1 ⊙ XXᵀ + Σ W2 ⊙ XᵀX, φ = ΔX ⊙ [(W1 + W1ᵀ)·X̄ + X̄·(W2 + W2ᵀ)], X̄ = (X + R)/2.

    A sum of products, so these are also the exact Shapley values against each background row.
    """
    s, d = 3, 4
    model = _gram_model(K64, s, d)
    kernel, bias = rng.normal(size=(s * s + d * d, 2)), rng.normal(size=2)
    model.layers[-1].set_weights([kernel, bias])
    background, x = rng.normal(size=(7, s, d)), rng.normal(size=(4, s, d))

    explainer, result = _explain(model, background, x)

    expected = np.zeros((len(x), s, d, 2))
    for o in range(2):
        w1, w2 = kernel[: s * s, o].reshape(s, s), kernel[s * s :, o].reshape(d, d)
        mid = (x[:, None] + background[None]) / 2  # (n, k, s, d)
        slope = (w1 + w1.T) @ mid + mid @ (w2 + w2.T)
        expected[..., o] = ((x[:, None] - background[None]) * slope).mean(1)
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-10)
    assert_additive(result, 1e-9)
    used = explainer.program.report.used
    assert used[("bilinear", "BatchMatMulV2")] == 1 and used[("bilinear", "Einsum")] == 1
