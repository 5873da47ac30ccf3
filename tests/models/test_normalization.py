"""Normalisation layers that compute their own statistics, end to end, in both Kerases.

Every layer sums to delta in float64. tf_keras LayerNormalization over trailing axes in
float32 is one FusedBatchNormV3 computing per-sample moments; it gives the attributions of
the float64 model, which tf_keras computes through the decomposed path (Mean,
SquaredDifference, Rsqrt, Mul). Then the plan's proof that a training-mode fused batch norm
keeps samples apart, with the batch size unknown when tracing.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfshap
from tfshap.errors import UnsupportedOpError
from tfshap.pair import one_to_one
from tfshap.rewrite import rewrite

from ._helpers import assert_additive, explain_bound, floatx, predict, random_weights

SHAPE = (4, 6)


def _rms_norm_layer(K):
    """RMS normalisation from the mean of squares and rsqrt, as models write it by hand."""

    class RMSNorm(K.layers.Layer):
        def build(self, input_shape):
            self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), -1, keepdims=True) + 1e-6) * self.gamma

    return RMSNorm()


LAYERS = {
    "LayerNormalization": lambda K: K.layers.LayerNormalization(),
    "LayerNormalization axes 1 2": lambda K: K.layers.LayerNormalization(axis=[1, 2]),
    "LayerNormalization axis 1": lambda K: K.layers.LayerNormalization(axis=1),
    "GroupNormalization": lambda K: K.layers.GroupNormalization(groups=2),
    "UnitNormalization": lambda K: K.layers.UnitNormalization(),
    "RMSNorm by hand": _rms_norm_layer,
}


def _model(K, layer):
    inp = K.Input(SHAPE)
    h = layer(K.layers.Dense(SHAPE[-1])(inp))
    return K.Model(inp, K.layers.Dense(2)(K.layers.Flatten()(h)))


def _explain(model, background, x, dtype="float64"):
    explainer = tfshap.compile(model, background.astype(dtype))
    return explainer, explainer.explain(x.astype(dtype))


def _assert_exact(model, rng):
    background, x = rng.normal(size=(10, *SHAPE)), rng.normal(size=(4, *SHAPE))
    _, result = _explain(model, background, x)
    assert_additive(result, 1e-9 * max(np.abs(result.outputs).max(), 1))
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", LAYERS)
def test_normalization_is_exact_in_float64(K64, name, rng):
    model = _model(K64, LAYERS[name](K64))
    random_weights(model, rng)
    _assert_exact(model, rng)


KERAS3_RMS = {
    "RMSNormalization": lambda K: K.layers.RMSNormalization(),
    "LayerNormalization rms_scaling": lambda K: K.layers.LayerNormalization(rms_scaling=True),
}


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("name", KERAS3_RMS)
def test_keras3_rms_normalization_is_exact_in_float64(name, rng):
    import keras

    with floatx(keras, "float64"):
        model = _model(keras, KERAS3_RMS[name](keras))
    random_weights(model, rng)
    _assert_exact(model, rng)


@pytest.mark.parametrize("axis", [-1, [1, 2]], ids=["last axis", "axes 1 2"])
def test_tf_keras_fused_float32_layer_norm_gives_the_float64_attributions(axis, rng):
    """float32: one FusedBatchNormV3 computing per-sample moments; float64: Mean, SquaredDifference, Rsqrt, Mul."""
    import tf_keras

    with floatx(tf_keras, "float64"):
        model64 = _model(tf_keras, tf_keras.layers.LayerNormalization(axis=axis))
    random_weights(model64, rng)
    with floatx(tf_keras, "float32"):
        model32 = _model(tf_keras, tf_keras.layers.LayerNormalization(axis=axis))
    model32.set_weights(model64.get_weights())

    background, x = rng.normal(size=(10, *SHAPE)), rng.normal(size=(4, *SHAPE))
    _, exact = _explain(model64, background, x)
    explainer32, approx = _explain(model32, background, x, "float32")

    assert explainer32.program.report.used[("normalization", "FusedBatchNormV3")] == 1
    assert_additive(exact, 1e-9 * max(np.abs(exact.outputs).max(), 1))
    np.testing.assert_allclose(exact.outputs, predict(model64, x), rtol=0, atol=1e-12)
    # float32 differs from float64 only by its roundings: those of one attribution, through the
    # kernels, the normalisation's moments and back (the bound counts them and measures their magnitudes)
    rows = np.concatenate([background, x])
    bound = explain_bound(model64, rows, len(background), exact.values)
    assert bound < 0.02 * np.abs(exact.values).max()  # tight enough to tell a wrong rule apart
    assert_additive(approx, bound)
    np.testing.assert_allclose(approx.values, exact.values, rtol=0, atol=bound)


# ---------------------------------------------------------------------------------------
# the layout proof with an unknown batch size


def _training_norm(x, target, data_format="NCHW"):
    """tf_keras's fused layer norm: FusedBatchNormV3(is_training) of ``reshape(x, target)``."""
    channels = tf.reshape(x, target)
    axis = 1 if data_format == "NCHW" else 3
    n = tf.shape(channels)[axis : axis + 1]
    y = tf.raw_ops.FusedBatchNormV3(
        x=channels, scale=tf.ones(n), offset=tf.zeros(n), mean=tf.zeros([0]), variance=tf.zeros([0]),
        epsilon=1e-3, is_training=True, data_format=data_format,
    )[0]
    return tf.reshape(y, tf.shape(x))


def _per_position(x):  # [1, batch · 4, 6, 1] from the shape, as tf_keras builds it
    shape = tf.shape(x)
    return tf.stack([1, tf.reduce_prod(shape[:2]), tf.reduce_prod(shape[2:]), 1])


LAYOUTS = {
    "per position (tf_keras)": (_per_position, "NCHW", None),
    "per sample": (lambda x: [1, -1, 24, 1], "NCHW", None),
    "half a sample in H and W": (lambda x: [1, -1, 3, 4], "NCHW", None),
    "channels straddle samples": (lambda x: [1, -1, 16, 1], "NCHW", "cannot be proved"),
    "batch in H": (lambda x: tf.stack([1, 4, tf.shape(x)[0] * 6, 1]), "NCHW", "straddle"),
    "N is the batch": (lambda x: tf.concat([tf.shape(x)[:1], [4, 6, 1]], 0), "NCHW", "straddle"),
    "NHWC": (lambda x: [1, -1, 6, 1], "NHWC", "NHWC"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_mode_fused_batch_norm_layout_with_unknown_batch(layout):
    target, data_format, refusal = LAYOUTS[layout]
    spec = tf.TensorSpec([None, *SHAPE], tf.float32)

    def fn(x, r):
        paired = tf.concat([x, r], 0)
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        out = _training_norm(paired, target(paired), data_format)
        with one_to_one(tf.shape(x)[0]):
            report = rewrite(graph.get_operations()[first:], sources=[paired], targets=[out])
        assert report.used[("normalization", "FusedBatchNormV3")] == 1
        return out

    if refusal is None:
        tf.function(fn, autograph=False).get_concrete_function(spec, spec)
        return
    with pytest.raises(UnsupportedOpError, match=refusal):
        tf.function(fn, autograph=False).get_concrete_function(spec, spec)
