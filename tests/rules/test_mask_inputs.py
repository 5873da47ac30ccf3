"""The rule contract for ops whose varying input is an integer mask beside the explained inputs.

A gather whose indices come from an integer model input beside the attributed layer (BERT's
segment ids, position ids) sees indices that vary with the explained inputs but carry no
gradient. Its rule checks at run time that a sample and its reference agree on them, then is
linear in the params. The float contract harness cannot make integer inputs vary, so these
cases are built here: a float ``x`` times a table row picked by the mask, paired, rewritten,
and then

* the rule fired (a tfshap gradient on the op);
* local summation-to-delta in float64 where sample and reference agree;
* the check fails, naming the op, where they do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfshap import _tf_private
from tfshap.errors import MISMATCH_MARKER
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


MASK_CASES = {"GatherV2": _gather_v2, "ResourceGather": _resource_gather}
#: The op types covered here, which tests/rules/test_contract.py counts as tabled.
MASK_OP_TYPES = frozenset(MASK_CASES)


def _compiled(op_type: str):
    build = MASK_CASES[op_type]
    x_spec, m_spec = tf.TensorSpec((N, WIDTH), tf.float64), tf.TensorSpec((N,), tf.int32)
    installed = []

    def fn(x, r, mask_x, mask_r):
        with one_to_one(N):
            paired, mask = tf.concat([x, r], 0), tf.concat([mask_x, mask_r], 0)
            graph = tf.compat.v1.get_default_graph()
            first = len(graph.get_operations())
            y = build(paired, mask)
            ops = graph.get_operations()[first:]
            rewrite(ops, sources=[paired, mask], targets=[y])
            installed.extend(_tf_private.get_string_attr(op, _tf_private.GRADIENT_OP_TYPE_ATTR)
                             for op in ops if op.type == op_type)
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
    np.testing.assert_allclose(m.numpy(), TABLE[mask.numpy()], rtol=0, atol=1e-15)


@pytest.mark.parametrize("op_type", sorted(MASK_CASES))
def test_a_gather_by_masks_that_differ_fails_naming_the_op(op_type):
    fn, _ = _compiled(op_type)
    x = tf.zeros((N, WIDTH), tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{MISMATCH_MARKER} .*{op_type}"):
        fn(x, x, tf.constant([0, 1, 2]), tf.constant([0, 1, 3]))
