"""Every Keras activation the compiler-core issue lists is exact, in both Kerases (float64)."""

import numpy as np
import pytest
import tensorflow as tf

import tfshap

ACTIVATIONS = [
    "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "hard_sigmoid", "tanh", "softplus",
    "softsign", "exponential", "gelu", "gelu_approximate", "swish", "silu", "mish", "softmax", "log_softmax",
]


def _activation(K, name):
    """The activation as a layer, spelled the way each Keras spells it."""
    keras3 = not K.__name__.startswith("tf_keras")
    if name == "relu6":
        return K.layers.ReLU(max_value=6.0)
    if name == "leaky_relu":
        return K.layers.LeakyReLU(0.2) if not keras3 else K.layers.LeakyReLU(negative_slope=0.2)
    if name == "gelu_approximate":
        return K.layers.Lambda(lambda t: tf.nn.gelu(t, approximate=True))
    if name == "log_softmax":
        return K.layers.Lambda(lambda t: tf.nn.log_softmax(t))
    return K.layers.Activation(name)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_is_exact_in_float64(K64, name, rng):
    K = K64
    inp = K.Input((5,))
    hidden = _activation(K, name)(K.layers.Dense(8)(inp))
    model = K.Model(inp, K.layers.Dense(3)(hidden))
    background = rng.normal(size=(6, 5)) * 2
    x = rng.normal(size=(4, 5)) * 2
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    np.testing.assert_allclose(result.outputs, model(x, training=False).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.base_values, model(background).numpy().mean(0), rtol=1e-12, atol=1e-12)
    assert result.additivity_error < 1e-9
    # A nonzero attribution for every input feature: the rule carried credit, not zeros.
    assert np.all(np.abs(result.values).sum(axis=(0, 2)) > 0)
