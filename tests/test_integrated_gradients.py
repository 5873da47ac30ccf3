"""tfshap.compile(..., method="integrated_gradients"): quadrature rules, baselines, convergence delta."""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import KERASES, floatx, keras_module, predict, totals

import tfshap
from tfshap.gradients import quadrature


def _sum_of_squares(K):
    """f(x) = Σ x² from Keras layers: x ⊙ x, then a Dense of ones."""
    inp = K.Input((4,))
    out = K.layers.Dense(1, use_bias=False, kernel_initializer="ones")(K.layers.Multiply()([inp, inp]))
    return K.Model(inp, out)


def _tanh_mlp(K, rng, outputs=2):
    model = K.Sequential([K.Input((5,)), K.layers.Dense(12, activation="tanh"), K.layers.Dense(outputs)])
    model.set_weights([rng.normal(scale=1.2, size=w.shape) for w in model.get_weights()])
    return model


def test_quadrature_rules_integrate_on_the_unit_interval():
    for rule in ("midpoint", "gauss_legendre"):
        nodes, weights = quadrature(5, rule)
        assert np.all((0 < nodes) & (nodes < 1))
        assert weights.sum() == pytest.approx(1.0, abs=1e-15)
    nodes, weights = quadrature(3, "gauss_legendre")
    assert weights @ nodes**5 == pytest.approx(1 / 6, abs=1e-14)  # exact up to degree 2·3 − 1


@pytest.mark.parametrize("name", KERASES)
@pytest.mark.parametrize("rule", ["midpoint", "gauss_legendre"])
def test_sum_of_squares_is_exact_with_either_rule(name, rule, rng):
    K = keras_module(name)
    with floatx(K, "float64"):
        model = _sum_of_squares(K)
    baselines, x = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))

    result = tfshap.compile(model, baselines, method="integrated_gradients", steps=2, rule=rule).explain(x)

    # ∫ 2(b + α(x − b)) · (x − b) dα = x² − b², averaged over the baselines
    exact = (x**2 - (baselines**2).mean(0))[:, :, None]
    np.testing.assert_allclose(result.values, exact, rtol=1e-12, atol=1e-12)
    assert result.convergence_delta.shape == (5, 1)
    np.testing.assert_allclose(result.convergence_delta, 0, atol=1e-12)
    np.testing.assert_allclose(result.base_values, (baselines**2).sum(1).mean(), rtol=1e-12)


def test_linear_model_is_exact_with_one_step(rng):
    import tf_keras as K

    with floatx(K, "float64"):
        model = K.Sequential([K.Input((3,)), K.layers.Dense(2)])
    w = rng.normal(size=(3, 2))
    model.set_weights([w, rng.normal(size=2)])
    baseline, x = rng.normal(size=(1, 3)), rng.normal(size=(4, 3))

    explainer = tfshap.compile(model, baseline, method="integrated_gradients", steps=1)
    values = explainer.shap_values(x, check_additivity=True)

    np.testing.assert_allclose(values, (x - baseline)[:, :, None] * w[None], rtol=1e-12)


@pytest.fixture(scope="module")
def smooth():
    import tf_keras as K

    rng = np.random.default_rng(3)
    with floatx(K, "float64"):
        model = _tanh_mlp(K, rng)
    return model, rng.normal(size=(2, 5)), rng.normal(size=(6, 5))


def _delta_norm(model, baselines, x, steps, rule):
    """‖convergence_delta‖ over every sample and output: the quadrature error of the path integrals."""
    compiled = tfshap.compile(model, baselines, method="integrated_gradients", steps=steps, rule=rule)
    return float(np.linalg.norm(compiled.explain(x).convergence_delta))


def _observed_order(errors: dict, n: int) -> float:
    """log2(E(n) / E(2n)): the p of an error falling as steps^-p between n and 2n steps."""
    return float(np.log2(errors[n] / errors[2 * n]))


