"""Recurrent layers are exact: rules reach inside While bodies (float64, both Kerases)."""

import numpy as np
import pytest
from models._helpers import assert_explains_inference, explain_bound, forward_bound

import tfshap


def _layers(K):
    return {
        "lstm": lambda: [K.layers.LSTM(4)],
        "gru_reset_after": lambda: [K.layers.GRU(4, reset_after=True)],
        "gru_reset_before": lambda: [K.layers.GRU(4, reset_after=False)],
        "simple_rnn": lambda: [K.layers.SimpleRNN(4)],
        "bidirectional_lstm": lambda: [K.layers.Bidirectional(K.layers.LSTM(3))],
        "stacked_sequences": lambda: [
            K.layers.LSTM(4, return_sequences=True),
            K.layers.TimeDistributed(K.layers.Dense(3, activation="relu")),
            K.layers.GRU(3),
        ],
        # dropout and recurrent dropout are off at inference: the explained function is deterministic
        "lstm_with_dropout": lambda: [K.layers.LSTM(4, dropout=0.3, recurrent_dropout=0.3)],
        "conv_lstm_2d": lambda: [
            K.layers.Reshape((5, 3, 1, 1)), K.layers.ConvLSTM2D(2, (2, 1), padding="same"), K.layers.Flatten()
        ],
    }


@pytest.mark.parametrize(
    "name",
    [
        "lstm", "gru_reset_after", "gru_reset_before", "simple_rnn", "bidirectional_lstm", "stacked_sequences",
        "lstm_with_dropout", "conv_lstm_2d",
    ],
)
def test_recurrent_model_is_exact_in_float64(K64, name, rng):
    K = K64
    model = K.Sequential([K.Input((5, 3)), *_layers(K)[name](), K.layers.Dense(1)])
    background, x = rng.normal(size=(4, 5, 3)), rng.normal(size=(3, 5, 3))
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    assert_explains_inference(result, model, x, background)  # dropout off: inference, not training
    assert result.additivity_error < 1e-9
    assert "While" in explainer.rules_used  # the standard cell ran, with its gates under the rules
    assert np.abs(result.values).sum() > 0


def test_seed_scenario_lstm_hidden_state_through_the_pair_form(K64, rng):
    """LSTM(100) over zero-padded token ids; all 100 hidden outputs explained (issue seed)."""
    K = K64
    model = K.Sequential([K.Input((100, 1)), K.layers.LSTM(100), K.layers.Dense(1, activation="sigmoid")])
    data = np.zeros((4, 100, 1))
    for row in data:
        length = rng.integers(10, 100)
        row[:length, 0] = rng.integers(1, 1000, size=length)
    explainer = tfshap.DeepExplainer((model.layers[0].input, model.layers[-1].input), data[:3])
    values = explainer.shap_values(data[3:4])
    assert values.shape == (1, 100, 1, 100)
    hidden = K.Model(model.inputs, model.layers[-1].input)
    np.testing.assert_allclose(explainer.expected_value, hidden(data[:3], training=False).numpy().mean(0), atol=1e-12)
    delta = hidden(data[3:4]).numpy() - hidden(data[:3]).numpy().mean(0)
    np.testing.assert_allclose(values.sum(axis=(1, 2)), delta, atol=1e-6)


def test_compiling_leaves_the_rnn_layers_as_they_were(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4), K.layers.Dense(1)])
    layer = model.layers[0]
    before = {a: getattr(layer, a) for a in ("_could_use_gpu_kernel", "use_cudnn") if hasattr(layer, a)}
    tfshap.compile(model, np.zeros((2, 5, 3), np.float32))
    assert before and {a: getattr(layer, a) for a in before} == before


def test_convlstm_and_return_state_are_exact(K64, rng):
    K = K64
    conv = K.Sequential(
        [K.Input((4, 6, 2)), K.layers.ConvLSTM1D(2, 3, padding="same"), K.layers.Flatten(), K.layers.Dense(1)]
    )
    inp = K.Input((5, 3))
    _, h, c = K.layers.LSTM(3, return_sequences=True, return_state=True)(inp)
    stateful = K.Model(inp, K.layers.Dense(1)(K.layers.Concatenate()([h, c])))
    for model, shape in ((conv, (4, 6, 2)), (stateful, (5, 3))):
        background, x = rng.normal(size=(3, *shape)), rng.normal(size=(2, *shape))
        result = tfshap.compile(model, background).explain(x)
        assert result.additivity_error < 1e-9
        assert_explains_inference(result, model, x, background)


def test_embedding_lstm_attributes_to_the_embedding_layer_per_token(K64, rng):
    K = K64
    model = K.Sequential([
        K.Input((7,), dtype="int32"),
        K.layers.Embedding(50, 4, name="embedding"),
        K.layers.LSTM(3),
        K.layers.Dense(1, activation="sigmoid"),
    ])
    background, x = rng.integers(0, 50, size=(3, 7)), rng.integers(0, 50, size=(2, 7))
    with pytest.raises(ValueError, match="inputs='embedding'"):
        tfshap.compile(model, background)
    result = tfshap.compile(model, background, inputs="embedding").explain(x)
    assert result.values.shape == (2, 7, 4, 1)
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, model, x, background)
    per_token = result.per_token()
    assert per_token.shape == (2, 7, 1)
    np.testing.assert_allclose(per_token.sum(axis=1), result.outputs - result.base_values, atol=1e-9)


def test_trained_float32_lstm_on_digits_adds_up(K):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # 8 time steps of 8 features
    model = K.Sequential([K.Input((8, 8)), K.layers.LSTM(16), K.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images[:1000], digits.target[:1000], epochs=2, batch_size=64, verbose=0)
    background, x = images[1000:1040], images[1100:1106]
    result = tfshap.compile(model, background).explain(x)
    rows = np.concatenate([background, x])
    # float32 roundings only: the loop runs the LSTM's kernels once per step (8), then the head
    atol = 2 * 8 * forward_bound(model, rows)
    assert_explains_inference(result, model, x, background, atol=atol)
    bound = explain_bound(model, rows, len(background), result.values, steps=8)
    assert 0 <= result.additivity_error <= bound
    assert bound < 0.02 * np.abs(result.values).max()  # tight enough to tell a wrong rule apart
