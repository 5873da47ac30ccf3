"""tools/shapley.py, the exact Shapley enumerator, against closed forms and the axioms.

Every expected value is written down independently of the enumerator: linear models
(φ = w·(x − r)), products (φ_a = ½Δa·(b + r_b)), the max of two, a three-way product against
a zero reference (a third each), and the permutation definition of the Shapley value.
float64 throughout: the enumerator sums 2^d terms whose weights add up to 1 on each side, so
its rounding is a few ulps of the largest |v(S)|; 1e-12 leaves a margin of ~100 ulps of O(1) values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from _tools import load_tool

shapley = load_tool("shapley")
ATOL = 1e-12


def _mlp(rng, d, n_out=2):
    """A small fixed tanh network ``(rows, d) -> (rows, n_out)``: a game with interactions of every order."""
    w1, b1 = rng.normal(size=(d, 6)), rng.normal(size=6)
    w2 = rng.normal(size=(6, n_out))
    return lambda rows: np.tanh(rows @ w1 + b1) @ w2 + np.sin(rows[:, :1] * rows[:, -1:])


def test_linear_model_gives_w_times_x_minus_mean_reference(rng):
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    x, refs = rng.normal(size=(4, 5)), rng.normal(size=(7, 5))

    phi = shapley.shapley_values(lambda rows: rows @ w + b, x, refs)

    assert phi.shape == (4, 5, 3)
    np.testing.assert_allclose(phi, w[None] * (x - refs.mean(0))[:, :, None], rtol=0, atol=ATOL)


def test_product_splits_half_delta_times_sum_of_the_other(rng):
    x, r = rng.normal(size=(6, 3)), rng.normal(size=3)

    phi = shapley.shapley_values(lambda rows: rows[:, 0] * rows[:, 1] + rows[:, 2], x, r)[..., 0]

    np.testing.assert_allclose(phi[:, 0], 0.5 * (x[:, 0] - r[0]) * (x[:, 1] + r[1]), rtol=0, atol=ATOL)
    np.testing.assert_allclose(phi[:, 1], 0.5 * (x[:, 1] - r[1]) * (x[:, 0] + r[0]), rtol=0, atol=ATOL)
    np.testing.assert_allclose(phi[:, 2], x[:, 2] - r[2], rtol=0, atol=ATOL)


def test_max_of_two_is_the_two_player_formula(rng):
    x, r = rng.normal(size=(20, 2)), rng.normal(size=2)
    a, b, ra, rb = x[:, 0], x[:, 1], r[0], r[1]

    phi = shapley.shapley_values(lambda rows: rows.max(1), x, r)[..., 0]

    expected_a = 0.5 * (np.maximum(a, rb) - max(ra, rb)) + 0.5 * (np.maximum(a, b) - np.maximum(ra, b))
    expected_b = 0.5 * (np.maximum(ra, b) - max(ra, rb)) + 0.5 * (np.maximum(a, b) - np.maximum(a, rb))
    np.testing.assert_allclose(phi[:, 0], expected_a, rtol=0, atol=ATOL)
    np.testing.assert_allclose(phi[:, 1], expected_b, rtol=0, atol=ATOL)


def test_three_way_product_against_zero_gives_a_third_each(rng):
    x = rng.normal(size=(5, 3))

    phi = shapley.shapley_values(lambda rows: rows.prod(1), x, np.zeros(3))[..., 0]

    np.testing.assert_allclose(phi, np.repeat(x.prod(1, keepdims=True) / 3, 3, 1), rtol=0, atol=ATOL)


def test_matches_the_permutation_definition(rng):
    d = 5
    f = _mlp(rng, d)
    x, r = rng.normal(size=(1, d)), rng.normal(size=d)

    def v(coalition):
        return f(np.where(np.isin(np.arange(d), list(coalition)), x[0], r)[None])[0]

    expected = np.zeros((d, 2))
    for order in itertools.permutations(range(d)):
        for k, j in enumerate(order):
            expected[j] += v(order[: k + 1]) - v(order[:k])
    expected /= math.factorial(d)

    np.testing.assert_allclose(shapley.shapley_values(f, x, r)[0], expected, rtol=0, atol=ATOL)


def test_efficiency_null_player_and_symmetry(rng):
    d = 7
    inner = _mlp(rng, d - 1)
    # feature 6 is a null player; features 1 and 2 enter only through their sum (symmetric)
    f = lambda z: inner(np.concatenate([z[:, :1], z[:, 1:2] + z[:, 2:3], 0 * z[:, 2:3], z[:, 3:6]], 1))
    x, refs = rng.normal(size=(3, d)), rng.normal(size=(4, d))
    x[:, 2], refs[:, 2] = x[:, 1], refs[:, 1]

    phi = shapley.shapley_values(f, x, refs)

    np.testing.assert_allclose(phi.sum(1), f(x) - f(refs).mean(0), rtol=0, atol=ATOL)
    np.testing.assert_array_less(np.abs(phi[:, 6]), ATOL)
    np.testing.assert_allclose(phi[:, 1], phi[:, 2], rtol=0, atol=ATOL)


def test_several_references_are_the_mean_of_per_reference_values(rng):
    f = _mlp(rng, 4)
    x, refs = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))

    each = np.stack([shapley.shapley_values(f, x, r) for r in refs])

    np.testing.assert_allclose(shapley.shapley_values(f, x, refs, batch_rows=7), each.mean(0), rtol=0, atol=ATOL)


def test_keeps_the_input_shape_and_batches_rows(rng):
    f = _mlp(rng, 6, n_out=3)
    x, refs = rng.normal(size=(2, 2, 3)), rng.normal(size=(3, 2, 3))
    flat = lambda rows: f(rows.reshape(len(rows), 6))

    phi = shapley.shapley_values(flat, x, refs, batch_rows=5)

    assert phi.shape == (2, 2, 3, 3)
    expected = shapley.shapley_values(f, x.reshape(2, 6), refs.reshape(3, 6))
    np.testing.assert_allclose(phi.reshape(2, 6, 3), expected, rtol=0, atol=ATOL)


def test_keras_model_linear(K64, rng):
    model = K64.Sequential([K64.Input((4,)), K64.layers.Dense(2)])
    w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
    model.layers[-1].set_weights([w, b])
    x, refs = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))

    phi = shapley.shapley_values(model, x, refs)

    np.testing.assert_allclose(phi, w[None] * (x - refs.mean(0))[:, :, None], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "x, refs, kwargs, message",
    [
        (np.zeros((2, 17)), np.zeros((1, 17)), {}, "1 to 16 features"),
        (np.zeros((2, 3)), np.zeros((1, 4)), {}, r"\(K, 3\)"),
        (np.zeros(3), np.zeros(3), {}, r"\(n, \*input_shape\)"),
        (np.full((1, 3), np.nan), np.zeros(3), {}, "finite"),
        (np.zeros((1, 3)), np.zeros((0, 3)), {}, "K >= 1"),
        (np.zeros((1, 3)), np.zeros(3), {"batch_rows": 0}, "batch_rows"),
    ],
)
def test_bad_input_says_what_was_expected(x, refs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapley.shapley_values(lambda rows: rows.sum(1), x, refs, **kwargs)


def test_a_model_that_drops_rows_is_refused():
    with pytest.raises(ValueError, match="one row per input row"):
        shapley.shapley_values(lambda rows: rows[:1].sum(1), np.zeros((1, 3)), np.ones(3))
    with pytest.raises(ValueError, match="Keras model or a callable"):
        shapley.shapley_values("model.keras", np.zeros((1, 3)), np.ones(3))
