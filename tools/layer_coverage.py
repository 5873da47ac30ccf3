"""Which Keras layers tfshap explains exactly: one row per layer class, for both Kerases.

    python tools/layer_coverage.py            # build, compile and explain every layer; print the table
    python tools/layer_coverage.py --write    # the same, then write tools/layer_coverage.json and README.md
    python tools/layer_coverage.py --check    # exit 1 if README.md differs from layer_coverage.json

Every layer class of ``tf_keras.layers`` and ``keras.layers`` (aliases folded) is built in a
small float64 model, ``Input → layer → Flatten → Dense(1)``, compiled with tfshap and
explained. A row is *supported* (the attributions sum to ``f(x) − E[f(background)]``, and
the explained outputs are the model's inference outputs, within ``TOLERANCE``, or the
float32 bound of :func:`float32_tolerance` for layers TensorFlow computes in float32),
*error* (``UnsupportedOpError``, naming the op types), or *n/a* (no float arithmetic to
explain at inference, with the reason, from ``NOT_APPLICABLE``).
Layers that need constructor arguments or other inputs get them from ``SPECS``; some
layers get extra rows for variants (``Dot(normalize=True)``, ``Lambda`` with common ops).

The README section is rendered from the committed results file, so checking that it is up
to date builds no model; ``tests/test_layer_coverage.py`` re-checks every claim of the results
file (supported rows for additivity, error rows for the error and its op types).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfshap.testing import floatx  # noqa: E402

README = HERE.parent / "README.md"
RESULTS = HERE / "layer_coverage.json"
BEGIN, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
KERASES = ("tf_keras", "keras3")
TOLERANCE = 1e-8
#: Roundings of a float32 row's own layer: a window of at most 27 terms (3-D pools, bilinear
#: resizing), or an FFT of 16 points and a mel filter bank.
LAYER_ROUNDINGS = 64
SUPPORTED, ERROR, NOT_APPLICABLE_STATUS = "supported", "error", "n/a"


def keras_module(name: str):
    if name == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


# ---------------------------------------------------------------------------------------
# the layers


def layer_classes(keras_name: str) -> dict[str, type]:
    """Every layer class the Keras exports, under its first name in sorted order (aliases folded)."""
    layers = keras_module(keras_name).layers
    found: dict[type, str] = {}
    for name in sorted(dir(layers)):
        value = getattr(layers, name)
        if inspect.isclass(value) and issubclass(value, layers.Layer):
            found.setdefault(value, name)
    return {name: cls for cls, name in found.items()}


@dataclass(frozen=True)
class Spec:
    """How to build one row's model: the layer, its inputs (shapes without the batch axis), how to call it."""

    make: Callable | None = None  # K -> layer; None: K.layers.<row name>()
    shapes: tuple = ((6, 4),)
    call: Callable | None = None  # (layer, inputs) -> tensor; None: layer(one input) or layer(list)
    # > 0: integer inputs below this bound, explained at the output of the layer named "attributed"
    integer_input: int = 0
    keras: tuple = KERASES
    dtype: str = "float64"
    #: Why this row is checked to float32 precision only (TensorFlow computes it in float32).
    float32_reason: str = ""


def _args(**by_keras):
    """Constructor keyword arguments that differ between the Kerases: ``K -> kwargs``."""
    return lambda K: by_keras["tf_keras" if K.__name__.startswith("tf_keras") else "keras3"]


IMAGE, VOLUME, SEQUENCE, MERGE = ((6, 6, 2),), ((4, 4, 4, 2),), ((6, 4),), ((6, 4), (6, 4))
RGB = ((8, 8, 3),)


def _make(class_name: str, *args, kwargs=None, **fixed):
    """``K -> K.layers.<class_name>(*args, **fixed, **kwargs(K))``."""
    return lambda K: getattr(K.layers, class_name)(*args, **fixed, **(kwargs(K) if kwargs else {}))


def _lambda(fn, **kwargs):
    return Spec(make=lambda K: K.layers.Lambda(fn), **kwargs)


_BILINEAR = "TensorFlow's ResizeBilinear returns float32 whatever the input dtype"
_NO_FLOAT64 = "this layer has no float64 kernel or implementation"


