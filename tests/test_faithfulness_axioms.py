"""How tfshap's rules split credit among inputs, checked per input against exact Shapley values.

The ground truth is tools/shapley.py (enumerating every coalition; tested in test_shapley_tool.py).
- The two-operand rules (two-player Shapley) and the bilinear rules are meant to *equal* Shapley
  values: on two scalar players, and on the four players of a dot product (a bilinear game),
  every rule's values must match the enumeration. A split that still adds up but is not
  Shapley's (e.g. ``φa = g(a, rb) − g(ra, rb)``, ``φb`` the rest) fails here.
- The max rules (Max, Min, MaxPool, MaxPool3D, top_k with k = 1) are the exact Shapley values of
  each window's maximum on windows of at most 16 inputs, by default: every input's value must
  equal the enumeration, ties included (x = (3, 3, 0) against r = 0 gives (1.5, 1.5, 0)).
- Softmax and log-softmax (both rule sets: the default and rules="shapley", 1-vs-rest) and
  cross-max (rules="crossmax", and windows of more than 16 inputs) are not Shapley values: they
  are checked for the axioms (efficiency, null player, symmetry) and, for cross-max, against
  Shapley where one input alone decides. The softmax rules centre the logits, so a common shift
  of them gets no credit (issue 16 item 1). Cross-max gives a tie to its first argmax, so its
  symmetry is checked without ties (permuting the inputs permutes the values).
float64 throughout. Tolerance 1e-10 on values of size O(1): the rules' rounding is a few ulps
(≈1e-15), while a wrong split is off by O(Δa·Δb) ≈ 1e-2 here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from _tools import load_tool
from models._helpers import floatx, keras_module

import tfshap

shapley = load_tool("shapley")
ATOL = 1e-10
KERASES = ["tf_keras", "keras3"]

#: Binary elementwise ops with both operands varying: tfshap's two-player Shapley rules.
BINARY = {
    "Mul": tf.multiply,
    "RealDiv": tf.math.divide,
    "Div": lambda a, b: tf.raw_ops.Div(x=a, y=b),
    "DivNoNan": tf.math.divide_no_nan,
    "SquaredDifference": tf.math.squared_difference,
    "Maximum": tf.maximum,
    "Minimum": tf.minimum,
    "Pow": tf.pow,
    "Atan2": tf.math.atan2,
}
#: Bilinear ops on two varying 2-vectors: exact Shapley for a bilinear game of four players.
BILINEAR = {
    "BatchMatMul": lambda a, b: tf.reshape(tf.raw_ops.BatchMatMul(x=a[:, None, :], y=b[:, :, None]), (-1, 1)),
    "BatchMatMulV2": lambda a, b: tf.reshape(tf.matmul(a[:, None, :], b[:, :, None]), (-1, 1)),
    "BatchMatMulV3": lambda a, b: tf.reshape(
        tf.raw_ops.BatchMatMulV3(x=a[:, None, :], y=b[:, :, None], Tout=a.dtype), (-1, 1)
    ),
    "Einsum": lambda a, b: tf.einsum("bi,bi->b", a, b)[:, None],
}


def _side_by_side(K, n_inputs: int, ops: dict):
    """One float64 model: Input(n_inputs) split in two halves, every op of ``ops`` on them, outputs concatenated."""
    half = n_inputs // 2
    with floatx(K, "float64"):
        inp = K.Input((n_inputs,))
        split = {name: (lambda t, op=op: op(t[:, :half], t[:, half:])) for name, op in ops.items()}
        heads = [K.layers.Lambda(fn, name=name)(inp) for name, fn in split.items()]
        return K.Model(inp, K.layers.Concatenate()(heads))


def _explained(model, x, background):
    """tfshap's values and the exact Shapley values, both ``(n, features, outputs)``."""
    return tfshap.compile(model, background).explain(x).values, shapley.shapley_values(model, x, background)


_CACHE: dict = {}


def _values(keras_name: str, family: str):
    """(tfshap, exact) for every op of ``family`` side by side, computed once per Keras."""
    key = (keras_name, family)
    if key not in _CACHE:
        rng = np.random.default_rng(21)
        ops, n_inputs = (BINARY, 2) if family == "binary" else (BILINEAR, 4)
        # positive operands (Pow's base, the quotients' denominators) whose order changes (Maximum, Minimum)
        x, background = rng.uniform(0.5, 2.0, (6, n_inputs)), rng.uniform(0.5, 2.0, (4, n_inputs))
        _CACHE[key] = _explained(_side_by_side(keras_module(keras_name), n_inputs, ops), x, background)
    return _CACHE[key]


