"""Nested tf.functions and branches inside Keras layers: exact, and nothing shared is touched."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from models._helpers import assert_explains_inference

import tfshap
from tfshap import _tf_private


@tf.function(autograph=False)
def gated(x, gate):
    """A helper compiled on its own, as users write them: tanh(x) · sigmoid(gate)."""
    return tf.tanh(x) * tf.sigmoid(gate)


def _layer_class(K):
    class GatedBranch(K.layers.Layer):
        def __init__(self, use_square, **kwargs):
            super().__init__(**kwargs)
            self.use_square = use_square

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]), initializer="glorot_uniform", name="w")

        def call(self, x):
            hidden = gated(x, tf.matmul(x, tf.cast(self.w, x.dtype)))
            # the flag does not vary with the inputs: either branch is exact
            return tf.cond(tf.constant(self.use_square), lambda: tf.square(hidden), lambda: tf.nn.softplus(hidden))

    return GatedBranch


def test_nested_function_and_cond_in_a_layer_are_exact(K64, rng):
    GatedBranch = _layer_class(K64)
    for use_square in (True, False):
        model = K64.Sequential([K64.Input((4,)), GatedBranch(use_square), K64.layers.Dense(2)])
        background, x = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
        explainer = tfshap.compile(model, background)
        result = explainer.explain(x)
        assert result.additivity_error < 1e-9
        assert_explains_inference(result, model, x, background)
        assert "PartitionedCall (control_flow)" in explainer.rules_used
        assert "If (control_flow)" in explainer.rules_used


def test_the_nested_functions_own_graph_is_left_alone(K64, rng):
    model = K64.Sequential([K64.Input((4,)), _layer_class(K64)(True), K64.layers.Dense(1)])
    background, x = rng.normal(size=(5, 4)), rng.normal(size=(2, 4))
    assert_explains_inference(tfshap.compile(model, background).explain(x), model, x, background)
    shared = gated.get_concrete_function(tf.TensorSpec([None, 4], tf.float64), tf.TensorSpec([None, 4], tf.float64))
    assert all(
        _tf_private.get_string_attr(op, _tf_private.GRADIENT_OP_TYPE_ATTR) is None
        for op in shared.graph.get_operations()
    )
    x, g = tf.constant(rng.normal(size=(2, 4))), tf.constant(rng.normal(size=(2, 4)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gated(x, g)
    expected = (1 - np.tanh(x.numpy()) ** 2) / (1 + np.exp(-g.numpy()))
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), expected, rtol=1e-12)