def _float32(make=None, shapes=SEQUENCE, **kwargs):
    return Spec(make=make, shapes=shapes, dtype="float32", float32_reason=_NO_FLOAT64, **kwargs)


def _augmentation(class_name: str, *args, **kwargs):
    """A random image layer (the identity at inference) that builds in float32 only."""
    return _float32(_make(class_name, *args, **kwargs), RGB)


def _then_pooled(class_name: str, *args):
    """The layer, then GlobalAveragePooling2D: its output size is unknown when the model is built."""
    return lambda K: K.Sequential([getattr(K.layers, class_name)(*args), K.layers.GlobalAveragePooling2D()])


def _rnn_of(cell_name: str):
    return Spec(make=lambda K: K.layers.RNN(getattr(K.layers, cell_name)(3)))


def _attention_call(layer, inputs):
    return layer(inputs[0], inputs[1])


SPECS: dict = {  # a row name, or (Keras, row name) for one Keras only, → its Spec
    "Activation": Spec(make=_make("Activation", "tanh")),
    "ActivityRegularization": Spec(make=_make("ActivityRegularization", l1=0.1)),
    "AdaptiveAveragePooling1D": Spec(make=_make("AdaptiveAveragePooling1D", 3)),
    "AdaptiveAveragePooling2D": Spec(make=_make("AdaptiveAveragePooling2D", 3), shapes=IMAGE),
    "AdaptiveAveragePooling3D": _float32(_make("AdaptiveAveragePooling3D", 2), VOLUME),
    "AveragePooling1D": Spec(make=_make("AveragePooling1D", 2)),
    "AveragePooling2D": Spec(make=_make("AveragePooling2D", 2), shapes=IMAGE),
    "AveragePooling3D": _float32(_make("AveragePooling3D", 2), VOLUME),
    "MaxPool3D": _float32(_make("MaxPool3D", 2), VOLUME),
    "AdaptiveMaxPooling1D": Spec(make=_make("AdaptiveMaxPooling1D", 3)),
    "AdaptiveMaxPooling2D": Spec(make=_make("AdaptiveMaxPooling2D", 3), shapes=IMAGE),
    "AdaptiveMaxPooling3D": _float32(_make("AdaptiveMaxPooling3D", 2), VOLUME),
    "Add": Spec(shapes=MERGE),
    "AdditiveAttention": Spec(shapes=MERGE),
    "Attention": Spec(shapes=MERGE),
    "AugMix": Spec(shapes=RGB),
    "AutoContrast": Spec(shapes=RGB),
    "Average": Spec(shapes=MERGE),
    "Bidirectional": Spec(make=lambda K: K.layers.Bidirectional(K.layers.LSTM(2))),
    "CenterCrop": Spec(make=_make("CenterCrop", 4, 4), shapes=IMAGE),
    "Concatenate": Spec(shapes=MERGE),
    "ContrastLimitedAdaptiveHistogramEqualization": Spec(
        make=_make("ContrastLimitedAdaptiveHistogramEqualization", value_range=(0, 1)), shapes=RGB
    ),
    "Conv1D": Spec(make=_make("Conv1D", 2, 3)),
    "Conv1DTranspose": Spec(make=_make("Conv1DTranspose", 2, 3, strides=2)),
    "Conv2D": Spec(make=_make("Conv2D", 2, 3), shapes=IMAGE),
    "Conv2DTranspose": Spec(make=_make("Conv2DTranspose", 2, 3, strides=2), shapes=IMAGE),
    "Conv3D": Spec(make=_make("Conv3D", 2, 2), shapes=VOLUME),
    "Conv3DTranspose": Spec(make=_make("Conv3DTranspose", 2, 2, strides=2), shapes=VOLUME),
    "ConvLSTM1D": Spec(make=_make("ConvLSTM1D", 2, 2), shapes=((3, 5, 2),)),
    "ConvLSTM2D": Spec(make=_make("ConvLSTM2D", 2, 2), shapes=((3, 4, 4, 2),)),
    "ConvLSTM3D": Spec(make=_make("ConvLSTM3D", 2, 2), shapes=((2, 3, 3, 3, 1),)),
    "Cropping1D": Spec(make=_make("Cropping1D", (1, 2))),
    "Cropping2D": Spec(make=_make("Cropping2D", ((1, 0), (0, 2))), shapes=IMAGE),
    "Cropping3D": Spec(make=_make("Cropping3D", 1), shapes=VOLUME),
    "CutMix": Spec(shapes=RGB),
    "Dense": Spec(make=_make("Dense", 3)),
    "DepthwiseConv1D": Spec(make=_make("DepthwiseConv1D", 3)),
    "DepthwiseConv2D": Spec(make=_make("DepthwiseConv2D", 3), shapes=IMAGE),
    "Discretization": Spec(make=_make("Discretization", bin_boundaries=[-0.5, 0.0, 0.5])),
    "Dot": Spec(make=_make("Dot", axes=1), shapes=((5,), (5,))),
    "Dot(normalize=True)": Spec(make=_make("Dot", axes=1, normalize=True), shapes=((5,), (5,))),
    "Dot(axes=(2, 2))": Spec(make=_make("Dot", axes=(2, 2)), shapes=MERGE),
    "EinsumDense": Spec(make=_make("EinsumDense", "abc,cd->abd", output_shape=(6, 3))),
    "Embedding": Spec(make=_make("Embedding", 7, 3, name="attributed"), shapes=((5,),), integer_input=7),
    "Equalization": Spec(shapes=RGB),
    "GroupNormalization": Spec(make=_make("GroupNormalization", groups=2)),
    "GroupQueryAttention": Spec(make=_make("GroupQueryAttention", head_dim=2, num_query_heads=2, num_key_value_heads=1),
                                shapes=MERGE, call=_attention_call),
    "LocallyConnected1D": Spec(make=_make("LocallyConnected1D", 2, 3)),
    "LocallyConnected2D": Spec(make=_make("LocallyConnected2D", 2, 3), shapes=IMAGE),
    "LSTM": Spec(make=_make("LSTM", 3)),
    "GRU": Spec(make=_make("GRU", 3)),
    "SimpleRNN": Spec(make=_make("SimpleRNN", 3)),
    "RNN": _rnn_of("SimpleRNNCell"),
    "LSTMCell": _rnn_of("LSTMCell"),
    "GRUCell": _rnn_of("GRUCell"),
    "SimpleRNNCell": _rnn_of("SimpleRNNCell"),
    "StackedRNNCells": Spec(
        make=lambda K: K.layers.RNN(K.layers.StackedRNNCells([K.layers.SimpleRNNCell(3), K.layers.GRUCell(2)]))
    ),
    "Lambda": _lambda(lambda t: tf.square(t) + tf.sin(t)),
    "Lambda(tf.where varying condition)": _lambda(lambda t: tf.where(t > 0.2, t * t, -t)),
    "Lambda(tf.math.cumsum)": _lambda(lambda t: tf.math.cumsum(t, axis=1)),
    "Lambda(tf.math.cumprod)": _lambda(lambda t: tf.math.cumprod(t, axis=1)),
    "Lambda(tf.math.top_k k=1)": _lambda(lambda t: tf.math.top_k(t, k=1).values),
    "Lambda(tf.math.top_k k=2)": _lambda(lambda t: tf.math.top_k(t, k=2).values),
    "Lambda(tf.nn.l2_normalize)": _lambda(lambda t: tf.nn.l2_normalize(t, axis=-1)),
    "Lambda(tf.reduce_logsumexp)": _lambda(lambda t: tf.reduce_logsumexp(t, axis=-1)),
    "Lambda(tf.sort)": _lambda(lambda t: tf.sort(t, axis=-1)),
    "Lambda(tf.image.resize bilinear)": _lambda(
        lambda t: tf.image.resize(t, (9, 9)), shapes=IMAGE, float32_reason=_BILINEAR
    ),
    "LeakyReLU": Spec(make=_make("LeakyReLU", kwargs=_args(tf_keras={"alpha": 0.2}, keras3={"negative_slope": 0.2}))),
    "Masking": Spec(make=_make("Masking", mask_value=0.0)),
    "MaxNumBoundingBoxes": Spec(make=_make("MaxNumBoundingBoxes", max_number=2)),
    "MelSpectrogram": _float32(_make("MelSpectrogram", fft_length=16, sequence_stride=8, num_mel_bins=4), ((64,),)),
    "Maximum": Spec(shapes=MERGE),
    "Minimum": Spec(shapes=MERGE),
    "MultiHeadAttention": Spec(
        make=_make("MultiHeadAttention", num_heads=2, key_dim=2), shapes=MERGE, call=_attention_call
    ),
    "Multiply": Spec(shapes=MERGE),
    "Normalization": Spec(make=_make("Normalization", mean=0.5, variance=2.0)),
    "Permute": Spec(make=_make("Permute", (2, 1))),
    "Pipeline": Spec(
        make=lambda K: K.layers.Pipeline([K.layers.Rescaling(0.5), K.layers.CenterCrop(4, 4)]), shapes=IMAGE
    ),
    # At inference tf_keras RandomCrop crops the center and resizes bilinearly; Keras 3 RandomCrop keeps
    # the input size (its symbolic output shape says otherwise), so it gets the input size.
    ("tf_keras", "RandomCrop"): Spec(make=_make("RandomCrop", 4, 4), shapes=RGB, float32_reason=_BILINEAR),
    "RandomCrop": Spec(make=_make("RandomCrop", 8, 8), shapes=RGB),
    "RandomBrightness": Spec(make=_make("RandomBrightness", 0.2), shapes=RGB),
    "RandomColorDegeneration": Spec(make=_make("RandomColorDegeneration", 0.2), shapes=RGB),
    "RandomContrast": Spec(make=_make("RandomContrast", 0.2), shapes=RGB),
    "RandomHue": Spec(make=_make("RandomHue", 0.2), shapes=RGB),
    "RandomPosterization": Spec(make=_make("RandomPosterization", 4), shapes=RGB),
    "RandomSaturation": Spec(make=_make("RandomSaturation", 0.2), shapes=RGB),
    "RandomSharpness": Spec(make=_make("RandomSharpness", 0.2), shapes=RGB),
    "RandomElasticTransform": Spec(shapes=RGB),
    "RandomHeight": _float32(_then_pooled("RandomHeight", 0.2), RGB),
    ("tf_keras", "RandomRotation"): _augmentation("RandomRotation", 0.2),
    "RandomRotation": Spec(make=_make("RandomRotation", 0.2), shapes=RGB),
    "RandomTranslation": Spec(make=_make("RandomTranslation", 0.2, 0.2), shapes=RGB),
    "RandomWidth": _float32(_then_pooled("RandomWidth", 0.2), RGB),
    "RandomZoom": Spec(make=_make("RandomZoom", 0.2), shapes=RGB),
    "RandomShear": Spec(make=_make("RandomShear", 0.2), shapes=RGB),
    "RepeatVector": Spec(make=_make("RepeatVector", 3), shapes=((4,),)),
    "Rescaling": Spec(make=_make("Rescaling", 0.5, offset=1.0)),
    "Reshape": Spec(make=_make("Reshape", (4, 6))),
    "Resizing": Spec(make=_make("Resizing", 9, 9), shapes=IMAGE, float32_reason=_BILINEAR),
    "Resizing(nearest)": Spec(make=_make("Resizing", 9, 9, interpolation="nearest"), shapes=IMAGE),
    "ReversibleEmbedding": Spec(
        make=_make("ReversibleEmbedding", 7, 3, name="attributed"), shapes=((5,),), integer_input=7
    ),
    "SeparableConv1D": Spec(make=_make("SeparableConv1D", 2, 3)),
    "SeparableConv2D": Spec(make=_make("SeparableConv2D", 2, 3), shapes=IMAGE),
    "STFTSpectrogram": Spec(
        make=_make("STFTSpectrogram", frame_length=16, frame_step=8, fft_length=16), shapes=((64, 1),)
    ),
    "SpatialDropout1D": Spec(make=_make("SpatialDropout1D", 0.5)),
    "SpatialDropout2D": Spec(make=_make("SpatialDropout2D", 0.5), shapes=IMAGE),
    "SpatialDropout3D": Spec(make=_make("SpatialDropout3D", 0.5), shapes=VOLUME),
    "Dropout": Spec(make=_make("Dropout", 0.5)),
    "AlphaDropout": Spec(make=_make("AlphaDropout", 0.5)),
    "GaussianDropout": Spec(make=_make("GaussianDropout", 0.5)),
    "GaussianNoise": Spec(make=_make("GaussianNoise", 0.5)),
    "SpectralNormalization": Spec(make=lambda K: K.layers.SpectralNormalization(K.layers.Dense(3))),
    "Subtract": Spec(shapes=MERGE),
    "ThresholdedReLU": Spec(make=_make("ThresholdedReLU", theta=0.3)),
    "TimeDistributed": Spec(make=lambda K: K.layers.TimeDistributed(K.layers.Dense(2))),
    "UpSampling2D": Spec(make=_make("UpSampling2D", interpolation="nearest"), shapes=IMAGE),
    "UpSampling2D(bilinear)": Spec(
        make=_make("UpSampling2D", interpolation="bilinear"), shapes=IMAGE, float32_reason=_BILINEAR
    ),
    "ZeroPadding1D": Spec(make=_make("ZeroPadding1D", (1, 2))),
    "ZeroPadding2D": Spec(make=_make("ZeroPadding2D", ((1, 0), (0, 2))), shapes=IMAGE),
}

