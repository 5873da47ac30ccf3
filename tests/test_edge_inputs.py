"""Hostile and edge inputs: each gives exact finite values or a clear error (both Kerases).

Closed forms used: an elementwise ``f`` then a linear layer ``w`` gives
``φ_i = w_i · (f(x_i) − mean_k f(r_ki))`` exactly; where a hidden unit has the same value
``c`` for the sample and its reference while its inputs differ, the rescale rule's
multiplier is the derivative ``f'(c)``, so ``φ = w · f'(c) · ∂h/∂x · Δx``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import (
    ELEMENTWISE_ROUNDINGS,
    additivity_gap,
    assert_explains_inference,
    explain_bound,
    float32_bound,
    floatx,
    global_policy,
    largest_activation,
    predict,
)
from scipy.special import expit

import tfshap

SIGMOID = expit
DERIVATIVES = {
    "sigmoid": lambda c: SIGMOID(c) * (1 - SIGMOID(c)),
    "tanh": lambda c: 1 - np.tanh(c) ** 2,
    "softplus": SIGMOID,
    "exponential": np.exp,
}
FUNCTIONS = {"sigmoid": SIGMOID, "tanh": np.tanh}


def _elementwise_then_linear(K, activation: str, width: int, weights: np.ndarray):
    """``w · f(x)`` with no bias: its attributions have a closed form."""
    inp = K.Input((width,))
    out = K.layers.Dense(1, use_bias=False)(K.layers.Activation(activation)(inp))
    model = K.Model(inp, out)
    model.set_weights([weights.reshape(width, 1).astype(K.backend.floatx())])
    return model


def _closed_form(fn, weights, x, background) -> np.ndarray:
    """``w_i · (f(x_i) − mean_k f(r_ki))``, ``(n, width, 1)``, in float64."""
    x, background = np.asarray(x, np.float64), np.asarray(background, np.float64)
    return (weights * (fn(x) - fn(background).mean(axis=0)))[..., None]


def _assert_exact(result, atol: float) -> None:
    values = result.values if isinstance(result.values, list) else [result.values]
    assert all(np.all(np.isfinite(v)) for v in values)
    gap = np.max(np.abs(additivity_gap(result.values, result.base_values, result.outputs)))
    assert gap <= atol, f"additivity gap {gap:.3g} > {atol:.3g}"


# -- a sample equal to a background row (the 0/0 fallback) -------------------------------------------
@pytest.mark.parametrize("activation", sorted(DERIVATIVES))
def test_unit_equal_for_sample_and_reference_gets_the_derivative(K64, activation):
    """h = a − b is c for both rows while a, b differ: m = f'(c), so φ_a = w f'(c) Δa, φ_b = −w f'(c) Δb."""
    K = K64
    c, w = 0.3, 1.7
    inp = K.Input((2,))
    hidden = K.layers.Dense(1, use_bias=False, activation=activation)(inp)
    model = K.Model(inp, K.layers.Dense(1, use_bias=False)(hidden))
    model.set_weights([np.array([[1.0], [-1.0]]), np.array([[w]])])
    x, background = np.array([[1.0 + c, 1.0]]), np.array([[2.5 + c, 2.5]])
    values = tfshap.compile(model, background).explain(x).values[0, :, 0]
    slope = w * DERIVATIVES[activation](c)
    np.testing.assert_allclose(values, [slope * -1.5, -slope * -1.5], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sample_identical_to_a_background_row(K, rng, dtype):
    with floatx(K, dtype):
        inp = K.Input((5,))
        h = K.layers.Dense(4, activation="tanh")(inp)
        h = K.layers.Multiply()([h, K.layers.Dense(4, activation="sigmoid")(inp)])
        model = K.Model(inp, K.layers.Dense(2, activation="sigmoid")(h))
    background = rng.normal(size=(6, 5)).astype(dtype)
    explainer = tfshap.compile(model, background)
    alone = explainer.explain(background[2:3])  # among the other rows
    # float32: the roundings of one attribution (forward, back, mean over 6 rows)
    atol = 1e-12 if dtype == "float64" else explain_bound(model, background, len(background), alone.values)
    _assert_exact(alone, atol)
    np.testing.assert_allclose(alone.outputs, predict(model, background[2:3]), rtol=0, atol=atol)
    only_itself = tfshap.compile(model, background[2:3]).explain(background[2:3])
    np.testing.assert_array_equal(only_itself.values, 0.0)  # nothing differs: nothing to attribute
    np.testing.assert_allclose(only_itself.outputs, only_itself.base_values[None], atol=atol)


# -- saturation and tiny differences ------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturated_activations_around_1e4(K, activation, dtype):
    weights = np.array([0.5, -2.0, 1.0, 3.0])
    with floatx(K, dtype):
        model = _elementwise_then_linear(K, activation, 4, weights)
    # opposite saturations, the same saturation (Δf = 0 in floating point), and exactly equal
    x = np.array([[1e4, -1e4, 1e4 + 3, 2e4]], dtype)
    background = np.array([[-1e4, 1e4, 1e4, 2e4], [-1.2e4, 0.5, 9e3, 2e4]], dtype)
    result = tfshap.compile(model, background).explain(x)
    expected = _closed_form(FUNCTIONS[activation], weights, x, background)
    # float32: the inputs are exact; f(x) and f(r) round once each, then Δf, Δx and their ratio,
    # its product with Δx and with w, the mean over 2 rows; each value is at most 2·|w| (Δf <= 2),
    # and the additivity gap adds the sum over the 4 features to values of at most Σ 2·|w|
    per_value = float32_bound(ELEMENTWISE_ROUNDINGS + 4, 2 * np.abs(weights).max())
    gap = float32_bound(ELEMENTWISE_ROUNDINGS + 8, 2 * np.abs(weights).sum())
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=per_value if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=gap if dtype == "float32" else 1e-12)
    _assert_exact(result, gap if dtype == "float32" else 1e-12)


