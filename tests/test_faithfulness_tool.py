"""tools/faithfulness.py's NumPy DeepLIFT and its candidate rules, the prototypes the benchmark measures.

The NumPy DeepLIFT with the default rules must reproduce tfshap (so a candidate differs from
tfshap only by the rule it changes); every candidate must add up exactly; and each must have
the property it is offered for: exact Shapley values for max pooling, the two-class softmax,
and RevealCancel on one positive and one negative term. float64; 1e-10 as in
test_faithfulness_axioms.py (rounding ≈1e-15 on O(1) values; the rules differ by ≥1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from _tools import load_tool
from models._helpers import floatx

import tfshap

faith = load_tool("faithfulness")
shapley = load_tool("shapley")
ATOL = 1e-10


def _enumerated(f, x, r):
    """Exact Shapley values over the last axis by enumeration (tools/shapley.py), ``(..., w, outputs)``."""
    flat_x, flat_r = x.reshape(-1, x.shape[-1]), r.reshape(-1, r.shape[-1])
    phi = np.stack([shapley.shapley_values(f, a[None], b)[0] for a, b in zip(flat_x, flat_r)])
    return phi.reshape(*x.shape, -1)


@pytest.mark.parametrize("w", [1, 2, 3, 4, 6])
def test_max_shapley_closed_form_equals_the_enumeration(rng, w):
    x, r = np.round(rng.normal(size=(12, w)), 1), np.round(rng.normal(size=(12, w)), 1)  # rounding makes ties
    x[:3, 0] = r[:3, 0]

    phi = faith.max_shapley(x, r)

    np.testing.assert_allclose(phi, _enumerated(lambda rows: rows.max(-1), x, r)[..., 0], rtol=0, atol=ATOL)


def test_max_shapley_splits_ties_evenly():
    phi = faith.max_shapley(np.array([[3.0, 3.0, 0.0]]), np.zeros((1, 3)))
    np.testing.assert_allclose(phi, [[1.5, 1.5, 0.0]], rtol=0, atol=ATOL)


def test_one_vs_rest_softmax_is_shapley_for_two_classes(rng):
    zx, zr = rng.normal(scale=2, size=(10, 2)), rng.normal(scale=2, size=(10, 2))

    M = faith.softmax_one_vs_rest(zx, zr)

    phi = M * (zx - zr)[:, None, :]  # (pairs, output o, logit j)
    exact = _enumerated(faith._softmax, zx, zr)  # (pairs, logit j, output o)
    np.testing.assert_allclose(phi, np.swapaxes(exact, 1, 2), rtol=0, atol=ATOL)


@pytest.mark.parametrize("rule", ["default", "centred", "one_vs_rest", "one_vs_rest_raw", "shapley", "shapley_raw"])
def test_softmax_rules_add_up_and_give_the_jacobian_at_x_equal_r(rng, rule):
    zx, zr = rng.normal(scale=2, size=(8, 5)), rng.normal(scale=2, size=(8, 5))
    M = faith.SOFTMAX_RULES[rule](zx, zr)
    delta = faith._softmax(zx) - faith._softmax(zr)
    np.testing.assert_allclose(np.einsum("poj,pj->po", M, zx - zr), delta, rtol=0, atol=ATOL)
    if rule.startswith("shapley"):
        return  # φ / Δz is 0/0 at x == r: no slope is defined there
    p = faith._softmax(zx)
    jacobian = p[:, :, None] * (np.eye(5) - p[:, None, :])
    np.testing.assert_allclose(faith.SOFTMAX_RULES[rule](zx, zx), jacobian, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "rule, null", [("default", False), ("centred", True), ("one_vs_rest", True), ("shapley", True)]
)
def test_centred_softmax_rules_give_a_common_shift_no_credit(rule, null):
    """Issue 16's example: logits z0 = x0 + x2, z1 = x1 + x2, z2 = x2; x2 is a null player."""
    stages = [faith.Dense(np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 1]]), np.zeros(3), "softmax")]
    x, background = np.array([[2.0, -1.0, 5.0]]), np.array([[0, 0.5, -3], [1.0, 0, 0]])

    phi = faith.deeplift(stages, x, background, {**faith.DEFAULT_RULES, "softmax": rule})

    assert (np.max(np.abs(phi[0, 2])) < ATOL) == null
    if rule == "default":  # issue 16's numbers
        np.testing.assert_allclose(phi[0, 2], [0.176, 0.052, 0.058], atol=1e-3)


