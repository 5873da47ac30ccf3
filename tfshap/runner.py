"""Pairs, chunks, one tf.function for every output, the mean over the background."""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .errors import CompileError, MaskMismatchError
from .rewrite_rules.mask import MISMATCH_MARKER
from .graph import reaching_tensors, varying_tensors
from .pair import foreground, halves, on_foreground, paired_rows
from .rewrite import RewriteReport, layer_lookup, rewrite
from .trace import Traced

_MIN_PAIRS_PER_CHUNK = 16
#: Chunks hold at most this many pairs, or more where they still fit in ``_SMALL_CHUNK_BYTES``:
#: beyond it larger chunks were no faster on the digits CNN, while a small model's fixed cost
#: per chunk dominates (the mlp of tools/bench.py: 7 chunks of 1,024 pairs took 1.9× one of 6,400).
_MAX_PAIRS_PER_CHUNK = 1024
_SMALL_CHUNK_BYTES = 128 << 20
#: Up to this many outputs, one backward pass each; beyond, one pass over copies of the pairs.
_SEPARATE_BACKWARDS_MAX = 16
#: None: one backward pass vectorized over the outputs where the model has a loop, and only
#: there (measured in BENCHMARKS.md); True or False forces it, for ``tools/bench.py --other-backward``.
VECTORIZE_OUTPUTS: bool | None = None


