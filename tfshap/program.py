"""The DeepSHAP program: chunk functions over pairs of (sample, reference row), and the backward strategy.

A chunk function is one ``tf.function``, traced once per number of explained outputs
``k`` and per :data:`KINDS` of result. It takes the samples of a tile, the tile's reference
table, and for every pair the sample and the table row it pairs, runs the forward pass
once per pair row (the sample) and once per table row (so every sample paired with a
reference shares its forward pass), installs the rules (:func:`tfshap.rewrite.rewrite_traced`)
and runs the backward passes. See :mod:`tfshap.batching` for the tiles.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from .graph import WHILE_OPS
from .pair import foreground, halves, on_foreground, paired_rows
from .registry import DEFAULT_RULES
from .rewrite import Rewritten, rewrite_traced

#: Up to this many outputs, one backward pass each; beyond, one pass over copies of the pairs.
SEPARATE_BACKWARDS_MAX = 16
#: How a chunk runs the backward passes of its ``k`` outputs: one pass per output; one pass over
#: ``k`` copies of the pairs; one pass vectorized over the outputs (``tf.vectorized_map``).
BACKWARDS = ("passes", "copies", "vectorized")

#: What a chunk returns per source, for each sample of the tile and each explained output:
#: ``contributions``: Σ over the sample's pairs of ``m · (x − r)``;
#: ``hypothetical``: Σ over its pairs of ``m_i − Σ_c m_c · r_c`` (the last axis one-hot);
#: ``multipliers``: ``m`` of every pair, not summed.
KINDS = ("contributions", "hypothetical", "multipliers")


class Program:
    """The rewritten graph of one explainer: its chunk functions and how it runs its backward passes.

    ``chunk(k, kind, vectorized)(samples, references, sample_index, reference_index, output_index)``
    returns ``(per_source, reference_outputs, sample_outputs)``: per source,
    ``(n_samples, *shape, k)`` sums in float64 (``(n_pairs, *shape, k)`` multipliers for
    ``kind="multipliers"``); ``(n_samples, n_outputs)``, the sum of the model's outputs over
    each sample's reference rows; and ``(n_samples, n_outputs)``, the model's outputs at each
    sample (from its first pair's row). Pair ``p`` is sample ``sample_index[p]`` with table
    row ``reference_index[p]``; ``output_index`` names the ``k`` outputs of each sample.
    ``backward``: one of :data:`BACKWARDS` ("vectorized": see :meth:`can_vectorize`).
    """

    def __init__(self, traced, layer_of, *, jit_compile: bool, rule_set: str = DEFAULT_RULES):
        self.traced = traced
        self.jit_compile = jit_compile
        self.rule_set = rule_set
        self.layer_of = layer_of
        self.rewritten: Rewritten | None = None
        self._chunk_fns: dict[tuple[int, str, str], object] = {}

    @property
    def report(self):
        return None if self.rewritten is None else self.rewritten.report

    def chunk(self, k: int, kind: str = "contributions", backward: str = "passes"):
        """The concrete chunk function explaining ``k`` outputs per sample (traced once per arguments)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}; got {backward!r}")
        if backward == "vectorized" and not self.can_vectorize(k):
            raise ValueError(f"the backward pass cannot be vectorized over {k} output(s) here")
        key = (k, kind, backward)
        if key not in self._chunk_fns:
            self._chunk_fns[key] = self._trace_chunk(k, kind, backward)
        return self._chunk_fns[key]

    @functools.cached_property
    def has_loops(self) -> bool:
        """Whether the model runs a ``While`` loop (an RNN): read from the first chunk traced."""
        if not self._chunk_fns:
            raise RuntimeError("has_loops is known once a chunk has been traced")
        return not _op_types(next(iter(self._chunk_fns.values())).graph).isdisjoint(WHILE_OPS)

    def can_vectorize(self, k: int) -> bool:
        """Whether one backward pass vectorized over ``k`` outputs can run here.

        Only for several outputs, and not under XLA: it has no kernel for the lists of lists
        that the vectorized loop gradient keeps (``TensorListReserve`` of variants), and it
        fuses each pass's loop anyway.
        """
        return k >= 2 and not self.jit_compile

    def _trace_chunk(self, k: int, kind: str, backward: str):
        specs = [tf.TensorSpec(s.shape, s.dtype) for s in self.traced.input_specs]
        # "passes": one backward pass per output over the pairs (the plain-gradient floor's
        # shape); the rules compute their multipliers once and every pass reuses them.
        # "copies": the pairs are copied once per output and one backward pass explains them
        # all, which keeps the graph (and compile time) independent of k. "vectorized": one
        # backward pass vectorized over the outputs. The explainer chooses (see BENCHMARKS.md).
        vectorized = backward == "vectorized"
        copies = k if backward == "copies" else 1
        passes = k // copies

        def chunk(samples, references, sample_index, reference_index, output_index):
            n_pairs, n_samples = tf.shape(sample_index)[0], tf.shape(samples[0])[0]
            x = [tf.gather(s, tf.tile(sample_index, [copies])) for s in samples]
            # Each reference row once: its forward pass is shared by every sample paired with it.
            paired = [tf.concat([xi, ri], 0) for xi, ri in zip(x, references)]
            with paired_rows(n_pairs * copies, tf.shape(references[0])[0], tf.tile(reference_index, [copies])):
                rewritten = rewrite_traced(self.traced, paired, self.layer_of, self.rule_set)
                self.rewritten = rewritten
                # output slot c * passes + j of pair p is explained by row c * n_pairs + p, pass j
                slots = tf.reshape(tf.gather(output_index, sample_index), [-1, copies, passes])
                row_outputs = tf.reshape(tf.transpose(slots, [1, 0, 2]), [-1, passes])
                if kind == "multipliers":
                    row_slots, n_slots = tf.range(n_pairs * copies), n_pairs * copies
                else:  # row c * n_pairs + p adds into c * n_samples + its sample
                    row_slots = tf.reshape(tf.range(copies)[:, None] * n_samples + sample_index[None], [-1])
                    n_slots = copies * n_samples
                per_source = _backward(rewritten, kind, row_outputs, row_slots, n_slots, passes, vectorized)
            per_slot = n_pairs if kind == "multipliers" else n_samples
            y = tf.cast(tf.stop_gradient(rewritten.output), tf.float64)
            reference_outputs = tf.math.unsorted_segment_sum(
                tf.gather(y[n_pairs * copies :], reference_index), sample_index, n_samples)
            first_pair = tf.math.unsorted_segment_min(tf.range(n_pairs), sample_index, n_samples)
            sample_outputs = tf.gather(y, first_pair)
            return [_slots_last(v, copies, per_slot, k) for v in per_source], reference_outputs, sample_outputs

        fn = tf.function(chunk, jit_compile=self.jit_compile, autograph=False)
        index = tf.TensorSpec([None], tf.int32)
        concrete = fn.get_concrete_function(specs, specs, index, index, tf.TensorSpec([None, k], tf.int32))
        if self.jit_compile:
            refusal = self.rewritten.report.xla_refusal()
            if refusal:
                raise ValueError(refusal)
        return concrete


