"""How far rounding may move the sums: the additivity tolerance, derived from the model's own float noise.

DeepSHAP's sums are exact in exact arithmetic. In floating point each rule reproduces the
*computed* change of its op, ``m · Δin = Δout``, to a few ulps of the terms involved, so
the sums telescope to the computed ``f(x) − f(r)`` of the rows that the rules saw. What
separates that from the outputs tfshap reports is the forward pass's own rounding on the
sample's row and on its reference rows: at most twice the model's float noise ``ν``,
``max |f_dtype(z) − f_exact(z)|`` over those rows. So a miss is accepted up to

    tolerance = ULPS · eps · scale + 2 · ν,

``scale = max |f(x)| + max |E f(r)| + max Σ |φ|`` (the magnitudes the sums and the check
add up), ``eps`` the machine epsilon of the least precise float dtype the model computes
in. ``ν`` is measured only when the first term alone would reject the miss: by running the
same explained function in float64 (a float64 copy of the Keras model), and by comparing
its traced graph with Keras's own eager inference, which may round differently (oneDNN's
fused kernels). A well-conditioned model therefore keeps a tight tolerance, so a wrong
rule is still caught; an ill-conditioned one (EfficientNetV2 in float32) is not flagged for
its own rounding. :class:`tfshap.AdditivityError` states both numbers.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import tensorflow as tf

from .attributions import Attributions
from .errors import AdditivityError, CompileError
from .graph import varying_tensors

#: ulps of the magnitudes involved that the rules' own arithmetic may add (per-op rounding of
#: ``m · Δ``, accumulated over a deep network's few hundred ops, with errors of random sign).
ULPS = 64
#: Rows of the background that the compile-time check and the noise measurement run.
CHECK_ROWS = 8
#: A traced forward pass further than this from Keras's own inference (relative to the outputs'
#: scale) is not rounding: a layer ran in the wrong mode or is random at inference.
MODE_GAP = {8: 1e-6, 4: 1e-2, 2: 5e-2}


def eps(dtype: tf.DType) -> float:
    """The machine epsilon of a float dtype (bfloat16 included)."""
    return float(ml_dtypes.finfo(dtype.as_numpy_dtype).eps)


def compute_dtype(ops, sources, output_dtype: tf.DType) -> tf.DType:
    """The least precise float dtype of the tensors that vary with ``sources`` in ``ops`` (float16 under
    mixed_float16, whatever the output's dtype)."""
    varying = varying_tensors(ops, sources)
    floats = {ref.deref().dtype for ref in varying if ref.deref().dtype.is_floating}
    return max(floats | {output_dtype}, key=eps)


def noise_matters(dtype: tf.DType) -> bool:
    return dtype != tf.float64


def tolerance(dtype: tf.DType, outputs: np.ndarray, base: np.ndarray, noise: float = 0.0,
              values=None) -> float:
    """``ULPS · eps · scale + 2 · noise`` (see the module's docstring)."""
    scale = float(np.max(np.abs(outputs), initial=0)) + float(np.max(np.abs(base), initial=0))
    if values is not None:
        scale += float(np.max(_absolute_sums(values), initial=0))
    return ULPS * eps(dtype) * scale + 2 * noise


def row_tolerances(dtype: tf.DType, outputs, base, values, noise=0.0):
    """Per row, ``ULPS · eps · scale + 2 · noise`` with the row's own magnitudes, in TensorFlow ops (the export's).

    ``outputs`` ``(n, k)``, ``base`` ``(k,)`` or ``(n, k)``, ``values`` a list of ``(n, ..., k)``
    tensors; the same bound as :func:`tolerance`, row by row.
    """
    absolute = tf.add_n([tf.reduce_sum(tf.abs(tf.reshape(v, [tf.shape(v)[0], -1, tf.shape(v)[-1]])), 1)
                         for v in values])
    base = tf.broadcast_to(tf.abs(base), tf.shape(outputs))
    scale = tf.reduce_max(tf.abs(outputs), 1) + tf.reduce_max(base, 1) + tf.reduce_max(absolute, 1)
    return ULPS * eps(dtype) * tf.cast(scale, tf.float64) + 2 * tf.cast(noise, tf.float64)


def _absolute_sums(values) -> np.ndarray:
    values = values if isinstance(values, list) else [values]
    return sum(np.abs(v.reshape(v.shape[0], -1, v.shape[-1]).astype(np.float64)).sum(axis=1) for v in values)


def check_additivity(explainer, attributions: Attributions) -> None:
    """Raise :class:`AdditivityError` where the miss exceeds what rounding explains."""
    miss = attributions.additivity_error
    dtype = explainer.compute_dtype
    tight = tolerance(dtype, attributions.outputs, attributions.base_values, values=attributions.values)
    if miss <= tight:
        return
    noise = None
    if noise_matters(dtype) and attributions.data is not None:
        noise = explainer.model_noise(attributions.data)
        if miss <= tight + 2 * noise:
            return
    raise AdditivityError(miss, tight + 2 * (noise or 0.0), noise, dtype.name, explainer.rules_used)


def inference_gap(explainer, arrays: list[np.ndarray], traced=None) -> float:
    """``max |traced − Keras inference|`` on ``arrays`` (the model called eagerly with training=False).

    ``traced``: the traced function's outputs there (default: the explainer's forward pass).
    """
    traced = explainer.outputs_of(arrays) if traced is None else traced
    eager = explainer.traced.call_eagerly([tf.convert_to_tensor(a) for a in arrays])
    return float(np.max(np.abs(traced - np.asarray(eager, np.float64)), initial=0.0))


def check_traced_forward(explainer, outputs_of=None) -> None:
    """At compile time: the traced forward pass must be the model's inference output on the background.

    ``outputs_of(rows)`` computes the traced outputs (default: the explainer's forward pass;
    DeepSHAP passes its chunk function, which the first explanation then finds ready).
    Raises :class:`CompileError` where they differ by more than rounding could, e.g. a
    layer that stays random at inference or runs in training mode.
    """
    if explainer.background is None:
        return
    rows = [b.numpy()[:CHECK_ROWS] for b in explainer.background]
    traced = (outputs_of or explainer.outputs_of)(rows)
    gap = inference_gap(explainer, rows, traced)
    scale = max(float(np.max(np.abs(traced), initial=0)), 1e-30)
    limit = MODE_GAP.get(explainer.compute_dtype.size, 1e-2) * max(scale, 1.0)
    if not gap <= limit:
        raise CompileError(
            f"the traced model differs from its own inference output (model(x, training=False)) by {gap:.3g} on "
            f"the first {len(rows[0])} background rows, more than rounding explains ({limit:.3g}): a layer is "
            "random at inference or runs in training mode, so its attributions would explain another function"
        )


def model_noise(explainer, data) -> float:
    """The explained function's own rounding on ``data`` and the background: ``max |f − f64|`` over those rows.

    Measured against a float64 copy of the model where one can be built, and against
    Keras's eager inference; cached per explainer for the background, computed for ``data``.
    """
    arrays = data if isinstance(data, list) else [data]
    arrays = [np.asarray(a)[:CHECK_ROWS] for a in arrays]
    rows = [arrays]
    if explainer.background is not None:
        rows.append([b.numpy()[:CHECK_ROWS] for b in explainer.background])
    noise = 0.0
    for block in rows:
        noise = max(noise, inference_gap(explainer, block))
        exact = explainer.traced.float64_outputs(block)
        if exact is not None:
            noise = max(noise, float(np.max(np.abs(explainer.outputs_of(block) - exact), initial=0.0)))
    return noise


__all__ = ["tolerance", "check_additivity", "check_traced_forward", "model_noise", "compute_dtype", "eps"]