def test_differences_of_1e_12(K64, rng):
    """Δ ≈ 1e-12 in float64 (above the fallback threshold): the ratio itself, still exact."""
    weights = rng.normal(size=4)
    model = _elementwise_then_linear(K64, "sigmoid", 4, weights)
    background = rng.normal(size=(3, 4))
    x = background[:1] + 1e-12 * rng.normal(size=(1, 4))
    result = tfshap.compile(model, background[:1]).explain(x)
    slope = DERIVATIVES["sigmoid"]((x + background[:1]) / 2)
    np.testing.assert_allclose(result.values[..., 0], weights * slope * (x - background[:1]), rtol=1e-3)
    _assert_exact(result, 1e-15)


def test_differences_below_float32_resolution_use_the_derivative(K):
    """float32, x = 1e-12 against r = 0: |Δ| is below 32 ulps, so m = f'(midpoint) (no 0/0, no noise)."""
    weights = np.array([1.0, -1.0, 2.0])
    with floatx(K, "float32"):
        model = _elementwise_then_linear(K, "tanh", 3, weights)
    x = np.array([[1e-12, -3e-12, 0.0]], "float32")
    result = tfshap.compile(model, np.zeros((1, 3), "float32")).explain(x)
    # m = tanh'(midpoint) rounds to 1; then m·Δx and w·(m·Δx): three roundings, each relative to the value
    np.testing.assert_allclose(result.values[0, :, 0], weights * x[0], rtol=float32_bound(3, 1.0), atol=0)


# -- integer inputs, side inputs --------------------------------------------------------------------
def _cast(K):
    if K.__name__ == "tf_keras":
        return lambda t: tf.cast(t, K.backend.floatx())
    return lambda t: K.ops.cast(t, K.backend.floatx())


