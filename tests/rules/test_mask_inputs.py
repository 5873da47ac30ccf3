"""The rule contract for ops whose varying input is an integer mask beside the explained inputs.

A gather whose indices come from an integer model input beside the attributed layer (BERT's
segment ids, position ids) sees indices that vary with the explained inputs but carry no
gradient. Its rule checks at run time that a sample and its reference agree on them, then is
linear in the params. A one-hot of such indices (a mixture of experts' routing) is the same
for a sample and its reference where they agree, and passes nothing back. The float contract
harness cannot make integer inputs vary, so these cases are built here: a float ``x`` times a
table row, or a one-hot row, picked by the mask, paired, rewritten, and then

* the rule fired (a tfshap gradient on the op);
* local summation-to-delta in float64 where sample and reference agree;
* the check fails, naming the op, where they do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfshap import _tf_private
from tfshap.errors import MISMATCH_MARKER, UnsupportedOpError
from tfshap.pair import one_to_one
from tfshap.rewrite import rewrite

N, VOCAB, WIDTH = 3, 5, 4
TABLE = np.random.default_rng(0).normal(size=(VOCAB, WIDTH))
_VARIABLES: dict = {}


def _variable(dtype) -> tf.Variable:
    if dtype not in _VARIABLES:
        _VARIABLES[dtype] = tf.Variable(TABLE, dtype=dtype)
    return _VARIABLES[dtype]


def _gather_v2(x, mask):
    return x * tf.gather(tf.constant(TABLE, x.dtype), mask)


def _resource_gather(x, mask):
    return x * tf.raw_ops.ResourceGather(resource=_variable(x.dtype).handle, indices=mask, dtype=x.dtype)


def _one_hot(x, mask):
    return x * tf.one_hot(mask, WIDTH, dtype=x.dtype)


MASK_CASES = {"GatherV2": _gather_v2, "ResourceGather": _resource_gather, "OneHot": _one_hot}
#: The multiplier of ``x`` each case gives where the masks agree.
EXPECTED = {"GatherV2": lambda mask: TABLE[mask], "ResourceGather": lambda mask: TABLE[mask],
            "OneHot": lambda mask: np.eye(VOCAB, WIDTH)[mask]}  # an index past the depth: a zero row
#: The op types covered here, which tests/rules/test_contract.py counts as tabled.
MASK_OP_TYPES = frozenset(MASK_CASES)


def _rewritten(build, sources: list, op_types=()) -> tuple:
    """``build(*sources)`` with the rewrite installed on the ops it adds; and the gradient names
    installed on those of ``op_types``."""
    graph = tf.compat.v1.get_default_graph()
    first = len(graph.get_operations())
    y = build(*sources)
    ops = graph.get_operations()[first:]
    rewrite(ops, sources=sources, targets=[y])
    return y, [_tf_private.get_string_attr(op, _tf_private.GRADIENT_OP_TYPE_ATTR) for op in ops if op.type in op_types]


def _compiled(op_type: str):
    build = MASK_CASES[op_type]
    x_spec, m_spec = tf.TensorSpec((N, WIDTH), tf.float64), tf.TensorSpec((N,), tf.int32)
    installed = []

    def fn(x, r, mask_x, mask_r):
        with one_to_one(N):
            paired, mask = tf.concat([x, r], 0), tf.concat([mask_x, mask_r], 0)
            y, names = _rewritten(build, [paired, mask], (op_type,))
            installed.extend(names)
            (m,) = tf.gradients(y[:N], [paired], grad_ys=tf.ones([N, WIDTH], tf.float64))
            return y, m[:N]

    return tf.function(fn, autograph=False).get_concrete_function(x_spec, x_spec, m_spec, m_spec), installed


@pytest.mark.parametrize("op_type", sorted(MASK_CASES))
def test_a_gather_by_an_agreeing_mask_is_linear_in_its_params(op_type):
    fn, installed = _compiled(op_type)
    assert installed and all(name and name.startswith("tfshap/") for name in installed), installed
    rng = np.random.default_rng(1)
    x, r = rng.normal(size=(N, WIDTH)), rng.normal(size=(N, WIDTH))
    mask = tf.constant(rng.integers(VOCAB, size=N), tf.int32)
    y, m = fn(tf.constant(x), tf.constant(r), mask, mask)
    y = y.numpy()
    np.testing.assert_allclose((m.numpy() * (x - r)).sum(1), (y[:N] - y[N:]).sum(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.numpy(), EXPECTED[op_type](mask.numpy()), rtol=0, atol=1e-15)


@pytest.mark.parametrize("op_type", sorted(MASK_CASES))
def test_a_gather_by_masks_that_differ_fails_naming_the_op(op_type):
    fn, _ = _compiled(op_type)
    x = tf.zeros((N, WIDTH), tf.float64)
    op_name = {"OneHot": "one_hot"}.get(op_type, op_type)  # the name TensorFlow gives the op
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{MISMATCH_MARKER} .*{op_name}"):
        fn(x, x, tf.constant([0, 1, 2]), tf.constant([0, 1, 3]))


# -- routing: the top-k indices of router scores computed from the explained inputs --------------
EXPERTS, K = 4, 2
EXPERT_WEIGHTS = np.random.default_rng(2).normal(size=(EXPERTS, WIDTH))


def _routed(x, scores):
    """Each row's x times the sum of the rows of EXPERT_WEIGHTS its top-2 scores pick (only the indices are used)."""
    routes = tf.reduce_sum(tf.one_hot(tf.math.top_k(scores, K).indices, EXPERTS, dtype=x.dtype), 1)  # (rows, experts)
    return x * tf.matmul(routes, tf.constant(EXPERT_WEIGHTS, x.dtype)) + tf.reduce_sum(scores, -1, keepdims=True)


