"""Masks (Masking, Embedding(mask_zero=True)): exact when a sample and its reference share the mask, an error otherwise."""

from __future__ import annotations

import numpy as np
import pytest

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
    np.testing.assert_allclose(result.values[:, :KEPT], reference.values, atol=1e-10)
    np.testing.assert_array_equal(result.values[:, KEPT:], 0.0)


def test_a_mask_that_differs_from_the_reference_is_an_error_naming_the_layer(K64, rng):
    masked, _ = _masked_and_truncated_lstm(K64)
    explainer = tfshap.compile(masked, _padded(rng, 3))
    longer = rng.normal(size=(1, STEPS, FEATURES))  # no padding: its mask differs from the background's
    with pytest.raises(tfshap.MaskMismatchError, match="differs between a sample and a background row") as info:
        explainer.explain(longer)
    assert "'lstm" in str(info.value) or "'masking" in str(info.value)


def test_a_mask_meeting_floats_only_through_a_cast_is_checked_too(K64, rng):
    # tf_keras's Masking multiplies by the mask cast to float: the check has no data
    # dependency on the result and must run anyway.
    model = K64.Sequential([K64.Input((STEPS, FEATURES)), K64.layers.Masking(0.0), K64.layers.Flatten(), K64.layers.Dense(2)])
    explainer = tfshap.compile(model, _padded(rng, 3))
    assert explainer.explain(_padded(rng, 2)).additivity_error < 1e-9
    with pytest.raises(tfshap.MaskMismatchError):
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
    np.testing.assert_array_equal(result.per_token()[:, KEPT:], 0.0)
    with pytest.raises(tfshap.MaskMismatchError, match="gru"):
        explainer.explain(rng.integers(1, 30, size=(1, STEPS)))
