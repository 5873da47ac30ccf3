"""Softmax stays additive when the sample's and the reference's logits are far apart.

Confident classifiers routinely put 15-30 logits between the winning class of a sample and
that of a background row. Summation-to-delta must hold there too, in float32 (to the
roundings of the rule's steps) and float64 (1e-9), and the attributions must stay of the
size of the change in the probabilities they explain.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfshap

from ._helpers import ELEMENTWISE_ROUNDINGS, assert_additive, float32_bound, floatx

SAMPLE = [[2.6, 0.66, -3.6]]


def _softmax_model(K, activation):
    inp = K.Input((3,))
    return K.Model(inp, K.layers.Activation(activation)(inp))


#: The rule's float32 roundings: four rescale steps (exp, the sum of 3, log, exp) and a sum over
#: the 3 classes, forward and back.
SOFTMAX_ROUNDINGS = 2 * (4 * ELEMENTWISE_ROUNDINGS + 3)


@pytest.mark.parametrize("dtype, gap", [("float32", 5.0), ("float32", 25.0), ("float64", 25.0)])
@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_softmax_is_additive_for_far_apart_logits(K, activation, dtype, gap):
    with floatx(K, dtype):
        model = _softmax_model(K, activation)
    background = np.array([[6.2, 2.6 + gap, -7.4]], dtype)  # the reference's top logit is `gap` above the sample's
    x = np.array(SAMPLE, dtype)

    result = tfshap.compile(model, background).explain(x)

    # every step handles logits, log-probabilities or probabilities: none larger than these
    magnitude = max(1.0, np.abs(x).max(), np.abs(background).max(), np.abs(result.outputs).max(),
                    np.abs(result.base_values).max())
    tolerance = float32_bound(SOFTMAX_ROUNDINGS, magnitude) if dtype == "float32" else 1e-9 * magnitude
    assert_additive(result, tolerance)
    # exact in every output: the values sum to the change in each probability (or log-probability)
    expected = (
        np.asarray(model(x, training=False), np.float64) - np.asarray(model(background, training=False), np.float64)
    )
    np.testing.assert_allclose(result.values.sum(1, dtype=np.float64), expected, rtol=0, atol=tolerance)
