"""What every explainer shares: tracing, references, the forward pass, output ranking, results and checks.

:class:`CompiledExplainer` is the base of the DeepSHAP explainer (:mod:`tfshap.deep`) and
the path explainers (:mod:`tfshap.gradients`); each owns only its method. ``tfshap.compile``
(:mod:`tfshap.explainers`) chooses between them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from . import precision
from .attributions import Attributions, summed
from .batching import References
from .rewrite import layer_lookup
from .trace import trace
from .validate import as_arrays, check_batch_size, explicit_references, references_from_function

RANK_ORDERS = ("max", "min", "max_abs")

#: Rows per call of the forward function when computing outputs outside the chunks.
FORWARD_ROWS = 4096


class CompiledExplainer:
    """A model traced once and reused for many calls; it follows the model's live weights.

    The base of every explainer that :func:`tfshap.compile` returns. Subclasses set
    :attr:`method` and implement :meth:`explain`.

    Parameters
    ----------
    model, background, output, inputs, batch_size, jit_compile
        As :func:`tfshap.compile` takes them.
    allow_integer : bool
        Accept integer model inputs (token ids), for ``inputs=`` a layer.

    Attributes
    ----------
    method : str
        ``"deep"``, ``"expected_gradients"`` or ``"integrated_gradients"``.
    n_outputs : int
        How many outputs are explained (the model's outputs flattened).
    background : list of tf.Tensor or None
        The shared background, one tensor per model input; None where references are per sample.
    """

    method = ""
    #: DeepSHAP values add up by construction, so a miss is an error (the path methods only converge).
    checks_additivity_by_default = True

    def __init__(self, model, background, *, output=None, inputs=None, batch_size=None, jit_compile=None,
                 allow_integer: bool = False):
        self._batch_size = check_batch_size(batch_size)
        self.jit_compile = bool(jit_compile)
        self.reference_fn = background if callable(background) and not isinstance(background, tf.Tensor) else None
        preview = None if self.reference_fn is not None else _preview(background)
        self.traced = trace(model, preview, output=output, inputs=inputs)
        self.layer_of = layer_lookup(self.traced.layer_names)
        self._allow_integer = allow_integer
        specs = self.traced.input_specs
        if self.reference_fn is None:
            arrays = as_arrays(background, specs, "background", allow_integer=allow_integer)
            self.background = [tf.convert_to_tensor(b) for b in arrays]
        else:
            self.background = None
        self._forward = None
        #: Set by each method when it compiles: the explained output's dtype and width, and the
        #: least precise float dtype the model computes in (float16 under mixed_float16).
        self.output_dtype: tf.DType | None = None
        self.n_outputs: int | None = None
        self.compute_dtype: tf.DType | None = None

    # -- the model itself -------------------------------------------------------------------
    @property
    def input_specs(self) -> list[tf.TensorSpec]:
        """One spec per model input, ``(None, *input_shape)``."""
        return self.traced.input_specs

    @property
    def forward(self):
        """The explained function as a ``tf.function`` of one tensor per model input, traced on first use."""
        if self._forward is None:
            self._forward = tf.function(
                lambda inputs: self.traced.call(list(inputs))[0],
                input_signature=[[tf.TensorSpec(s.shape, s.dtype) for s in self.input_specs]],
                jit_compile=self.jit_compile,
                autograph=False,
            )
        return self._forward

    def _describe_from_forward(self) -> None:
        """``output_dtype``, ``n_outputs`` and ``compute_dtype`` from the traced forward pass."""
        graph = self.forward.get_concrete_function().graph
        self.output_dtype = graph.outputs[0].dtype
        self.n_outputs = graph.outputs[0].shape[-1]
        self.compute_dtype = precision.compute_dtype(graph.get_operations(), graph.inputs[: len(self.input_specs)],
                                                     self.output_dtype)

    def outputs_of(self, arrays) -> np.ndarray:
        """The explained function at ``arrays``, ``(n, n_outputs)`` in float64.

        Parameters
        ----------
        arrays : list of ndarray
            One array ``(n, *input_shape)`` per model input, already checked.
        """
        rows = len(arrays[0])
        parts = [
            self.forward([tf.convert_to_tensor(a[i : i + FORWARD_ROWS]) for a in arrays]).numpy()
            for i in range(0, rows, FORWARD_ROWS)
        ]
        return np.concatenate(parts).astype(np.float64)

    @property
    def expected_value(self) -> np.ndarray | None:
        """The mean model output over the background, ``(n_outputs,)``.

        None where references are per sample (``background`` is a function): then each
        sample has its own base value, ``Attributions.base_values`` of shape ``(n, n_outputs)``.
        """
        if self.background is None:
            return None
        return self.outputs_of([b.numpy() for b in self.background]).mean(axis=0)

    # -- references --------------------------------------------------------------------------
    def _references_for(self, arrays, references=None) -> References:
        """The references of the samples ``arrays``: the shared background, ``references=`` or the function's."""
        n = len(arrays[0])
        if references is not None:
            return explicit_references(references, n, self.input_specs, allow_integer=self._allow_integer)
        if self.reference_fn is not None:
            return references_from_function(self.reference_fn, arrays, self.input_specs,
                                            allow_integer=self._allow_integer)
        for spec, sample, reference in zip(self.input_specs, arrays, self.background):
            if sample.shape[1:] != tuple(reference.shape[1:]):
                raise ValueError(
                    f"x has rows of shape {sample.shape[1:]}, the background {tuple(reference.shape[1:])}: a sample "
                    "and its reference rows must have the same shape (the model input is "
                    f"{_dims(spec)}); pass a background of that shape, or references= per sample"
                )
        return References([b.numpy() for b in self.background])

    # -- results --------------------------------------------------------------------------------
    def _output_index(self, outputs: np.ndarray, ranked_outputs, order: str) -> np.ndarray:
        """``(n, k)``: the outputs explained for each sample (all of them, or the top ``ranked_outputs``)."""
        n = len(outputs)
        if ranked_outputs is None:
            return np.tile(np.arange(self.n_outputs, dtype=np.int32), (n, 1))
        if isinstance(ranked_outputs, bool) or not isinstance(ranked_outputs, (int, np.integer)) \
                or not 1 <= ranked_outputs <= self.n_outputs:
            raise ValueError(f"ranked_outputs must be an integer from 1 to {self.n_outputs}; got {ranked_outputs!r}")
        if order not in RANK_ORDERS:
            raise ValueError(f"output_rank_order must be one of {RANK_ORDERS}; got {order!r}")
        key = {"max": -outputs, "min": outputs, "max_abs": -np.abs(outputs)}[order]
        return np.argsort(key, axis=1, kind="stable")[:, :ranked_outputs].astype(np.int32)

    def _attributions(self, values: list[np.ndarray], base: np.ndarray, outputs: np.ndarray, index: np.ndarray,
                     ranked: bool, data: list[np.ndarray], **extra) -> Attributions:
        """An :class:`Attributions` of float64 sums, in the output dtype, with its additivity error.

        ``base`` is ``(n_outputs,)`` for a shared background, else ``(n, n_outputs)``.
        """
        selected_outputs = np.take_along_axis(outputs, index, axis=1)
        selected_base = base[index] if base.ndim == 1 else np.take_along_axis(base, index, axis=1)
        error = float(np.max(np.abs(summed(values) + selected_base - selected_outputs), initial=0.0))
        dtype = self.output_dtype.as_numpy_dtype
        return Attributions(
            values=_one_or_list([v.astype(dtype) for v in values]),
            base_values=(selected_base if ranked else base).astype(dtype),
            outputs=(selected_outputs if ranked else outputs).astype(dtype),
            additivity_error=error,
            data=_one_or_list(data),
            output_indices=index if ranked else None,
            **extra,
        )

    # -- checks -------------------------------------------------------------------------------
    def tolerance(self, outputs: np.ndarray, base: np.ndarray, data=None) -> float:
        """The largest additivity miss that rounding explains (see :mod:`tfshap.precision`).

        Parameters
        ----------
        outputs : ndarray
            The explained outputs, ``(n, k)``.
        base : ndarray
            Their base values, ``(k,)`` or ``(n, k)``.
        data : ndarray or list of ndarray, optional
            The samples: with them the model's own float noise on them is measured and added.
        """
        noise = self.model_noise(data) if data is not None and precision.noise_matters(self.compute_dtype) else 0.0
        return precision.tolerance(self.compute_dtype, outputs, base, noise)

    def model_noise(self, data) -> float:
        """The explained function's own float rounding on ``data`` and the background.

        Parameters
        ----------
        data : ndarray or list of ndarray
            Samples, one array per model input (the first few rows are used).

        Returns
        -------
        float
            ``max |f − f_float64|`` over those rows (see :mod:`tfshap.precision`).
        """
        return precision.model_noise(self, data)

    def check_additivity(self, attributions: Attributions) -> None:
        """Raise :class:`tfshap.AdditivityError` where the sums miss by more than rounding explains.

        Parameters
        ----------
        attributions : Attributions
            A result of :meth:`explain`.
        """
        precision.check_additivity(self, attributions)

    @property
    def rules_used(self) -> str:
        return ""

    # -- the shap-compatible surface ------------------------------------------------------------
    def explain(self, x, **options) -> Attributions:  # pragma: no cover - every subclass implements it
        """Attributions of ``x``; each method documents its options.

        Parameters
        ----------
        x : array, list of arrays, or tf.data.Dataset
            The samples, one array ``(n, *input_shape)`` per model input.
        **options
            The method's options (``ranked_outputs``, ``output_rank_order``, ...).
        """
        raise NotImplementedError

    def shap_values(self, X, ranked_outputs=None, output_rank_order="max", check_additivity=True):
        """shap's layout: ``(n, *input_shape, n_outputs)`` per input; with ``ranked_outputs``, ``(values, indexes)``.

        Parameters
        ----------
        X : array, list of arrays, or tf.data.Dataset
            The samples, one array per model input.
        ranked_outputs : int, optional
            Explain only the ``ranked_outputs`` outputs of each sample that rank first by
            ``output_rank_order``.
        output_rank_order : {"max", "min", "max_abs"}
            How outputs are ranked.
        check_additivity : bool
            Raise :class:`tfshap.AdditivityError` when the sums miss ``f(x) − E f(background)``
            by more than rounding explains.

        Returns
        -------
        ndarray or list of ndarray, or (values, indexes)
            Values ``(n, *input_shape, k)`` per input (a list for several inputs); with
            ``ranked_outputs``, also ``indexes`` ``(n, k)``.
        """
        result = self.explain(X, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order)
        if check_additivity:
            self.check_additivity(result)
        if ranked_outputs is None:
            return result.values
        return result.values, result.output_indices

    def __call__(self, X, check_additivity: bool | None = None, **options):
        """A ``shap.Explanation`` of ``X``, as ``shap.DeepExplainer(...)(X)`` returns (needs shap installed).

        ``values`` and ``data`` are shap's (``values`` as :meth:`shap_values` returns them,
        ``data`` is ``X``); ``base_values`` holds each sample's base values, ``(n, n_outputs)``,
        where shap's are None. Several inputs give one ``Explanation`` whose ``values`` and
        ``data`` are lists, as in shap.

        Parameters
        ----------
        X : array or list of arrays
            The samples.
        check_additivity : bool, optional
            As :meth:`shap_values` (None: this method's default).
        **options
            Passed to :meth:`explain`.

        Returns
        -------
        shap.Explanation

        Raises
        ------
        ImportError
            shap is not installed.
        """
        try:
            from shap import Explanation
        except ImportError as exc:
            raise ImportError("calling an explainer returns a shap.Explanation, which needs shap: "
                              "python -m pip install shap (or use .explain(X) for tfshap's own result)") from exc
        result = self.explain(X, **options)
        if self.checks_additivity_by_default if check_additivity is None else check_additivity:
            self.check_additivity(result)
        base = np.asarray(result.base_values)
        if base.ndim == 1:
            base = np.broadcast_to(base, np.shape(result.outputs)).copy()
        return Explanation(values=result.values, base_values=base, data=X)

    def explain_to(self, path, x, *, references=None, ranked_outputs=None, output_rank_order="max",
                   check_additivity=None, progress=None, **options) -> Attributions:
        """Explain ``x`` in a stream, writing the values to ``path`` (``.npy``; a list of them for several inputs).

        Parameters
        ----------
        path : str, PathLike, or list of them
            One ``.npy`` file per model input, written as the blocks come.
        x : array, memory map, list of those, or tf.data.Dataset of batches
            Only one block of rows is held at a time, so inputs and values may be larger
            than memory (``np.load(..., mmap_mode="r")``).
        references : array or list of arrays, optional
            Per-sample references ``(n, K, *input_shape)``, read a block at a time too.
        ranked_outputs, output_rank_order
            As in :meth:`shap_values`.
        check_additivity : bool, optional
            Check each block (None: as ``shap_values`` does by default for this method).
        progress : bool, optional
            A progress bar on stderr (None: when stderr is a terminal).
        **options
            Passed to :meth:`explain` (e.g. ``hypothetical=True``).

        Returns
        -------
        Attributions
            ``values`` are the written files, memory-mapped read-only; if a block fails, the
            files keep the rows before it.
        """
        from .stream import explain_to

        if check_additivity is None:
            check_additivity = self.checks_additivity_by_default
        return explain_to(self, path, x, references=references, ranked_outputs=ranked_outputs,
                          output_rank_order=output_rank_order, check_additivity=check_additivity, progress=progress,
                          **options)

    def explain_dataset(self, dataset, **options) -> Attributions:
        """Explain every batch of a ``tf.data.Dataset`` and concatenate the results.

        Parameters
        ----------
        dataset : tf.data.Dataset
            Batches of samples (a tensor, or a tuple of tensors for several inputs).
        **options
            Passed to :meth:`explain`.
        """
        parts = [self.explain(batch, **options) for batch in dataset]
        if not parts:
            raise ValueError("the dataset x is empty: expected at least one batch")
        return concatenate(parts, shared_base=np.ndim(parts[0].base_values) == 1 and parts[0].output_indices is None)

    def export(self, path, **options):
        """Write a SavedModel that explains without tfshap (``method="deep"`` only).

        Parameters
        ----------
        path : str or PathLike
            A new or empty directory.
        **options
            See :meth:`tfshap.deep.DeepSHAPExplainer.export`.
        """
        raise ValueError(f"export supports method='deep' only; this explainer uses method={self.method!r}")


def concatenate(parts: list[Attributions], shared_base: bool) -> Attributions:
    """One :class:`Attributions` from consecutive blocks of samples."""

    def cat(items):
        if items[0] is None:
            return None
        if isinstance(items[0], list):
            return [np.concatenate(group) for group in zip(*items)]
        return np.concatenate(items)

    return Attributions(
        values=cat([p.values for p in parts]),
        base_values=parts[0].base_values if shared_base else cat([p.base_values for p in parts]),
        outputs=cat([p.outputs for p in parts]),
        additivity_error=max(p.additivity_error for p in parts),
        data=cat([p.data for p in parts]),
        output_indices=cat([p.output_indices for p in parts]),
        convergence_delta=cat([p.convergence_delta for p in parts]),
    )


def _preview(background) -> list[np.ndarray]:
    items = background if isinstance(background, (list, tuple)) else [background]
    return [b.numpy() if isinstance(b, tf.Tensor) else np.asarray(b) for b in items]


def _one_or_list(arrays: list):
    """One input: the array; several: the list."""
    return arrays[0] if len(arrays) == 1 else arrays


def _dims(spec: tf.TensorSpec) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in spec.shape) + ")"