def test_integer_input_attributed_at_its_cast(K64, rng):
    """An int model input cast to float, then linear: φ = w · (x − mean b) at the cast layer."""
    K = K64
    tokens = K.Input((5,), dtype="int32")
    model = K.Model(tokens, K.layers.Dense(2)(K.layers.Lambda(_cast(K), name="as_float")(tokens)))
    background, x = rng.integers(0, 9, size=(4, 5)), rng.integers(0, 9, size=(3, 5))
    result = tfshap.compile(model, background, inputs="as_float").explain(x)
    kernel = model.layers[-1].get_weights()[0]
    expected = (x - background.mean(axis=0))[..., None] * kernel[None]
    np.testing.assert_allclose(result.values, expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"dtype int32, which has no gradient.*inputs="):
        tfshap.compile(model, background)  # no layer to attribute to


def test_integer_input_through_an_embedding(K64, rng):
    K = K64
    tokens = K.Input((4,), dtype="int32")
    embedded = K.layers.Embedding(10, 3, name="embedding")(tokens)
    model = K.Model(tokens, K.layers.Dense(2, activation="tanh")(K.layers.Flatten()(embedded)))
    background, x = rng.integers(0, 10, size=(3, 4)), rng.integers(0, 10, size=(2, 4))
    result = tfshap.compile(model, background, inputs="embedding").explain(x)
    assert result.values.shape == (2, 4, 3, 2)
    _assert_exact(result, 1e-12)
    np.testing.assert_allclose(result.outputs, predict(model, x), atol=1e-12)


def _masked_model(K, side_dtype: str):
    """A float input through Dense "proj", times a side mask input (int or bool) cast to float."""
    values, mask = K.Input((4,), name="values"), K.Input((4,), dtype=side_dtype, name="mask")
    proj = K.layers.Dense(4, name="proj")(values)
    masked = K.layers.Multiply()([proj, K.layers.Lambda(_cast(K), name="mask_as_float")(mask)])
    return K.Model([values, mask], K.layers.Dense(2, activation="tanh")(masked))


@pytest.mark.parametrize("side_dtype", ["int32", "bool"])
def test_integer_or_boolean_side_input(K64, rng, side_dtype):
    """Not explained: refused without a layer; with inputs=, exact where the masks agree, an error where not."""
    model = _masked_model(K64, side_dtype)
    mask = (rng.uniform(size=(1, 4)) < 0.6).astype(side_dtype)
    background = [rng.normal(size=(5, 4)), np.repeat(mask, 5, axis=0)]
    with pytest.raises(ValueError, match=rf"background\[1\] has dtype {side_dtype}, which has no gradient"):
        tfshap.compile(model, background)
    explainer = tfshap.compile(model, background, inputs="proj")
    x = [rng.normal(size=(2, 4)), np.repeat(mask, 2, axis=0)]
    result = explainer.explain(x)
    assert result.values.shape == (2, 4, 2)
    _assert_exact(result, 1e-12)
    assert_explains_inference(result, model, x, background)
    np.testing.assert_array_equal(result.values[:, ~mask[0].astype(bool)], 0.0)  # masked units get nothing
    with pytest.raises(tfshap.MaskMismatchError, match="mask_as_float"):
        explainer.explain([x[0], (1 - x[1].astype("int32")).astype(side_dtype)])


# -- sizes: one background row, N = 1, K = 1, a very large K -------------------------------------------
def test_one_background_row_and_one_sample(K64, rng):
    weights = rng.normal(size=3)
    model = _elementwise_then_linear(K64, "softplus", 3, weights)
    background, x = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    result = tfshap.compile(model, background).explain(x)
    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    np.testing.assert_allclose(result.values, _closed_form(softplus, weights, x, background), atol=1e-14)
    assert result.values.shape == (1, 3, 1) and result.base_values.shape == (1,)


def test_very_large_background_in_small_chunks(K64, rng):
    """K = 5000 rows through chunks of 97 pairs (not a divisor of N·K): the exact mean over all of them."""
    weights = rng.normal(size=3)
    model = _elementwise_then_linear(K64, "tanh", 3, weights)
    background, x = rng.normal(size=(5000, 3)), rng.normal(size=(2, 3))
    result = tfshap.compile(model, background, batch_size=97).explain(x)
    np.testing.assert_allclose(result.values, _closed_form(np.tanh, weights, x, background), atol=1e-13)
    _assert_exact(result, 1e-12)