def test_reveal_cancel_is_shapley_for_one_positive_and_one_negative_term():
    # relu(0.5 + 2·Δa − 2·Δb) from (a, b) = (0, 0) to (1, 1): Δz = 0, rescale gives the slope, (2, −2)
    stages = [faith.Dense(np.array([[2.0], [-2.0]]), np.array([0.5]), "relu")]
    x, r = np.array([[1.0, 1.0]]), np.zeros((1, 2))

    reveal = faith.deeplift(stages, x, r, {**faith.DEFAULT_RULES, "act": "reveal_cancel"})
    rescale = faith.deeplift(stages, x, r, faith.DEFAULT_RULES)

    exact = shapley.shapley_values(lambda rows: np.maximum(0.5 + rows @ stages[0].A, 0), x, r)
    np.testing.assert_allclose(reveal, exact, rtol=0, atol=ATOL)
    np.testing.assert_allclose(reveal[0, :, 0], [1.25, -1.25], rtol=0, atol=ATOL)
    np.testing.assert_allclose(rescale[0, :, 0], [2.0, -2.0], rtol=0, atol=ATOL)


def _conv_pool_softmax(K, weights: dict, centred: bool):
    """Input(4, 3, 1) → Conv2D(2, 2, same, tanh) → MaxPool(2, strides (2, 1)) → Dense(3) → [centre] → Softmax."""
    with floatx(K, "float64"):
        inp = K.Input((4, 3, 1))
        conv = K.layers.Conv2D(2, 2, padding="same", activation="tanh")
        h = K.layers.Flatten()(K.layers.MaxPooling2D(2, strides=(2, 1))(conv(inp)))
        dense = K.layers.Dense(3)
        logits = dense(h)
        if centred:
            logits = K.layers.Lambda(lambda z: z - tf.reduce_mean(z, -1, keepdims=True))(logits)
        model = K.Model(inp, K.layers.Softmax()(logits))
    conv.set_weights(weights["conv"])
    dense.set_weights(weights["dense"])
    return model


@pytest.mark.parametrize("explicit_centring", [False, True])
def test_numpy_deeplift_reproduces_tfshap(K64, rng, explicit_centring):
    """tfshap's softmax rule centres the logits itself: with or without a centring Lambda before the
    softmax, its values are NumPy DeepLIFT's with the centred softmax."""
    weights = {
        "conv": [rng.normal(size=(2, 2, 1, 2)), rng.normal(size=2)],
        "dense": [rng.normal(size=(8, 3)), rng.normal(size=3)],
    }
    model = _conv_pool_softmax(K64, weights, centred=explicit_centring)
    x, background = rng.normal(size=(4, 4, 3, 1)), rng.normal(size=(5, 4, 3, 1))
    stages = faith.stages_of(_conv_pool_softmax(K64, weights, centred=False))  # the Lambda is the rule's centring

    values = tfshap.compile(model, background).explain(x).values
    numpy_values = faith.deeplift(stages, x, background, {**faith.DEFAULT_RULES, "softmax": "centred"})

    np.testing.assert_allclose(numpy_values, values, rtol=0, atol=ATOL)


@pytest.mark.parametrize("variant", list(faith.VARIANTS))
def test_every_candidate_adds_up(rng, variant):
    stages = [
        faith.Dense(rng.normal(size=(6, 8)), rng.normal(size=8), "tanh"),
        faith.WindowMax(np.arange(8).reshape(4, 2)),
        faith.Dense(rng.normal(size=(4, 3)), rng.normal(size=3), "softmax"),
    ]
    x, background = rng.normal(size=(5, 6)), rng.normal(size=(4, 6))

    phi = faith.deeplift(stages, x, background, {**faith.DEFAULT_RULES, **faith.VARIANTS[variant][0]})

    delta = faith.forward(stages, x)[-1] - faith.forward(stages, background)[-1].mean(0)
    np.testing.assert_allclose(phi.sum(1), delta, rtol=0, atol=ATOL)