def _backward(rewritten: Rewritten, kind: str, row_outputs, row_slots, n_slots, passes: int, vectorized: bool):
    """Per source, the chunk's result with the passes last: ``(n_slots, *shape, passes)``."""
    y, sources = rewritten.output, rewritten.sources
    n_outputs = y.shape[-1] if y.shape[-1] is not None else tf.shape(y)[-1]
    references = [halves(s)[1] for s in sources]
    deltas = [foreground(s) - r for s, r in zip(sources, references)]

    def one_pass(outputs_of_rows):
        """One backward pass explaining output ``outputs_of_rows[p]`` of foreground row ``p``."""
        # the explained outputs as weights on y: no slice or gather to differentiate
        weights = on_foreground(tf.one_hot(outputs_of_rows, n_outputs, dtype=y.dtype))
        grads = tf.gradients(y, sources, grad_ys=weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        results = []
        for grad, delta, reference in zip(grads, deltas, references):
            m = foreground(tf.convert_to_tensor(grad))  # a source feeding a gather gets IndexedSlices
            if kind == "multipliers":
                results.append(m)
                continue
            if kind == "contributions":
                per_pair = m * delta
            else:  # hypothetical: Σ_c m_c · (δ_ci − r_c) for each base i of the one-hot last axis
                per_pair = m - tf.reduce_sum(m * reference, -1, keepdims=True)
            # summed in float64: a float32 sum over thousands of pairs would lose the last digits
            results.append(tf.math.unsorted_segment_sum(tf.cast(per_pair, tf.float64), row_slots, n_slots))
        return results

    if vectorized:
        per_pass_first = tf.vectorized_map(one_pass, tf.transpose(row_outputs), fallback_to_while_loop=True)
        return [tf.transpose(v, [*range(1, v.shape.rank), 0]) for v in per_pass_first]
    per_pass = [one_pass(row_outputs[:, j]) for j in range(passes)]
    return [tf.stack(v, -1) for v in zip(*per_pass)]


def _slots_last(values: tf.Tensor, copies: int, per_copy: tf.Tensor, k: int) -> tf.Tensor:
    """``(copies · per_copy, *shape, passes)`` → ``(per_copy, *shape, k)``, slot ``c · passes + j``."""
    if copies == 1:
        return values
    rank = values.shape.rank
    split = tf.reshape(values, tf.concat([[copies, per_copy], tf.shape(values)[1:]], 0))
    moved = tf.transpose(split, [*range(1, rank), 0, rank])
    return tf.reshape(moved, tf.concat([tf.shape(moved)[:-2], [k]], 0))


def _op_types(graph: tf.Graph) -> frozenset:
    """The types of the ops in ``graph`` and in every function it calls (loop bodies, gradients)."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]
    return frozenset(node.op for node in nodes)
