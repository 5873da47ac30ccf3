"""``AttributionCallback``: attributions during ``fit``, with each epoch's weights, in both Kerases.

The callback subclasses both ``keras.callbacks.Callback`` (Keras 3) and
``tf_keras.callbacks.Callback`` (Keras 2), so either Keras's ``fit`` takes it. It compiles
the explainer once, on the first logged epoch; the compiled explainer reads the model's
live weights, so later epochs reuse the same traced graph.

TensorBoard summaries (``log_dir``; written by TensorFlow alone, viewing them needs the
``tensorboard`` package), at step ``epoch`` (counted from 0, as Keras's own callback does):

* ``attributions/additivity_error``: scalar, ``max |sum(values) + base_values - outputs|``;
* inputs with per-sample rank ≥ 2 (images, sequences): ``attributions/heatmap``, one image
  per sample (up to :data:`MAX_IMAGES`) of the values for the output the model ranks
  highest for that sample, summed over axes after the first two; red positive, blue
  negative, white zero, each image scaled by its own largest ``|value|``;
* tabular inputs (per-sample rank 1): ``attributions/importance/feature_<j>``: scalar, the
  mean ``|value|`` of feature ``j`` over the samples and the outputs.

With several model inputs the tags are ``attributions/input_<i>/heatmap`` and
``attributions/input_<i>/importance/feature_<j>``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from .attributions import Attributions
from .explainers import compile as compile_explainer

#: Heatmaps written per input and epoch.
MAX_IMAGES = 8
#: Heatmaps are enlarged (nearest neighbour) until their shorter side has at least this many
#: pixels, unless that would make the longer side exceed MAX_IMAGE_SIDE.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 64, 1024


class AttributionCallback(keras.callbacks.Callback, tf_keras.callbacks.Callback):
    """Explains ``samples`` against ``background`` every ``every_n_epochs`` epochs of ``fit``.

    ``history`` holds one :class:`~tfshap.Attributions` per logged epoch and ``epochs`` the
    epoch indices they belong to. The explainer is compiled on the first logged epoch and
    reads each later epoch's weights without recompiling.

    Parameters
    ----------
    samples : array or list of arrays
        The rows explained at each logged epoch.
    background : array, list of arrays, or function
        The references, as :func:`tfshap.compile` takes them.
    log_dir : str or PathLike, optional
        Write TensorBoard summaries there (tags beginning with ``attributions``).
    every_n_epochs : int
        Log every n-th epoch.
    output : str, optional
        As in :func:`tfshap.compile`: None, ``"logits"`` or a layer name.
    inputs : str, optional
        As in :func:`tfshap.compile`: a layer whose output is attributed to (a token model's
        embedding).
    """

    def __init__(self, samples, background, log_dir=None, every_n_epochs=1, output=None, inputs=None):
        keras.callbacks.Callback.__init__(self)
        tf_keras.callbacks.Callback.__init__(self)
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, (int, np.integer)) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer; got {every_n_epochs!r}")
        self.samples = samples
        self.background = background
        self.log_dir = None if log_dir is None else str(log_dir)
        self.every_n_epochs = int(every_n_epochs)
        self.output = output
        self.inputs = inputs
        self.history: list[Attributions] = []
        self.epochs: list[int] = []
        self.explainer = None
        self._explained_model = None
        self._writer = None

    # Keras 3 reads ``model`` through a property and tf_keras assigns it: one attribute for both.
    @property
    def model(self):
        return self._model

    @model.setter
    def model(self, model):
        self._model = model

    def set_model(self, model):
        """Keras sets the model being trained (either Keras).

        Parameters
        ----------
        model : Keras model
            The model ``fit`` trains.
        """
        self._model = model

    def on_epoch_end(self, epoch, logs=None):
        """Explain ``samples`` with this epoch's weights, every ``every_n_epochs`` epochs.

        Parameters
        ----------
        epoch : int
            The epoch just ended, from 0.
        logs : dict, optional
            Keras's metrics (unused).
        """
        if (epoch + 1) % self.every_n_epochs:
            return
        result = self._compiled().explain(self.samples)
        self.history.append(result)
        self.epochs.append(int(epoch))
        if self.log_dir is not None:
            self._write_summaries(result, int(epoch))

    def on_train_end(self, logs=None):
        """Close the TensorBoard writer.

        Parameters
        ----------
        logs : dict, optional
            Keras's metrics (unused).
        """
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _compiled(self):
        """The explainer for the current model: compiled on first use, then reused (it reads live weights)."""
        if self.explainer is None or self._explained_model is not self.model:
            self.explainer = compile_explainer(self.model, self.background, output=self.output, inputs=self.inputs)
            self._explained_model = self.model
        return self.explainer

    def _write_summaries(self, result: Attributions, step: int) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        values = result.values if isinstance(result.values, list) else [result.values]
        with self._writer.as_default(step=step):
            write_scalar("attributions/additivity_error", result.additivity_error)
            top_output = np.argmax(result.outputs, axis=1)
            for i, v in enumerate(values):
                prefix = "attributions" if len(values) == 1 else f"attributions/input_{i}"
                if v.ndim >= 4:  # (n, *per-sample shape of rank ≥ 2, n_outputs)
                    write_images(f"{prefix}/heatmap", heatmaps(v, top_output))
                else:
                    for j, importance in enumerate(feature_importance(v)):
                        write_scalar(f"{prefix}/importance/feature_{j}", importance)
        self._writer.flush()


# TensorBoard's scalar and image summaries, written with TensorFlow alone (TensorBoard is only
# needed to view them): the tensor layouts and plugin names of tensorboard.summary.v2.
def _metadata(plugin: str, data_class: int):
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=plugin), data_class=data_class
    )


_SCALAR = _metadata("scalars", 1)  # DATA_CLASS_SCALAR
_IMAGES = _metadata("images", 3)  # DATA_CLASS_BLOB_SEQUENCE


def write_scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar at the default writer's step."""
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR)


