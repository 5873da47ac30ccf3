"""tfshap.GradientExplainer (expected gradients): layouts, completeness in expectation, closed forms, variances."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import (
    KERASES,
    digits,
    explain_bound,
    floatx,
    keras_module,
    predict,
    totals,
)

import tfshap


def _seed_model(K, x, y):
    """Two copies of a digit: Conv2D(8, 3) relu + Flatten, and Flatten; Dense(32) relu, Dropout, Dense(10) softmax."""
    L = K.layers
    K.utils.set_random_seed(0)
    image, copy = K.Input((8, 8, 1)), K.Input((8, 8, 1))
    joined = L.Concatenate()([L.Flatten()(L.Conv2D(8, 3, activation="relu")(image)), L.Flatten()(copy)])
    hidden = L.Dropout(0.2)(L.Dense(32, activation="relu")(joined))
    model = K.Model([image, copy], L.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit([x, x], y, epochs=1, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module", params=KERASES)
def seed(request):
    x, y = digits()
    model = _seed_model(keras_module(request.param), x, y)
    return model, x, tfshap.GradientExplainer(model, [x, x])


def _mlp(K, rng, units=(8, 3), activation="tanh", n_features=5):
    with floatx(K, "float64"):
        model = K.Sequential(
            [K.Input((n_features,)), K.layers.Dense(units[0], activation=activation), K.layers.Dense(units[1])]
        )
    model.set_weights([rng.normal(scale=0.8, size=w.shape) for w in model.get_weights()])
    return model


def _expected_gradients_by_tape(model, samples, background, nsamples, rseed):
    """The same draws as tfshap (documented order: background rows, then α), computed per sample with GradientTape."""
    rng = np.random.default_rng(rseed)
    n = len(samples[0])
    reference = rng.integers(len(background[0]), size=n * nsamples).reshape(n, nsamples)
    alpha = rng.random(n * nsamples).reshape(n, nsamples)
    per_input = [[] for _ in samples]
    for j in range(n):
        b = [bg[reference[j]] for bg in background]
        a = alpha[j].reshape(-1, *[1] * (samples[0].ndim - 1))
        delta = [s[j] - bi for s, bi in zip(samples, b)]
        points = [tf.constant(bi + a * d) for bi, d in zip(b, delta)]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(points)
            out = model(points, training=False)
        for i, (p, d) in enumerate(zip(points, delta)):
            jac = np.asarray(tape.batch_jacobian(out, p), np.float64)  # (nsamples, n_outputs, *shape)
            per_input[i].append(np.moveaxis((jac * d[:, None]).mean(0), 0, -1))
    return [np.stack(v) for v in per_input]


# -- the seed scenario ------------------------------------------------------------------------
def test_seed_scenario_layout_and_variances(seed):
    model, x, explainer = seed
    samples = [x[:3], x[:3]]

    values = explainer.shap_values(samples, rseed=4)
    again, variances = explainer.shap_values(samples, return_variances=True, rseed=5)

    assert isinstance(values, list) and len(values) == 2
    assert [v.shape for v in values] == [(3, 8, 8, 1, 10)] * 2
    assert isinstance(variances, list) and [v.shape for v in variances] == [(3, 8, 8, 1, 10)] * 2
    assert all(np.all(v >= 0) for v in variances) and all(v.max() > 0 for v in variances)
    # Complete in expectation: each baseline's path integral sums to f(x) − f(b) exactly, so the
    # totals miss the target only by the sampling error of a mean of 200 draws. Its standard
    # deviation is at most the sum of the values' (σ(Σφ) <= Σσ(φ)); a 4.5σ miss has probability
    # below 1e-5 for a mean of 200 draws (normal approximation), for each sample and output.
    target = predict(model, samples) - explainer.expected_value
    spread = sum(np.sqrt(v).reshape(3, -1, 10).sum(1) for v in variances)
    for estimate in (values, again):
        assert np.all(np.abs(totals(estimate) - target) <= 4.5 * spread)
    assert np.max(4.5 * spread) < np.max(np.abs(target))  # the check is tighter than the target itself


def test_seed_scenario_matches_gradient_tape_reference(seed):
    model, x, explainer = seed
    samples = [x[10:12], x[10:12]]
    background = [x, x]

    values = explainer.shap_values(samples, nsamples=64, rseed=3)

    reference = _expected_gradients_by_tape(model, samples, background, 64, 3)
    # the same float32 gradients, batched differently: each within the bound of one attribution
    # (a backward pass through the model, then the mean of 64 draws)
    bound = explain_bound(model, [np.concatenate([x, samples[0]])] * 2, 64, reference)
    for v, r in zip(values, reference):
        np.testing.assert_allclose(v, r, rtol=0, atol=2 * bound)


def test_rseed_reproduces_and_other_seeds_differ(seed):
    _, x, explainer = seed
    samples = [x[:2], x[:2]]
    first = explainer.shap_values(samples, nsamples=20, rseed=7)
    second = explainer.shap_values(samples, nsamples=20, rseed=7)
    other = explainer.shap_values(samples, nsamples=20, rseed=8)
    for a, b, c in zip(first, second, other):
        np.testing.assert_array_equal(a, b)
        assert np.max(np.abs(a - c)) > 1e-4


# -- estimates against closed forms ----------------------------------------------------------
def test_complete_in_expectation_on_tanh_mlp(rng):
    import tf_keras as K

    model = _mlp(K, rng, units=(10, 1))
    background, pool = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    moved = np.abs(predict(model, pool)[:, 0] - predict(model, background).mean()) > 0.5
    x = pool[moved][:4]  # samples whose output moves: the 5% is of something
    explainer = tfshap.GradientExplainer(model, background, batch_size=None)

    values = explainer.shap_values(x, nsamples=4000, rseed=0)

    target = predict(model, x) - predict(model, background).mean(0)
    assert len(x) == 4
    np.testing.assert_allclose(totals(values), target, rtol=0.05)


@pytest.mark.parametrize("name", KERASES)
def test_linear_model_gives_w_times_x_minus_mean_background(name, rng):
    K = keras_module(name)
    with floatx(K, "float64"):
        model = K.Sequential([K.Input((6,)), K.layers.Dense(2)])
    w, bias = rng.normal(size=(6, 2)), rng.normal(size=2)
    model.set_weights([w, bias])
    background, x = rng.normal(size=(50, 6)), rng.normal(size=(4, 6))
    explainer = tfshap.GradientExplainer(model, background)

    values, variances = explainer.shap_values(x, nsamples=400, rseed=1, return_variances=True)

    exact = (x - background.mean(0))[:, :, None] * w[None]
    # the only randomness is which background rows are drawn: |error| within 4.5 standard errors
    assert np.all(np.abs(values - exact) <= 4.5 * np.sqrt(variances) + 1e-12)
    # and the variance is the one of a mean of 400 draws of w·(x − b): w² var(b) / 400
    expected_variance = (w[None] ** 2) * background.var(0, ddof=1)[None, :, None] / 400
    np.testing.assert_allclose(np.median(variances / expected_variance), 1.0, rtol=0.2)


def test_local_smoothing_keeps_a_linear_expectation_and_adds_noise(rng):
    import tf_keras as K

    with floatx(K, "float64"):
        model = K.Sequential([K.Input((4,)), K.layers.Dense(1)])
    w = rng.normal(size=(4, 1))
    model.set_weights([w, np.zeros(1)])
    background, x = rng.normal(size=(30, 4)), rng.normal(size=(3, 4))
    plain = tfshap.GradientExplainer(model, background)
    smooth = tfshap.GradientExplainer(model, background, local_smoothing=0.5)

    quiet, quiet_var = plain.shap_values(x, nsamples=500, rseed=2, return_variances=True)
    noisy, noisy_var = smooth.shap_values(x, nsamples=500, rseed=2, return_variances=True)
    noisy_again = smooth.shap_values(x, nsamples=500, rseed=2)

    exact = (x - background.mean(0))[:, :, None] * w[None]
    assert np.all(np.abs(noisy - exact) <= 4.5 * np.sqrt(noisy_var))
    # the noise adds w² · 0.5² / 500 to the variance of each estimate
    assert np.median((noisy_var - quiet_var) / ((w[None] ** 2) * 0.25 / 500)) == pytest.approx(1.0, rel=0.2)
    np.testing.assert_array_equal(noisy, noisy_again)
    assert np.max(np.abs(noisy - quiet)) > 1e-3


def test_variance_shrinks_as_one_over_nsamples(rng):
    import tf_keras as K

    model = _mlp(K, rng)
    background, x = rng.normal(size=(40, 5)), rng.normal(size=(3, 5))
    explainer = tfshap.GradientExplainer(model, background, batch_size=None)

    _, few = explainer.shap_values(x, nsamples=100, rseed=4, return_variances=True)
    _, many = explainer.shap_values(x, nsamples=1600, rseed=4, return_variances=True)

    assert 12 < np.median(few / many) < 21  # 16 expected


def test_same_background_row_for_every_input(rng):
    """f(a, b) = w·a − w·b fed the same data twice: each draw's attributions cancel only if both inputs share
    the row."""
    import tf_keras as K

    with floatx(K, "float64"):
        a, b = K.Input((3,)), K.Input((3,))
        dense = K.layers.Dense(1, use_bias=False)
        model = K.Model([a, b], K.layers.Subtract()([dense(a), dense(b)]))
    background, x = rng.normal(size=(25, 3)), rng.normal(size=(4, 3))
    explainer = tfshap.GradientExplainer(model, [background, background])

    first, second = explainer.shap_values([x, x], nsamples=50, rseed=0)

    np.testing.assert_allclose(first, -second, rtol=0, atol=1e-12)
    assert np.abs(first).max() > 1e-3


def test_multi_input_values_follow_the_model_inputs(rng):
    """Two inputs, both nonlinear: values per input against GradientTape on the same draws, float64."""
    import tf_keras as K

    with floatx(K, "float64"):
        a, b = K.Input((3,)), K.Input((2,))
        h = K.layers.Dense(5, activation="tanh")(K.layers.Concatenate()([a, b]))
        model = K.Model([a, b], K.layers.Dense(2)(h))
    background = [rng.normal(size=(20, 3)), rng.normal(size=(20, 2))]
    x = [rng.normal(size=(3, 3)), rng.normal(size=(3, 2))]

    values = tfshap.GradientExplainer(model, background, batch_size=7).shap_values(x, nsamples=30, rseed=9)

    for v, r in zip(values, _expected_gradients_by_tape(model, x, background, 30, 9)):
        np.testing.assert_allclose(v, r, rtol=1e-10, atol=1e-12)


def test_many_outputs_share_one_backward_pass_over_copies(rng):
    """Beyond 16 outputs the rows are copied once per output: same numbers as GradientTape."""
    import tf_keras as K

    model = _mlp(K, rng, units=(6, 20))
    background, x = rng.normal(size=(15, 5)), rng.normal(size=(2, 5))

    values = tfshap.GradientExplainer(model, background).shap_values(x, nsamples=12, rseed=4)

    assert values.shape == (2, 5, 20)
    np.testing.assert_allclose(
        values, _expected_gradients_by_tape(model, [x], [background], 12, 4)[0], rtol=1e-10, atol=1e-12
    )


# -- ranked outputs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def six_outputs():
    import tf_keras as K

    rng = np.random.default_rng(5)
    model = _mlp(K, rng, units=(8, 6))
    background, x = rng.normal(size=(20, 5)), rng.normal(size=(5, 5))
    explainer = tfshap.GradientExplainer(model, background)
    return model, explainer, x, explainer.shap_values(x, nsamples=60, rseed=1)


@pytest.mark.parametrize(
    "order, key",
    [("max", lambda o: -o), ("min", lambda o: o), ("max_abs", lambda o: -np.abs(o))],
)
def test_ranked_outputs_like_deep_explainer(six_outputs, order, key):
    model, explainer, x, full = six_outputs
    values, indexes = explainer.shap_values(x, nsamples=60, rseed=1, ranked_outputs=2, output_rank_order=order)

    np.testing.assert_array_equal(indexes, np.argsort(key(predict(model, x)), axis=1, kind="stable")[:, :2])
    assert values.shape == (5, 5, 2)
    np.testing.assert_allclose(values, np.take_along_axis(full, indexes[:, None, :], axis=2), rtol=1e-10, atol=1e-12)


def test_ranked_outputs_with_variances(six_outputs):
    _, explainer, x, _ = six_outputs
    _, full_variances = explainer.shap_values(x, nsamples=60, rseed=1, return_variances=True)
    values, variances, indexes = explainer.shap_values(x, nsamples=60, rseed=1, ranked_outputs=3, return_variances=True)
    assert values.shape == variances.shape == (5, 5, 3) and indexes.shape == (5, 3)
    np.testing.assert_allclose(variances, np.take_along_axis(full_variances, indexes[:, None, :], axis=2), rtol=1e-8)


# -- through tfshap.compile ------------------------------------------------------------------
def test_compile_expected_gradients_matches_gradient_explainer(six_outputs):
    model, explainer, x, full = six_outputs
    background = explainer.explainer.background[0].numpy()
    compiled = tfshap.compile(model, background, method="expected_gradients", nsamples=60, rseed=1)

    result = compiled.explain(x)
    from_dataset = compiled.explain(tf.data.Dataset.from_tensor_slices(x).batch(5))

    np.testing.assert_allclose(result.values, full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.base_values, predict(model, background).mean(0), rtol=1e-10)
    expected_delta = totals(full) - (predict(model, x) - result.base_values)
    np.testing.assert_allclose(result.convergence_delta, expected_delta, rtol=1e-8, atol=1e-12)
    assert result.additivity_error == pytest.approx(np.abs(expected_delta).max())
    np.testing.assert_allclose(from_dataset.convergence_delta, expected_delta, rtol=1e-8, atol=1e-12)


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    import tf_keras as K

    K.utils.set_random_seed(0)
    model = K.Sequential([K.Input((4,)), K.layers.Dense(2)])
    background = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    return model, background, tfshap.GradientExplainer(model, background)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(nsamples=0), r"nsamples must be an integer >= 1; got 0"),
        (dict(nsamples=2.5), r"nsamples must be an integer"),
        (dict(nsamples=1, return_variances=True), r"needs nsamples >= 2"),
        (dict(ranked_outputs=3), r"ranked_outputs must be an integer from 1 to 2"),
        (dict(ranked_outputs=1, output_rank_order="median"), r"output_rank_order must be one of"),
        (dict(rseed=-1), r"rseed must be None or a non-negative integer"),
    ],
)
def test_bad_options_are_value_errors(small, kwargs, message):
    _, background, explainer = small
    with pytest.raises(ValueError, match=message):
        explainer.shap_values(background[:2], **kwargs)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 5), "float32"), r"must have shape \(n, 4\); got \(2, 5\)"),
        ([np.zeros((2, 4)), np.zeros((2, 4))], r"list of 1 array"),
        (np.full((2, 4), np.nan), r"NaN or infinite"),
    ],
)
def test_bad_samples_are_value_errors(small, x, message):
    with pytest.raises(ValueError, match=message):
        small[2].shap_values(x)


def test_bad_construction_is_a_value_error(small):
    model, background, _ = small
    with pytest.raises(ValueError, match=r"background must have shape \(n, 4\)"):
        tfshap.GradientExplainer(model, background[:, :3])
    with pytest.raises(ValueError, match=r"local_smoothing must be a finite number >= 0"):
        tfshap.GradientExplainer(model, background, local_smoothing=-1)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1"):
        tfshap.GradientExplainer(model, background, batch_size=0)
    with pytest.raises(
        ValueError, match=r"takes the options \('nsamples', 'local_smoothing', 'rseed'\); got \['steps'\]"
    ):
        tfshap.compile(model, background, method="expected_gradients", steps=10)
    with pytest.raises(ValueError, match=r"inputs= .* method='deep' only"):
        tfshap.compile(model, background, method="expected_gradients", inputs="dense")
