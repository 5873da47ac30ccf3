"""Pairs of (sample, reference row), cut into tiles: the one batching module of explain, streaming, export and Beam.

References are data: a table of reference rows, and for each sample the rows it pairs
with. One background shared by every sample is a table that every sample points into
entirely; per-sample references are a table whose rows ``offsets[i]:offsets[i + 1]``
belong to sample ``i``. Both go through the same tiles and the same chunk function.

A tile is a block of samples against a block of table rows. A chunk runs each of its
table rows through the model once, and returns one sum per sample; chunk sizes come from
the data being explained (unknown dimensions included), at most ``batch_size`` pairs each.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

MIN_PAIRS_PER_CHUNK = 16
#: Chunks hold at most this many pairs, or more where they still fit in ``SMALL_CHUNK_BYTES``:
#: beyond it larger chunks were no faster on the digits CNN, while a small model's fixed cost
#: per chunk dominates (the mlp of tools/bench.py: 7 chunks of 1,024 pairs took 1.9× one of 6,400).
MAX_PAIRS_PER_CHUNK = 1024
SMALL_CHUNK_BYTES = 128 << 20


@dataclass(frozen=True)
class References:
    """The reference rows of every sample.

    ``table`` holds one array per model input, ``(rows, *input_shape)``. ``offsets`` is
    None when every sample pairs with every row (a shared background), or ``(n + 1,)``:
    sample ``i`` pairs with rows ``offsets[i]:offsets[i + 1]``.
    """

    table: list
    offsets: np.ndarray | None = None

    @property
    def shared(self) -> bool:
        return self.offsets is None

    @property
    def rows(self) -> int:
        return int(self.table[0].shape[0])

    def counts(self, n: int) -> np.ndarray:
        """How many reference rows each of the ``n`` samples pairs with."""
        return np.full(n, self.rows) if self.shared else np.diff(self.offsets)


@dataclass(frozen=True)
class Tile:
    """A block of samples against a block of table rows, and its pairs (indices within the tile)."""

    samples: slice
    rows: slice
    sample_index: np.ndarray
    reference_index: np.ndarray


def tile_shape(k: int, batch_size: int, n: int | None = None) -> tuple[int, int]:
    """Samples and shared background rows per tile; ``n=None``: samples not yet known.

    With ``a`` samples and ``c`` rows a tile costs ``a·c`` pair rows plus ``c`` background
    rows, and each sample's ``c`` pairs are summed in the graph before the host adds the
    tiles up. A square-ish tile keeps both overheads small (32 × 32 for 1,024 pairs, where
    1,024 pairs of one sample would need 1,024 background rows); with a small background, a
    tile takes all of it and as many samples as fit.
    """
    samples_per_tile = max(math.isqrt(batch_size), batch_size // k, 1)
    if n is not None:
        samples_per_tile = min(n, samples_per_tile)
    return samples_per_tile, max(1, min(k, batch_size // samples_per_tile))


def tiles(n: int, references: References, batch_size: int) -> list[Tile]:
    """Every (sample, reference row) pair exactly once, in tiles of at most ``batch_size`` pairs."""
    if references.shared:
        a, c = tile_shape(references.rows, batch_size, n)
        return [
            _full_tile(slice(i, min(i + a, n)), slice(j, min(j + c, references.rows)))
            for i in range(0, n, a)
            for j in range(0, references.rows, c)
        ]
    return _per_sample_tiles(references.offsets, batch_size)


def _full_tile(samples: slice, rows: slice) -> Tile:
    """Every sample of the block with every row of the block."""
    a, c = samples.stop - samples.start, rows.stop - rows.start
    return Tile(samples, rows, np.repeat(np.arange(a, dtype=np.int32), c), np.tile(np.arange(c, dtype=np.int32), a))


def _per_sample_tiles(offsets: np.ndarray, batch_size: int) -> list[Tile]:
    """Blocks of consecutive samples whose references fit in a tile; a sample with more, alone in several."""
    found, start, n = [], 0, len(offsets) - 1
    while start < n:
        stop = start + 1
        while stop < n and offsets[stop + 1] - offsets[start] <= batch_size:
            stop += 1
        if offsets[stop] - offsets[start] <= batch_size:
            counts = np.diff(offsets[start : stop + 1])
            pairs = int(counts.sum())
            found.append(Tile(slice(start, stop), slice(int(offsets[start]), int(offsets[stop])),
                              np.repeat(np.arange(stop - start, dtype=np.int32), counts),
                              np.arange(pairs, dtype=np.int32)))
        else:  # one sample with more references than a tile holds
            for j in range(int(offsets[start]), int(offsets[start + 1]), batch_size):
                found.append(
                    _full_tile(slice(start, start + 1), slice(j, min(j + batch_size, int(offsets[start + 1]))))
                )
        start = stop
    return found


@dataclass
class Sums:
    """What the tiles add up to, per sample: per source ``(n, *shape, k)``, the reference outputs summed
    ``(n, n_outputs)``, and the model's outputs at each sample ``(n, n_outputs)``."""

    values: list[np.ndarray]
    reference_outputs: np.ndarray
    sample_outputs: np.ndarray