def test_midpoint_converges_at_order_2_and_gauss_legendre_geometrically(smooth):
    """The rates quadrature theory promises for a smooth (analytic) integrand, no fitted factors.

    Midpoint: E(n) = c2·n^-2 + c4·n^-4 + ..., so the observed order tends to 2, its distance
    from 2 shrinking with n. Gauss–Legendre: E(n) <= C·ρ^(-2n) (Trefethen, SIAM Review 50(1),
    2008, Thm 4.5), so ln(E(n)/E(2n)) grows at least twice as fast as ln(E(n/2)/E(n)), and it
    beats the midpoint rule at the same number of model gradients.
    """
    model, baselines, x = smooth
    steps = (8, 16, 32)
    midpoint = {s: _delta_norm(model, baselines, x, s, "midpoint") for s in steps}
    gauss = {s: _delta_norm(model, baselines, x, s, "gauss_legendre") for s in steps}

    coarse, fine = _observed_order(midpoint, 8), _observed_order(midpoint, 16)
    assert round(fine) == 2 and abs(fine - 2) < abs(coarse - 2), (coarse, fine)
    # the errors measured stay far above float64's rounding of the sums (about 1e-15 here)
    assert gauss[32] > 1e-12
    assert np.log(gauss[16] / gauss[32]) >= 2 * np.log(gauss[8] / gauss[16]), gauss
    assert all(gauss[s] < midpoint[s] for s in steps)


def test_convergence_delta_is_sum_minus_output_difference(smooth):
    model, baselines, x = smooth
    result = tfshap.compile(model, baselines, method="integrated_gradients", steps=3, rule="midpoint").explain(x)

    target = predict(model, x) - predict(model, baselines).mean(0)
    np.testing.assert_allclose(result.convergence_delta, totals(result.values) - target, rtol=1e-10, atol=1e-14)
    assert result.additivity_error == pytest.approx(np.abs(result.convergence_delta).max())
    assert result.additivity_error > 1e-4  # three midpoint steps are not enough here


def test_several_baselines_average_single_baseline_runs(smooth):
    model, baselines, x = smooth
    together = tfshap.compile(model, baselines, method="integrated_gradients", steps=6).explain(x).values
    apart = [
        tfshap.compile(model, b[None], method="integrated_gradients", steps=6).explain(x).values for b in baselines
    ]
    np.testing.assert_allclose(together, np.mean(apart, axis=0), rtol=1e-10, atol=1e-14)


def test_ranked_outputs_and_additivity_check(smooth):
    model, baselines, x = smooth
    compiled = tfshap.compile(model, baselines, method="integrated_gradients", steps=16, batch_size=5)
    full = compiled.explain(x)

    values, indexes = compiled.shap_values(x, ranked_outputs=1, output_rank_order="min")
    ranked = compiled.explain(x, ranked_outputs=1, output_rank_order="min")

    np.testing.assert_array_equal(indexes[:, 0], np.argmin(predict(model, x), axis=1))
    np.testing.assert_allclose(values, np.take_along_axis(full.values, indexes[:, None, :], axis=2), rtol=1e-10)
    np.testing.assert_allclose(ranked.convergence_delta, np.take_along_axis(full.convergence_delta, indexes, axis=1))
    with pytest.raises(tfshap.AdditivityError, match="miss"):
        tfshap.compile(model, baselines, method="integrated_gradients", steps=1).shap_values(x, check_additivity=True)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(steps=0), r"steps must be an integer >= 1; got 0"),
        (dict(steps=2.0), r"steps must be an integer >= 1"),
        (dict(rule="simpson"), r"rule must be one of \('gauss_legendre', 'midpoint'\); got 'simpson'"),
        (dict(nsamples=10), r"takes the options \('steps', 'rule'\); got \['nsamples'\]"),
        (dict(inputs="dense"), r"inputs= .* method='deep' only"),
    ],
)
def test_bad_options_are_value_errors(smooth, options, message):
    model, baselines, _ = smooth
    with pytest.raises(ValueError, match=message):
        tfshap.compile(model, baselines, method="integrated_gradients", **options)


def test_bad_samples_and_unsupported_requests_are_value_errors(smooth, tmp_path):
    model, baselines, x = smooth
    compiled = tfshap.compile(model, baselines, method="integrated_gradients", steps=2)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\); got \(6, 4\)"):
        compiled.explain(x[:, :4])
    with pytest.raises(ValueError, match=r"variances come from sampling"):
        compiled.estimate(x, variances=True)
    with pytest.raises(ValueError, match=r"export supports method='deep' only"):
        compiled.export(tmp_path / "ig")
    with pytest.raises(ValueError, match=r"background must have shape \(n, 5\)"):
        tfshap.compile(model, baselines[:, :2], method="integrated_gradients")


def test_an_op_without_a_gradient_is_a_compile_error():
    import tensorflow as tf
    import tf_keras as K

    model = K.Sequential([K.Input((3,)), K.layers.Lambda(lambda t: tf.bitcast(t, tf.float32)), K.layers.Dense(1)])
    with pytest.raises(tfshap.CompileError, match=r"needs the model's gradients: .*Bitcast"):
        tfshap.compile(model, np.zeros((1, 3), "float32"), method="integrated_gradients")
