"""``tfshap.keras.AttributionCallback`` in ``fit`` of both Kerases, and its TensorBoard summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import EPS32, explain_bound, float32_bound, forward_bound, predict

import tfshap
from tfshap.keras import MIN_IMAGE_SIDE, AttributionCallback


def _tabular_model(K):
    K.utils.set_random_seed(0)
    model = K.Sequential([K.Input((5,)), K.layers.Dense(8, activation="relu"), K.layers.Dense(2)])
    model.compile(optimizer=K.optimizers.Adam(0.05), loss="mse")
    return model


def _tabular_data(rng):
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = np.stack([x[:, 0] + x[:, 1] ** 2, -x[:, 2]], axis=1).astype(np.float32)
    return x, y


def _recorder(K, callback: AttributionCallback, samples: np.ndarray):
    """A callback after ``callback`` that keeps each epoch's predictions, weights and chunk function."""

    class Recorder(K.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.predictions, self.weights, self.chunks = [], [], []

        def on_epoch_end(self, epoch, logs=None):
            self.predictions.append(np.asarray(self.model(samples)))
            self.weights.append([np.array(w) for w in self.model.get_weights()])
            self.chunks.append(callback.explainer.program.chunk(callback.explainer.n_outputs))

    return Recorder()


def read_events(log_dir) -> dict[str, list[tuple[int, object]]]:
    """Every summary value in ``log_dir``'s event files: tag → [(step, value proto)]."""
    found: dict[str, list] = {}
    for file in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def test_is_a_callback_of_both_kerases():
    import keras
    import tf_keras

    callback = AttributionCallback(np.zeros((1, 5)), np.zeros((2, 5)))
    assert isinstance(callback, keras.callbacks.Callback)
    assert isinstance(callback, tf_keras.callbacks.Callback)
    assert tfshap.keras.AttributionCallback is AttributionCallback


def test_history_follows_each_epochs_weights_without_recompiling(K, rng):
    x, y = _tabular_data(rng)
    samples, background = x[:6], x[6:16]
    model = _tabular_model(K)
    callback = AttributionCallback(samples, background)
    recorder = _recorder(K, callback, samples)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callback, recorder])

    assert len(callback.history) == 3 and callback.epochs == [0, 1, 2]
    # Each epoch's float32 numbers against that epoch's weights, within the bounds of float32's
    # roundings for those weights (the magnitudes grow as the model trains).
    rows = np.concatenate([background, samples])
    epoch_models = []
    for weights in recorder.weights:
        copy = K.models.clone_model(model)
        copy.set_weights(weights)
        epoch_models.append(copy)
    bounds = []
    for result, predicted, copy in zip(callback.history, recorder.predictions, epoch_models):
        # two float32 forward passes of that epoch's model: tfshap's and Keras'
        np.testing.assert_allclose(result.outputs, predicted, rtol=0, atol=2 * forward_bound(copy, rows))
        bounds.append(explain_bound(copy, rows, len(background), result.values))
        assert result.additivity_error <= bounds[-1]
    for earlier, later, bound in zip(callback.history, callback.history[1:], bounds[1:]):
        assert np.max(np.abs(earlier.values - later.values)) > 100 * bound  # each epoch's weights are explained
    # compiled once: the same traced chunk function and forward pass served every epoch
    assert all(chunk is recorder.chunks[0] for chunk in recorder.chunks)
    assert len(callback.explainer.program._chunk_fns) == 1
    assert callback.explainer._forward is None  # compiled without a separate forward trace
    # the first epoch's attributions equal a fresh compile on a copy holding that epoch's weights:
    # two float32 computations of the same values, each within the bound of one attribution
    fresh = tfshap.compile(epoch_models[0], background).explain(samples)
    np.testing.assert_allclose(callback.history[0].values, fresh.values, rtol=0, atol=2 * bounds[0])


def test_tensorboard_tabular_importance_every_second_epoch(tmp_path, rng):
    import tf_keras

    x, y = _tabular_data(rng)
    callback = AttributionCallback(x[:8], x[8:20], log_dir=tmp_path, every_n_epochs=2)
    _tabular_model(tf_keras).fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[callback])

    assert callback.epochs == [1, 3]
    events = read_events(tmp_path)
    assert set(events) == {"attributions/additivity_error", *(f"attributions/importance/feature_{j}" for j in range(5))}
    assert events["attributions/additivity_error"][0][1].metadata.plugin_data.plugin_name == "scalars"
    errors = events["attributions/additivity_error"]
    assert [step for step, _ in errors] == [1, 3]
    for (_, value), result in zip(errors, callback.history):
        # a float32 summary of a float: one rounding
        assert float(tf.make_ndarray(value.tensor)) == pytest.approx(result.additivity_error, rel=EPS32, abs=0)
    for j in range(5):
        logged = [float(tf.make_ndarray(v.tensor)) for _, v in events[f"attributions/importance/feature_{j}"]]
        expected = [np.abs(np.asarray(r.values[:, j, :], np.float64)).mean() for r in callback.history]
        # the mean of 8 samples × 2 outputs of |values|, summed in float32 (16 roundings) and stored as float32
        np.testing.assert_allclose(logged, expected, rtol=float32_bound(17, 1.0))