def run_tiles(chunk_fn, samples: Sequence[np.ndarray], references: References, output_index: np.ndarray,
              batch_size: int, devices: Sequence[str] = ()) -> Sums:
    """Sum the chunk's results over every tile, per sample, in float64.

    With several ``devices`` the tiles are dealt out round robin, one thread per device
    (TensorFlow releases the GIL while a function runs), and summed here in order.
    """
    n = len(samples[0])
    table = [tf.convert_to_tensor(t) for t in references.table]
    whole = references.rows

    def run_chunk(tile: Tile, device: str | None):
        with tf.device(device):
            rows = table if (tile.rows.start, tile.rows.stop) == (0, whole) else [t[tile.rows] for t in table]
            values, reference_outputs, sample_outputs = chunk_fn(
                [tf.convert_to_tensor(s[tile.samples]) for s in samples],
                rows,
                tf.convert_to_tensor(tile.sample_index),
                tf.convert_to_tensor(tile.reference_index),
                tf.convert_to_tensor(output_index[tile.samples], tf.int32),
            )
            return tile.samples, [v.numpy() for v in values], reference_outputs.numpy(), sample_outputs.numpy()

    work = tiles(n, references, batch_size)
    if len(devices) > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(devices)) as pool:
            parts = list(pool.map(run_chunk, work, [devices[i % len(devices)] for i in range(len(work))]))
    else:
        parts = (run_chunk(tile, devices[0] if devices else None) for tile in work)
    sums = None
    for rows_of_samples, values, reference_outputs, sample_outputs in parts:
        if sums is None:
            sums = Sums([np.zeros((n, *v.shape[1:]), np.float64) for v in values],
                        np.zeros((n, reference_outputs.shape[1]), np.float64),
                        np.zeros((n, sample_outputs.shape[1]), np.float64))
        for total, part in zip(sums.values, values):
            total[rows_of_samples] += part
        sums.reference_outputs[rows_of_samples] += reference_outputs
        sums.sample_outputs[rows_of_samples] = sample_outputs  # the same in every tile of a sample
    return sums


def run_pair_multipliers(chunk_fn, samples: Sequence[np.ndarray], references: References, output_index: np.ndarray,
                         batch_size: int):
    """Per tile: ``(tile, multipliers per source (pairs, *shape, k))``, for combining in Python (a generator)."""
    table = [tf.convert_to_tensor(t) for t in references.table]
    for tile in tiles(len(samples[0]), references, batch_size):
        values, _, _ = chunk_fn(
            [tf.convert_to_tensor(s[tile.samples]) for s in samples],
            [t[tile.rows] for t in table],
            tf.convert_to_tensor(tile.sample_index),
            tf.convert_to_tensor(tile.reference_index),
            tf.convert_to_tensor(output_index[tile.samples], tf.int32),
        )
        yield tile, [v.numpy() for v in values]


def default_batch_size(activation_bytes_per_row: int, k: int, attributed_elements: int, *, backward: str = "passes",
                       shared_references: bool = True) -> int:
    """Pairs per chunk from the memory this process may use (a quarter of what is available, at most 4 GiB).

    ``activation_bytes_per_row`` and ``attributed_elements`` (per row) come from the shapes
    of the data being explained. A pair runs its sample's row forward, its reference row
    too where references are not shared, and the backward passes of ``k`` outputs
    (``backward``, as :data:`tfshap.program.BACKWARDS`: "vectorized" holds all of them at once,
    "copies" runs ``k`` copies of the pair).
    """
    budget = min(available_memory() // 4, 4 << 30)
    if tf.config.list_physical_devices("GPU"):
        budget = min(budget, 2 << 30)
    rows = 2 if shared_references else 3
    if backward == "vectorized":  # the forward once, then the gradients of all k outputs at once
        per_pair = 2 * activation_bytes_per_row * (rows + k) + 8 * attributed_elements * k
    else:
        copies = k if backward == "copies" else 1
        per_pair = 2 * activation_bytes_per_row * copies * (rows + min(k // copies, 4)) + 8 * attributed_elements * k
    pairs = budget // max(per_pair, 1)
    most = max(MAX_PAIRS_PER_CHUNK, SMALL_CHUNK_BYTES // max(per_pair, 1))
    return int(np.clip(pairs, MIN_PAIRS_PER_CHUNK, most))


def available_memory() -> int:
    """Bytes of memory available to this process (``MemAvailable``), or 4 GiB where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def strategy_devices(strategy) -> tuple[str, ...]:
    """The devices of a ``tf.distribute`` strategy: the given one, or the one whose scope is open."""
    if strategy is None:
        if not tf.distribute.has_strategy():
            return ()
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy must be a tf.distribute.Strategy (e.g. MirroredStrategy) or None; got {strategy!r}")
    return tuple(strategy.extended.worker_devices)
