"""A digits CNN with BatchNormalization, MaxPooling2D, Dropout and a softmax over 10 outputs."""

from __future__ import annotations

import numpy as np
import pytest

import tfshap

from ._helpers import (
    KERASES,
    assert_additive,
    digits,
    explain_bound,
    float32_bound,
    floatx,
    forward_bound,
    keras_module,
    predict,
)


def _cnn(K):
    return K.Sequential(
        [
            K.Input((8, 8, 1)),
            K.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            K.layers.BatchNormalization(name="bn"),
            K.layers.MaxPooling2D(2, name="pool"),
            K.layers.Dropout(0.25),
            K.layers.Flatten(),
            K.layers.Dense(16, activation="relu"),
            K.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )


@pytest.fixture(scope="module", params=KERASES)
def fitted(request):
    """(model32, model64 with the same weights, background, samples) for one Keras; fit for 1 epoch."""
    K = keras_module(request.param)
    images, labels = digits()
    K.utils.set_random_seed(0)
    with floatx(K, "float32"):
        model = _cnn(K)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images[:1200], labels[:1200], epochs=1, batch_size=64, verbose=0)
    with floatx(K, "float64"):
        model64 = _cnn(K)
    model64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    background, samples = images[1200:1230], images[1700:1706]
    return K, model, model64, background, samples


@pytest.fixture(scope="module")
def explained32(fitted):
    K, model, _, background, samples = fitted
    explainer = tfshap.compile(model, background)
    return explainer, explainer.explain(samples)


def test_batchnorm_statistics_are_not_trivial(fitted):
    _, model, _, _, _ = fitted
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    assert np.max(np.abs(mean)) > 1e-3 and np.max(np.abs(var - 1)) > 1e-3


def test_float32_cnn_is_additive_over_10_softmax_outputs(fitted, explained32):
    K, model, _, background, samples = fitted
    explainer, result = explained32

    assert result.values.shape == (6, 8, 8, 1, 10)
    assert result.values.dtype == np.float32
    rows = np.concatenate([background, samples])
    # two float32 forward passes of the same model (tfshap's trace and Keras'), each within the forward bound
    np.testing.assert_allclose(result.outputs, predict(model, samples), rtol=0, atol=2 * forward_bound(model, rows))
    # ten probabilities, each from an exp and a division by a sum of ten, summed: 2·10 + 2 roundings of values <= 1
    np.testing.assert_allclose(result.outputs.sum(1), 1.0, atol=float32_bound(22, 1.0))  # the softmax is explained
    assert_additive(result, explain_bound(model, rows, len(background), result.values))
    explainer.check_additivity(result)  # the library's own check agrees


def test_float64_cnn_is_additive_and_float32_tracks_it(fitted, explained32):
    K, model, model64, background, samples = fitted
    result64 = tfshap.compile(model64, background.astype(np.float64)).explain(samples.astype(np.float64))
    assert result64.values.dtype == np.float64
    assert_additive(result64, 1e-9)
    np.testing.assert_allclose(result64.outputs, predict(model64, samples.astype(np.float64)), rtol=0, atol=1e-12)

    _, result32 = explained32
    # The float64 copy has the float32 weights and sees the same rows (float32 values, exact in
    # float64): the two differ only by float32's roundings, within the bound of one attribution.
    # oneDNN's kernels (on by default on x86) round differently from Eigen's; the bound covers both.
    rows = np.concatenate([background, samples]).astype(np.float64)
    tolerance = explain_bound(model64, rows, len(background))
    assert tolerance < 0.02 * np.abs(result64.values).max()  # tight enough to tell a wrong rule apart
    np.testing.assert_allclose(result32.values, result64.values, rtol=0, atol=tolerance)


def test_attributing_to_the_conv_layer_has_its_output_shape(fitted):
    K, model, model64, background, samples = fitted
    result = tfshap.compile(model64, background.astype(np.float64), inputs="conv").explain(samples.astype(np.float64))
    assert result.values.shape == (6, 8, 8, 8, 10)  # (n, *conv output shape, 10)
    assert_additive(result, 1e-9)
    np.testing.assert_allclose(result.outputs, predict(model64, samples.astype(np.float64)), rtol=0, atol=1e-12)
