"""The additivity tolerance comes from the model's own float noise, and the traced forward pass is checked.

* An ill-conditioned float32 model (the model's own rounding far above a few ulps) gets no
  false AdditivityError: the miss is within twice its measured float noise.
* A well-conditioned model keeps a tight tolerance: a rule made wrong on purpose, by a part in
  ten thousand, is caught.
* A layer that stays random at inference is refused when compiling.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import keras_module

import tfshap
from tfshap.pair import close, derivative, halves, on_foreground, ratio
from tfshap.testing import replaced_rule


def _ill_conditioned(K):
    """A deep float32 tanh network whose weights amplify rounding: outputs of order 1 from a cancellation."""
    K.utils.set_random_seed(0)
    inputs = K.Input((16,))
    h = inputs
    for _ in range(6):
        h = K.layers.Dense(64, activation="tanh", kernel_initializer=K.initializers.RandomNormal(stddev=1.5))(h)
    big = K.layers.Dense(8, kernel_initializer=K.initializers.RandomNormal(stddev=300.0))(h)
    return K.Model(inputs, K.layers.Dense(2, kernel_initializer=K.initializers.RandomNormal(stddev=0.1))(big))


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_an_ill_conditioned_float32_model_is_not_flagged_for_its_own_rounding(keras_name):
    K = keras_module(keras_name)
    model = _ill_conditioned(K)
    rng = np.random.default_rng(1)
    background, x = rng.normal(size=(8, 16)).astype("float32"), rng.normal(size=(4, 16)).astype("float32")
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    noise = explainer.model_noise(x)
    eps = np.finfo(np.float32).eps
    scale = np.abs(result.outputs).max() + np.abs(result.base_values).max()
    # the model's own rounding is far above ulps of its outputs: a fixed relative tolerance
    # would have to be loose for every model to let this one pass
    assert noise > 100 * eps * scale
    explainer.check_additivity(result)  # no false alarm
    explainer.shap_values(x)  # check_additivity=True by default
    assert result.additivity_error <= 2 * noise + tfshap.precision.ULPS * eps * (scale + 100)


def _wrong_rescale(op, grad):
    """The rescale rule off by a factor 1.0001: still plausible, no longer exact."""
    x, r = halves(op.inputs[0])
    fx, fr = halves(op.outputs[0])
    mid = derivative(lambda t: tf.nn.relu(t), (x + r) / 2)
    return [on_foreground(1.0001 * ratio(fx - fr, x - r, close(x, r), mid)) * grad]


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_a_wrong_rule_is_still_caught_on_a_well_conditioned_float32_model(keras_name):
    K = keras_module(keras_name)
    K.utils.set_random_seed(2)
    model = K.Sequential([K.Input((10,)), K.layers.Dense(32, activation="relu"), K.layers.Dense(32, activation="relu"),
                          K.layers.Dense(3)])
    rng = np.random.default_rng(3)
    background, x = rng.normal(size=(20, 10)).astype("float32"), rng.normal(size=(6, 10)).astype("float32")
    right = tfshap.compile(model, background)
    right.check_additivity(right.explain(x))
    with replaced_rule("Relu", _wrong_rescale):
        wrong = tfshap.compile(model, background)
    with pytest.raises(tfshap.AdditivityError) as info:
        wrong.shap_values(x)
    error = info.value
    assert error.model_noise is not None and error.model_noise < error.miss / 10
    assert "model's own float32 rounding" in str(error)
    # the rule is back: a fresh compile adds up again
    tfshap.compile(model, background).shap_values(x)


@pytest.mark.parametrize("keras_name", ["tf_keras", "keras3"])
def test_a_layer_random_at_inference_is_refused_when_compiling(keras_name):
    K = keras_module(keras_name)
    inputs = K.Input((4,))
    noisy = K.layers.Lambda(lambda t: t + tf.random.normal(tf.shape(t)))(inputs)
    model = K.Model(inputs, K.layers.Dense(2)(noisy))
    with pytest.raises(tfshap.CompileError, match=r"differs from its own inference output.*random at inference"):
        tfshap.compile(model, np.random.default_rng(0).normal(size=(5, 4)).astype("float32"))


def test_a_float64_copy_measures_the_noise_and_a_subclassed_model_goes_without(rng):
    import keras

    model = _ill_conditioned(keras)
    background = rng.normal(size=(8, 16)).astype("float32")
    explainer = tfshap.compile(model, background)
    exact = explainer.traced.float64_outputs([background])
    assert exact is not None and exact.dtype == np.float64
    assert np.max(np.abs(exact - explainer.outputs_of([background]))) > 0

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, t):
            return self.dense(t)

    sub = tfshap.compile(Subclassed(), background)
    assert sub.traced.float64_outputs([background]) is None
    assert sub.model_noise(background) >= 0  # the eager-against-graph part alone
