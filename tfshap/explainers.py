"""``tfshap.compile`` and the shap-compatible ``DeepExplainer``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .attributions import Attributions, summed
from .errors import AdditivityError
from .graph import varying_tensors
from .runner import Program, default_batch_size, run_pairs, strategy_devices
from .trace import trace
from .validate import as_arrays

METHODS = ("deep", "expected_gradients", "integrated_gradients")
RANK_ORDERS = ("max", "min", "max_abs")

#: Additivity tolerance, relative to max(1, |f(x)|, |E f(b)|), by the dtype of the explained function.
_RELATIVE_TOLERANCE = {tf.float64: 1e-8, tf.float32: 5e-4, tf.float16: 2e-2, tf.bfloat16: 5e-2}


class CompiledExplainer:
    """A model traced and rewritten once; reused for many calls; follows the model's live weights."""

    #: DeepSHAP values add up by construction, so a miss is an error (the path methods only converge).
    checks_additivity_by_default = True

    def __init__(self, model, background, *, output=None, inputs=None, method="deep", batch_size=None, jit_compile=None,
                 strategy=None):
        if method != "deep":  # the gradient methods are tfshap.gradients.PathExplainer, reached through compile()
            raise ValueError(f"method must be one of {METHODS} (through tfshap.compile); got {method!r}")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
        raw_background = background
        preview = raw_background if isinstance(raw_background, (list, tuple)) else [raw_background]
        preview = [np.asarray(b) if not isinstance(b, tf.Tensor) else b.numpy() for b in preview]
        self.traced = trace(model, preview, output=output, inputs=inputs)
        self._allow_integer = inputs is not None
        self._n_inputs = len(self.traced.input_specs)
        arrays = as_arrays(raw_background, self.traced.input_specs, "background", allow_integer=self._allow_integer)
        self.background = [tf.convert_to_tensor(b) for b in arrays]
        self.program = Program(self.traced, jit_compile=bool(jit_compile))
        probe = self.program.forward([b[:1] for b in self.background])
        self.n_outputs = int(probe.shape[-1])
        self.output_dtype = probe.dtype
        self.program.chunk(self.n_outputs)  # traces and rewrites now: unsupported ops fail at compile time
        self._batch_size = batch_size
        self.devices = strategy_devices(strategy)

    # -- the model itself -------------------------------------------------------------------
    def _forward(self, arrays) -> np.ndarray:
        rows = len(arrays[0])
        step = 4096
        parts = [
            self.program.forward([tf.convert_to_tensor(a[i : i + step]) for a in arrays]).numpy()
            for i in range(0, rows, step)
        ]
        return np.concatenate(parts).astype(np.float64)

    @property
    def expected_value(self) -> np.ndarray:
        """The mean model output over the background, ``(n_outputs,)``."""
        return self._forward([b.numpy() for b in self.background]).mean(axis=0)

    @property
    def rules_used(self) -> str:
        return self.program.report.summary()

    def batch_size(self, k: int) -> int:
        if self._batch_size is not None:
            return int(self._batch_size)
        elements = sum(int(np.prod(s.shape[1:])) for s in self.traced.input_specs)
        return default_batch_size(self.program, k, elements, vectorized=self.program.vectorizes(k))

    # -- explaining -------------------------------------------------------------------------
    def explain(self, x, *, ranked_outputs: int | None = None, output_rank_order: str = "max") -> Attributions:
        """Attributions of ``x`` (an array, a list of arrays, or a ``tf.data.Dataset``)."""
        if isinstance(x, tf.data.Dataset):
            return self._explain_dataset(x, ranked_outputs, output_rank_order)
        arrays = as_arrays(x, self.traced.input_specs, "x", allow_integer=self._allow_integer)
        outputs = self._forward(arrays)
        base = self.expected_value
        index = self._output_index(outputs, ranked_outputs, output_rank_order)
        k = index.shape[1]
        try:
            values = run_pairs(self.program.chunk(k), arrays, self.background, index, self.batch_size(k), self.devices)
        except tf.errors.InvalidArgumentError as error:
            raise self.program.mask_mismatch(error) from None
        selected_outputs = np.take_along_axis(outputs, index, axis=1)
        selected_base = base[index]
        error = float(np.max(np.abs(summed(values) + selected_base - selected_outputs)))
        dtype = self.output_dtype.as_numpy_dtype
        values = [v.astype(dtype) for v in values]
        full = ranked_outputs is None
        return Attributions(
            values=values[0] if len(values) == 1 else values,
            base_values=base.astype(dtype) if full else selected_base.astype(dtype),
            outputs=outputs.astype(dtype) if full else selected_outputs.astype(dtype),
            additivity_error=error,
            data=arrays[0] if len(arrays) == 1 else arrays,
            output_indices=None if full else index,
        )

    def explain_to(self, path, x, *, ranked_outputs=None, output_rank_order="max", check_additivity=None, progress=None) -> Attributions:
        """Explain ``x`` in a stream, writing the values to ``path`` (``.npy``; a list of them for several inputs).

        ``x`` is an array, a memory map (``np.load(..., mmap_mode="r")``), a list of those, or
        a ``tf.data.Dataset`` of batches: only one block of rows is held at a time, so inputs
        and values may be larger than memory. Each block is checked for additivity
        (``check_additivity=None``: as ``shap_values`` does by default). ``progress``: a bar on
        stderr (``None``: when stderr is a terminal). The returned ``values`` are the written
        files, memory-mapped read-only; if a block fails, the rows before it are kept.
        """
        from .stream import explain_to

        if check_additivity is None:
            check_additivity = self.checks_additivity_by_default
        return explain_to(self, path, x, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order,
                          check_additivity=check_additivity, progress=progress)

    def _explain_dataset(self, dataset, ranked_outputs, output_rank_order) -> Attributions:
        parts = [self.explain(batch, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order) for batch in dataset]
        if not parts:
            raise ValueError("the dataset x is empty: expected at least one batch")
        cat = lambda items: (  # noqa: E731
            [np.concatenate(group) for group in zip(*items)] if isinstance(items[0], list) else np.concatenate(items)
        )
        first = parts[0]
        return Attributions(
            values=cat([p.values for p in parts]),
            base_values=first.base_values if ranked_outputs is None else cat([p.base_values for p in parts]),
            outputs=cat([p.outputs for p in parts]),
            additivity_error=max(p.additivity_error for p in parts),
            data=cat([p.data for p in parts]),
            output_indices=None if ranked_outputs is None else cat([p.output_indices for p in parts]),
        )

    def _output_index(self, outputs: np.ndarray, ranked_outputs, order: str) -> np.ndarray:
        n = len(outputs)
        if ranked_outputs is None:
            return np.tile(np.arange(self.n_outputs, dtype=np.int32), (n, 1))
        if not isinstance(ranked_outputs, (int, np.integer)) or not 1 <= ranked_outputs <= self.n_outputs:
            raise ValueError(f"ranked_outputs must be an integer from 1 to {self.n_outputs}; got {ranked_outputs!r}")
        if order not in RANK_ORDERS:
            raise ValueError(f"output_rank_order must be one of {RANK_ORDERS}; got {order!r}")
        key = {"max": -outputs, "min": outputs, "max_abs": -np.abs(outputs)}[order]
        return np.argsort(key, axis=1, kind="stable")[:, :ranked_outputs].astype(np.int32)

    def tolerance(self, outputs: np.ndarray, base: np.ndarray) -> float:
        scale = max(1.0, float(np.max(np.abs(outputs), initial=0)), float(np.max(np.abs(base), initial=0)))
        return _RELATIVE_TOLERANCE.get(self.compute_dtype, 5e-4) * scale

    @property
    def compute_dtype(self) -> tf.DType:
        """The least precise float dtype the model computes in (float16 under mixed_float16, whatever its output)."""
        graph = self.program.forward.get_concrete_function().graph
        varying = varying_tensors(graph.get_operations(), graph.inputs[: len(self.traced.input_specs)])
        floats = {ref.deref().dtype for ref in varying if ref.deref().dtype.is_floating}
        return max(floats | {self.output_dtype}, key=lambda d: _RELATIVE_TOLERANCE.get(d, 5e-4))

    def check_additivity(self, attributions: Attributions) -> None:
        tol = self.tolerance(attributions.outputs, attributions.base_values)
        if not attributions.additivity_error <= tol:
            raise AdditivityError(
                f"the attributions miss f(x) - E[f(background)] by {attributions.additivity_error:.3g}, "
                f"more than the {self.compute_dtype.name} tolerance {tol:.3g}; rules involved: {self.rules_used}"
            )

    def shap_values(self, X, ranked_outputs=None, output_rank_order="max", check_additivity=True):
        """shap's layout: ``(n, *input_shape, n_outputs)`` per input; with ``ranked_outputs``, ``(values, indexes)``."""
        result = self.explain(X, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order)
        if check_additivity:
            self.check_additivity(result)
        if ranked_outputs is None:
            return result.values
        return result.values, result.output_indices

    def export(self, path):
        """Write a SavedModel (background baked in) with ``explain(x)`` and ``serving_default``; loads without tfshap."""
        from .export import export

        return export(self, path)