@pytest.mark.parametrize("keras_name", KERASES)
@pytest.mark.parametrize("family, op_type", [("binary", op) for op in BINARY] + [("bilinear", op) for op in BILINEAR])
def test_rule_gives_the_shapley_values_of_its_players(keras_name, family, op_type):
    """Binary ops: two scalar players; bilinear ops: the four players of a dot product of 2-vectors."""
    values, exact = _values(keras_name, family)
    column = list(BINARY if family == "binary" else BILINEAR).index(op_type)
    np.testing.assert_allclose(values[..., column], exact[..., column], rtol=0, atol=ATOL, err_msg=op_type)


# -- softmax ---------------------------------------------------------------------------------------
#: The shift-invariant normalisers: softmax(z + c) = softmax(z), log_softmax(z + c) = log_softmax(z).
NORMALISERS = {"Softmax": tf.nn.softmax, "LogSoftmax": tf.nn.log_softmax}


def _softmax_of_logits(K, mixing: np.ndarray, op_type: str = "Softmax"):
    """Input → logits ``x @ mixing`` (no bias) → Softmax or LogSoftmax, float64."""
    with floatx(K, "float64"):
        inp = K.Input((mixing.shape[0],))
        dense = K.layers.Dense(mixing.shape[1], use_bias=False)
        model = K.Model(inp, K.layers.Lambda(NORMALISERS[op_type], name=op_type.lower())(dense(inp)))
    dense.set_weights([mixing])
    return model


#: Issue 16 item 1: logits z0 = x0 + x2, z1 = x1 + x2, z2 = x2: x2 shifts every logit alike.
SHIFT_MIXING = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
SHIFT_X = np.array([[2.0, -1.0, 5.0]])
SHIFT_BACKGROUND = np.array([[0.0, 0.5, -3.0], [1.0, 0.0, 0.0]])


#: The softmax rule sets: the default split and the 1-vs-rest split.
SOFTMAX_RULES = ["default", "shapley"]


@pytest.mark.parametrize("rules", SOFTMAX_RULES)
@pytest.mark.parametrize("keras_name", KERASES)
@pytest.mark.parametrize("op_type", list(NORMALISERS))
def test_softmax_efficiency_and_symmetry_per_logit(keras_name, op_type, rules):
    rng = np.random.default_rng(5)
    model = _softmax_of_logits(keras_module(keras_name), np.eye(4), op_type)
    x, background = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    x[:, 2], background[:, 2] = x[:, 1], background[:, 1]  # logits 1 and 2 interchangeable

    result = tfshap.compile(model, background, rules=rules).explain(x)
    values, exact = result.values, shapley.shapley_values(model, x, background)

    delta = result.outputs - np.asarray(model(background)).mean(0)
    np.testing.assert_allclose(values.sum(1), delta, rtol=0, atol=ATOL)
    np.testing.assert_allclose(exact.sum(1), delta, rtol=0, atol=ATOL)
    for output in (0, 3):  # p_0 and p_3 (and their logs) are symmetric in z_1 and z_2
        np.testing.assert_allclose(exact[:, 1, output], exact[:, 2, output], rtol=0, atol=ATOL)
        np.testing.assert_allclose(values[:, 1, output], values[:, 2, output], rtol=0, atol=ATOL)
    # and swapping z_1 and z_2 swaps p_1 and p_2
    np.testing.assert_allclose(values[:, 1, 1], values[:, 2, 2], rtol=0, atol=ATOL)
    np.testing.assert_allclose(values[:, 2, 1], values[:, 1, 2], rtol=0, atol=ATOL)


@pytest.mark.parametrize("op_type", list(NORMALISERS))
def test_a_common_shift_of_the_logits_is_a_null_player_of_the_exact_game(op_type):
    """The ground truth of the next test: the normaliser ignores a common shift, so x2 has no Shapley value."""
    model = _softmax_of_logits(keras_module("keras3"), SHIFT_MIXING, op_type)
    exact = shapley.shapley_values(model, SHIFT_X, SHIFT_BACKGROUND)
    np.testing.assert_array_less(np.abs(exact[0, 2]), ATOL)
    assert np.max(np.abs(exact[0, :2])) > 0.1


