"""Token models with a None sequence length (Input(shape=(None,))), through every entry point, in both Kerases.

Chunks are sized from the data explained, not from the traced shapes (which do not know the
length): explain, shap_values, calling the explainer, explain_to, export and the training
callback all take sequences of any length, each call of one length. Values are checked
against explain (float32: the same graph, a few ulps of the magnitudes).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import keras_module, predict

import tfshap

VOCAB = 40


def _token_model(K):
    K.utils.set_random_seed(11)
    return K.Sequential([K.Input((None,), dtype="int32"), K.layers.Embedding(VOCAB, 6, name="embedding"),
                         K.layers.LSTM(5), K.layers.Dense(3, activation="softmax")])


@pytest.fixture(scope="module", params=["tf_keras", "keras3"])
def token_model(request):
    return keras_module(request.param), _token_model(keras_module(request.param))


def _ids(rng, n, length):
    return rng.integers(1, VOCAB, size=(n, length)).astype(np.int32)


def _close(a, b):
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(a, b, rtol=0, atol=64 * eps * max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("length", [5, 17])
def test_every_entry_point_takes_sequences_of_any_length(token_model, length, tmp_path):
    K, model = token_model
    rng = np.random.default_rng(length)
    background, x = _ids(rng, 4, length), _ids(rng, 3, length)
    explainer = tfshap.compile(model, background, inputs="embedding")
    result = explainer.explain(x)
    assert result.values.shape == (3, length, 6, 3)
    assert explainer.batch_size(3, [x]) >= 16
    explainer.check_additivity(result)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-6)
    _close(explainer.shap_values(x), result.values)
    pytest.importorskip("shap")
    _close(explainer(x).values, result.values)
    streamed = explainer.explain_to(tmp_path / "values.npy", x)
    _close(np.asarray(streamed.values), result.values)
    loaded = tf.saved_model.load(str(explainer.export(tmp_path / "exported")))
    _close(loaded.explain(tf.constant(x))["values"].numpy(), result.values)


def test_a_length_other_than_the_backgrounds_needs_references(token_model):
    K, model = token_model
    rng = np.random.default_rng(0)
    explainer = tfshap.compile(model, _ids(rng, 4, 9), inputs="embedding")
    with pytest.raises(ValueError, match=r"x has rows of shape \(12,\), the background \(9,\).*references= per sample"):
        explainer.explain(_ids(rng, 2, 12))
    result = explainer.explain(_ids(rng, 2, 12), references=_ids(rng, 2 * 3, 12).reshape(2, 3, 12))
    assert result.values.shape == (2, 12, 6, 3) and result.additivity_error < 1e-5


def test_the_training_callback_takes_a_variable_length_model(token_model):
    K, model = token_model
    rng = np.random.default_rng(2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = _ids(rng, 16, 7), rng.integers(3, size=16)
    from tfshap.keras import AttributionCallback

    callback = AttributionCallback(x[:2], x[2:6], inputs="embedding", output="logits")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert callback.epochs == [0, 1]
    last = callback.history[-1]
    assert last.values.shape == (2, 7, 6, 3) and last.additivity_error < 1e-5
    # the logits of the last epoch's weights: the softmax's input, explained by a fresh compile
    _close(last.values, tfshap.compile(model, x[2:6], inputs="embedding", output="logits").explain(x[:2]).values)
