"""How the rules of ops with several varying inputs split the credit, against exact Shapley values.

The rule contract checks that the parts add up (``Σ m·Δx = Σ w·Δy``) and that ``x == r``
gives the gradient; a wrong split such as ``m_a = b, m_b = r_a`` for ``Mul`` satisfies both.
Here each input's share, ``m ⊙ Δx``, must equal its exact Shapley value, per element, in
float64, on operands that differ:

* elementwise binary ops ``y = g(a, b)`` are a two-player game per element,
  ``φ_a = ½[g(a, r_b) − g(r_a, r_b)] + ½[g(a, b) − g(r_a, b)]`` and ``φ_b`` symmetric; in closed
  form ``φ_a = ½Δa·(b + r_b)`` for a product, ``½Δa·(1/b + 1/r_b)`` for a quotient and
  ``Δa·((a + r_a) − (b + r_b))`` for a squared difference;
* a bilinear product (MatMul, BatchMatMul, Einsum) is a sum of two-player products
  ``c·A_e·B_f``, so ``φ_{A_e} = ΔA_e·∂y/∂A_e`` at ``B̄ = (B + r_B)/2``, and ``φ_B`` at ``Ā``;
* a linear op of several inputs (AddN, Sub, ConcatV2, ...) gives each input ``Δx·∂y/∂x``.

The weighted output ``Σ w·y`` is the game; a broadcast operand is one player in every output
element it reaches, and Shapley values add over the elements (linearity). The references are
numpy, independent of TensorFlow and of tfshap. The cases come from the contract's table.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfshap import registry

from .cases import N, sample
from .test_contract import BY_ID, REFUSALS, SEED, compiled, run


def _divide_no_nan(a, b):
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


#: ``g(a, b)`` of each elementwise binary op, in numpy.
ELEMENTWISE = {
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Div": np.divide,
    "DivNoNan": _divide_no_nan,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
    "Pow": np.power,
    "Atan2": np.arctan2,
    "SquaredDifference": lambda a, b: (a - b) ** 2,
}


def _quotient(a, ra, b, rb):
    return 0.5 * (a - ra) * (1 / b + 1 / rb), 0.5 * (a + ra) * (1 / b - 1 / rb)


#: The Shapley values of the ops that have a closed form: (φ_a, φ_b) from (a, r_a, b, r_b).
CLOSED_FORMS = {
    "Mul": lambda a, ra, b, rb: (0.5 * (a - ra) * (b + rb), 0.5 * (b - rb) * (a + ra)),
    "RealDiv": _quotient,
    "Div": _quotient,
    "SquaredDifference": lambda a, ra, b, rb: ((a - ra) * ((a + ra) - (b + rb)), (b - rb) * ((b + rb) - (a + ra))),
}


def two_player_shapley(g, a, ra, b, rb):
    """Exact Shapley values of the game ``v(S) = g(S's a or r_a, S's b or r_b) − g(r_a, r_b)``."""
    phi_a = 0.5 * (g(a, rb) - g(ra, rb)) + 0.5 * (g(a, b) - g(ra, b))
    phi_b = 0.5 * (g(ra, b) - g(ra, rb)) + 0.5 * (g(a, b) - g(a, rb))
    return phi_a, phi_b


def _matmul(adjoint_a=False):
    def product(a, b):
        return np.matmul(np.swapaxes(a, -1, -2) if adjoint_a else a, b)

    return product


def _einsum(equation):
    return lambda a, b: np.einsum(equation, a, b)


#: ``y = f(*inputs)`` of each bilinear case with two different varying operands, in numpy.
BILINEAR = {
    "BatchMatMul-both": _matmul(),
    "BatchMatMulV2-both": _matmul(),
    "BatchMatMulV2-adjoint a": _matmul(adjoint_a=True),
    "BatchMatMulV2-bcast heads": _matmul(),
    "BatchMatMulV3-both": _matmul(),
    **{
        f"Einsum-{equation}": _einsum(equation)
        for equation in (
            "nij,njk->nik", "ni,nj->nij", "nij,nij->n", "...ij,...jk->...ik", "aecd,abcd->acbe",
            "acbe,aecd->abcd", "afgde,abcde->adbcfg", "BTNH,BSNH->BNTS", "BNTS,BSNH->BTNH",
        )
    },
}

#: ``y = f(*inputs)`` (or a list of outputs) of each linear case with several varying inputs, in numpy.
LINEAR = {
    "AddV2-both": np.add,
    "AddV2-bcast n3 n1": np.add,
    "Add-both": np.add,
    "Sub-both": np.subtract,
    "Sub-bcast n1 n3": np.subtract,
    "AddN-three": lambda x, y: x + y + x,
    "ConcatV2-both": lambda x, y: np.concatenate([x, y], 1),
    "Pack-axis 1": lambda x, y: np.stack([x, y], 1),
    "SelectV2-constant condition": lambda x, y: np.where([True, False, True], x, y),
    "Select-constant condition": lambda x, y: np.where([True, False, True], x, y),
    "IdentityN-two tensors": lambda x, y: [x, y],
}

#: Every case whose inputs are the operands of one op with two varying inputs (not x with itself).
ELEMENTWISE_CASES = [
    c.id for c in BY_ID.values() if c.op_type in ELEMENTWISE and len(c.args) == 2 and c.expect == "tfshap"
]


def _unbroadcast(t: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``t`` over the axes that broadcasting added or stretched, down to ``shape``."""
    t = t.sum(axis=tuple(range(t.ndim - len(shape)))) if t.ndim > len(shape) else t
    return t.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1), keepdims=True)