def _routing():
    spec = tf.TensorSpec((N, WIDTH), tf.float64)
    score_spec = tf.TensorSpec((N, EXPERTS), tf.float64)
    installed = []

    def fn(x, r, s, rs):
        with one_to_one(N):
            paired, scores = tf.concat([x, r], 0), tf.concat([s, rs], 0)
            y, names = _rewritten(_routed, [paired, scores], ("TopKV2", "OneHot"))
            installed.extend(names)
            m_x, m_s = tf.gradients(y[:N], [paired, scores], grad_ys=tf.ones([N, WIDTH], tf.float64))
            return y, m_x[:N], m_s[:N]

    return tf.function(fn, autograph=False).get_concrete_function(spec, spec, score_spec, score_spec), installed


def test_top_k_indices_of_agreeing_routes_are_a_mask():
    """Sample and reference route to the same experts: exact, the routing passes nothing back."""
    fn, installed = _routing()
    assert len(installed) == 2 and all(name and name.startswith("tfshap/") for name in installed), installed
    rng = np.random.default_rng(3)
    x, r = rng.normal(size=(N, WIDTH)), rng.normal(size=(N, WIDTH))
    s = rng.normal(size=(N, EXPERTS))
    rs = s + 0.01 * np.abs(rng.normal(size=s.shape)) * np.sign(s - s.mean(1, keepdims=True))  # the same top 2
    y, m_x, m_s = (t.numpy() for t in fn(tf.constant(x), tf.constant(r), tf.constant(s), tf.constant(rs)))
    routes = np.zeros((N, EXPERTS))
    np.put_along_axis(routes, np.argsort(-s, 1)[:, :K], 1.0, 1)
    np.testing.assert_allclose(m_x, routes @ EXPERT_WEIGHTS, rtol=0, atol=1e-14)
    np.testing.assert_allclose(m_s, 1.0 * WIDTH, rtol=0, atol=1e-14)  # only the linear sum of the scores
    lhs = (m_x * (x - r)).sum(1) + (m_s * (s - rs)).sum(1)
    np.testing.assert_allclose(lhs, (y[:N] - y[N:]).sum(1), rtol=0, atol=1e-12)


def test_top_k_indices_of_routes_that_differ_fail_naming_the_op():
    fn, _ = _routing()
    x = tf.zeros((N, WIDTH), tf.float64)
    s = tf.constant([[3.0, 2.0, 1.0, 0.0]] * N, tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{MISMATCH_MARKER} .*(TopKV2|one_hot)"):
        fn(x, x, s, tf.reverse(s, [1]))


def _routed_by_top_values(scores):
    top = tf.math.top_k(scores, K)
    routed = tf.reduce_sum(tf.one_hot(top.indices, EXPERTS, dtype=scores.dtype), 1)
    return routed * tf.reduce_sum(top.values, -1, keepdims=True)


def test_top_k_values_in_use_keep_the_order_statistics_refusal():
    """Where the values of a top-2 are used too, they are order statistics: refused as before."""
    spec = tf.TensorSpec((N, EXPERTS), tf.float64)

    def fn(s, rs):
        with one_to_one(N):
            return _rewritten(_routed_by_top_values, [tf.concat([s, rs], 0)])[0]

    with pytest.raises(UnsupportedOpError, match="TopKV2.*order statistics"):
        tf.function(fn, autograph=False).get_concrete_function(spec, spec)