@pytest.mark.parametrize("rules", SOFTMAX_RULES)
@pytest.mark.parametrize("keras_name", KERASES)
@pytest.mark.parametrize("op_type", list(NORMALISERS))
def test_softmax_gives_a_common_shift_of_the_logits_no_credit(keras_name, op_type, rules):
    model = _softmax_of_logits(keras_module(keras_name), SHIFT_MIXING, op_type)

    values = tfshap.compile(model, SHIFT_BACKGROUND, rules=rules).explain(SHIFT_X).values

    np.testing.assert_array_less(np.abs(values[0, 2]), ATOL)


# -- max: exact Shapley values per window ----------------------------------------------------------
#: The outputs of ``_maxima``, in order.
MAXIMA = ["Max", "MaxPool (x0, x1)", "MaxPool (x2, x3)", "Min", "TopKV2"]


def _maxima(K):
    """Input(4) → the max of all four (Max), MaxPool1D(2) over (x0, x1) and (x2, x3), the min (Min), top_k k=1."""
    with floatx(K, "float64"):
        inp = K.Input((4,))
        overall = K.layers.Lambda(lambda t: tf.reduce_max(t, -1, keepdims=True), name="reduce_max")(inp)
        pooled = K.layers.Flatten()(K.layers.MaxPooling1D(2)(K.layers.Reshape((4, 1))(inp)))
        least = K.layers.Lambda(lambda t: tf.reduce_min(t, -1, keepdims=True), name="reduce_min")(inp)
        top = K.layers.Lambda(lambda t: tf.math.top_k(t, 1).values, name="top_1")(inp)
        return K.Model(inp, K.layers.Concatenate()([overall, pooled, least, top]))


def _pools(K):
    """Input(3, 4, 1) → MaxPooling2D 2×2 stride 1 SAME (overlapping, padded) and 3×3 stride 2 SAME, flattened."""
    with floatx(K, "float64"):
        inp = K.Input((3, 4, 1))
        overlapping = K.layers.MaxPooling2D(2, strides=1, padding="same")(inp)
        strided = K.layers.MaxPooling2D(3, strides=2, padding="same")(inp)
        return K.Model(inp, K.layers.Concatenate()([K.layers.Flatten()(overlapping), K.layers.Flatten()(strided)]))


def _draws(rng, shape, ties: bool):
    """Normal draws, or small integers (many ties within x, within r and between them)."""
    return rng.integers(-2, 3, shape).astype(np.float64) if ties else rng.normal(size=shape)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("keras_name", KERASES)
@pytest.mark.parametrize("build, shape", [(_maxima, (4,)), (_pools, (3, 4, 1))], ids=["reductions", "pools"])
def test_max_rules_give_the_shapley_values_of_each_window(keras_name, build, shape, ties):
    """Every output depends on the inputs through one maximum: its Shapley values are the window's."""
    rng = np.random.default_rng(11 + ties)
    model = build(keras_module(keras_name))
    x, background = _draws(rng, (4, *shape), ties), _draws(rng, (3, *shape), ties)

    values = tfshap.compile(model, background).explain(x).values
    exact = shapley.shapley_values(model, x, background)

    np.testing.assert_allclose(values, exact, rtol=0, atol=ATOL)


