"""The end-to-end demo (``tfshap demo``) and the plain-gradient floor that benchmarks compare with.

The demo trains a small CNN on scikit-learn's bundled 8×8 digits with Keras 3, explains
16 digits against 100 background images with :func:`tfshap.compile`, checks that the
attributions add up to ``f(x) − E[f(background)]``, times tfshap next to the plain-gradient
floor, and writes a heatmap grid with :func:`tfshap.plots.image`.

The floor (:func:`plain_gradient_floor`) is the cost of a plain gradient on the same work:
one forward pass over the ``2·N·K`` paired rows and one ``tf.gradients`` backward per
output, in one ``tf.function``. ``tools/bench.py`` imports it from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

#: Full demo: 16 digits explained against 100 background images, 6 epochs.
FULL = dict(n_explain=16, n_background=100, epochs=6)
#: ``--quick``: for tests; a few seconds of training and explaining.
QUICK = dict(n_explain=4, n_background=20, epochs=1)


# -- data and model ------------------------------------------------------------------------
def load_digits_data(seed: int = 0):
    """scikit-learn's bundled digits as ``(x_train, y_train, x_test, y_test)``, images ``(n, 8, 8, 1)`` in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('the demo needs scikit-learn: python -m pip install -e ".[demo]"') from exc
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def build_cnn(keras_module):
    """Conv2D + relu, MaxPooling2D, Flatten, Dense relu, Dense softmax over 10 (either Keras)."""
    layers = keras_module.layers
    return keras_module.Sequential(
        [
            keras_module.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="hidden"),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ]
    )


def train_cnn(keras_module, x, y, *, epochs: int, seed: int = 0):
    """A digits CNN trained for ``epochs`` epochs (Adam, batch 32)."""
    keras_module.utils.set_random_seed(seed)
    model = build_cnn(keras_module)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


# -- the plain-gradient floor --------------------------------------------------------------
def plain_gradient_floor(model, n_outputs: int):
    """A ``tf.function`` ``floor(x, background)`` doing the plain-gradient work of an explanation.

    It pairs every sample with every background row (``N·K`` pairs, ``2·N·K`` rows), runs one
    forward pass over them all and one ``tf.gradients`` backward per output, and returns the
    gradient × (x − r) averaged over the background, ``(N, *input_shape, n_outputs)``. It is
    not DeepSHAP: it is the least work any gradient-based explainer of the same pairs does.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype)

    @tf.function(input_signature=[spec, spec], autograph=False)
    def floor(x, background):
        n, k = tf.shape(x)[0], tf.shape(background)[0]
        xs = tf.repeat(x, k, axis=0)
        reps = tf.concat([[n], tf.ones([tf.rank(background) - 1], tf.int32)], 0)
        return paired_gradient_floor(model, n_outputs, xs, tf.tile(background, reps), n, k)

    return floor


def paired_gradient_floor(model, n_outputs: int, xs, rs, n, k):
    """The floor's work on ``N·K`` pairs, sample rows ``xs`` and their reference rows ``rs`` (pair-major):
    one forward pass over both, one ``tf.gradients`` per output, gradient × (x − r) averaged per sample."""
    import tensorflow as tf

    rows = tf.concat([xs, rs], 0)
    y = tf.reshape(model(rows, training=False), [2 * n * k, -1])
    delta = xs - rs
    per_output = []
    for j in range(n_outputs):
        grad = tf.gradients(y[:, j], rows)[0][: n * k]
        per_output.append(tf.reduce_mean(tf.reshape(grad * delta, tf.concat([[n, k], tf.shape(xs)[1:]], 0)), 1))
    return tf.stack(per_output, -1)


def best_time(fn, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls of ``fn()`` (call it once first to warm up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# -- the demo ------------------------------------------------------------------------------
@dataclass
class DemoResult:
    accuracy: float
    additivity_error: float
    tolerance: float
    tfshap_samples_per_s: float
    floor_samples_per_s: float
    png: str


def run_demo(out: str = "tfshap_demo.png", *, quick: bool = False, print_fn=print) -> DemoResult:
    """Train, explain, check additivity, time, plot. Raises ``tfshap.AdditivityError`` if the sums miss."""
    import keras

    import tfshap

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"the demo needs Keras 3 on the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}"
        )
    settings = QUICK if quick else FULL
    n, k = settings["n_explain"], settings["n_background"]
    x_train, y_train, x_test, y_test = load_digits_data()

    start = time.perf_counter()
    model = train_cnn(keras, x_train, y_train, epochs=settings["epochs"])
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    print_fn(
        f"trained a digits CNN (Keras {keras.__version__}) for {settings['epochs']} epoch(s) on "
        f"{len(x_train)} images in {time.perf_counter() - start:.1f} s: test accuracy {accuracy:.3f}"
    )

    background = x_train[np.random.default_rng(1).choice(len(x_train), k, replace=False)]
    samples, labels = x_test[:n], y_test[:n]
    start = time.perf_counter()
    explainer = tfshap.compile(model, background)
    print_fn(f"tfshap.compile: {time.perf_counter() - start:.1f} s; rules used: {explainer.rules_used}")

    attributions = explainer.explain(samples)
    tolerance = explainer.tolerance(attributions.outputs, attributions.base_values)
    print_fn(
        f"explained {n} digits x {attributions.outputs.shape[1]} outputs against {k} background images; "
        f"values {attributions.values.shape}"
    )
    print_fn(
        f"additivity: max |sum(values) + base_values - outputs| = {attributions.additivity_error:.2e} "
        f"(tolerance {tolerance:.1e})"
    )
    explainer.check_additivity(attributions)

    floor = plain_gradient_floor(model, attributions.outputs.shape[1])
    floor(samples, background)  # warm-up (traces)
    repeats = 1 if quick else 3
    t_tfshap = best_time(lambda: explainer.explain(samples), repeats)
    t_floor = best_time(lambda: floor(samples, background).numpy(), repeats)
    print_fn(
        f"speed: tfshap {n / t_tfshap:.0f} samples/s ({t_tfshap:.3f} s); plain-gradient floor "
        f"{n / t_floor:.0f} samples/s ({t_floor:.3f} s) on the same {n}x{k} pairs; "
        f"tfshap takes {t_tfshap / t_floor:.2f}x the floor's time"
    )

    predicted = np.argmax(attributions.outputs, axis=1)
    tfshap.plots.image(
        attributions.values, samples, labels=[f"class {j}" for j in range(attributions.outputs.shape[1])],
        predicted=predicted, row_labels=[f"label {y}, pred {p}" for y, p in zip(labels, predicted)],
        max_columns=10, title="tfshap DeepSHAP attributions of a digits CNN", path=out, cell=1.2, dpi=90,
    )
    print_fn(f"wrote {out}: one row per digit, the image then its attributions to each class (framed: predicted)")
    return DemoResult(
        accuracy=accuracy,
        additivity_error=attributions.additivity_error,
        tolerance=tolerance,
        tfshap_samples_per_s=n / t_tfshap,
        floor_samples_per_s=n / t_floor,
        png=str(out),
    )
