"""Per-sample references and hypothetical contributions (the sequence-model workflow), in float64.

The ground truth for per-sample references is tfshap's own shared-background path, run once
per sample against that sample's rows (a separate, already-tested computation); for the
multipliers it is kundajelab's default combiner, and for hypothetical contributions a
closed form on a linear model.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import floatx, keras_module, predict

import tfshap

L, N = 12, 4


def _one_hot(rng, n):
    return np.eye(4)[rng.integers(4, size=(n, L))]


def _conv_model(K):
    """One-hot (L, 4) → Conv1D relu → two heads: a count and a per-position sigmoid sum."""
    with floatx(K, "float64"):
        K.utils.set_random_seed(7)
        inputs = K.Input((L, 4))
        h = K.layers.Conv1D(6, 5, padding="same", activation="relu")(inputs)
        pooled = K.layers.GlobalAveragePooling1D()(h)
        return K.Model(inputs, K.layers.Dense(2, activation="tanh")(pooled))


def _shuffles(k_of):
    """A reference function in shap's form: K_i rolled copies of each sample (K_i = k_of(sample))."""

    def references(sample):
        (x,) = sample
        k = k_of(x)
        return [np.stack([np.roll(x, s + 1, axis=0) for s in range(k)])]

    return references


@pytest.fixture(scope="module", params=["tf_keras", "keras3"])
def setup(request):
    K = keras_module(request.param)
    model = _conv_model(K)
    rng = np.random.default_rng(3)
    return K, model, _one_hot(rng, N)


def _per_sample_truth(model, x, references_of):
    """Each sample explained alone against its own rows, through the shared-background path."""
    values, bases = [], []
    for i in range(len(x)):
        (rows,) = references_of([x[i]])
        result = tfshap.compile(model, rows).explain(x[i : i + 1])
        values.append(result.values[0])
        bases.append(result.base_values)
    return np.stack(values), np.stack(bases)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_reference_function_explains_each_sample_against_its_own_rows(setup, batch_size):
    K, model, x = setup
    references_of = _shuffles(lambda sample: 2 + int(sample[0].argmax()))  # K_i from 2 to 5
    explainer = tfshap.compile(model, references_of, batch_size=batch_size)
    result = explainer.explain(x)
    truth_values, truth_bases = _per_sample_truth(model, x, references_of)

    assert explainer.expected_value is None
    assert result.base_values.shape == (N, 2)
    np.testing.assert_allclose(result.base_values, truth_bases, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.values, truth_values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-12)
    assert result.additivity_error < 1e-12
    explainer.check_additivity(result)


def test_explicit_references_equal_the_function_and_the_facade(setup):
    K, model, x = setup
    references_of = _shuffles(lambda sample: 3)
    stacked = np.stack([references_of([row])[0] for row in x])  # (n, K, L, 4)
    by_array = tfshap.compile(model, x[:2]).explain(x, references=stacked)  # the background is ignored
    by_function = tfshap.compile(model, references_of).explain(x)
    facade = tfshap.DeepExplainer(model, references_of)
    np.testing.assert_allclose(by_array.values, by_function.values, rtol=0, atol=1e-13)
    np.testing.assert_allclose(facade.shap_values(x), by_function.values, rtol=0, atol=1e-13)
    values, indexes = facade.shap_values(x, ranked_outputs=1)
    assert values.shape == (N, L, 4, 1) and indexes.shape == (N, 1)


def _default_combiner(mult, orig_inp, bg_data):
    """kundajelab's default: mean over the references of mult · (orig − bg)."""
    return [np.mean(m * (o[None] - b), axis=0) for m, o, b in zip(mult, orig_inp, bg_data)]


def _hypothetical_combiner(mult, orig_inp, bg_data):
    """kundajelab's one-hot combiner (as in ChromBPNet and BPNet): projected hypothetical contributions."""
    out = []
    for m, o, b in zip(mult, orig_inp, bg_data):
        projected = np.zeros_like(b, dtype=float)
        for i in range(o.shape[-1]):
            hypothetical = np.zeros_like(o, dtype=float)
            hypothetical[:, i] = 1.0
            projected[:, :, i] = np.sum((hypothetical[None] - b) * m, axis=-1)
        out.append(np.mean(projected, axis=0))
    return out


def test_the_default_combiner_gives_the_default_values(setup):
    K, model, x = setup
    references_of = _shuffles(lambda sample: 2 + int(sample[1].argmax()))
    default = tfshap.DeepExplainer(model, references_of).shap_values(x)
    combined = tfshap.DeepExplainer(model, references_of, combine_mult_and_diffref=_default_combiner)
    np.testing.assert_allclose(combined.shap_values(x), default, rtol=0, atol=1e-13)


