"""DeepSHAP: ``tfshap.compile(model, background)``, exact attributions through the rewritten graph."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from . import precision, registry
from .attributions import Attributions
from .base import CompiledExplainer
from .batching import (
    MAX_PAIRS_PER_CHUNK,
    References,
    default_batch_size,
    run_pair_multipliers,
    run_tiles,
    strategy_devices,
)
from .errors import from_run_time_error
from .program import SEPARATE_BACKWARDS_MAX, Program
from .validate import as_arrays


class DeepSHAPExplainer(CompiledExplainer):
    """``tfshap.compile(model, background, method="deep")``: the model traced and rewritten once.

    Compiling traces the model on a paired batch and installs a rule on every op between
    the explained inputs and the output, so an op without an exact rule fails here, with
    :class:`tfshap.UnsupportedOpError`, before anything runs.

    Parameters
    ----------
    model, background, output, inputs, batch_size, jit_compile
        As :func:`tfshap.compile` takes them.
    strategy : tf.distribute.Strategy, optional
        Deal the chunks out to the strategy's devices (None: the strategy whose scope is open).
    rules : str
        The rule set (``tfshap.registry.rule_sets()``); ``"default"``.
    vectorize_outputs : bool, optional
        None: for a model with a loop (an RNN), one backward pass vectorized over the outputs
        once the explainer has explained ``VECTORIZE_AFTER_PAIRS`` pairs (compiling it takes
        seconds, which a short run would not win back); True or False force it from the start.
    """

    method = "deep"
    #: Pairs after which a model with a loop compiles and uses the backward vectorized over its
    #: outputs (``vectorize_outputs=None``): its compile time (5–8 s on the LSTM benchmark) is won back
    #: at about 1e-4 s per pair (BENCHMARKS.md, "Time to first attribution").
    VECTORIZE_AFTER_PAIRS = 50_000

    def __init__(self, model, background, *, output=None, inputs=None, batch_size=None, jit_compile=None,
                 strategy=None, rules: str = registry.DEFAULT_RULES, vectorize_outputs: bool | None = None):
        if rules not in registry.rule_sets():
            raise ValueError(f"rules must be one of {registry.rule_sets()}; got {rules!r}")
        if vectorize_outputs not in (None, True, False):
            raise ValueError(f"vectorize_outputs must be None, True or False; got {vectorize_outputs!r}")
        super().__init__(model, background, output=output, inputs=inputs, batch_size=batch_size,
                         jit_compile=jit_compile, allow_integer=inputs is not None)
        self.rules = rules
        self.devices = strategy_devices(strategy)
        self.vectorize_outputs = vectorize_outputs
        self.pairs_explained = 0
        self.program = Program(self.traced, self.layer_of, jit_compile=self.jit_compile, rule_set=rules)
        self.n_outputs = self.traced.n_outputs
        if self.n_outputs is None:  # a subclassed model: its output's width from a trace of the forward pass
            self._describe_from_forward()
        if self.n_outputs is None:
            raise ValueError("the explained output has an unknown number of values per row; "
                             "explain a layer with a fixed output size (output=)")
        # Traces and rewrites now: unsupported ops fail at compile time.
        chunk = self._chunk(self.n_outputs, "contributions")
        rewritten = self.program.rewritten
        self.output_dtype = rewritten.output.dtype
        self.compute_dtype = rewritten.compute_dtype
        self._shapes: dict[tuple, tuple[int, int]] = {}
        # The check runs the chunk itself on a few background rows: the first explanation then
        # finds it ready (TensorFlow optimises a function's graph on its first run).
        precision.check_traced_forward(self, lambda rows: self._chunk_outputs(chunk, rows))

    def _chunk_outputs(self, chunk, rows) -> np.ndarray:
        """The model's outputs at ``rows`` (one array per input), computed by a chunk function.

        Each row is paired with itself, so that no mask check can fail on the way.
        """
        n = len(rows[0])
        index = np.tile(np.arange(self.n_outputs, dtype=np.int32), (n, 1))
        sums = run_tiles(chunk, rows, References(list(rows), np.arange(n + 1)), index, n)
        return sums.sample_outputs

    def _vectorizes(self, k: int) -> bool:
        """Whether this call runs the backward vectorized over its ``k`` outputs (see ``vectorize_outputs``)."""
        if not self.program.can_vectorize(k) or self.vectorize_outputs is False:
            return False
        if self.vectorize_outputs:
            return True
        return self.traced.has_loops and self.pairs_explained >= self.VECTORIZE_AFTER_PAIRS

    def _backward(self, k: int) -> str:
        """How a chunk explaining ``k`` outputs runs its backward passes (``tfshap.program.BACKWARDS``).

        Vectorized where :meth:`_vectorizes`. Otherwise a pass per output, but over copies of the
        pairs for more than ``SEPARATE_BACKWARDS_MAX`` outputs, and for a model with a loop: each
        pass would build the gradient of the loop anew (0.3 s each on the LSTM benchmark) and
        recompute its body's multipliers at every step.
        """
        if self._vectorizes(k):
            return "vectorized"
        if k > SEPARATE_BACKWARDS_MAX or k >= 2 and self.traced.has_loops:
            return "copies"
        return "passes"

    def _chunk(self, k: int, kind: str):
        return self.program.chunk(k, kind, self._backward(k))

    @property
    def rules_used(self) -> str:
        return self.program.report.summary()

    # -- chunk sizes, from the data being explained ----------------------------------------------
    def batch_size(self, k: int, arrays=None, shared_references: bool = True) -> int:
        """Pairs per chunk for ``k`` outputs: ``batch_size=`` or sized from memory and the shapes of ``arrays``.

        Parameters
        ----------
        k : int
            Outputs explained per sample.
        arrays : list of ndarray, optional
            The samples (their row shapes size the chunks of variable-length inputs).
        shared_references : bool
            Whether every sample pairs with the same reference rows.
        """
        if self._batch_size is not None:
            return self._batch_size
        if arrays is None and not all(spec.shape[1:].is_fully_defined() for spec in self.input_specs):
            return MAX_PAIRS_PER_CHUNK  # rows of any length (an export): sizes are unknown until run
        row_bytes, elements = self.row_sizes(None if arrays is None else [a.shape[1:] for a in arrays])
        return default_batch_size(row_bytes, k, elements, backward=self._backward(k),
                                  shared_references=shared_references)

    def row_sizes(self, row_shapes=None) -> tuple[int, int]:
        """``(bytes of varying activations, attributed elements)`` per row, for rows of ``row_shapes``.

        Static where the model's shapes are known; otherwise the model is traced once per
        row shape to learn them (variable-length inputs).

        Parameters
        ----------
        row_shapes : list of tuple, optional
            The shape of one row of each model input (None: the model's own).
        """
        rewritten = self.program.rewritten
        sources = [s.shape[1:] for s in rewritten.sources]
        if all(s.is_fully_defined() for s in sources) and all(spec.shape[1:].is_fully_defined()
                                                              for spec in self.input_specs):
            return rewritten.activation_bytes_per_row, sum(int(np.prod(s)) for s in sources)
        if row_shapes is None:
            row_shapes = [tuple(spec.shape[1:]) for spec in self.input_specs]
        key = tuple(tuple(shape) for shape in row_shapes)
        if key not in self._shapes:
            self._shapes[key] = _probe_row_sizes(self.traced, key)
        return self._shapes[key]

    # -- explaining -------------------------------------------------------------------------------
    def explain(self, x, *, references=None, ranked_outputs: int | None = None, output_rank_order: str = "max",
                hypothetical: bool = False) -> Attributions:
        """Attributions of ``x``; see :func:`tfshap.compile` and the reference documentation.

        Parameters
        ----------
        x : array, list of arrays, or tf.data.Dataset
            The samples, one array ``(n, *input_shape)`` per model input.
        references : array or list of arrays, optional
            Per-sample references, ``(n, K, *input_shape)`` per model input: sample ``i`` is
            explained against its own ``K`` rows instead of the background.
        ranked_outputs : int, optional
            Explain only each sample's top ``ranked_outputs`` outputs by ``output_rank_order``.
        output_rank_order : {"max", "min", "max_abs"}
            How outputs are ranked.
        hypothetical : bool
            Return hypothetical contributions for one-hot inputs (the last axis of each input
            is the one-hot axis): ``h[..., i] = mean_k Σ_c m_k[..., c] · (δ_ci − r_k[..., c])``,
            the contribution base ``i`` would make at each position. ``h · x`` summed over the
            one-hot axis gives the ordinary values, so the additivity error is still checked.

        Returns
        -------
        Attributions
        """
        if isinstance(x, tf.data.Dataset):
            if references is not None:
                raise ValueError("references= takes arrays; with a tf.data.Dataset, give a background function")
            return self.explain_dataset(x, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order,
                                        hypothetical=hypothetical)
        arrays = as_arrays(x, self.input_specs, "x", allow_integer=self._allow_integer)
        if hypothetical:
            self._check_one_hot_inputs(arrays)
        refs = self._references_for(arrays, references)
        n = len(arrays[0])
        # All outputs: the chunk computes them with the pairs. Ranked: they are needed first.
        outputs = None if ranked_outputs is None else self.outputs_of(arrays)
        index = self._output_index(outputs if outputs is not None else np.zeros((n, self.n_outputs)),
                                   ranked_outputs, output_rank_order)
        k = index.shape[1]
        chunk = self._chunk(k, "hypothetical" if hypothetical else "contributions")
        try:
            sums = run_tiles(chunk, arrays, refs, index, self.batch_size(k, arrays, refs.shared), self.devices)
        except tf.errors.InvalidArgumentError as error:
            raise from_run_time_error(error, self.layer_of) from None
        self.pairs_explained += int(refs.counts(n).sum())
        outputs = sums.sample_outputs if outputs is None else outputs
        counts = refs.counts(len(outputs)).astype(np.float64)
        values = [v / counts.reshape(-1, *[1] * (v.ndim - 1)) for v in sums.values]
        base = sums.reference_outputs / counts[:, None]
        base = base[0] if refs.shared else base
        contributions = [v * a[..., None] for v, a in zip(values, arrays)] if hypothetical else values
        result = self._attributions(contributions, base, outputs, index, ranked_outputs is not None, arrays)
        if hypothetical:  # the additivity error above is of the contributions h · x; the values are h
            result.values = _one_or_list([v.astype(self.output_dtype.as_numpy_dtype) for v in values])
        return result

    def _check_one_hot_inputs(self, arrays) -> None:
        if self.traced.attributed_layer is not None:
            raise ValueError("hypothetical contributions are for one-hot model inputs; this explainer attributes "
                             f"to layer {self.traced.attributed_layer!r}")

    def combine(self, x, combine_mult_and_diffref, *, references=None, ranked_outputs=None,
                output_rank_order="max") -> Attributions:
        """Values from per-reference multipliers, combined in Python by kundajelab's ``combine_mult_and_diffref``.

        The multipliers of every pair are computed in the same batched chunks as
        :meth:`explain`; only the combining runs in Python, once per sample and output.

        Parameters
        ----------
        x : array or list of arrays
            The samples.
        combine_mult_and_diffref : callable
            ``fn(mult, orig_inp, bg_data)``, called with ``mult`` (one ``(K, *shape)``
            multiplier array per input), ``orig_inp`` (one ``(*shape)`` array per input) and
            ``bg_data`` (one ``(K, *shape)`` array per input); returns one ``(*shape)`` array
            per input.
        references : array or list of arrays, optional
            Per-sample references, as in :meth:`explain`.
        ranked_outputs, output_rank_order
            As in :meth:`explain`.

        Returns
        -------
        Attributions
            ``values`` are the combined arrays; ``base_values`` the mean output over each
            sample's references.

        Raises
        ------
        ValueError
            The combiner returned the wrong number of arrays or a wrong shape (naming the sample).
        """
        arrays = as_arrays(x, self.input_specs, "x", allow_integer=self._allow_integer)
        refs = self._references_for(arrays, references)
        outputs = self.outputs_of(arrays)
        index = self._output_index(outputs, ranked_outputs, output_rank_order)
        n, k = index.shape
        chunk = self._chunk(k, "multipliers")
        batch = self.batch_size(k, arrays, refs.shared)
        values = [np.zeros((n, *a.shape[1:], k), np.float64) for a in arrays]
        counts = refs.counts(n)
        pending: dict[int, list] = {}
        try:
            for tile, multipliers in run_pair_multipliers(chunk, arrays, refs, index, batch):
                for s in np.unique(tile.sample_index):
                    sample = tile.samples.start + int(s)
                    mine = tile.sample_index == s
                    rows = tile.rows.start + tile.reference_index[mine]
                    parts = pending.setdefault(sample, [])
                    parts.append(([m[mine] for m in multipliers], rows))
                    if sum(len(r) for _, r in parts) == counts[sample]:
                        self._combine_one(sample, pending.pop(sample), arrays, refs, combine_mult_and_diffref, values)
        except tf.errors.InvalidArgumentError as error:
            raise from_run_time_error(error, self.layer_of) from None
        base = _reference_means(self, refs, n)
        return self._attributions(values, base, outputs, index, ranked_outputs is not None, arrays)

    def _combine_one(self, sample: int, parts, arrays, refs: References, fn, values) -> None:
        multipliers = [np.concatenate([p[0][i] for p in parts]) for i in range(len(arrays))]
        rows = np.concatenate([p[1] for p in parts])
        orig = [a[sample] for a in arrays]
        bg = [t[rows] for t in refs.table]
        for j in range(multipliers[0].shape[-1]):
            combined = fn(mult=[m[..., j] for m in multipliers], orig_inp=orig, bg_data=bg)
            combined = list(combined) if isinstance(combined, (list, tuple)) else [combined]
            if len(combined) != len(arrays):
                raise ValueError(f"combine_mult_and_diffref returned {len(combined)} array(s) for sample {sample}; "
                                 f"expected {len(arrays)}, one per model input")
            for i, (value, a) in enumerate(zip(combined, arrays)):
                value = np.asarray(value)
                if value.shape != a.shape[1:]:
                    raise ValueError(f"combine_mult_and_diffref returned shape {value.shape} for input {i} of sample "
                                     f"{sample}; expected {a.shape[1:]} (one sample's shape)")
                values[i][sample, ..., j] = value

    def export(self, path, *, per_sample_references: bool | None = None):
        """Write a SavedModel with ``explain(x)`` (or ``explain(x, references)``) and ``serving_default``.

        Loading it needs TensorFlow only. See :func:`tfshap.export.export`.

        Parameters
        ----------
        path : str or PathLike
            A new or empty directory.
        per_sample_references : bool, optional
            Take ``(x, references)`` instead of baking the background in (None: when the
            background is a function).

        Returns
        -------
        pathlib.Path
        """
        from .export import export

        return export(self, path, per_sample_references=per_sample_references)


def _reference_means(explainer: DeepSHAPExplainer, refs: References, n: int) -> np.ndarray:
    """The mean output over each sample's references: ``(n_outputs,)`` shared, else ``(n, n_outputs)``."""
    table_outputs = explainer.outputs_of(refs.table)
    if refs.shared:
        return table_outputs.mean(axis=0)
    return np.stack([table_outputs[refs.offsets[i] : refs.offsets[i + 1]].mean(axis=0) for i in range(n)])


def _probe_row_sizes(traced, row_shapes) -> tuple[int, int]:
    """Trace ``traced`` for rows of ``row_shapes`` (no run): bytes of float activations and attributed
    elements per row."""
    specs = [tf.TensorSpec([None, *shape], spec.dtype) for shape, spec in zip(row_shapes, traced.input_specs)]
    found = {}

    def probe(*inputs):
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        y, attributed = traced.call(list(inputs))
        from .rewrite import activation_bytes_per_row

        sources = list(inputs) if attributed is None else attributed
        found["bytes"] = activation_bytes_per_row(graph.get_operations()[first:], sources)
        found["elements"] = sum(int(np.prod(s.shape[1:])) if s.shape[1:].is_fully_defined() else 0 for s in sources)
        return y

    tf.function(probe, autograph=False).get_concrete_function(*specs)
    return found["bytes"], found["elements"]


def _one_or_list(arrays: list):
    return arrays[0] if len(arrays) == 1 else arrays


__all__ = ["DeepSHAPExplainer"]