def _shares(case_id: str, xs, rs) -> list[np.ndarray]:
    """tfshap's share of each input: ``m ⊙ (x − r)``, with the case's output weights in ``m``."""
    _, ms = run(BY_ID[case_id], "float64", xs, rs)
    return [m * (x - r) for m, x, r in zip(ms, xs, rs)]


def _weights(case_id: str) -> list[np.ndarray]:
    return compiled(case_id, "float64").weights


def _gradient_of_linear(f, args: list[np.ndarray], index: int, weights: list[np.ndarray]) -> np.ndarray:
    """``∂(Σ w·f)/∂args[index]`` for ``f`` linear in that argument: ``L(e_k) − L(0)`` for each unit ``e_k``."""

    def weighted(value):
        out = f(*[value if i == index else a for i, a in enumerate(args)])
        out = out if isinstance(out, list) else [out]
        return sum(float(np.sum(w * o)) for w, o in zip(weights, out))

    zero = np.zeros_like(args[index])
    base = weighted(zero)
    gradient = np.zeros_like(zero)
    for k in np.ndindex(zero.shape):
        unit = zero.copy()
        unit[k] = 1.0
        gradient[k] = weighted(unit) - base
    return gradient


def _assert_shares(case_id, got, expected):
    scale = max(1.0, max(float(np.abs(e).max()) for e in expected))
    for index, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-10 * scale, err_msg=f"{case_id}: input {index}'s share")


# ---------------------------------------------------------------------------------------


def test_the_credit_split_tables_cover_every_rule_of_several_varying_inputs():
    """Every two-player and bilinear rule is checked here, or its both-varying use is refused."""
    refused = {op for r in REFUSALS for op in r.op_types if len(r.args) == 2}
    checked = {BY_ID[c].op_type for c in [*ELEMENTWISE_CASES, *BILINEAR]}
    for rule in registry.rules():
        if rule.family in ("shapley", "bilinear"):
            assert rule.op_type in checked or rule.op_type in refused, f"no credit-split check for {rule.op_type}"
    assert set(ELEMENTWISE) <= {BY_ID[c].op_type for c in ELEMENTWISE_CASES}
    assert set(BILINEAR) | set(LINEAR) <= set(BY_ID)


@pytest.mark.parametrize("op_type", sorted(CLOSED_FORMS))
def test_the_closed_forms_are_the_two_player_shapley_values(op_type):
    """The closed forms above are the two-player formula worked out (a check of this file's references)."""
    rng = np.random.default_rng(7)
    a, ra, b, rb = (rng.choice([-1, 1], 20) * rng.uniform(0.5, 2.0, 20) for _ in range(4))
    for closed, general in zip(
        CLOSED_FORMS[op_type](a, ra, b, rb), two_player_shapley(ELEMENTWISE[op_type], a, ra, b, rb)
    ):
        np.testing.assert_allclose(closed, general, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case_id", ELEMENTWISE_CASES)
def test_elementwise_binary_rules_give_each_operand_its_shapley_value(case_id):
    case = BY_ID[case_id]
    xs, rs = sample(case.args, SEED[case_id])
    (a, b), (ra, rb) = xs, rs
    # two different tensors, most elements away from their references: a wrong split would show
    assert np.mean(np.abs(a - ra) > 1e-3) > 0.5 and np.mean(np.abs(b - rb) > 1e-3) > 0.5
    shapley = CLOSED_FORMS.get(case.op_type) or (lambda *v: two_player_shapley(ELEMENTWISE[case.op_type], *v))
    phi_a, phi_b = shapley(a, ra, b, rb)
    (w,) = _weights(case_id)
    expected = [_unbroadcast(w * np.broadcast_to(phi, w.shape), x.shape) for phi, x in ((phi_a, a), (phi_b, b))]

    _assert_shares(case_id, _shares(case_id, xs, rs), expected)


@pytest.mark.parametrize("case_id", sorted(BILINEAR))
def test_bilinear_rules_give_each_operand_its_shapley_value(case_id):
    """φ_A = ΔA ⊙ ∂(Σ w·y)/∂A at B̄ = (B + r_B)/2; φ_B = ΔB ⊙ ∂(Σ w·y)/∂B at Ā."""
    xs, rs = sample(BY_ID[case_id].args, SEED[case_id])
    f, weights = BILINEAR[case_id], _weights(case_id)
    mids = [(x + r) / 2 for x, r in zip(xs, rs)]
    expected = []
    for index in range(2):
        at = [xs[index] if i == index else mids[i] for i in range(2)]
        expected.append((xs[index] - rs[index]) * _gradient_of_linear(f, at, index, weights))

    _assert_shares(case_id, _shares(case_id, xs, rs), expected)


@pytest.mark.parametrize("case_id", sorted(LINEAR))
def test_linear_rules_of_several_inputs_give_each_input_its_own_change(case_id):
    """A linear op's Shapley values are exact gradients times the changes, input by input."""
    xs, rs = sample(BY_ID[case_id].args, SEED[case_id])
    f, weights = LINEAR[case_id], _weights(case_id)
    expected = [(x - r) * _gradient_of_linear(f, xs, index, weights) for index, (x, r) in enumerate(zip(xs, rs))]

    _assert_shares(case_id, _shares(case_id, xs, rs), expected)


def test_the_rows_of_a_case_are_its_foreground_rows():
    """The shares above are per row of the case's N foreground rows (the sanity of the harness)."""
    xs, rs = sample(BY_ID["Mul-both"].args, SEED["Mul-both"])
    assert [x.shape for x in xs] == [(N, 3), (N, 3)] and [r.shape for r in rs] == [(N, 3), (N, 3)]
