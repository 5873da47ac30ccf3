"""Each TensorFlow private API that tfshap touches, checked so that a TensorFlow change fails loudly."""

import numpy as np
import tensorflow as tf

from tfshap import _tf_private


def test_set_and_get_string_attr_roundtrip():
    @tf.function(autograph=False)
    def f(x):
        y = tf.nn.relu(x)
        _tf_private.set_string_attr(y.op, "_tfshap_probe", "10")
        assert _tf_private.get_string_attr(y.op, "_tfshap_probe") == "10"
        assert _tf_private.get_string_attr(y.op, "_tfshap_absent") is None
        return y

    f.get_concrete_function(tf.TensorSpec([None, 2], tf.float64))


def test_override_gradient_is_honoured_by_tf_gradients_in_tf_function():
    name = "tfshap/test/double_relu"
    if name not in _tf_private.registered_gradient_names():
        tf.RegisterGradient(name)(lambda op, grad: 2.0 * grad)

    @tf.function(autograph=False)
    def f(x):
        y = tf.nn.relu(x)
        _tf_private.override_gradient(y.op, name)
        return tf.gradients(y, x)[0]

    x = tf.constant([[1.0, -1.0]], tf.float64)
    np.testing.assert_array_equal(f(x).numpy(), [[2.0, 2.0]])


def test_gradient_tape_ignores_the_override():
    """DESIGN.md fact 2: the tape looks gradients up by op type, which is why tfshap uses tf.gradients."""
    name = "tfshap/test/double_relu"
    if name not in _tf_private.registered_gradient_names():
        tf.RegisterGradient(name)(lambda op, grad: 2.0 * grad)

    @tf.function(autograph=False)
    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(x)
        _tf_private.override_gradient(y.op, name)
        return tape.gradient(y, x)

    np.testing.assert_array_equal(f(tf.constant([[1.0, -1.0]], tf.float64)).numpy(), [[1.0, 0.0]])


def test_registered_gradient_names_lists_tfshap_rules():
    import tfshap  # noqa: F401  (registers the rules)

    names = _tf_private.registered_gradient_names()
    assert "tfshap/rescale/Relu" in names
    assert "Relu" in names