_CATEGORICAL = "takes integer or string categories (preprocessing); no float arithmetic to explain"
NOT_APPLICABLE: dict = {  # a class name, or (Keras, class name), → the reason
    "AbstractRNNCell": "abstract base class of RNN cells",
    "Layer": "abstract base class",
    "Wrapper": "abstract base class of wrappers",
    "InputLayer": "the model's input: no arithmetic",
    "CategoryEncoding": _CATEGORICAL,
    "HashedCrossing": _CATEGORICAL,
    "Hashing": _CATEGORICAL,
    "IntegerLookup": _CATEGORICAL,
    "StringLookup": _CATEGORICAL,
    "TextVectorization": _CATEGORICAL,
    "DenseFeatures": "takes a dict of feature columns (tf_keras estimator-era input)",
    "FlaxLayer": "wraps a JAX/Flax module: the JAX backend only",
    "JaxLayer": "wraps a JAX function: the JAX backend only",
    "TorchModuleWrapper": "wraps a torch module: the torch backend only",
    "TFSMLayer": "wraps a loaded SavedModel; explain the SavedModel (a model path) instead",
    # Its constructor uses tf.keras.layers.InputSpec, which is Keras 3 unless TF_USE_LEGACY_KERAS=1.
    ("tf_keras", "SpectralNormalization"): "does not build in tf_keras 2.21 with Keras 3 installed (a tf_keras bug)",
}