# -- mixed precision ------------------------------------------------------------------------------------
#: float16's machine epsilon, 2**-10.
EPS16 = float(np.finfo(np.float16).eps)


def test_mixed_float16_model(K, rng):
    """Under mixed_float16 the rules run in float16 (the layers' compute dtype), to float16's precision.

    The float16 roundings are those of the values each layer stores: its output and the rule's
    steps (1 + ELEMENTWISE_ROUNDINGS per layer, forward and back); TensorFlow's CPU kernels
    accumulate a half-precision dot product in float32, whose roundings are 2**13 times smaller
    and are left out. The values are relative to the largest activation; the additivity gap,
    a sum of each layer's conservation errors, to the largest absolute sum of the values.
    """
    def build():
        inp = K.Input((8,))
        h = K.layers.Dense(16, activation="tanh")(inp)
        h = K.layers.Dense(16, activation="relu")(h)
        return K.Model(inp, K.layers.Dense(3, dtype="float32")(h))  # the usual float32 head

    with global_policy(K, "mixed_float16"):
        mixed = build()
    with floatx(K, "float64"):
        exact_model = build()
    exact_model.set_weights(mixed.get_weights())
    background, x = rng.normal(size=(10, 8)), rng.normal(size=(4, 8))

    explainer = tfshap.compile(mixed, background.astype("float32"))
    values = explainer.shap_values(x.astype("float32"))  # the additivity check passes at the float16 tolerance
    result = explainer.explain(x.astype("float32"))
    assert explainer.compute_dtype == tf.float16 and values.dtype == np.float32
    exact = tfshap.compile(exact_model, background).explain(x)
    np.testing.assert_allclose(exact.outputs, predict(exact_model, x), rtol=0, atol=1e-12)

    stores = 2 * (1 + ELEMENTWISE_ROUNDINGS) * len(exact_model.layers)
    magnitude = largest_activation(exact_model, np.concatenate([background, x]), sums=False)
    l1 = np.abs(exact.values).sum(1).max()
    np.testing.assert_allclose(result.outputs, exact.outputs, rtol=0, atol=float32_bound(stores // 2, magnitude, EPS16))
    _assert_exact(result, float32_bound(stores, max(l1, np.abs(exact.outputs).max()), EPS16))
    bound = float32_bound(stores, magnitude, EPS16)
    assert bound < 0.5 * np.abs(exact.values).max()  # still far from the values themselves
    np.testing.assert_allclose(result.values, exact.values, rtol=0, atol=bound)


# -- outputs of rank 3 ------------------------------------------------------------------------------------
def test_rank_3_output_is_flattened_in_row_major_order(K64, rng):
    """Dense(4) on (5, 3): output (t, u) is flat index 4t + u, and
    φ[t', c, 4t + u] = δ_tt' W[c, u] (x − mean b)[t, c]."""
    K = K64
    inp = K.Input((5, 3))
    model = K.Model(inp, K.layers.Dense(4)(inp))
    background, x = rng.normal(size=(6, 5, 3)), rng.normal(size=(2, 5, 3))
    result = tfshap.compile(model, background).explain(x)
    kernel = model.layers[-1].get_weights()[0]
    delta = x - background.mean(axis=0)
    expected = np.einsum("ts,ntc,cu->nctsu", np.eye(5), delta, kernel).reshape(2, 3, 5, 20).transpose(0, 2, 1, 3)
    assert result.values.shape == (2, 5, 3, 20) and result.outputs.shape == (2, 20)
    np.testing.assert_allclose(result.values, expected, atol=1e-12)
    np.testing.assert_allclose(result.outputs, model(x).numpy().reshape(2, 20), atol=1e-12)