def test_native_hypothetical_contributions_equal_the_python_combiner(setup):
    K, model, x = setup
    references_of = _shuffles(lambda sample: 3)
    python = tfshap.DeepExplainer(model, references_of, combine_mult_and_diffref=_hypothetical_combiner).shap_values(x)
    native = tfshap.compile(model, references_of).explain(x, hypothetical=True)
    np.testing.assert_allclose(native.values, python, rtol=0, atol=1e-13)
    # projected onto the sequence they are the ordinary contributions, which add up
    ordinary = tfshap.compile(model, references_of).explain(x)
    np.testing.assert_allclose((native.values * x[..., None]).sum(2), ordinary.values.sum(2), rtol=0, atol=1e-13)
    assert native.additivity_error < 1e-12


def test_hypothetical_contributions_of_a_linear_model_have_a_closed_form():
    import keras

    with floatx(keras, "float64"):
        model = keras.Sequential([keras.Input((L, 4)), keras.layers.Flatten(), keras.layers.Dense(1)])
    w = np.random.default_rng(0).normal(size=(L * 4, 1))
    model.layers[-1].set_weights([w, np.zeros(1)])
    rng = np.random.default_rng(1)
    x, references = _one_hot(rng, 2), np.stack([_one_hot(rng, 5) for _ in range(2)])
    result = tfshap.compile(model, references[0]).explain(x, references=references, hypothetical=True)
    weights = w[:, 0].reshape(L, 4)
    # m = w; h[..., i] = mean_k (w_i − Σ_c w_c · r_k,c)
    expected = weights[None] - np.einsum("nkpc,pc->np", references, weights)[..., None] / 5
    np.testing.assert_allclose(result.values[..., 0], expected, rtol=0, atol=1e-13)


def test_hypothetical_contributions_stream_and_export_like_explain(setup, tmp_path):
    K, model, x = setup
    references_of = _shuffles(lambda sample: 3)
    stacked = np.stack([references_of([row])[0] for row in x])
    explainer = tfshap.compile(model, references_of)
    expected = explainer.explain(x)
    streamed = explainer.explain_to(tmp_path / "values.npy", x, references=stacked)
    np.testing.assert_allclose(np.asarray(streamed.values), expected.values, rtol=0, atol=1e-13)
    np.testing.assert_allclose(streamed.base_values, expected.base_values, rtol=0, atol=1e-13)
    loaded = tf.saved_model.load(str(explainer.export(tmp_path / "exported")))
    served = loaded.explain(tf.constant(x), tf.constant(stacked))
    np.testing.assert_allclose(served["values"].numpy(), expected.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(served["base_values"].numpy(), expected.base_values, rtol=0, atol=1e-12)


def _returns(value):
    return lambda sample: value


@pytest.mark.parametrize(
    "function, message",
    [
        (_returns(None), r"for sample 0, returned None; expected an array"),
        (_returns([np.zeros((2, L, 4)), np.zeros((2, L, 4))]), r"for sample 0, returned 2 array\(s\); expected 1"),
        (_returns([np.zeros((0, L, 4))]), r"sample 0.*K = 0 reference rows"),
        (_returns([np.zeros((2, L, 3))]), r"sample 0.*returned shape \(2, 12, 3\); expected \(K, 12, 4\)"),
        (_returns([np.full((2, L, 4), "a")]), r"sample 0.*must be numeric"),
        (_returns([np.full((2, L, 4), np.nan)]), r"sample 0.*NaN or infinite"),
        (lambda sample: [np.zeros((2, L, 4)) if sample[0][0, 0] == 1 else np.zeros((2, L))], r"for sample \d"),
    ],
)
def test_a_bad_reference_function_names_the_sample(setup, function, message):
    K, model, x = setup
    with pytest.raises(ValueError, match=message):
        tfshap.compile(model, function).explain(x)


def test_bad_references_and_combiners_are_value_errors(setup):
    K, model, x = setup
    explainer = tfshap.compile(model, x[:2])
    with pytest.raises(ValueError, match=r"references must have shape \(n, K, 12, 4\) with n = 4"):
        explainer.explain(x, references=np.zeros((3, 2, L, 4)))
    with pytest.raises(ValueError, match=r"K = 0 reference rows"):
        explainer.explain(x, references=np.zeros((4, 0, L, 4)))
    wrong = tfshap.DeepExplainer(
        model, x[:2], combine_mult_and_diffref=lambda mult, orig_inp, bg_data: [orig_inp[0][0]]
    )
    with pytest.raises(ValueError, match=r"combine_mult_and_diffref returned shape \(4,\) for input 0 of sample 0"):
        wrong.shap_values(x)
    with pytest.raises(ValueError, match=r"combine_mult_and_diffref must be a function"):
        tfshap.DeepExplainer(model, x[:2], combine_mult_and_diffref="mean")
