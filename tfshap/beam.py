"""Explain datasets on Apache Beam: ``ModelHandler``\\ s for ``RunInference``, and the ``tfshap explain`` pipeline.

``ExplainModelHandler`` compiles a saved Keras model once per worker process;
``SavedModelExplainHandler`` runs a SavedModel written by ``explainer.export(path)`` and
needs only TensorFlow on the workers. Both take one row per element (an array, or a tuple
of arrays for several model inputs; ``(key, row)`` through :meth:`keyed`), and give one
``PredictionResult`` per row whose ``inference`` is a dict: ``"values"`` (shap's layout
without the batch axis, ``(*input_shape, n_outputs)``; a list for several inputs),
``"outputs"`` and ``"base_values"`` ``(n_outputs,)``, and ``"additivity_error"``.

A row that cannot be explained (not finite, the wrong shape, a ``MaskMismatchError``, an
additivity miss) does not take its batch with it: rows are checked before the batch is
stacked; if the batch still fails, its halves are explained apart, down to the one row that
fails. That row's result carries ``{"error": message}``, and the handler's postprocessing
raises a ``ValueError`` for it, so that ``RunInference(...).with_exception_handling()`` sends
it, with its key, to the dead letters; every other row of the batch is explained.

Workers unpickle these classes by value (this module and :mod:`tfshap._quiet` are registered
with Beam's cloudpickle), and import TensorFlow and tfshap only when loading the model, so
that a worker running ``SavedModelExplainHandler`` never imports tfshap.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    WorkerOptions,
)

from . import _quiet
from ._quiet import import_tensorflow, tensorflow_logs_filtered

#: The namespace of this module's Beam metrics (and of RunInference's own, through the handlers).
METRICS_NAMESPACE = "tfshap"
#: Additivity errors are recorded in a Beam distribution (integers) in these units, rounded up.
ERROR_UNIT = 1e-12
#: Rows per Beam batch: at least this many (each explain call costs a forward pass over the background
#: and the batch; at 10 rows a call it cost 20% more CPU than one call, at 64 rows 2%, digits CNN, K=100) ...
MIN_ROWS_PER_BATCH = 64
#: ... at most this many, and at most this many bytes of values (rows × input elements × outputs × 4).
MAX_ROWS_PER_BATCH, VALUES_BYTES_PER_BATCH = 256, 64 << 20
#: Pairs per batch for an exported SavedModel, whose chunk size the handler cannot read.
SAVED_MODEL_PAIRS_PER_BATCH = 4096
#: The file kinds ``explain_files`` reads.
NPY, NPZ, TFRECORD = ".npy", ".npz", ".tfrecord"
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".tfrecord.gz", ".tfrecords.gz")

for _module in (sys.modules[__name__], _quiet):
    cloudpickle.register_pickle_by_value(_module)


# -- rows ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One model input for one row: its shape without the batch axis (``None`` where any size goes) and dtype."""

    shape: tuple
    dtype: str


def row_arrays(element, specs: list[RowSpec]) -> list[np.ndarray]:
    """The arrays of one row (one per model input), checked and cast to the input dtypes.

    Parameters
    ----------
    element : array_like or tuple of array_like
        One row: an array for one model input, a tuple (or list) of arrays for several.
    specs : list of RowSpec
        The model inputs.

    Returns
    -------
    list of numpy.ndarray
        One array per model input, without a batch axis.

    Raises
    ------
    ValueError
        Says what was expected: the number of arrays, numbers, the row shape, finite values.
    """
    several = len(specs) > 1
    if several and (not isinstance(element, (tuple, list)) or len(element) != len(specs)):
        raise ValueError(f"expected a tuple of {len(specs)} arrays, one per model input; got {_describe(element)}")
    items = list(element) if several else [element]
    return [_row_array(item, spec, i if several else None) for i, (item, spec) in enumerate(zip(items, specs))]