@pytest.mark.parametrize("keras_name", KERASES)
def test_max_rules_split_a_tie_equally(keras_name):
    """max(3, 3, 0) against 0: the two tied inputs are symmetric players, (1.5, 1.5, 0)."""
    with floatx(keras_module(keras_name), "float64") as K:
        inp = K.Input((3,))
        model = K.Model(inp, K.layers.Lambda(lambda t: tf.reduce_max(t, -1, keepdims=True))(inp))
    x, r = np.array([[3.0, 3.0, 0.0]]), np.zeros((1, 3))

    values = tfshap.compile(model, r).explain(x).values

    np.testing.assert_allclose(values[0, :, 0], [1.5, 1.5, 0.0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(shapley.shapley_values(model, x, r)[0, :, 0], [1.5, 1.5, 0.0], rtol=0, atol=ATOL)


def _nchw_pool_multipliers(x: np.ndarray, r: np.ndarray, weights: np.ndarray, data_format: str) -> np.ndarray:
    """The max-pool rule's multipliers of NHWC ``x`` against ``r`` (3×3 stride 2 SAME), the pool run in ``data_format``.

    Only the gradient is evaluated: the rule reads the pool's input, never its output, so the NCHW pool
    (which has no CPU kernel) is pruned from the function.
    """
    from tfshap.pair import one_to_one
    from tfshap.rewrite import rewrite

    n = len(x)

    @tf.function(autograph=False)
    def multipliers(paired, w):
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        layout = tf.transpose(paired, [0, 3, 1, 2]) if data_format == "NCHW" else paired
        out = tf.raw_ops.MaxPool(input=layout, ksize=_ksize(3, data_format), strides=_ksize(2, data_format),
                                 padding="SAME", data_format=data_format)
        with one_to_one(n):
            rewrite(graph.get_operations()[first:], sources=[paired], targets=[out])
            return tf.gradients(out[:n], paired, grad_ys=w)[0][:n]

    w = weights if data_format == "NHWC" else np.transpose(weights, [0, 3, 1, 2])
    return multipliers(tf.constant(np.concatenate([x, r])), tf.constant(w)).numpy()


def _ksize(k: int, data_format: str) -> list:
    return [1, k, k, 1] if data_format == "NHWC" else [1, 1, k, k]


def test_max_pool_rule_is_the_same_channels_first():
    rng = np.random.default_rng(12)
    x, r = rng.normal(size=(2, 5, 4, 3)), rng.normal(size=(2, 5, 4, 3))
    weights = rng.normal(size=(2, 3, 2, 3))

    last = _nchw_pool_multipliers(x, r, weights, "NHWC")
    first = _nchw_pool_multipliers(x, r, weights, "NCHW")

    np.testing.assert_allclose(first, last, rtol=0, atol=ATOL)
    assert np.abs(last).max() > 0.1


# -- cross-max (rules="crossmax") --------------------------------------------------------------------
#: In every row, the reference of x0 is the max of the window (x0, x1), and that of x3 of (x2, x3).
MAXIMA_BACKGROUND = np.array([[0.2, 0.0, -0.1, 0.3], [0.5, -0.4, 0.2, 0.4], [0.1, -0.3, 0.0, 0.1]])


@pytest.fixture(scope="module", params=KERASES)
def maxima(request):
    model = _maxima(keras_module(request.param))
    return model, tfshap.compile(model, MAXIMA_BACKGROUND, rules="crossmax")


def test_cross_max_efficiency_and_null_player(maxima):
    model, explainer = maxima
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 4))
    x[:, 0] = 1.0 + rng.uniform(size=6)  # above every background value: min(x0, r0) > r1 in every row
    x[:, 1] = -5.0 - rng.uniform(size=6)  # so x1, below everything, never decides a maximum: a null player

    result = explainer.explain(x)
    exact = shapley.shapley_values(model, x, MAXIMA_BACKGROUND)

    delta = result.outputs - np.asarray(model(MAXIMA_BACKGROUND)).mean(0)
    np.testing.assert_allclose(result.values.sum(1), delta, rtol=0, atol=ATOL)
    # x1 for every maximum; x0, above everything, for the minimum (x1 or r1 < r0 always holds the min)
    null = [(1, MAXIMA.index(name)) for name in MAXIMA if name != "Min"] + [(0, MAXIMA.index("Min"))]
    for player, output in null:
        np.testing.assert_array_less(np.abs(exact[:, player, output]), ATOL)
        np.testing.assert_array_less(np.abs(result.values[:, player, output]), ATOL, err_msg=MAXIMA[output])


def test_cross_max_is_shapley_where_one_input_alone_decides(maxima):
    model, explainer = maxima
    # x0 and x3 exceed every background value (≤ 0.5); x1 and x2 lie below the references of x0
    # and x3 (≥ 0.1): in the window (x0, x1) only x0 matters, in (x2, x3) only x3
    x = np.array([[2.0, -1.0, -0.5, 1.5], [1.2, -0.9, -2.0, 0.9]])

    values = explainer.explain(x).values
    exact = shapley.shapley_values(model, x, MAXIMA_BACKGROUND)

    np.testing.assert_allclose(values[..., 1:3], exact[..., 1:3], rtol=0, atol=ATOL)
    np.testing.assert_allclose(values[:, 0, 1], x[:, 0] - MAXIMA_BACKGROUND[:, 0].mean(), rtol=0, atol=ATOL)


def test_cross_max_permuting_untied_inputs_permutes_the_values(maxima):
    model, explainer = maxima
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 4))
    swap = [1, 0, 3, 2]  # within each pooling window, and a permutation of the overall max's inputs

    values = explainer.explain(x).values
    swapped = tfshap.compile(model, MAXIMA_BACKGROUND[:, swap], rules="crossmax").explain(x[:, swap]).values

    np.testing.assert_allclose(swapped, values[:, swap], rtol=0, atol=ATOL)
