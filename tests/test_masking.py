"""Masks (Masking, Embedding(mask_zero=True)): exact when a sample and its reference share the mask,
an error otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import EPS32, assert_explains_inference

import tfshap

STEPS, KEPT, FEATURES = 6, 4, 3


def _padded(rng, rows):
    x = rng.normal(size=(rows, STEPS, FEATURES))
    x[:, KEPT:] = 0.0
    return x


def _masked_and_truncated_lstm(K):
    """An LSTM behind a Masking layer, and the same weights on sequences cut to the unmasked steps."""
    masked = K.Sequential([K.Input((STEPS, FEATURES)), K.layers.Masking(0.0), K.layers.LSTM(3), K.layers.Dense(2)])
    truncated = K.Sequential([K.Input((KEPT, FEATURES)), K.layers.LSTM(3), K.layers.Dense(2)])
    truncated.set_weights(masked.get_weights())
    return masked, truncated


def test_masking_lstm_equals_the_lstm_on_the_unmasked_steps(K64, rng):
    masked, truncated = _masked_and_truncated_lstm(K64)
    background, x = _padded(rng, 4), _padded(rng, 2)
    result = tfshap.compile(masked, background).explain(x)
    reference = tfshap.compile(truncated, background[:, :KEPT]).explain(x[:, :KEPT])
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, masked, x, background)
    np.testing.assert_allclose(result.values[:, :KEPT], reference.values, atol=1e-10)
    np.testing.assert_array_equal(result.values[:, KEPT:], 0.0)


def test_a_recurrent_mask_that_differs_from_the_reference_still_adds_up(rng):
    import keras  # Keras 3's Masking selects with tf.where; tf_keras's multiplies by a cast mask (below)

    f64 = {"dtype": "float64"}
    masked = keras.Sequential([
        keras.Input((STEPS, FEATURES), dtype="float64"), keras.layers.Masking(0.0, **f64),
        keras.layers.LSTM(3, **f64), keras.layers.Dense(2, **f64),
    ])
    background = _padded(rng, 3)
    explainer = tfshap.compile(masked, background)
    longer = rng.normal(size=(2, STEPS, FEATURES))  # no padding: its mask differs from the background's
    result = explainer.explain(longer)
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, masked, longer, background)
    assert np.abs(result.values[:, KEPT:]).sum() > 0  # the steps the references skip get credit


def test_a_mask_cast_to_float_must_agree_and_the_error_names_the_layer(rng):
    import tf_keras as K

    # tf_keras's Masking multiplies by the mask cast to float: the check has no data
    # dependency on the result and must run anyway.
    inputs = K.Input((STEPS, FEATURES), dtype="float64")
    hidden = K.layers.Masking(0.0, dtype="float64", name="padding")(inputs)
    model = K.Model(inputs, K.layers.Dense(2, dtype="float64")(K.layers.Flatten(dtype="float64")(hidden)))
    background, x = _padded(rng, 3), _padded(rng, 2)
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, model, x, background)
    with pytest.raises(tfshap.MaskMismatchError, match="'padding'"):
        explainer.explain(rng.normal(size=(1, STEPS, FEATURES)))


def test_embedding_mask_zero_with_layer_attributions(K64, rng):
    K = K64
    tokens = K.Input((STEPS,), dtype="int32")
    embedded = K.layers.Embedding(30, 4, mask_zero=True, name="embedding")(tokens)
    model = K.Model(tokens, K.layers.Dense(1)(K.layers.GRU(3)(embedded)))
    background = rng.integers(1, 30, size=(3, STEPS))
    x = rng.integers(1, 30, size=(2, STEPS))
    background[:, KEPT:] = x[:, KEPT:] = 0
    explainer = tfshap.compile(model, background, inputs="embedding")
    result = explainer.explain(x)
    assert result.values.shape == (2, STEPS, 4, 1)
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, model, x, background)
    np.testing.assert_array_equal(result.per_token()[:, KEPT:], 0.0)
    tokens = rng.integers(1, 30, size=(2, STEPS))
    unpadded = explainer.explain(tokens)  # masks differ: still exact
    assert unpadded.additivity_error < 1e-9
    assert_explains_inference(unpadded, model, tokens, background)
    assert np.abs(unpadded.per_token()[:, KEPT:]).sum() > 0


def model_weights(model) -> list[np.ndarray]:
    return [np.asarray(w, np.float64) for w in model.get_weights()]


def test_where_spelling_of_leaky_relu_equals_the_leaky_relu_rule(K64, rng):
    import tensorflow as tf

    inputs = K64.Input((5,))
    hidden = K64.layers.Dense(4)(inputs)
    by_where = K64.layers.Lambda(lambda t: tf.where(t > 0, t, 0.2 * t))(hidden)
    head = K64.layers.Dense(1)
    where_model = K64.Model(inputs, head(by_where))
    background, x = rng.normal(size=(4, 5)), rng.normal(size=(3, 5))
    where_result = tfshap.compile(where_model, background).explain(x)
    assert where_result.additivity_error < 1e-9
    assert_explains_inference(where_result, where_model, x, background)
    leaky = K64.Model(inputs, head(K64.layers.Activation(lambda t: tf.nn.leaky_relu(t, 0.2))(hidden)))
    leaky_values = tfshap.compile(leaky, background).explain(x).values
    # LeakyRelu's alpha is a float32 attribute: 0.2 rounded once to float32, which moves each
    # path's contribution by at most EPS32 of its size, |W_ij·w_j·Δx_i| summed over the 4 units
    paths = np.abs(model_weights(where_model)[0]) @ np.abs(model_weights(where_model)[2])  # (5, 1)
    bound = EPS32 * paths[None, :, :] * np.abs(x[:, None, :] - background[None]).mean(1)[..., None]
    assert np.all(np.abs(where_result.values - leaky_values) <= bound)


def test_jit_compile_is_refused_where_masks_are_checked_or_max_pools_and_exact_elsewhere(rng):
    """XLA compiles Assert to nothing (a mask mismatch would pass) and does not keep max-pool winners fixed."""
    import tf_keras as K

    inputs = K.Input((STEPS, FEATURES), dtype="float64")
    hidden = K.layers.Masking(0.0, dtype="float64", name="padding")(inputs)
    masked = K.Model(inputs, K.layers.Dense(2, dtype="float64")(K.layers.Flatten(dtype="float64")(hidden)))
    with pytest.raises(ValueError, match="checked at run time .*XLA drops"):
        tfshap.compile(masked, _padded(rng, 3), jit_compile=True)

    flat = K.Input((FEATURES,), dtype="float64")
    switching = K.Model(flat, K.layers.Lambda(lambda t: _leaky_relu_by_where(t), dtype="float64")(flat))
    with pytest.raises(ValueError, match="checked at run time .*XLA drops"):
        tfshap.compile(switching, rng.normal(size=(3, FEATURES)), jit_compile=True)

    pooled = K.Sequential([K.Input((4, 4, 1), dtype="float64"), K.layers.MaxPooling2D(2, dtype="float64"),
                           K.layers.Flatten(dtype="float64"), K.layers.Dense(2, dtype="float64")])
    with pytest.raises(ValueError, match="MaxPool: XLA's fused recomputation"):
        tfshap.compile(pooled, rng.normal(size=(3, 4, 4, 1)), jit_compile=True)

    plain = K.Sequential([K.Input((FEATURES,), dtype="float64"), K.layers.Dense(4, activation="tanh", dtype="float64"),
                          K.layers.Dense(2, activation="softmax", dtype="float64")])
    background, x = rng.normal(size=(5, FEATURES)), rng.normal(size=(3, FEATURES))
    with_xla = tfshap.compile(plain, background, jit_compile=True).explain(x)
    without = tfshap.compile(plain, background).explain(x)
    assert with_xla.additivity_error < 1e-12
    assert_explains_inference(with_xla, plain, x, background)
    np.testing.assert_allclose(with_xla.values, without.values, rtol=1e-10, atol=1e-13)


def _leaky_relu_by_where(t):
    """A leaky relu spelled with tf.where: the condition switches between sample and reference."""
    import tensorflow as tf

    return tf.where(t > 0, t, 0.1 * t)


def test_a_switching_where_whose_branches_did_not_change_is_a_mask_mismatch(K64, rng):
    """``where(c > 0, v, −v)``: c switches between sample and reference while v is the same for both.

    Δy = 2v comes from the switch alone, through neither branch: it cannot be attributed, and
    explaining stops, naming the layer. Where v changes too, it goes through the branch taken.
    """
    import tensorflow as tf

    K = K64
    c, v = K.Input((3,)), K.Input((3,))
    flipped = K.layers.Lambda(lambda t: tf.where(t[0] > 0, t[1], -t[1]), name="flip")([c, v])
    model = K.Model([c, v], K.layers.Dense(1)(flipped))
    background = [-np.ones((2, 3)), np.tile([[1.0, 2.0, 3.0]], (2, 1))]
    explainer = tfshap.compile(model, background)

    with pytest.raises(tfshap.MaskMismatchError, match="flip"):
        explainer.explain([np.ones((1, 3)), background[1][:1]])  # c switched, v unchanged

    x = [np.ones((1, 3)), rng.normal(size=(1, 3))]  # c switched, v changed
    result = explainer.explain(x)
    assert result.additivity_error < 1e-12
    assert_explains_inference(result, model, x, background)
    np.testing.assert_array_equal(result.values[0], 0.0)  # all of Δy through the branch v: c gets nothing