def _default_shapes(name: str) -> tuple:
    if name.endswith("2D"):
        return IMAGE
    if name.endswith("3D"):
        return VOLUME
    return SEQUENCE


def rows(keras_name: str) -> dict[str, Spec | str]:
    """Row name → its Spec, or the reason it is not applicable; variants follow their class."""
    out: dict[str, Spec | str] = {}
    classes = layer_classes(keras_name)
    for name in classes:
        reason = NOT_APPLICABLE.get((keras_name, name)) or NOT_APPLICABLE.get(name)
        if reason:
            out[name] = reason
            continue
        for row in [name] + sorted(r for r in SPECS if isinstance(r, str) and r.startswith(name + "(")):
            spec = SPECS.get((keras_name, row)) or SPECS.get(row) or Spec(shapes=_default_shapes(name))
            if keras_name in spec.keras:
                out[row] = spec
    return out


# ---------------------------------------------------------------------------------------
# building and checking


def branch(K, row: str, spec: Spec, inputs: list):
    """The row's layer applied to ``inputs``, flattened and reduced to one output column."""
    layer = spec.make(K) if spec.make else getattr(K.layers, row)()
    if spec.call:
        out = spec.call(layer, inputs)
    else:
        out = layer(inputs[0] if len(inputs) == 1 else inputs)
    out = out[0] if isinstance(out, (list, tuple)) else out
    return K.layers.Dense(1)(K.layers.Flatten()(out))


