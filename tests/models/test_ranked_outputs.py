"""ranked_outputs: indexes from argsort of the model outputs, values from the full explanation."""

from __future__ import annotations

import numpy as np
import pytest

import tfshap

from ._helpers import KERASES, additivity_gap, floatx, keras_module, predict

ORDERS = {
    "max": lambda out: np.argsort(-out, axis=1, kind="stable"),
    "min": lambda out: np.argsort(out, axis=1, kind="stable"),
    "max_abs": lambda out: np.argsort(-np.abs(out), axis=1, kind="stable"),
}


@pytest.fixture(scope="module", params=KERASES)
def setup(request):
    K = keras_module(request.param)
    rng = np.random.default_rng(11)
    with floatx(K, "float64"):
        model = K.Sequential([K.Input((5,)), K.layers.Dense(8, activation="tanh"), K.layers.Dense(6)])
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    background, x = rng.normal(size=(12, 5)), rng.normal(size=(7, 5))
    explainer = tfshap.DeepExplainer(model, background)
    full = explainer.shap_values(x)
    return model, explainer, x, full


def test_the_orders_rank_differently(setup):
    model, _, x, _ = setup
    out = predict(model, x)
    assert (out < 0).any() and (out > 0).any()
    firsts = {name: tuple(order(out)[:, 0]) for name, order in ORDERS.items()}
    assert len(set(firsts.values())) == 3  # the test data tells the three orders apart


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_ranked_outputs_match_argsort_and_full_columns(setup, order):
    model, explainer, x, full = setup
    out = predict(model, x)

    values, indexes = explainer.shap_values(x, ranked_outputs=3, output_rank_order=order, check_additivity=True)

    assert values.shape == (7, 5, 3) and indexes.shape == (7, 3)
    np.testing.assert_array_equal(indexes, ORDERS[order](out)[:, :3])
    np.testing.assert_allclose(values, np.take_along_axis(full, indexes[:, None, :], axis=2), rtol=0, atol=1e-12)
    # additivity for the ranked columns
    base = explainer.expected_value[indexes]
    gap = values.sum(1) + base - np.take_along_axis(out, indexes, axis=1)
    assert np.abs(gap).max() <= 1e-9


def test_ranked_attributions_select_outputs_and_base_values(setup):
    model, explainer, x, full = setup
    compiled = explainer.explainer
    result = compiled.explain(x, ranked_outputs=2, output_rank_order="max_abs")
    indexes = result.output_indices
    out = predict(model, x)
    np.testing.assert_array_equal(indexes, ORDERS["max_abs"](out)[:, :2])
    np.testing.assert_allclose(result.outputs, np.take_along_axis(out, indexes, axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.base_values, compiled.expected_value[indexes], rtol=0, atol=1e-12)
    assert np.abs(additivity_gap(result.values, result.base_values, result.outputs)).max() <= 1e-9
    assert result.additivity_error <= 1e-9
    compiled.check_additivity(result)  # the tolerance logic accepts per-sample base values


def test_one_ranked_output_keeps_the_trailing_axis(setup):
    model, explainer, x, full = setup
    values, indexes = explainer.shap_values(x, ranked_outputs=1)
    assert values.shape == (7, 5, 1) and indexes.shape == (7, 1)
    np.testing.assert_array_equal(indexes[:, 0], np.argmax(predict(model, x), axis=1))
    np.testing.assert_allclose(values[..., 0], full[np.arange(7), :, indexes[:, 0]], rtol=0, atol=1e-12)