def test_tensorboard_heatmaps_for_an_image_input_beside_a_tabular_one(tmp_path, rng):
    import keras

    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 1)), keras.Input((3,))
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(image))
    joined = keras.layers.Concatenate()([features, keras.layers.Dense(4, activation="relu")(meta)])
    model = keras.Model([image, meta], keras.layers.Dense(3)(joined))
    model.compile(optimizer="adam", loss="mse")
    x = [rng.random((32, 8, 8, 1), dtype=np.float32), rng.random((32, 3), dtype=np.float32)]
    callback = AttributionCallback([a[:3] for a in x], [a[3:9] for a in x], log_dir=tmp_path)
    model.fit(x, rng.random((32, 3), dtype=np.float32), epochs=1, verbose=0, callbacks=[callback])

    events = read_events(tmp_path)
    tags = {
        "attributions/additivity_error",
        "attributions/input_0/heatmap",
        *(f"attributions/input_1/importance/feature_{j}" for j in range(3)),
    }
    assert set(events) == tags
    (step, value), = events["attributions/input_0/heatmap"]
    assert step == 0 and value.metadata.plugin_data.plugin_name == "images"
    width, height, *pngs = tf.make_ndarray(value.tensor)
    assert (int(width), int(height), len(pngs)) == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3)
    result = callback.history[0]
    zoom = MIN_IMAGE_SIDE // 8
    for sample, png in enumerate(pngs):
        pixels = tf.io.decode_png(png).numpy()
        shown = result.values[0][sample, :, :, 0, np.argmax(result.outputs[sample])]  # the top output's values
        i, j = np.unravel_index(np.argmax(np.abs(shown)), shown.shape)
        strongest = pixels[i * zoom, j * zoom]
        assert tuple(strongest) == ((255, 0, 0) if shown[i, j] > 0 else (0, 0, 255))  # red positive, blue negative
        faint = np.abs(shown) < 0.02 * np.abs(shown).max()
        assert np.all(pixels[::zoom, ::zoom][faint] >= 245)  # near zero: near white


def test_bad_every_n_epochs():
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
        AttributionCallback(np.zeros((1, 5)), np.zeros((2, 5)), every_n_epochs=0)


def test_heatmaps_of_long_sequences_stay_within_bounds():
    from tfshap.keras import MAX_IMAGE_SIDE, heatmaps

    values = np.zeros((2, 100, 3, 1))
    values[0, 10, 1, 0], values[1, 20, 2, 0] = 2.0, -0.5
    images = heatmaps(values, np.zeros(2, int))
    assert images.shape == (2, 1000, 30, 3) and 1000 <= MAX_IMAGE_SIDE  # zoom 10, not the 22 that 64 px would need
    np.testing.assert_array_equal(images[0, 100, 10], [1, 0, 0])
    np.testing.assert_array_equal(images[1, 200, 20], [0, 0, 1])
    np.testing.assert_array_equal(images[0, 0, 0], [1, 1, 1])


def test_output_explains_the_named_layer_each_epoch(K, rng):
    """``output="hidden"``: each epoch explains that layer's 8 units, not the model's 2 outputs."""
    x, y = _tabular_data(rng)
    samples, background = x[:6], x[6:16]
    K.utils.set_random_seed(0)
    inp = K.Input((5,))
    hidden = K.layers.Dense(8, activation="tanh", name="hidden")(inp)
    model = K.Model(inp, K.layers.Dense(2)(hidden))
    model.compile(optimizer=K.optimizers.Adam(0.05), loss="mse")
    callback = AttributionCallback(samples, background, output="hidden")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])

    (result,) = callback.history
    layer = K.Model(inp, hidden)
    rows = np.concatenate([background, samples])
    assert result.values.shape == (6, 5, 8)
    np.testing.assert_allclose(result.outputs, predict(layer, samples), rtol=0, atol=2 * forward_bound(layer, rows))
    np.testing.assert_allclose(
        result.base_values, predict(layer, background).mean(0), rtol=0, atol=2 * forward_bound(layer, rows)
    )
    fresh = tfshap.compile(model, background, output="hidden").explain(samples)
    np.testing.assert_allclose(
        result.values, fresh.values, rtol=0, atol=2 * explain_bound(layer, rows, len(background))
    )
