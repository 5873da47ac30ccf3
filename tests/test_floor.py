"""The plain-gradient floor that the demo and the benchmarks time against: its numbers, on closed forms."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from tfshap.demo import plain_gradient_floor


def _linear(kernel):
    """float64 ``x @ kernel`` with a bias: its gradient is the kernel everywhere."""
    inputs = keras.Input((kernel.shape[0],), dtype="float64")
    dense = keras.layers.Dense(kernel.shape[1], dtype="float64")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([kernel, np.arange(kernel.shape[1], dtype="float64")])
    return model


def test_the_floor_is_the_gradient_times_delta_averaged_over_the_background():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 2))
    x, background = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    got = plain_gradient_floor(_linear(kernel), 2)(x, background).numpy()
    want = (x - background.mean(0))[:, :, None] * kernel[None]  # (n, features, outputs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_the_floor_pairs_each_sample_with_every_background_row():
    """A product x0 · x1: the gradient at each pair differs, so a wrong pairing shows."""
    inputs = keras.Input((2,), dtype="float64")
    product = keras.layers.Lambda(lambda t: t[:, :1] * t[:, 1:], dtype="float64")(inputs)
    model = keras.Model(inputs, product)
    rng = np.random.default_rng(1)
    x, background = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    got = plain_gradient_floor(model, 1)(x, background).numpy()[..., 0]
    gradient = x[:, ::-1]  # ∂(x0·x1)/∂x at the sample
    want = np.mean(gradient[:, None, :] * (x[:, None, :] - background[None]), axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
