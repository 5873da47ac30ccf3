"""Layouts of API.md: several inputs, several outputs, output= and inputs= layer names, Datasets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfshap

from ._helpers import assert_additive, predict, totals


# -- several inputs -------------------------------------------------------------------------
def test_two_inputs_linear_closed_form_as_a_list(K64, rng):
    a, b = K64.Input((3,)), K64.Input((4,))
    out = K64.layers.Dense(2, name="head")(K64.layers.Concatenate()([a, b]))
    model = K64.Model([a, b], out)
    kernel, bias = rng.normal(size=(7, 2)), rng.normal(size=2)
    model.get_layer("head").set_weights([kernel, bias])
    background = [rng.normal(size=(15, 3)), rng.normal(size=(15, 4))]
    x = [rng.normal(size=(5, 3)), rng.normal(size=(5, 4))]

    result = tfshap.compile(model, background).explain(x)

    assert isinstance(result.values, list) and len(result.values) == 2
    assert result.values[0].shape == (5, 3, 2) and result.values[1].shape == (5, 4, 2)
    np.testing.assert_allclose(
        result.values[0], kernel[None, :3] * (x[0] - background[0].mean(0))[..., None], atol=1e-10, rtol=0
    )
    np.testing.assert_allclose(
        result.values[1], kernel[None, 3:] * (x[1] - background[1].mean(0))[..., None], atol=1e-10, rtol=0
    )
    assert_additive(result, 1e-10)


def test_two_inputs_nonlinear_deep_explainer_list_layout(K64, rng):
    a, b = K64.Input((3,)), K64.Input((2, 2))
    joined = K64.layers.Concatenate()([a, K64.layers.Flatten()(b)])
    hidden = K64.layers.Dense(6, activation="relu")(joined)
    gated = K64.layers.Multiply()([hidden, K64.layers.Dense(6, activation="sigmoid")(joined)])
    model = K64.Model([a, b], K64.layers.Dense(3, activation="tanh")(gated))
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    background = [rng.normal(size=(10, 3)), rng.normal(size=(10, 2, 2))]
    x = [rng.normal(size=(4, 3)), rng.normal(size=(4, 2, 2))]

    explainer = tfshap.DeepExplainer(model, background)
    values = explainer.shap_values(x)

    assert isinstance(values, list) and [v.shape for v in values] == [(4, 3, 3), (4, 2, 2, 3)]
    gap = totals(values) + explainer.expected_value - predict(model, x)
    assert np.max(np.abs(gap)) <= 1e-9
    assert min(np.abs(v).max() for v in values) > 1e-3  # both inputs get credit
    np.testing.assert_allclose(explainer.expected_value, predict(model, background).mean(0), atol=1e-12, rtol=0)


# -- several outputs ------------------------------------------------------------------------
def _two_heads(K, rng):
    inp = K.Input((5,))
    shared = K.layers.Dense(6, activation="relu")(inp)
    head_a = K.layers.Dense(3, name="head_a")(shared)
    head_b = K.layers.Reshape((2, 2), name="head_b")(K.layers.Dense(4, activation="sigmoid")(shared))
    model = K.Model(inp, [head_a, head_b])
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def test_two_heads_are_flattened_and_concatenated(K64, rng):
    model = _two_heads(K64, rng)
    background, x = rng.normal(size=(12, 5)), rng.normal(size=(4, 5))

    result = tfshap.compile(model, background).explain(x)

    assert result.values.shape == (4, 5, 3 + 4)
    head_a, head_b = model(x, training=False)
    np.testing.assert_allclose(
        result.outputs, np.concatenate([head_a, np.reshape(head_b, (4, 4))], 1), atol=1e-12, rtol=0
    )
    np.testing.assert_allclose(result.base_values, predict(model, background).mean(0), atol=1e-12, rtol=0)
    assert_additive(result, 1e-9)
    # each head's columns are that head explained alone
    alone_a = tfshap.compile((model.inputs, model.get_layer("head_a").output), background).explain(x)
    alone_b = tfshap.compile((model.inputs, model.get_layer("head_b").output), background).explain(x)
    np.testing.assert_allclose(result.values[..., :3], alone_a.values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(result.values[..., 3:], alone_b.values, atol=1e-12, rtol=0)


# -- output= and inputs= layer names ----------------------------------------------------------
@pytest.fixture
def classifier(K64, rng):
    inp = K64.Input((6,))
    hidden = K64.layers.Dense(8, activation="relu", name="hidden")(inp)
    logits = K64.layers.Dense(3, name="logits")(hidden)
    model = K64.Model(inp, K64.layers.Activation("softmax", name="probs")(logits))
    # moderate logits: a gap of ~20 between sample and reference logits is test_softmax_numerics' business
    model.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
    return model, rng.normal(size=(15, 6)), rng.normal(size=(5, 6))


def test_output_layer_name_explains_the_logits(K64, classifier):
    model, background, x = classifier
    result = tfshap.compile(model, background, output="logits").explain(x)

    logits_model = K64.Model(model.inputs[0], model.get_layer("logits").output)
    np.testing.assert_allclose(result.outputs, predict(logits_model, x), atol=1e-12, rtol=0)
    assert result.values.shape == (5, 6, 3)
    assert_additive(result, 1e-9)
    pair = tfshap.compile((model.inputs, model.get_layer("logits").output), background).explain(x)
    np.testing.assert_allclose(result.values, pair.values, atol=1e-12, rtol=0)
    # and it is not the softmax's explanation
    assert np.abs(result.outputs - predict(model, x)).max() > 1e-2


def test_inputs_layer_name_attributes_to_the_hidden_layer(K64, classifier):
    model, background, x = classifier
    result = tfshap.compile(model, background, inputs="hidden").explain(x)

    assert result.values.shape == (5, 8, 3)  # (n, *hidden output shape, n_outputs)
    np.testing.assert_allclose(result.outputs, predict(model, x), atol=1e-12, rtol=0)
    assert_additive(result, 1e-9)


def test_inputs_and_output_layer_names_closed_form(K64, classifier):
    model, background, x = classifier
    result = tfshap.compile(model, background, inputs="hidden", output="logits").explain(x)

    w2 = model.get_layer("logits").get_weights()[0]
    hidden = K64.Model(model.inputs[0], model.get_layer("hidden").output)
    h_x, h_b = predict(hidden, x), predict(hidden, background)
    np.testing.assert_allclose(result.values, w2[None] * (h_x - h_b.mean(0))[..., None], atol=1e-10, rtol=0)
    assert_additive(result, 1e-10)


# -- tf.data.Dataset --------------------------------------------------------------------------
def test_dataset_of_batches_gives_the_array_values(K64, classifier):
    model, background, _ = classifier
    x = np.random.default_rng(3).normal(size=(10, 6))
    explainer = tfshap.compile(model, background)
    expected = explainer.explain(x)

    result = explainer.explain(tf.data.Dataset.from_tensor_slices(x).batch(4))  # batches of 4, 4, 2

    np.testing.assert_allclose(result.values, expected.values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(result.outputs, expected.outputs, atol=1e-12, rtol=0)
    np.testing.assert_allclose(result.base_values, expected.base_values, atol=1e-12, rtol=0)
    assert result.additivity_error <= 1e-9
    values = explainer.shap_values(tf.data.Dataset.from_tensor_slices(x).batch(3))
    np.testing.assert_allclose(values, expected.values, atol=1e-12, rtol=0)


def test_dataset_of_two_input_batches(K64, rng):
    a, b = K64.Input((3,)), K64.Input((2,))
    hidden = K64.layers.Dense(4, activation="tanh")(K64.layers.Concatenate()([a, b]))
    model = K64.Model([a, b], K64.layers.Dense(2)(hidden))
    background = [rng.normal(size=(8, 3)), rng.normal(size=(8, 2))]
    x = [rng.normal(size=(7, 3)), rng.normal(size=(7, 2))]
    explainer = tfshap.compile(model, background)
    expected = explainer.explain(x)

    result = explainer.explain(tf.data.Dataset.from_tensor_slices((x[0], x[1])).batch(3))

    assert isinstance(result.values, list) and len(result.values) == 2
    for got, want in zip(result.values, expected.values):
        np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
    np.testing.assert_allclose(result.outputs, expected.outputs, atol=1e-12, rtol=0)
    assert_additive(result, 1e-9)