class Program:
    """The rewritten graph: for a chunk of (sample, background row) pairs, the summed ``m · Δ``.

    ``chunk(samples, references, sample_index, reference_index, output_index)`` returns, for
    each attributed tensor, ``(n_samples, *shape, k)``: the sum over the chunk's pairs of each
    sample of ``m · (x − r)`` for the ``k`` outputs named per sample by ``output_index``. Pair
    ``p`` is sample ``sample_index[p]`` with reference row ``reference_index[p]``.
    """

    def __init__(self, traced: Traced, jit_compile: bool):
        self.traced = traced
        self.jit_compile = jit_compile
        self.report: RewriteReport | None = None
        self.activation_bytes_per_row = 0
        self._layer_of = layer_lookup(traced.layer_names)
        self._chunk_fns: dict[int, object] = {}
        self._vectorize_outputs = VECTORIZE_OUTPUTS
        specs = traced.input_specs
        self.forward = tf.function(
            lambda inputs: traced.call(list(inputs))[0],
            input_signature=[[tf.TensorSpec(s.shape, s.dtype) for s in specs]],
            jit_compile=jit_compile,
            autograph=False,
        )

    def chunk(self, k: int):
        """The concrete chunk function explaining ``k`` outputs per sample (traced once per k)."""
        if k not in self._chunk_fns:
            self._chunk_fns[k] = self._trace_chunk(k)
        return self._chunk_fns[k]

    def _trace_chunk(self, k: int):
        specs = self.traced.input_specs
        sample_specs = [tf.TensorSpec(s.shape, s.dtype) for s in specs]

        # Few outputs: one backward pass per output over the pairs (the plain-gradient floor's
        # shape); the rules compute their multipliers once and every pass reuses them. Many
        # outputs: the pairs are copied once per output and one backward pass explains them
        # all, which keeps the graph (and compile time) independent of k. A model with a loop:
        # one backward pass vectorized over the outputs, since a loop body's multipliers are
        # rebuilt in every pass's gradient of the loop, at every step (see BENCHMARKS.md).
        vectorized = self.vectorizes(k)
        copies = k if k > _SEPARATE_BACKWARDS_MAX and not vectorized else 1
        passes = k // copies

        def chunk(samples, references, sample_index, reference_index, output_index):
            n_pairs, n_samples = tf.shape(sample_index)[0], tf.shape(samples[0])[0]
            n_rows = n_pairs * copies
            x = [tf.gather(s, tf.tile(sample_index, [copies])) for s in samples]
            # Each reference row once: its forward pass is shared by every sample paired with it.
            paired = [tf.concat([xi, ri], 0) for xi, ri in zip(x, references)]
            # row c * n_pairs + p adds into c * n_samples + its sample
            row_slots = tf.reshape(tf.range(copies)[:, None] * n_samples + sample_index[None], [-1])
            with paired_rows(n_rows, tf.shape(references[0])[0], tf.tile(reference_index, [copies])):
                per_source = self._attribute(
                    paired, copies, passes, vectorized, tf.gather(output_index, sample_index), row_slots, copies * n_samples
                )
            return [_slots_last(v, copies, n_samples, k) for v in per_source]

        fn = tf.function(chunk, jit_compile=self.jit_compile, autograph=False)
        concrete = fn.get_concrete_function(
            sample_specs,
            sample_specs,
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, k], tf.int32),
        )
        if self.jit_compile:
            self._refuse_xla_where_inexact(concrete.graph)
        return concrete

    def vectorizes(self, k: int) -> bool:
        """Whether the chunk for ``k`` outputs runs one backward pass vectorized over them (see ``_trace_chunk``).

        Only for several outputs, and not under XLA: it has no kernel for the lists of lists
        that the vectorized loop gradient keeps (``TensorListReserve`` of variants), and it
        fuses each pass's loop anyway.
        """
        if k < 2:
            return False
        if self._vectorize_outputs is not None:
            return self._vectorize_outputs
        return self.has_loops and not self.jit_compile

    @functools.cached_property
    def has_loops(self) -> bool:
        """Whether the model runs a ``While`` loop (an RNN), in its graph or a function it calls."""
        return not _op_types(self.forward.get_concrete_function().graph).isdisjoint({"While", "StatelessWhile"})

    def _attribute(
        self, paired, copies: int, passes: int, vectorized: bool, pair_outputs, row_slots, n_slots
    ) -> list[tf.Tensor]:
        """Trace the model on the paired rows and rewrite it; per source, ``m · Δ`` summed by slot, passes last."""
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        y, attributed = self.traced.call(paired)
        ops = graph.get_operations()[first:]
        sources = paired if attributed is None else [*attributed, *self._masks_beside_layer(ops, paired, attributed, y)]
        self.report = rewrite(ops, sources, [y], self._layer_of)
        if attributed is not None:
            sources = attributed
        self.activation_bytes_per_row = _activation_bytes_per_row(ops, sources)
        # output slot c * passes + j of pair p is explained by row c * n_pairs + p, pass j
        slots = tf.reshape(pair_outputs, [-1, copies, passes])
        row_outputs = tf.reshape(tf.transpose(slots, [1, 0, 2]), [-1, passes])
        n_outputs = y.shape[-1] if y.shape[-1] is not None else tf.shape(y)[-1]
        deltas = [tf.subtract(*halves(s)) for s in sources]

        def summed_backward(outputs_of_rows):
            """One backward pass explaining output ``outputs_of_rows[p]`` of foreground row ``p``."""
            # the explained outputs as weights on y: no slice or gather to differentiate
            weights = on_foreground(tf.one_hot(outputs_of_rows, n_outputs, dtype=y.dtype))
            grads = tf.gradients(y, sources, grad_ys=weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # a source feeding a gather gets IndexedSlices
            return [
                tf.math.unsorted_segment_sum(foreground(tf.convert_to_tensor(grad)) * delta, row_slots, n_slots)
                for grad, delta in zip(grads, deltas)
            ]

        if vectorized:
            per_pass_first = tf.vectorized_map(summed_backward, tf.transpose(row_outputs), fallback_to_while_loop=True)
            return [tf.transpose(v, [*range(1, v.shape.rank), 0]) for v in per_pass_first]
        per_pass = [summed_backward(row_outputs[:, j]) for j in range(passes)]
        return [tf.stack(v, -1) for v in zip(*per_pass)]

    def _refuse_xla_where_inexact(self, graph: tf.Graph) -> None:
        """``ValueError`` where XLA would make the attributions wrong (measured in BENCHMARKS.md)."""
        if _has_checks(graph):
            # XLA compiles Assert to nothing: the mask checks would pass whatever the data.
            raise ValueError(
                "jit_compile=True cannot explain this model: its masks or tf.where conditions are checked "
                "at run time (Assert ops), and XLA drops those checks, so a mismatch would give wrong values "
                "silently. Expected jit_compile=False or None for this model"
            )
        cross_max = sorted({op_type for family, op_type in self.report.used if family == "crossmax"})
        if cross_max:
            # The winner of each window must be the same position in every recomputation;
            # XLA's fusions do not guarantee it (misses of 1e-4 in float32 were measured).
            raise ValueError(
                f"jit_compile=True cannot explain this model exactly: its {', '.join(cross_max)} ops take the "
                "cross-max rule, which XLA's fused recomputation of the winning positions breaks. "
                "Expected jit_compile=False or None for this model"
            )

    def _masks_beside_layer(self, ops, paired, attributed, y) -> list[tf.Tensor]:
        """The masks computed from the inputs other than through the attributed layer.

        They vary too, so the mask rules check that a sample and its reference agree on them;
        any float path around the layer makes attributions to it incomplete, and is refused.
        """
        around = varying_tensors(ops, paired, blocked=attributed)
        feeding_layer = reaching_tensors(ops, attributed)
        # an integer or boolean model input beside the layer (a mask input) is a mask too
        mask_inputs = [t for t in paired if not t.dtype.is_floating and t.ref() not in feeding_layer]
        masks = mask_inputs + [
            t for op in ops for t in op.outputs
            if t.ref() in around and t.ref() not in feeding_layer and not t.dtype.is_floating
        ]
        others = [t for t in paired if all(t is not m for m in mask_inputs)]
        if y.ref() in varying_tensors(ops, others, blocked=[*attributed, *masks]):
            raise CompileError(
                f"the output depends on the model inputs other than through layer "
                f"{self.traced.attributed_layer!r}, so attributions to that layer cannot add up; "
                "choose a layer that every path from the inputs to the output goes through"
            )
        return masks

    def mask_mismatch(self, error: tf.errors.InvalidArgumentError) -> Exception:
        """The user-facing error for a failed mask check, or ``error`` itself."""
        marker = f"{MISMATCH_MARKER} "
        if marker not in error.message:
            return error
        op_name = error.message.split(marker, 1)[1].split()[0].rstrip("]'\"")
        layer = self._layer_of(op_name)
        where = f" in layer {layer!r}" if layer else ""
        return MaskMismatchError(
            f"the mask or condition used by {op_name!r}{where} differs between a sample and a background row "
            "in a way DeepSHAP cannot attribute (a mask cast to a float, or a switch of tf.where where neither "
            "branch changes), so nothing was returned. Expected background rows masked like the samples "
            "(e.g. the same padding positions)"
        )


def _has_checks(graph: tf.Graph) -> bool:
    """Whether ``graph`` or any function it calls (loop bodies, gradients) holds an Assert op."""
    return "Assert" in _op_types(graph)


def _op_types(graph: tf.Graph) -> set[str]:
    """The types of the ops in ``graph`` and in every function it calls (loop bodies, gradients)."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]
    return {node.op for node in nodes}


def _slots_last(values: tf.Tensor, copies: int, n_samples: tf.Tensor, k: int) -> tf.Tensor:
    """``(copies · n_samples, *shape, passes)`` → ``(n_samples, *shape, k)``, slot ``c · passes + j``."""
    if copies == 1:
        return values
    rank = values.shape.rank
    split = tf.reshape(values, tf.concat([[copies, n_samples], tf.shape(values)[1:]], 0))
    moved = tf.transpose(split, [*range(1, rank), 0, rank])
    return tf.reshape(moved, tf.concat([tf.shape(moved)[:-2], [k]], 0))


def _activation_bytes_per_row(ops, sources) -> int:
    varying = varying_tensors(ops, sources)
    total = 0
    for op in ops:
        for t in op.outputs:
            if t.ref() in varying and t.dtype.is_floating and t.shape.rank:
                dims = t.shape[1:]
                if dims.is_fully_defined():
                    total += int(np.prod(dims)) * t.dtype.size
    return total


def default_batch_size(program: Program, k: int, attributed_elements: int, vectorized: bool = False) -> int:
    """Pairs per chunk from the memory this process may use (a quarter of what is available, at most 4 GiB).

    ``vectorized``: the chunk runs one backward pass vectorized over the ``k`` outputs.
    """
    budget = min(_available_memory() // 4, 4 << 30)
    if tf.config.list_physical_devices("GPU"):
        budget = min(budget, 2 << 30)
    if vectorized:  # the forward once, then the gradients of all k outputs at once
        per_pair = 2 * program.activation_bytes_per_row * (2 + k) + 8 * attributed_elements * k
    else:
        copies = k if k > _SEPARATE_BACKWARDS_MAX else 1
        per_pair = 2 * program.activation_bytes_per_row * copies * (2 + min(k // copies, 4)) + 8 * attributed_elements * k
    pairs = budget // max(per_pair, 1)
    most = max(_MAX_PAIRS_PER_CHUNK, _SMALL_CHUNK_BYTES // max(per_pair, 1))
    return int(np.clip(pairs, _MIN_PAIRS_PER_CHUNK, most))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def run_pairs(
    chunk_fn,
    samples: Sequence[np.ndarray],
    background: Sequence[tf.Tensor],
    output_index: np.ndarray,
    batch_size: int,
    devices: Sequence[str] = (),
) -> list[np.ndarray]:
    """Mean over the background of ``m · (x − r)`` for every sample, in tiles of pairs (see :func:`pair_tiles`).

    With several ``devices`` the tiles are dealt out round robin, one thread per device
    (TensorFlow releases the GIL while a function runs), and summed here in order.
    """
    n, k_background = len(samples[0]), int(background[0].shape[0])

    def run_chunk(tile: tuple[slice, slice], device: str | None):
        rows_of_samples, rows_of_background = tile
        n_samples = rows_of_samples.stop - rows_of_samples.start
        n_rows = rows_of_background.stop - rows_of_background.start
        with tf.device(device):
            references = background if n_rows == k_background else [b[rows_of_background] for b in background]
            result = chunk_fn(
                [tf.convert_to_tensor(s[rows_of_samples]) for s in samples],
                list(references),
                tf.convert_to_tensor(np.repeat(np.arange(n_samples), n_rows), tf.int32),
                tf.convert_to_tensor(np.tile(np.arange(n_rows), n_samples), tf.int32),
                tf.convert_to_tensor(output_index[rows_of_samples], tf.int32),
            )
            return rows_of_samples, [part.numpy() for part in result]

    tiles = pair_tiles(n, k_background, batch_size)
    if len(devices) > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(devices)) as pool:
            parts = list(pool.map(run_chunk, tiles, [devices[i % len(devices)] for i in range(len(tiles))]))
    else:
        parts = (run_chunk(tile, devices[0] if devices else None) for tile in tiles)
    sums = None
    for rows_of_samples, result in parts:
        if sums is None:
            sums = [np.zeros((n, *r.shape[1:]), np.float64) for r in result]
        for total, part in zip(sums, result):
            total[rows_of_samples] += part
    return [s / k_background for s in sums]


def pair_tiles(n: int, k: int, batch_size: int) -> list[tuple[slice, slice]]:
    """Blocks of samples × background rows, at most ``batch_size`` pairs each, with few background rows.

    A chunk runs each of its background rows once, and returns one sum per sample. With
    ``a`` samples and ``c`` rows a tile costs ``a·c`` pair rows plus ``c`` background rows,
    and each sample's ``c`` pairs are summed in the graph before the host adds the tiles up.
    A square-ish tile keeps both overheads small (32 × 32 for 1,024 pairs, where 1,024 pairs of
    one sample would need 1,024 background rows); with a small background, a tile takes
    all of it and as many samples as fit.
    """
    samples_per_tile, rows_per_tile = tile_shape(k, batch_size, n)
    return [
        (slice(i, min(i + samples_per_tile, n)), slice(j, min(j + rows_per_tile, k)))
        for i in range(0, n, samples_per_tile)
        for j in range(0, k, rows_per_tile)
    ]


def tile_shape(k: int, batch_size: int, n: int | None = None) -> tuple[int, int]:
    """Samples and background rows per tile (see :func:`pair_tiles`); ``n=None``: samples not yet known."""
    samples_per_tile = max(math.isqrt(batch_size), batch_size // k, 1)
    if n is not None:
        samples_per_tile = min(n, samples_per_tile)
    return samples_per_tile, max(1, min(k, batch_size // samples_per_tile))


def strategy_devices(strategy) -> tuple[str, ...]:
    """The devices of a ``tf.distribute`` strategy: the given one, or the one whose scope is open."""
    if strategy is None:
        if not tf.distribute.has_strategy():
            return ()
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy must be a tf.distribute.Strategy (e.g. MirroredStrategy) or None; got {strategy!r}")
    return tuple(strategy.extended.worker_devices)
