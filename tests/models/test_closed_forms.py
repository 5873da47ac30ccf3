"""Closed forms in float64: linear models, x*x, and a hidden layer of 100 squares explained through a pair."""

from __future__ import annotations

import numpy as np

import tfshap

from ._helpers import assert_additive, assert_explains_inference, predict, totals


def test_linear_model_gives_w_times_x_minus_mean_background(K64, rng):
    model = K64.Sequential([K64.Input((6,)), K64.layers.Dense(3)])
    kernel, bias = rng.normal(size=(6, 3)), rng.normal(size=3)
    model.layers[-1].set_weights([kernel, bias])
    background, x = rng.normal(size=(25, 6)), rng.normal(size=(7, 6))

    result = tfshap.compile(model, background).explain(x)

    expected = kernel[None, :, :] * (x - background.mean(0))[:, :, None]
    assert result.values.shape == (7, 6, 3)
    assert result.values.dtype == np.float64
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.base_values, background.mean(0) @ kernel + bias, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.outputs, x @ kernel + bias, rtol=0, atol=1e-10)
    assert_additive(result, 1e-10)


def test_dense_of_multiply_gives_w_times_x2_minus_mean_b2(K64, rng):
    inp = K64.Input((4,))
    square = K64.layers.Multiply()([inp, inp])
    out = K64.layers.Dense(2)(square)
    model = K64.Model(inp, out)
    kernel, bias = rng.normal(size=(4, 2)), rng.normal(size=2)
    model.layers[-1].set_weights([kernel, bias])
    background, x = rng.normal(size=(30, 4)), rng.normal(size=(5, 4))

    result = tfshap.compile(model, background).explain(x)

    expected = kernel[None] * (x**2 - (background**2).mean(0))[:, :, None]
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-10)
    assert_explains_inference(result, model, x, background)
    np.testing.assert_allclose(result.base_values, (background**2).mean(0) @ kernel + bias, rtol=0, atol=1e-10)
    assert_additive(result, 1e-10)


def _squares_model(K, rng):
    """Input(5) → Dense(100) → Multiply(h, h) → Dense(1), with known weights."""
    inp = K.Input((5,))
    hidden = K.layers.Dense(100, name="hidden")(inp)
    square = K.layers.Multiply(name="square")([hidden, hidden])
    out = K.layers.Dense(1, name="head")(square)
    model = K.Model(inp, out)
    w1, b1 = rng.normal(scale=0.5, size=(5, 100)), rng.normal(scale=0.5, size=100)
    model.get_layer("hidden").set_weights([w1, b1])
    model.get_layer("head").set_weights([rng.normal(size=(100, 1)), rng.normal(size=1)])
    return model, w1, b1


def test_pair_form_explains_all_100_hidden_outputs(K64, rng):
    model, w1, b1 = _squares_model(K64, rng)
    background, x = rng.normal(size=(12, 5)), rng.normal(size=(3, 5))
    # API.md's pair: (model.layers[0].input, model.layers[-1].input). Keras 3's InputLayer has no
    # `.input` (it is an empty list there), so the equivalent `model.inputs[0]` is used for it.
    first = model.layers[0].input if K64.__name__ == "tf_keras" else model.inputs[0]
    explainer = tfshap.DeepExplainer((first, model.layers[-1].input), background)

    values = explainer.shap_values(x)  # check_additivity=True by default

    assert values.shape == (3, 5, 100)
    h_x, h_b = x @ w1 + b1, background @ w1 + b1
    outputs = h_x**2
    np.testing.assert_allclose(explainer.expected_value, (h_b**2).mean(0), rtol=0, atol=1e-10)
    # additivity per output, within 1e-9
    gap = totals(values) + explainer.expected_value - outputs
    assert np.max(np.abs(gap)) <= 1e-9
    # closed form: h² with h linear in x; the Shapley multiplier of h·h is h(x) + h(r), so
    # φ_j,o = w1[j, o] · mean_r[(h_o(x) + h_o(r)) · (x_j − r_j)]
    expected = np.einsum(
        "jo,nro,nrj->njo", w1, h_x[:, None, :] + h_b[None, :, :], x[:, None, :] - background[None, :, :]
    ) / len(background)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-10)
    # the model itself, explained normally, is consistent with the hidden explanation
    full = tfshap.compile(model, background).explain(x)
    np.testing.assert_allclose(full.outputs, predict(model, x), rtol=0, atol=1e-10)
    assert_additive(full, 1e-9)