def write_images(tag: str, images: np.ndarray) -> None:
    """TensorBoard images from ``(k, h, w, 3)`` floats in [0, 1]: ``[width, height, png, ...]``."""
    pixels = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    pngs = [tf.io.encode_png(p) for p in pixels]
    size = [tf.constant(str(images.shape[2])), tf.constant(str(images.shape[1]))]
    tf.summary.write(tag, tf.stack(size + pngs), metadata=_IMAGES)


def feature_importance(values: np.ndarray) -> np.ndarray:
    """Mean ``|value|`` per feature over the samples and the outputs: ``(n, features, n_outputs)`` → ``(features,)``."""
    flat = values.reshape(values.shape[0], -1, values.shape[-1])
    return np.abs(flat).mean(axis=(0, 2))


def heatmaps(values: np.ndarray, output_index: np.ndarray) -> np.ndarray:
    """RGB images in [0, 1], ``(min(n, MAX_IMAGES), H, W, 3)``: red positive, blue negative, white zero.

    ``values`` is ``(n, h, w, ..., n_outputs)``; sample ``s`` shows output ``output_index[s]``,
    summed over the axes after ``h, w``, scaled by its largest ``|value|``.
    """
    count = min(len(values), MAX_IMAGES)
    index = output_index[:count].reshape(-1, *[1] * (values.ndim - 1))
    chosen = np.take_along_axis(values[:count], index, axis=-1)[..., 0]
    maps = chosen.reshape(count, chosen.shape[1], chosen.shape[2], -1).sum(axis=-1)
    scale = np.abs(maps).max(axis=(1, 2), keepdims=True)
    s = np.divide(maps, scale, out=np.zeros_like(maps), where=scale > 0)
    rgb = np.stack([1 - np.maximum(-s, 0), 1 - np.abs(s), 1 - np.maximum(s, 0)], axis=-1)
    zoom = max(1, min(-(-MIN_IMAGE_SIDE // min(maps.shape[1:])), MAX_IMAGE_SIDE // max(maps.shape[1:])))
    return rgb.repeat(zoom, axis=1).repeat(zoom, axis=2).astype(np.float32)


__all__ = ["AttributionCallback"]
