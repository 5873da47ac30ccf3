"""Explaining inputs larger than memory: blocks of rows in, ``.npy`` files written as they come.

``CompiledExplainer.explain_to(path, x)`` reads ``x`` (arrays, memory maps or a
``tf.data.Dataset`` of batches) a block of rows at a time, explains each block, checks it
adds up, and appends its values to ``.npy`` files. Only one block is in memory at once
(plus the ``(n, n_outputs)`` outputs). A dataset's length need not be known: each file's
header is written with room for any row count and rewritten with the true one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from .attributions import Attributions
from .validate import as_arrays

#: Rows explained per call are capped so that one block's values take at most this many bytes.
BLOCK_BYTES = 64 << 20
MAX_BLOCK_ROWS = 256
#: Header size of the written files: room for a row count of up to 18 digits, whatever the shape.
_HEADER_PLACEHOLDER_ROWS = 10**17


class NpyAppender:
    """A ``.npy`` file of rows of one shape and dtype, appended block by block.

    The header is sized for ``_HEADER_PLACEHOLDER_ROWS`` rows and space-padded (the format
    allows it), so that ``close`` can rewrite it in place with the true count.
    """

    def __init__(self, path: Path, row_shape: tuple, dtype):
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.rows = 0
        self._header_bytes = len(self._header(_HEADER_PLACEHOLDER_ROWS))
        self._file = open(self.path, "wb")
        self._file.write(self._header(0, self._header_bytes))

    def _header(self, rows: int, size: int | None = None) -> bytes:
        """Format 1.0: magic, a 2-byte length, the dict padded with spaces to ``size`` (a multiple of 64)
        and a newline."""
        fields = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (rows, *self.row_shape),
        }
        text = repr(fields)
        magic = b"\x93NUMPY\x01\x00"
        size = size or -(-(len(magic) + 2 + len(text) + 1) // 64) * 64
        body = text.ljust(size - len(magic) - 2 - 1) + "\n"
        return magic + len(body).to_bytes(2, "little") + body.encode("latin1")

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: expected rows of shape {self.row_shape}; got {block.shape[1:]}")
        self._file.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(self._header(self.rows, self._header_bytes))
        self._file.close()


class Progress:
    """A one-line progress bar on stderr, redrawn in place; a context manager that ends the line.

    ``total=None`` (a dataset of unknown length) shows the rows done and the rate only.
    """

    WIDTH = 30

    def __init__(self, total: int | None, *, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.drawn = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            line = f"explaining {done} rows, {rate:.1f} rows/s "
        else:
            eta = (self.total - done) / rate if rate > 0 else 0.0
            filled = self.WIDTH * done // max(self.total, 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            line = f"explaining [{bar}] {done}/{self.total} rows, {rate:.1f} rows/s, {eta:.0f} s left "
        self.stream.write("\r" + line)
        self.stream.flush()
        self.drawn = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def block_rows(n_outputs: int, row_shapes: list[tuple]) -> int:
    """Rows per block: one block's float64 values take at most ``BLOCK_BYTES``."""
    row_bytes = 8 * n_outputs * sum(int(np.prod(shape)) for shape in row_shapes)
    return int(np.clip(BLOCK_BYTES // max(row_bytes, 1), 1, MAX_BLOCK_ROWS))


def blocks(x, rows_for):
    """``(total rows or None, iterator of blocks)``; a block is an array or a list of arrays, as ``explain`` takes.

    ``rows_for(row_shapes)`` gives the rows per block for rows of those shapes (those of the data).
    """
    if isinstance(x, tf.data.Dataset):  # its batches are the blocks; the row count is unknown until the end
        return None, (_numpy(batch) for batch in x)
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if not all(hasattr(a, "shape") and len(a.shape) >= 1 for a in arrays):
        return None, iter([x])  # explain() says what was expected
    rows = rows_for([tuple(a.shape[1:]) for a in arrays])
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"x: the arrays must have the same number of rows; got {[len(a) for a in arrays]}")
    single = not isinstance(x, (list, tuple))
    sliced = ([np.asarray(a[start : start + rows]) for a in arrays] for start in range(0, n, rows))
    return n, (block[0] if single else block for block in sliced)


def _numpy(batch):
    if isinstance(batch, (list, tuple)):
        return [b.numpy() if isinstance(b, tf.Tensor) else b for b in batch]
    return batch.numpy() if isinstance(batch, tf.Tensor) else batch


def output_paths(path, n_inputs: int) -> list[Path]:
    """One ``.npy`` path per model input: ``path`` itself, or a list of them."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if len(paths) != n_inputs:
        raise ValueError(
            f"path: the model has {n_inputs} input(s), so expected {n_inputs} .npy path(s); got {len(paths)}"
        )
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or Path(p).suffix != ".npy":
            raise ValueError(f"path: expected a .npy file name; got {p!r}")
        if not Path(p).parent.exists():
            raise ValueError(f"path: the directory {str(Path(p).parent)!r} does not exist")
        out.append(Path(p))
    if len(set(out)) != len(out):
        raise ValueError(f"path: expected a different file for each input; got {[str(p) for p in out]}")
    return out


def explain_to(explainer, path, x, *, references=None, ranked_outputs=None, output_rank_order="max",
               check_additivity=True, progress=None, **options) -> Attributions:
    """Explain ``x`` a block at a time, appending the values to ``path``; values come back memory-mapped."""
    specs = explainer.input_specs
    paths = output_paths(path, len(specs))
    k = ranked_outputs if isinstance(ranked_outputs, (int, np.integer)) and ranked_outputs > 0 else explainer.n_outputs
    total, stream = blocks(x, lambda row_shapes: block_rows(int(k), row_shapes))
    if references is not None and total is None:
        raise ValueError("references= needs x as arrays (its rows are matched by index); with a tf.data.Dataset, "
                         "compile with a background function instead")
    writers, outputs, indices, bases, error, start = None, [], [], [], 0.0, 0
    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    try:
        with Progress(total, enabled=enabled) as bar:
            for block in stream:
                arrays = as_arrays(block, specs, "x", allow_integer=explainer.traced.attributed_layer is not None,
                                   first_row=start)  # bad rows are named by their index in x
                if references is not None:
                    options["references"] = _rows(references, start, len(arrays[0]))
                part = explainer.explain(block, ranked_outputs=ranked_outputs, output_rank_order=output_rank_order,
                                         **options)
                if check_additivity:
                    explainer.check_additivity(part)
                values = part.values if isinstance(part.values, list) else [part.values]
                if writers is None:
                    writers = [NpyAppender(p, v.shape[1:], v.dtype) for p, v in zip(paths, values)]
                for writer, v in zip(writers, values):
                    writer.append(v)
                outputs.append(part.outputs)
                bases.append(part.base_values)
                if part.output_indices is not None:
                    indices.append(part.output_indices)
                error = max(error, part.additivity_error)
                start += len(arrays[0])
                bar.update(writers[0].rows)
    finally:
        for writer in writers or []:
            writer.close()
    if writers is None:
        raise ValueError("x is empty: expected at least one row to explain")
    mapped = [np.load(p, mmap_mode="r") for p in paths]
    shared_base = ranked_outputs is None and np.ndim(bases[0]) == 1
    return Attributions(
        values=mapped if len(mapped) > 1 else mapped[0],
        base_values=bases[0] if shared_base else np.concatenate(bases),
        outputs=np.concatenate(outputs),
        additivity_error=error,
        data=x if isinstance(x, np.ndarray) else None,
        output_indices=np.concatenate(indices) if indices else None,
    )


def _rows(references, start: int, count: int):
    """Rows ``start:start + count`` of per-sample references (an array or a list of them)."""
    if isinstance(references, (list, tuple)):
        return [np.asarray(r[start : start + count]) for r in references]
    return np.asarray(references[start : start + count])