def compile(model, background, *, output=None, inputs=None, method="deep", batch_size=None, jit_compile=None, **method_options):  # noqa: A001
    """Trace and rewrite ``model`` once; the returned explainer is reused for many calls.

    ``method="expected_gradients"`` (options ``nsamples=200``, ``local_smoothing=0``,
    ``rseed=None``) and ``"integrated_gradients"`` (``steps=50``, ``rule="gauss_legendre"``
    or ``"midpoint"``) use the model's plain gradients, without a rewrite (``tfshap.gradients``).
    ``method="deep"`` takes ``strategy=`` (a ``tf.distribute`` strategy, e.g. ``MirroredStrategy``):
    chunks of pairs are dealt out to its devices; inside a strategy's scope, that strategy is used.
    """
    if method in ("expected_gradients", "integrated_gradients"):
        from .gradients import PathExplainer

        return PathExplainer(model, background, method=method, output=output, inputs=inputs, batch_size=batch_size, jit_compile=jit_compile, **method_options)
    strategy = method_options.pop("strategy", None)
    if method_options:
        raise ValueError(f"method {method!r} takes no options other than strategy; got {sorted(method_options)}")
    return CompiledExplainer(model, background, output=output, inputs=inputs, method=method, batch_size=batch_size,
                             jit_compile=jit_compile, strategy=strategy)


class DeepExplainer:
    """Drop-in for ``shap.DeepExplainer(model, data)``: exact DeepSHAP values from a compiled graph."""

    def __init__(self, model, data, session=None, learning_phase_flags=None):
        if session is not None:
            raise ValueError("session is a TensorFlow 1 argument; tfshap runs on TensorFlow 2 and takes none")
        self.explainer = compile(model, data)

    @property
    def expected_value(self) -> np.ndarray:
        return self.explainer.expected_value

    def shap_values(self, X, ranked_outputs=None, output_rank_order="max", check_additivity=True):
        return self.explainer.shap_values(X, ranked_outputs, output_rank_order, check_additivity)
