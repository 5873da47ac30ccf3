"""Every way of writing relu gives the same, additive attributions (float64, same weights)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfshap

from ._helpers import KERASES, assert_additive, floatx, keras_module, predict


def _sequential(K):
    return K.Sequential(
        [
            K.Input((4,)),
            K.layers.Dense(8, activation="relu"),
            K.layers.Dense(8, activation="relu"),
            K.layers.Dense(2),
        ]
    )


def _shared_activation_layer(K):
    inp = K.Input((4,))
    relu = K.layers.Activation("relu")  # one layer object, called twice
    h = relu(K.layers.Dense(8)(inp))
    h = relu(K.layers.Dense(8)(h))
    return K.Model(inp, K.layers.Dense(2)(h))


def _separate_layers(K):
    inp = K.Input((4,))
    h = K.layers.Activation("relu")(K.layers.Dense(8)(inp))
    h = K.layers.ReLU()(K.layers.Dense(8)(h))
    return K.Model(inp, K.layers.Dense(2)(h))


def _subclassed(K, relu):
    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.d1 = K.layers.Dense(8)
            self.d2 = K.layers.Dense(8)
            self.d3 = K.layers.Dense(2)

        def call(self, x):
            return self.d3(relu(self.d2(relu(self.d1(x)))))

    net = Net()
    net(np.zeros((1, 4), K.backend.floatx()))  # build
    return net


SPELLINGS = {
    "shared_activation_layer": _shared_activation_layer,
    "separate_layers": _separate_layers,
    "subclassed_tf_nn_relu": lambda K: _subclassed(K, tf.nn.relu),
    "subclassed_tf_maximum": lambda K: _subclassed(K, lambda t: tf.maximum(t, tf.constant(0.0, t.dtype))),
}


@pytest.fixture(scope="module", params=KERASES)
def K64m(request):
    """Each Keras in turn, module-scoped so that the reference explanation is computed once."""
    return keras_module(request.param)


@pytest.fixture(scope="module")
def reference(K64m):
    rng = np.random.default_rng(5)
    with floatx(K64m, "float64"):
        model = _sequential(K64m)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    background, x = rng.normal(size=(20, 4)), rng.normal(size=(6, 4))
    result = tfshap.compile(model, background).explain(x)
    return model, background, x, result


def test_sequential_relu_is_additive(reference):
    model, _, x, result = reference
    assert result.values.dtype == np.float64
    assert_additive(result, 1e-9)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-12)
    # the relus do switch between the samples and the background (else this proves nothing)
    hidden = np.maximum(x @ model.get_weights()[0] + model.get_weights()[1], 0)
    assert 0 < np.count_nonzero(hidden) < hidden.size


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_relu_spelling_gives_identical_values(K64m, reference, spelling):
    model, background, x, expected = reference
    with floatx(K64m, "float64"):
        other = SPELLINGS[spelling](K64m)
    other.set_weights(model.get_weights())
    np.testing.assert_allclose(predict(other, x), predict(model, x), rtol=0, atol=1e-12)

    result = tfshap.compile(other, background).explain(x)

    assert result.values.shape == expected.values.shape == (6, 4, 2)
    np.testing.assert_allclose(result.values, expected.values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.base_values, expected.base_values, rtol=0, atol=1e-10)
    assert_additive(result, 1e-9)