def model_of(K, keras_rows: dict[str, Spec], summed: bool = False):
    """The rows' layers side by side on shared inputs: one output column per row, or their sum."""
    specs = list(keras_rows.values())
    first = specs[0]
    dtype = "int32" if first.integer_input else first.dtype
    inputs = [K.Input(shape, dtype=dtype) for shape in first.shapes]
    heads = [branch(K, row, spec, inputs) for row, spec in keras_rows.items()]
    if len(heads) == 1:
        return K.Model(inputs, heads[0])
    return K.Model(inputs, K.layers.Add()(heads) if summed else K.layers.Concatenate()(heads))


def data_of(spec: Spec, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if spec.integer_input:
        return [rng.integers(0, spec.integer_input, (n, *shape)).astype("int32") for shape in spec.shapes]
    # Values in (0, 1) where images are expected (augmentation layers assume a value range).
    if spec.shapes == RGB:
        return [rng.uniform(0.0, 1.0, (n, *shape)).astype(spec.dtype) for shape in spec.shapes]
    return [rng.normal(size=(n, *shape)).astype(spec.dtype) for shape in spec.shapes]


def group_key(row: str, spec: Spec):
    """Rows that can share one model: the same inputs, explained at the model inputs (an integer row alone)."""
    return (spec.shapes, spec.dtype, row if spec.integer_input else None)


def explain_rows(K, keras_rows: dict[str, Spec], summed: bool = False) -> dict[str, float]:
    """Build the rows side by side, compile once, explain: each row's column's miss, relative to its tolerance.

    The miss is the larger of the additivity gap and the distance of the explained outputs from
    the model's own inference outputs (``model(x, training=False)``: a layer traced in training
    mode would still add up); a row holds when it is below 1. ``summed``: one output, the sum of
    the rows' heads (one backward pass instead of one per row, much faster); every row then gets
    the miss of the sum.
    """
    import tfshap

    first = next(iter(keras_rows.values()))
    with floatx(K, first.dtype):
        K.utils.set_random_seed(0)  # the weights do not depend on what was built before
        model = model_of(K, keras_rows, summed)
        inputs = "attributed" if first.integer_input else None
        background, x = _one(data_of(first, 5, 0)), _one(data_of(first, 3, 1))
        explainer = tfshap.compile(model, background, inputs=inputs)
        result = explainer.explain(x)
        inference = np.asarray(model(x if isinstance(x, list) else [x], training=False), np.float64)  # built on a list
        inference = inference.reshape(result.outputs.shape)
    values = result.values if isinstance(result.values, list) else [result.values]
    totals = sum(np.asarray(v, np.float64).reshape(v.shape[0], -1, v.shape[-1]).sum(axis=1) for v in values)
    gaps = np.abs(totals + result.base_values - result.outputs).max(axis=0)
    gaps = np.maximum(gaps, np.abs(result.outputs - inference).max(axis=0))
    rows = len(background[0] if isinstance(background, list) else background)
    needs_float32 = any(spec.float32_reason for spec in keras_rows.values())
    float32 = float32_tolerance(model, result, rows) if needs_float32 else None
    gaps = gaps.tolist() * len(keras_rows) if summed else gaps.tolist()
    return {
        row: gap / (float32 if spec.float32_reason else TOLERANCE)
        for (row, spec), gap in zip(keras_rows.items(), gaps)
    }


def float32_tolerance(model, result, background_rows: int) -> float:
    """``min(n, 7√n)·2**-24·magnitude``: the float32 rounding of a row's sums (see tests/models/_helpers.py).

    ``n``: the row's own layer (``LAYER_ROUNDINGS``), the Dense head's fan-in forward and its
    fan-out back, the mean over the background rows; the magnitude: the largest of the outputs,
    base values and sums of the absolute values (every sum handled is at most one of those times
    the head's largest |weight|). At most one rounding in 2**24 for each, and the errors of
    unrelated values grow as √n (Higham & Mary 2019) once n > 49.
    """
    heads = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    kernel = max((np.abs(np.asarray(h.get_weights()[0], np.float64)) for h in heads), key=lambda k: k.shape[0])
    n = LAYER_ROUNDINGS + kernel.shape[0] + kernel.shape[1] + background_rows
    values = result.values if isinstance(result.values, list) else [result.values]
    l1 = sum(np.abs(np.asarray(v, np.float64)).reshape(v.shape[0], -1, v.shape[-1]).sum(1) for v in values)
    magnitude = max(np.abs(result.outputs).max(), np.abs(result.base_values).max(), l1.max()) * max(1.0, kernel.max())
    return float(min(n, 7 * np.sqrt(n)) * 2.0**-24 * magnitude)


def _one(arrays: list):
    return arrays[0] if len(arrays) == 1 else arrays


def check_row(keras_name: str, row: str, spec: Spec) -> dict:
    """Build, compile and explain one row alone: its status and what supports it."""
    import tfshap

    K = keras_module(keras_name)
    try:
        miss = explain_rows(K, {row: spec})[row]
    except tfshap.UnsupportedOpError as error:
        return {"status": ERROR, "ops": error.op_types}
    except tfshap.MaskMismatchError:
        return {"status": ERROR, "at_run_time": "MaskMismatchError"}
    if not miss < 1:
        raise AssertionError(
            f"{keras_name} {row}: misses its tolerance {miss:.3g} times (additivity or inference outputs)"
        )
    return {"status": SUPPORTED, **({"float32": spec.float32_reason} if spec.float32_reason else {})}


def compute(keras_names=KERASES, only=None) -> dict:
    results: dict[str, dict[str, dict]] = {}
    failures = []
    for keras_name in keras_names:
        results[keras_name] = {}
        for row, spec in rows(keras_name).items():
            if only and not any(row.startswith(o) for o in only):
                continue
            if isinstance(spec, str):
                results[keras_name][row] = {"status": NOT_APPLICABLE_STATUS, "reason": spec}
                continue
            try:
                results[keras_name][row] = check_row(keras_name, row, spec)
            except Exception as error:  # noqa: BLE001 - every failure is listed, then the run fails
                failures.append(f"{keras_name} {row}: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
            print(f"{keras_name:8} {row:45} {results[keras_name].get(row)}", file=sys.stderr)
    if failures:
        raise SystemExit("layers that neither worked nor raised UnsupportedOpError:\n" + "\n".join(failures))
    return results


# ---------------------------------------------------------------------------------------
# the README table


def _cell(result: dict | None) -> str:
    if result is None:
        return "—"
    if result["status"] == SUPPORTED:
        return f"supported to float32 precision ({result['float32']})" if "float32" in result else "supported"
    if "at_run_time" in result:
        return f"error when explaining: `{result['at_run_time']}` where sample and background fall on different sides"
    if result["status"] == ERROR:
        return "error: " + ", ".join(f"`{op}`" for op in result["ops"])
    return f"n/a: {result['reason']}"


def render(results: dict) -> str:
    names = sorted({row for keras_rows in results.values() for row in keras_rows}, key=str.lower)
    lines = ["| layer | tf_keras (Keras 2) | keras (Keras 3) |", "| --- | --- | --- |"]
    lines += [
        f"| `{row}` | {_cell(results['tf_keras'].get(row))} | {_cell(results['keras3'].get(row))} |" for row in names
    ]
    counts = {status: sum(r["status"] == status for k in results.values() for r in k.values())
              for status in (SUPPORTED, ERROR, NOT_APPLICABLE_STATUS)}
    lines.append("")
    lines.append(f"{counts[SUPPORTED]} supported, {counts[ERROR]} refused, "
                 f"{counts[NOT_APPLICABLE_STATUS]} not applicable "
                 "(rows over both Kerases). Generated by `python tools/layer_coverage.py --write`.")
    return "\n".join(lines)


def updated_readme(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: the markers {BEGIN} and {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table.strip()}\n{END}{tail}"


def load_results() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Which Keras layers tfshap explains exactly.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write tools/layer_coverage.json and the README table")
    group.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results file")
    parser.add_argument("--only", nargs="*", help="rows starting with these names (print only, for debugging)")
    args = parser.parse_args(argv)
    if args.check:
        text = README.read_text(encoding="utf-8")
        if updated_readme(text, render(load_results())) != text:
            print(f"{README.name} is out of date: run python tools/layer_coverage.py --write", file=sys.stderr)
            return 1
        print(f"{README.name} is up to date")
        return 0
    results = compute(only=args.only)
    if args.only or not args.write:
        print(json.dumps(results, indent=1) if args.only else render(results))
        return 0
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    README.write_text(updated_readme(README.read_text(encoding="utf-8"), render(results)), encoding="utf-8")
    print(f"wrote {RESULTS} and the table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
