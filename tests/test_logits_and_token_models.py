"""``output="logits"`` against the same model rebuilt without its activation, and integer inputs beside
the attributed layer (BERT's segment ids) treated as masks: exact where a sample and its reference
agree, MaskMismatchError where they do not. float64 throughout."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import floatx, keras_module, predict

import tfshap


def _head(K, final):
    """Input(6) → Dense(8, tanh) → ``final`` (a layer taking and giving the logits' shape or the probabilities)."""
    K.utils.set_random_seed(5)
    inputs = K.Input((6,))
    hidden = K.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    return K.Model(inputs, final(hidden))


def _pairs(K):
    """(model with an activation, the same logits without it) for each way Keras spells the final activation."""
    with floatx(K, "float64"):
        fused = _head(K, lambda h: K.layers.Dense(3, activation="softmax", name="probs")(h))
        separate = _head(K, lambda h: K.layers.Softmax()(K.layers.Dense(3, name="logits_dense")(h)))
        sigmoid = _head(K, lambda h: K.layers.Activation("sigmoid")(K.layers.Dense(2, name="logits_dense")(h)))
        plain = [_head(K, lambda h, n=n: K.layers.Dense(n, name="logits_dense")(h)) for n in (3, 3, 2)]
    models = [fused, separate, sigmoid]
    for model, logits in zip(models, plain):
        logits.set_weights(model.get_weights())
    return list(zip(["fused softmax", "Softmax layer", "Activation(sigmoid)"], models, plain))


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_logits_are_the_values_of_the_model_without_its_activation(keras_name, tmp_path):
    K = keras_module(keras_name)
    rng = np.random.default_rng(0)
    background, x = rng.normal(size=(7, 6)), rng.normal(size=(4, 6))
    for name, model, logits in _pairs(K):
        expected = tfshap.compile(logits, background).explain(x)
        got = tfshap.compile(model, background, output="logits").explain(x)
        np.testing.assert_allclose(got.values, expected.values, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got.outputs, predict(logits, x), rtol=0, atol=1e-12, err_msg=name)
        assert got.additivity_error < 1e-12
        # the model itself is left as it was: its activation runs again
        np.testing.assert_allclose(predict(model, x).sum(1), 1.0, atol=1e-12) if name != "Activation(sigmoid)" else None
    name, model, logits = _pairs(K)[0]
    facade = tfshap.DeepExplainer(model, background, output="logits")
    np.testing.assert_allclose(facade.shap_values(x), tfshap.compile(logits, background).shap_values(x), atol=1e-12)
    loaded = tf.saved_model.load(str(tfshap.compile(model, background, output="logits").export(tmp_path / "logits")))
    np.testing.assert_allclose(loaded.explain(tf.constant(x))["values"].numpy(),
                               tfshap.compile(logits, background).explain(x).values, rtol=0, atol=1e-12)


def test_logits_of_a_model_ending_in_a_recurrent_layer_are_refused():
    import keras

    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(2)])
    with pytest.raises(ValueError, match=r"output='logits': the final layer .* is recurrent"):
        tfshap.compile(model, np.zeros((2, 3, 2), np.float32), output="logits")


def _bert_like(K, vocab=20, length=6):
    """Token ids and segment ids; token, segment and position embeddings summed; a small head."""
    with floatx(K, "float64"):
        K.utils.set_random_seed(9)
        tokens = K.Input((length,), dtype="int32", name="token_ids")
        segments = K.Input((length,), dtype="int32", name="segment_ids")
        token_embedding = K.layers.Embedding(vocab, 4, name="token_embedding")(tokens)
        segment_embedding = K.layers.Embedding(2, 4, name="segment_embedding")(segments)
        summed = K.layers.Add(name="embeddings_add")([token_embedding, segment_embedding])
        hidden = K.layers.Dense(5, activation="gelu")(K.layers.Flatten()(summed))
        return K.Model([tokens, segments], K.layers.Dense(3)(hidden))


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_segment_ids_beside_the_token_embedding_are_a_mask(keras_name):
    K = keras_module(keras_name)
    model = _bert_like(K)
    rng = np.random.default_rng(2)
    tokens_bg, tokens_x = rng.integers(20, size=(5, 6)), rng.integers(20, size=(3, 6))
    segments = np.array([[0, 0, 0, 1, 1, 1]])
    explainer = tfshap.compile(model, [tokens_bg, segments.repeat(5, 0)], inputs="token_embedding")
    result = explainer.explain([tokens_x, segments.repeat(3, 0)])
    assert result.values.shape == (3, 6, 4, 3)
    assert result.additivity_error < 1e-12
    np.testing.assert_allclose(result.outputs, predict(model, [tokens_x, segments.repeat(3, 0)]), atol=1e-12)
    # at the sum of the embeddings (where the segment embedding is part of what is attributed), the
    # values summed over the embedding axis equal those at the token embedding: the segments agree
    at_sum = tfshap.compile(model, [tokens_bg, segments.repeat(5, 0)], inputs="embeddings_add")
    np.testing.assert_allclose(at_sum.explain([tokens_x, segments.repeat(3, 0)]).per_token(), result.per_token(),
                               rtol=0, atol=1e-12)
    other = np.array([[0, 0, 1, 1, 1, 1]]).repeat(3, 0)
    with pytest.raises(tfshap.MaskMismatchError, match="segment_embedding"):
        explainer.explain([tokens_x, other])