def _row_array(item, spec: RowSpec, index) -> np.ndarray:
    where = "" if index is None else f" for model input {index}"
    array = np.asarray(item)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"expected numbers{where}; got dtype {array.dtype}")
    if array.ndim != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape, array.shape)):
        raise ValueError(f"expected a row of shape {_shape(spec.shape)}{where}; got {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"the row holds {bad} NaN or infinite value(s){where}; expected finite numbers")
    return array.astype(spec.dtype, copy=False)


def _shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _describe(element) -> str:
    shape = getattr(element, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(element).__name__


def _failure(exc: BaseException) -> dict:
    """The inference of a row that could not be explained."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return {"error": f"{type(exc).__name__}: {text}"}


def reject_failed_rows(result):
    """Postprocessing: a row's result unchanged, or a ValueError with its error (for the dead letters).

    Parameters
    ----------
    result : PredictionResult or tuple
        A handler's result, or ``(key, result)`` from :meth:`keyed`.

    Returns
    -------
    The same ``result``, when its row was explained.

    Raises
    ------
    ValueError
        The row could not be explained; the message is the row's error.
    """
    prediction = result[1] if isinstance(result, tuple) and not isinstance(result, PredictionResult) else result
    error = prediction.inference.get("error") if isinstance(prediction.inference, dict) else None
    if error is not None:
        raise ValueError(error)
    return result


# -- the loaded models, behind one interface ---------------------------------------------------
class _CompiledRows:
    """A tfshap explainer: ``specs``, ``explain(arrays) -> (values, outputs, base, tolerances)``, ``row_errors``."""

    def __init__(self, explainer, tf):
        self.explainer = explainer
        self.specs = [RowSpec(tuple(s.shape[1:]), s.dtype.name) for s in explainer.input_specs]
        # ValueError includes MaskMismatchError and bad input; AssertionError is tfshap's AdditivityError.
        self.row_errors = (ValueError, AssertionError, tf.errors.InvalidArgumentError)
        # The path methods (expected and integrated gradients) only converge to additivity: unchecked.
        self.checked = getattr(explainer, "checks_additivity_by_default", True)

    def explain(self, arrays):
        from tfshap import precision

        result = self.explainer.explain(arrays if len(arrays) > 1 else arrays[0])
        values = result.values if isinstance(result.values, list) else [result.values]
        n = len(result.outputs)
        if not self.checked:
            return values, result.outputs, result.base_values, np.full(n, math.inf)
        dtype = self.explainer.compute_dtype
        base = np.broadcast_to(result.base_values, result.outputs.shape)
        # tfshap's own bound, row by row; the model's float noise only where the tight part misses
        tolerances = np.array([
            precision.tolerance(dtype, result.outputs[i], base[i], values=[v[i : i + 1] for v in values])
            for i in range(n)
        ])
        errors = _row_errors(values, result.outputs, result.base_values)
        for i in np.flatnonzero(errors > tolerances):
            tolerances[i] += 2 * self.explainer.model_noise([a[i : i + 1] for a in arrays])
        return values, result.outputs, result.base_values, tolerances


#: The assertion an exported model raises where tfshap would raise MaskMismatchError (rewrite_rules/mask.py's marker).
_MASK_MISMATCH = re.compile(r"tfshap-mask-mismatch ([^\]\s]+)")


class MaskMismatchError(ValueError):
    """An exported model's mask check failed (tfshap's MaskMismatchError, where tfshap is not imported)."""


class _SavedModelRows:
    """An exported tfshap SavedModel (``tf.saved_model.load``) behind the same interface as :class:`_CompiledRows`.

    The export computes each row's additivity tolerance itself (``additivity_tolerance``, as
    tfshap's check does, with the model's float noise measured when exporting).
    """

    def __init__(self, loaded, tf, additivity_tolerance):
        self.loaded = loaded
        _, named = loaded.signatures["serving_default"].structured_input_signature
        order = sorted(named, key=lambda name: int(name.rpartition("_")[2]) if "_" in name else 0)
        self.specs = [RowSpec(tuple(named[n].shape[1:]), named[n].dtype.name) for n in order]
        self.additivity_tolerance = additivity_tolerance
        self.row_errors = (ValueError, TypeError, tf.errors.InvalidArgumentError)

    def explain(self, arrays):
        try:
            result = self.loaded.explain(arrays if len(arrays) > 1 else arrays[0])
        except self.row_errors[-1] as exc:  # tf.errors.InvalidArgumentError
            found = _MASK_MISMATCH.search(str(exc))
            if found is None:
                raise
            raise MaskMismatchError(
                f"the mask or condition used by {found.group(1)!r} differs between a sample and a background row"
            ) from None
        values = result["values"] if isinstance(result["values"], (list, tuple)) else [result["values"]]
        tolerances = result["additivity_tolerance"].numpy()
        if self.additivity_tolerance is not None:
            tolerances = np.full_like(tolerances, self.additivity_tolerance)
        return [v.numpy() for v in values], result["outputs"].numpy(), result["base_values"].numpy(), tolerances


def _row_errors(values, outputs, base) -> np.ndarray:
    """``max |sum(values) + base − outputs|`` per row."""
    n_outputs = outputs.shape[1]
    totals = sum(v.reshape(len(outputs), -1, n_outputs).sum(axis=1, dtype=np.float64) for v in values)
    return np.max(np.abs(totals + base - outputs), axis=1)


# -- the handlers ------------------------------------------------------------------------------
class _RowHandler(ModelHandler):
    """Rows in, one ``PredictionResult`` per row out; a row that fails is isolated from its batch."""

    def __init__(self, *, min_batch_size=None, max_batch_size=None, **kwargs):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs)
        self._reject_failed = True
        self._rows_per_batch = None

    def run_inference(self, batch, model, inference_args=None):
        """Explain a batch of rows; a row that fails gets ``{"error": ...}`` and the others are explained."""
        results: list = [None] * len(batch)
        rows: list = [None] * len(batch)
        for i, element in enumerate(batch):
            try:
                rows[i] = row_arrays(element, model.specs)
            except ValueError as exc:
                results[i] = _failure(exc)
        self._explain_apart(model, rows, [i for i, r in enumerate(results) if r is None], results)
        explained = [r for r in results if "error" not in r]
        namespace = METRICS_NAMESPACE
        beam.metrics.Metrics.counter(namespace, "rows_explained").inc(len(explained))
        beam.metrics.Metrics.counter(namespace, "rows_failed").inc(len(results) - len(explained))
        if explained:
            worst = max(r["additivity_error"] for r in explained)
            beam.metrics.Metrics.distribution(namespace, "additivity_error").update(math.ceil(worst / ERROR_UNIT))
        return [PredictionResult(element, inference) for element, inference in zip(batch, results)]

    def _explain_apart(self, model, rows, indices, results) -> None:
        """Explain ``rows[indices]`` together; on a row error, each half apart, down to the failing row."""
        if not indices:
            return
        try:
            values, outputs, base, tolerances = model.explain(
                [np.stack([rows[i][j] for i in indices]) for j in range(len(model.specs))])
        except model.row_errors as exc:
            if len(indices) == 1:
                results[indices[0]] = _failure(exc)
                return
            middle = len(indices) // 2
            self._explain_apart(model, rows, indices[:middle], results)
            self._explain_apart(model, rows, indices[middle:], results)
            return
        errors = _row_errors(values, outputs, base)
        for position, i in enumerate(indices):
            tolerance = tolerances[position]
            if not errors[position] <= tolerance:
                results[i] = {"error": (
                    f"AdditivityError: the attributions miss f(x) - E[f(background)] by {errors[position]:.3g}, "
                    f"more than the tolerance {tolerance:.3g}"
                )}
                continue
            row_values = [v[position] for v in values]
            results[i] = {
                "values": row_values[0] if len(row_values) == 1 else row_values,
                "outputs": outputs[position],
                "base_values": base if np.ndim(base) == 1 else base[position],
                "additivity_error": float(errors[position]),
            }

    def get_postprocess_fns(self):
        return [reject_failed_rows] if self._reject_failed else []

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def validate_inference_args(self, inference_args):
        if inference_args:
            raise ValueError(f"{type(self).__name__} takes no inference_args; got {sorted(inference_args)}")

    def batch_elements_kwargs(self):
        kwargs = dict(super().batch_elements_kwargs())
        if "min_batch_size" not in kwargs and "max_batch_size" not in kwargs:
            rows = self.rows_per_batch()
            kwargs.update(min_batch_size=rows, max_batch_size=rows)
        return kwargs

    def rows_per_batch(self) -> int:
        """The default rows per Beam batch, computed once where the pipeline is built (it loads the model there).

        Returns
        -------
        int
        """
        if self._rows_per_batch is None:
            self._rows_per_batch = self._default_rows_per_batch()
        return self._rows_per_batch

    def _default_rows_per_batch(self) -> int:
        raise NotImplementedError

    def keyed(self) -> ModelHandler:
        """This handler for ``(key, row)`` elements (Beam's ``KeyedModelHandler``), giving ``(key, result)``.

        Returns
        -------
        ModelHandler
            ``KeyedModelHandler`` of this handler, with :func:`reject_failed_rows` as its postprocessing.
        """
        inner = copy.copy(self)
        inner._reject_failed = False  # Beam's KeyedModelHandler takes no inner postprocessing
        return KeyedModelHandler(inner).with_postprocess_fn(reject_failed_rows)


class ExplainModelHandler(_RowHandler):
    """A ``RunInference`` model handler that explains each row with ``tfshap.compile`` (DeepSHAP by default).

    Each worker process loads the model and the background and compiles them once; the
    threads of a process share that explainer (Beam's default ``shared.Shared``). The
    explainer is not shared across processes: each process explains its own batches at full
    speed, where a model shared across processes would serialise every batch through one
    proxy process.

    Parameters
    ----------
    model_path : str
        A ``.keras`` or ``.h5`` file or a SavedModel directory, loaded in Keras's safe mode.
    background_path : str
        The background rows: ``.npy``, or ``.npz`` with one array per model input (by input
        name, or in input order).
    allow_lambda : bool
        Load Lambda layers, whose Python code runs on loading (only for files you trust).
    min_batch_size, max_batch_size : int, optional
        Rows per batch (Beam's ``BatchElements``); default: :func:`explainer_rows_per_batch`,
        one chunk of the explainer's (sample, background) pairs, at least ``MIN_ROWS_PER_BATCH``.
    **compile_options
        Passed to ``tfshap.compile`` (``output``, ``inputs``, ``method``, ``batch_size``, ...).

    Raises
    ------
    ValueError
        When loading (on the worker, or where the pipeline is built for the default batch
        size): the model or background file is missing or does not fit the model.
    """

    def __init__(self, model_path, background_path, *, allow_lambda: bool = False, min_batch_size=None,
                 max_batch_size=None, **compile_options):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_path = str(model_path)
        self.background_path = str(background_path)
        self.allow_lambda = bool(allow_lambda)
        self.compile_options = dict(compile_options)

    def load_model(self) -> _CompiledRows:
        """The compiled explainer of this worker process, behind the handler's row interface.

        Raises
        ------
        ValueError
            The model or background cannot be loaded, or do not fit each other.
        tfshap.UnsupportedOpError
            The model has ops without an exact rule.
        """
        tf = import_tensorflow()
        return _CompiledRows(self.compile(), tf)

    def compile(self):
        """``tfshap.compile`` of the model and background files, as every worker does (remote files copied here).

        Returns
        -------
        CompiledExplainer

        Raises
        ------
        ValueError
            As :meth:`load_model`.
        """
        with tensorflow_logs_filtered():
            import tfshap
            from tfshap import cli
        model = cli.load_model_file(localize(self.model_path), allow_lambda=self.allow_lambda)
        names = cli.model_input_names(model)
        background = cli.load_arrays(localize(self.background_path), "background_path", names)
        return tfshap.compile(model, background[0] if len(background) == 1 else background, **self.compile_options)

    def _default_rows_per_batch(self) -> int:
        return explainer_rows_per_batch(self.compile())

    def __repr__(self) -> str:
        return f"ExplainModelHandler({self.model_path!r}, {self.background_path!r})"


class SavedModelExplainHandler(_RowHandler):
    """A ``RunInference`` model handler for a SavedModel written by ``explainer.export(path)``:
    TensorFlow only on the workers.

    Parameters
    ----------
    export_path : str
        The SavedModel directory.
    additivity_tolerance : float, optional
        An absolute additivity tolerance for every row; default: the export's own per-row
        ``additivity_tolerance`` (tfshap's bound, with the model's float noise measured when
        it was exported).
    min_batch_size, max_batch_size : int, optional
        Rows per batch; default: :func:`rows_per_batch` of ``SAVED_MODEL_PAIRS_PER_BATCH`` pairs.

    Raises
    ------
    ValueError
        ``additivity_tolerance`` is not a positive number.
    """

    def __init__(self, export_path, *, additivity_tolerance=None, min_batch_size=None, max_batch_size=None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        if additivity_tolerance is not None and not (isinstance(additivity_tolerance, (int, float))
                                                     and additivity_tolerance > 0):
            raise ValueError(f"additivity_tolerance must be a positive number or None; got {additivity_tolerance!r}")
        self.export_path = str(export_path)
        self.additivity_tolerance = additivity_tolerance

    def load_model(self) -> _SavedModelRows:
        """The SavedModel, loaded with ``tf.saved_model.load`` (tfshap is not imported), behind the row interface.

        Raises
        ------
        OSError
            No SavedModel at ``export_path`` (TensorFlow's error).
        """
        tf = import_tensorflow()
        return _SavedModelRows(tf.saved_model.load(self.export_path), tf, self.additivity_tolerance)

    def _default_rows_per_batch(self) -> int:
        tf = import_tensorflow()
        loaded = tf.saved_model.load(self.export_path)
        outputs = loaded.signatures["serving_default"].structured_outputs
        elements = sum(math.prod(spec.shape[1:]) for name, spec in outputs.items() if name.startswith("values"))
        return rows_per_batch(SAVED_MODEL_PAIRS_PER_BATCH, int(loaded.background[0].shape[0]), 4 * elements)

    def __repr__(self) -> str:
        return f"SavedModelExplainHandler({self.export_path!r})"


_LOCAL_COPIES: dict = {}


def localize(path: str) -> str:
    """``path`` itself if local; else a copy in a temporary directory of this process (made once per path).

    Parameters
    ----------
    path : str
        A local path, or a file or directory on a filesystem Beam reads (``gs://``, ``s3://``,
        ``hdfs://``, ... where their Beam extra is installed).

    Returns
    -------
    str
        A local path.

    Raises
    ------
    ValueError
        Nothing is at ``path``.
    """
    if "://" not in path:
        return path
    if path not in _LOCAL_COPIES:
        import tempfile

        target = os.path.join(tempfile.mkdtemp(prefix="tfshap-beam-"), os.path.basename(path.rstrip("/")))
        copy_files(path, target)
        _LOCAL_COPIES[path] = target
    return _LOCAL_COPIES[path]


def copy_files(source: str, target: str) -> None:
    """Copy a file, or a directory tree (a SavedModel), from any Beam filesystem to the local path ``target``.

    Parameters
    ----------
    source : str
        A file or directory that Beam's ``FileSystems`` reads.
    target : str
        The local path it is copied to (parent directories are made).

    Raises
    ------
    ValueError
        Nothing is at ``source``.
    """
    from apache_beam.io.filesystems import FileSystems

    source = source.rstrip("/")
    found = FileSystems.match([source])[0].metadata_list
    if found and found[0].path.rstrip("/") == source and not FileSystems.match([source + "/**"])[0].metadata_list:
        pairs = [(source, target)]
    else:
        prefix = source + "/"
        pairs = [
            (m.path, os.path.join(target, m.path[len(prefix):]))
            for m in FileSystems.match([prefix + "**"])[0].metadata_list
        ]
    if not pairs:
        raise ValueError(f"no file or directory at {source!r}")
    for remote, local in pairs:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        with FileSystems.open(remote, compression_type="uncompressed") as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out)


def rows_per_batch(pairs: int, n_background: int, values_bytes_per_row: int) -> int:
    """Rows per Beam batch: one chunk of pairs, at least ``MIN_ROWS_PER_BATCH``, within the caps.

    Parameters
    ----------
    pairs : int
        The explainer's chunk, in (sample, background row) pairs.
    n_background : int
        Background rows.
    values_bytes_per_row : int
        The bytes of one row's values (input elements × outputs × 4).

    Returns
    -------
    int
        ``min(max(pairs // n_background, MIN_ROWS_PER_BATCH), MAX_ROWS_PER_BATCH,
        VALUES_BYTES_PER_BATCH // values_bytes_per_row)``, at least 1.
    """
    rows = max(pairs // max(n_background, 1), MIN_ROWS_PER_BATCH)
    return int(max(1, min(rows, MAX_ROWS_PER_BATCH, VALUES_BYTES_PER_BATCH // max(values_bytes_per_row, 1))))


def explainer_rows_per_batch(explainer) -> int:
    """:func:`rows_per_batch` for a compiled explainer.

    Parameters
    ----------
    explainer : CompiledExplainer

    Returns
    -------
    int
    """
    elements = sum(math.prod(s.shape[1:]) for s in explainer.input_specs)
    return rows_per_batch(explainer.batch_size(explainer.n_outputs), int(explainer.background[0].shape[0]),
                          4 * elements * explainer.n_outputs)


# -- the pipeline: sharded files in, Parquet out ------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """What the pipeline reads and writes: the model inputs (names, row shapes), the outputs, the feature spec."""

    input_names: tuple
    row_shapes: tuple
    n_outputs: int
    dtype: str
    features: tuple = field(default=())

    @property
    def values_shapes(self) -> list[tuple]:
        """Each row's values per input: shap's layout without the batch axis, ``(*input_shape, n_outputs)``."""
        return [(*shape, self.n_outputs) for shape in self.row_shapes]


def layout_of(explainer, names: list[str], feature_spec: str | None = None) -> Layout:
    """The :class:`Layout` of a compiled explainer whose model inputs are called ``names``.

    Parameters
    ----------
    explainer : CompiledExplainer
        From ``tfshap.compile``.
    names : list of str
        The model's input names (the default TFRecord feature names).
    feature_spec : str, optional
        See :func:`parse_feature_spec`.

    Returns
    -------
    Layout

    Raises
    ------
    ValueError
        The feature spec does not fit the model inputs.
    """
    shapes = tuple(tuple(s.shape[1:]) for s in explainer.input_specs)
    names = tuple(names) if len(names) == len(shapes) else tuple(f"input_{i}" for i in range(len(shapes)))
    return Layout(
        input_names=names, row_shapes=shapes, n_outputs=int(explainer.n_outputs), dtype=explainer.output_dtype.name,
        features=parse_feature_spec(feature_spec, names, shapes),
    )


def parse_feature_spec(text: str | None, names, shapes) -> tuple:
    """``"pixels=8x8x1,mask"``: one ``tf.train.Example`` feature per model input, in input order.

    Each entry is a feature name, and optionally ``=`` and the row's shape (dimensions joined
    by ``x``); without a shape, the model input's. Without a spec, the features are named as
    the model inputs. A feature holds a ``float_list`` or an ``int64_list`` of the row's
    values in C order.

    Parameters
    ----------
    text : str or None
        The spec.
    names : sequence of str
        The model input names.
    shapes : sequence of tuple
        The model input shapes without the batch axis (``None`` for a size that varies).

    Returns
    -------
    tuple of (str, tuple)
        ``(feature name, row shape)`` per model input.

    Raises
    ------
    ValueError
        The wrong number of entries, a shape that is not positive integers, a shape that does
        not fit the model input, or a model input of unknown size without a shape.
    """
    entries = list(names) if text is None else [e.strip() for e in text.split(",")]
    if len(entries) != len(shapes) or not all(entries):
        raise ValueError(
            f"--feature-spec {text!r}: expected {len(shapes)} comma-separated feature name(s), one per model input "
            f"(e.g. {','.join(f'{n}={_dims(s)}' for n, s in zip(names, shapes))})"
        )
    features = []
    for entry, model_shape in zip(entries, shapes):
        name, _, dims = entry.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split("x")) if dims else model_shape
        except ValueError:
            raise ValueError(
                f"--feature-spec {entry!r}: the shape must be positive integers joined by 'x', e.g. 8x8x1"
            ) from None
        if any(d is None for d in shape):
            raise ValueError(
                f"--feature-spec: the model input for {name!r} has shape {_shape(model_shape)}; "
                f"give it, e.g. {name}=10x4"
            )
        if (
            len(shape) != len(model_shape)
            or any(m is not None and m != d for m, d in zip(model_shape, shape))
            or min(shape, default=1) < 1
        ):
            raise ValueError(f"--feature-spec {entry!r}: the model input has shape {_shape(model_shape)}")
        features.append((name.strip(), shape))
    return tuple(features)


def _dims(shape) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def file_kind(path: str) -> str:
    """``NPY``, ``NPZ`` or ``TFRECORD``, from the file name.

    Parameters
    ----------
    path : str

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Another kind of file.
    """
    lower = path.lower()
    if lower.endswith(NPY):
        return NPY
    if lower.endswith(NPZ):
        return NPZ
    if lower.endswith(_TFRECORD_SUFFIXES):
        return TFRECORD
    raise ValueError(f"{path}: expected .npy, .npz or TFRecord files ({', '.join(_TFRECORD_SUFFIXES)})")


def match_inputs(pattern: str) -> list[str]:
    """The files a glob pattern matches, sorted.

    Parameters
    ----------
    pattern : str
        A local glob (``**`` recurses), or one on any filesystem Beam knows (``gs://...``).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        It matches nothing, or a file that is not .npy, .npz or TFRecord.
    """
    if "://" in pattern:
        from apache_beam.io.filesystems import FileSystems

        found = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
    else:
        found = [p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p)]
    if not found:
        raise ValueError(f"--inputs {pattern!r} matches no files")
    for path in found:
        file_kind(path)
    return sorted(found)


def _open_array_file(path: str):
    """``np.load`` of a local file (memory-mapped) or, through Beam's filesystems, of a remote one."""
    if "://" not in path:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    import io

    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def file_rows(path: str, layout: Layout):
    """``(key, row)`` for every row of one file; ``row`` is an error message where a record cannot be read.

    Parameters
    ----------
    path : str
        A ``.npy`` file (one model input), a ``.npz`` file (one array per model input, named
        as the inputs or in input order), or a TFRecord file of ``tf.train.Example`` records
        (read with ``layout.features``).
    layout : Layout
        The model inputs.

    Yields
    ------
    tuple
        ``("<path>:<row index>", row)``: an array (one model input), a tuple of arrays, or a
        ``str`` (what is wrong with a TFRecord record).

    Raises
    ------
    ValueError
        The file is not of a kind it reads.
    """
    kind = file_kind(path)
    if kind == TFRECORD:
        yield from _tfrecord_rows(path, layout)
        return
    loaded = _open_array_file(path)
    if kind == NPZ:
        with loaded:
            names = [n for n in layout.input_names if n in loaded.files]
            keys = layout.input_names if len(names) == len(layout.input_names) else loaded.files
            arrays = [loaded[n] for n in keys]
    else:
        arrays = [loaded]
    for i in range(len(arrays[0])):
        row = tuple(np.array(a[i]) for a in arrays)
        yield f"{path}:{i}", row[0] if len(row) == 1 else row


def _tfrecord_rows(path: str, layout: Layout):
    tf = import_tensorflow()
    compression = "GZIP" if path.lower().endswith(".gz") else ""
    for i, record in enumerate(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator()):
        key = f"{path}:{i}"
        try:
            row = _example_row(tf.train.Example.FromString(record), layout.features)
        except ValueError as exc:
            yield key, f"ValueError: {exc}"
            continue
        yield key, row[0] if len(row) == 1 else row


def _example_row(example, features) -> tuple:
    """The arrays of one ``tf.train.Example``: one feature per model input, reshaped to its row shape."""
    arrays = []
    for name, shape in features:
        if name not in example.features.feature:
            raise ValueError(f"the record has no feature {name!r}; it has {sorted(example.features.feature)}")
        feature = example.features.feature[name]
        kind = feature.WhichOneof("kind")
        if kind == "float_list":
            values = np.asarray(feature.float_list.value, np.float32)
        elif kind == "int64_list":
            values = np.asarray(feature.int64_list.value, np.int64)
        else:
            raise ValueError(f"the feature {name!r} holds {kind}; expected a float_list or an int64_list")
        if values.size != math.prod(shape):
            raise ValueError(
                f"the feature {name!r} holds {values.size} values; "
                f"expected {math.prod(shape)} for shape {_shape(shape)}"
            )
        arrays.append(values.reshape(shape))
    return tuple(arrays)


class _ReadRows(beam.DoFn):
    """A file's rows as ``(key, row)``; a record that cannot be read goes to the ``unreadable`` output."""

    UNREADABLE = "unreadable"

    def __init__(self, layout: Layout):
        self.layout = layout

    def process(self, path):
        for key, row in file_rows(path, self.layout):
            if isinstance(row, str):
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_failed").inc()
                yield beam.pvalue.TaggedOutput(self.UNREADABLE, {"key": key, "error": row})
            else:
                yield key, row


def parquet_schema(layout: Layout):
    """The results' Parquet schema.

    Parameters
    ----------
    layout : Layout

    Returns
    -------
    pyarrow.Schema
        ``key``, ``values`` (``values_0``, ``values_1``, ... for several inputs), ``outputs``,
        ``base_values``, ``additivity_error``; values flattened in C order, their shapes in
        the schema's ``tfshap`` metadata (JSON).
    """
    import pyarrow as pa

    number = pa.from_numpy_dtype(np.dtype(layout.dtype))
    names = _values_columns(layout)
    fields = [pa.field("key", pa.string())]
    fields += [pa.field(n, pa.list_(number)) for n in names]
    fields += [pa.field("outputs", pa.list_(number)), pa.field("base_values", pa.list_(number)),
               pa.field("additivity_error", pa.float64())]
    metadata = {"values": dict(zip(names, layout.values_shapes)), "inputs": list(layout.input_names),
                "n_outputs": layout.n_outputs}
    return pa.schema(fields, metadata={"tfshap": json.dumps(metadata)})


def _values_columns(layout: Layout) -> list[str]:
    return ["values"] if len(layout.row_shapes) == 1 else [f"values_{i}" for i in range(len(layout.row_shapes))]


def _record(keyed, columns: list[str]) -> dict:
    """One explained row as a Parquet record."""
    key, result = keyed
    inference = result.inference
    values = inference["values"] if isinstance(inference["values"], list) else [inference["values"]]
    record = {"key": str(key)}
    record.update({name: np.ravel(v) for name, v in zip(columns, values)})
    record.update(outputs=np.ravel(inference["outputs"]), base_values=np.ravel(inference["base_values"]),
                  additivity_error=float(inference["additivity_error"]))
    return record


def _failed_row(bad) -> dict:
    """A dead letter from the handler's postprocessing: ``((key, result), exception info)``."""
    (key, result), _ = bad
    return {"key": str(key), "error": result.inference["error"]}


def _failed_batch(bad):
    """Dead letters for a batch whose inference raised a ValueError (every row of it, with the error)."""
    batch, (exc_type, exc_repr, _) = bad
    for key, _ in batch:
        yield {"key": str(key), "error": f"{getattr(exc_type, '__name__', exc_type)}: {exc_repr}"}


class ExplainFiles(beam.PTransform):
    """File paths in; ``{"explained": Parquet records, "failed": {"key", "error"} dicts}`` out.

    Reads each file's rows (:func:`file_rows`), spreads them over the workers, explains them
    with ``handler.keyed()`` under ``RunInference(...).with_exception_handling(exc_class=ValueError)``
    (other exceptions fail the bundle, for the runner to retry), and turns every row that was
    not explained into a dead letter with its key.

    Parameters
    ----------
    handler : ExplainModelHandler or SavedModelExplainHandler
    layout : Layout
    """

    def __init__(self, handler: _RowHandler, layout: Layout):
        super().__init__()
        self.handler = handler
        self.layout = layout

    def expand(self, paths):
        read = paths | "Read rows" >> beam.ParDo(_ReadRows(self.layout)).with_outputs(_ReadRows.UNREADABLE, main="rows")
        rows = read.rows | "Spread rows" >> beam.Reshuffle()
        explained, dead = rows | "Explain" >> RunInference(self.handler.keyed()).with_exception_handling(
            exc_class=ValueError
        )
        failed = [read[_ReadRows.UNREADABLE], dead.failed_inferences | "Failed batches" >> beam.FlatMap(_failed_batch)]
        failed += [
            bad | f"Failed rows {i}" >> beam.Map(_failed_row) for i, bad in enumerate(dead.failed_postprocessing)
        ]
        columns = _values_columns(self.layout)
        return {
            "explained": explained | "To records" >> beam.Map(_record, columns),
            "failed": tuple(failed) | "Dead letters" >> beam.Flatten(),
        }


VALUES_PREFIX, FAILED_PREFIX = "values", "failed"


def write_results(outputs: dict, out: str, layout: Layout) -> None:
    """Parquet shards ``OUT/values-*.parquet`` and JSON lines ``OUT/failed-*.jsonl`` (only when rows failed).

    Parameters
    ----------
    outputs : dict
        :class:`ExplainFiles`'s outputs.
    out : str
        The output directory.
    layout : Layout
    """
    outputs["explained"] | "Write values" >> beam.io.WriteToParquet(
        os.path.join(out, VALUES_PREFIX), parquet_schema(layout), file_name_suffix=".parquet"
    )
    outputs["failed"] | "To JSON" >> beam.Map(json.dumps) | "Write dead letters" >> beam.io.WriteToText(
        os.path.join(out, FAILED_PREFIX), file_name_suffix=".jsonl", skip_if_empty=True
    )


def local_options(num_workers: int | None = None) -> PipelineOptions:
    """Options for :func:`local_runner` with ``num_workers`` worker processes (``None`` or 1: in this process).

    Parameters
    ----------
    num_workers : int, optional

    Returns
    -------
    PipelineOptions
        Also sets the workers' log level to ERROR (their start-up lines).

    Raises
    ------
    ValueError
        ``num_workers`` is not a positive integer.
    """
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"--num-workers must be a positive integer; got {num_workers!r}")
    options = PipelineOptions([])
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = num_workers or 1
    # in_memory keeps local_runner's own environment (multi_processing would replace it with Beam's).
    direct.direct_running_mode = "in_memory"
    options.view_as(WorkerOptions).default_sdk_harness_log_level = "ERROR"
    return options


def local_runner(options: PipelineOptions, worker_log: str | None = None):
    """Beam's local batch runner, the one ``DirectRunner`` picks for this pipeline (without its probe for Prism).

    Parameters
    ----------
    options : PipelineOptions
        From :func:`local_options`; with ``direct_num_workers`` above 1, each worker is a
        process running Beam's SDK harness.
    worker_log : str, optional
        A file the worker processes append their stderr to (Beam's start-up lines,
        TensorFlow's, a crash's); default: this process's stderr.

    Returns
    -------
    FnApiRunner
        (It also installs :func:`quiet_beam_logging`'s filters.)
    """
    import shlex

    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    environment = None
    if (options.view_as(DirectOptions).direct_num_workers or 1) > 1:
        command = f"{shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
        if worker_log:
            command += f" 2>>{shlex.quote(worker_log)}"
        environment = environments.SubprocessSDKEnvironment.from_command_string(command)
        quiet_beam_logging()
    return fn_runner.FnApiRunner(default_environment=environment, provision_info=provision)


#: Beam's log lines that say nothing about the job, by logger: Beam 2.77 logs the first at every model load when
#: torch is absent (its ModelManager import fails, and ``import resource`` with it); the second when no row
#: failed (the dead letters are written with skip_if_empty); local_runner causes the third.
_BEAM_NOISE = {
    "": "Resource module is not available for current platform",
    "apache_beam.io.filebasedsink": "No shards found to finalize",
    "apache_beam.runners.portability.fn_api_runner.fn_runner": "direct_running_mode should be",
}


class _DropBeamNoise(logging.Filter):
    """Drops the one message of ``_BEAM_NOISE`` that its logger logs."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_beam_logging() -> None:
    """Beam's noise (``_BEAM_NOISE``) dropped where it is logged; each logger gets its filter once."""
    for name, text in _BEAM_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropBeamNoise) for f in logger.filters):
            logger.addFilter(_DropBeamNoise(text))


@dataclass
class Summary:
    """What a pipeline did, from Beam's metrics (committed where the runner reports them)."""

    rows_explained: int
    rows_failed: int
    worst_additivity_error: float | None
    values_files: list = field(default_factory=list)
    failed_files: list = field(default_factory=list)
    attempts: int = 1


def explain_files(handler: _RowHandler, paths: list[str], out: str, layout: Layout, *, runner=None,
                  options: PipelineOptions | None = None, attempts: int = 1, worker_log: str | None = None,
                  log=None) -> Summary:
    """Run the pipeline: ``paths`` explained into ``out`` (see :class:`ExplainFiles`, :func:`write_results`).

    Parameters
    ----------
    handler : ExplainModelHandler or SavedModelExplainHandler
        The model handler.
    paths : list of str
        Input files (:func:`match_inputs`).
    out : str
        The output directory (created where it is local).
    layout : Layout
        From :func:`layout_of`.
    runner : optional
        A Beam runner or its name; default: :func:`local_runner`.
    options : PipelineOptions, optional
        Default: :func:`local_options` with one worker.
    attempts : int
        How many times to run the pipeline when it fails. Beam's local runner does not retry a
        failed bundle, nor survive a worker process that dies; each attempt starts afresh,
        after the outputs of the failed one are removed. Remote runners retry bundles
        themselves: leave it at 1 there.
    worker_log : str, optional
        Where the local runner's worker processes write their stderr (default: the terminal).
    log : callable, optional
        Called with a line of progress (default: stderr).

    Returns
    -------
    Summary

    Raises
    ------
    Exception
        The last attempt's error.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    options = options or local_options()
    local_out = "://" not in out
    for attempt in range(1, attempts + 1):
        if local_out:
            _remove_results(out)
            os.makedirs(out, exist_ok=True)
        this_runner = runner if runner is not None or _names_runner(options) else local_runner(options, worker_log)
        try:
            pipeline = beam.Pipeline(runner=this_runner, options=options)
            outputs = (
                pipeline
                | "Input files" >> beam.Create(list(paths))
                | "Explain files" >> ExplainFiles(handler, layout)
            )
            write_results(outputs, out, layout)
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as exc:
            if attempt == attempts:
                raise
            log(
                f"tfshap: the pipeline failed ({_one_line(exc)[:300]}); running it again "
                f"(attempt {attempt + 1} of {attempts})"
            )
            continue
        summary = summarise(result)
        summary.attempts = attempt
        summary.values_files, summary.failed_files = result_files(out)
        return summary
    raise AssertionError("unreachable")


def _names_runner(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    return bool(options.view_as(StandardOptions).runner)


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}"


def result_files(out: str) -> tuple[list, list]:
    """``(values files, dead-letter files)`` in ``out``, sorted.

    Parameters
    ----------
    out : str
        An output directory (local, or on a filesystem Beam knows).

    Returns
    -------
    tuple of (list of str, list of str)
    """
    if "://" in out:
        from apache_beam.io.filesystems import FileSystems

        match = lambda prefix: sorted(
            m.path for r in FileSystems.match([os.path.join(out, prefix + "-*")]) for m in r.metadata_list
        )
    else:
        match = lambda prefix: sorted(glob.glob(os.path.join(out, prefix + "-*")))
    return match(VALUES_PREFIX), match(FAILED_PREFIX)


def _remove_results(out: str) -> None:
    """Remove what a run of this pipeline wrote into ``out`` (results, dead letters, Beam's temporary folders)."""
    for pattern in (f"{VALUES_PREFIX}-*", f"{FAILED_PREFIX}-*", "beam-temp-*"):
        for path in glob.glob(os.path.join(out, pattern)):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def summarise(result) -> Summary:
    """The pipeline's counters: rows explained, rows failed, worst additivity error (committed, else attempted).

    Parameters
    ----------
    result : PipelineResult
        A finished run.

    Returns
    -------
    Summary
    """
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    value = lambda m: m.committed if m.committed is not None else m.attempted
    counters: dict = {}
    for metric in found["counters"]:
        counters[metric.key.metric.name] = counters.get(metric.key.metric.name, 0) + value(metric)
    worst = [value(m).max for m in found["distributions"] if m.key.metric.name == "additivity_error" and value(m).count]
    return Summary(
        rows_explained=int(counters.get("rows_explained", 0)),
        rows_failed=int(counters.get("rows_failed", 0)),
        worst_additivity_error=max(worst) * ERROR_UNIT if worst else None,
    )


def load_results(out: str) -> dict:
    """The Parquet results of :func:`explain_files`, as numpy arrays in shap's layout.

    Parameters
    ----------
    out : str
        The output directory.

    Returns
    -------
    dict
        ``"key"`` ``(n,)``; ``"values"`` ``(n, *input_shape, n_outputs)`` (a list for several
        inputs); ``"outputs"``, ``"base_values"`` ``(n, n_outputs)``; ``"additivity_error"`` ``(n,)``.
        Rows come in file order, not sorted.

    Raises
    ------
    ValueError
        ``out`` holds no results.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = result_files(out)[0]
    if not files:
        raise ValueError(f"{out!r} holds no {VALUES_PREFIX}-*.parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    metadata = json.loads(pq.read_schema(files[0]).metadata[b"tfshap"])
    n = table.num_rows

    def column(name, shape):
        flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return flat.reshape((n, *shape))

    values = [column(name, shape) for name, shape in metadata["values"].items()]
    k = metadata["n_outputs"]
    return {
        "key": np.asarray(table.column("key").to_pylist()),
        "values": values[0] if len(values) == 1 else values,
        "outputs": column("outputs", (k,)),
        "base_values": column("base_values", (k,)),
        "additivity_error": table.column("additivity_error").to_numpy(),
    }


__all__ = ["ExplainModelHandler", "SavedModelExplainHandler", "reject_failed_rows", "load_results", "MaskMismatchError"]
