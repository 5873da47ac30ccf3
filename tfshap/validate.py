"""Bad input is a ValueError that says what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .batching import References


def _dims_text(spec: tf.TensorSpec) -> str:
    return ", ".join("?" if d is None else str(d) for d in spec.shape[1:])


def _expected_shape(spec: tf.TensorSpec) -> str:
    dims = _dims_text(spec)
    return f"(n, {dims})" if dims else "(n,)"


def check_batch_size(batch_size) -> int | None:
    """``batch_size``: a positive integer (pairs per chunk) or None."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    return None if batch_size is None else int(batch_size)


def as_arrays(data, specs: Sequence[tf.TensorSpec], what: str, *, allow_integer: bool,
              first_row: int = 0) -> list[np.ndarray]:
    """Check ``data`` against the model inputs and return one array per input, in the input dtype.

    ``first_row``: the index of ``data``'s first row in the whole input, for messages that
    name rows (a block of a stream).
    """
    n_inputs = len(specs)
    if isinstance(data, (list, tuple)) and (n_inputs > 1 or _holds_arrays(data)):
        items = list(data)
        if len(items) != n_inputs:
            raise ValueError(f"{what} must be a list of {n_inputs} array(s), one per model input; got {len(items)}")
    elif n_inputs == 1:
        items = [data]
    else:
        raise ValueError(
            f"{what} must be a list of {n_inputs} arrays, one per model input; got a single {type(data).__name__}"
        )
    arrays = []
    for index, (item, spec) in enumerate(zip(items, specs)):
        name = what if n_inputs == 1 else f"{what}[{index}]"
        arrays.append(_check_one(item, spec, name, allow_integer=allow_integer, first_row=first_row))
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"the arrays of {what} must have the same number of rows; got {[len(a) for a in arrays]}")
    return arrays


def _holds_arrays(data: Sequence) -> bool:
    """A list of arrays (one per input), as opposed to nested lists of numbers (one array)."""
    return len(data) == 0 or all(isinstance(item, (np.ndarray, tf.Tensor)) for item in data)


def _not_finite(array: np.ndarray) -> int:
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _rows_not_finite(array: np.ndarray, first_row: int, most: int = 5) -> str:
    """``"row 300"`` or ``"rows 3, 7, 9 and 2 more"``: the rows holding NaN or infinite values."""
    rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)) + first_row
    shown = ", ".join(str(r) for r in rows[:most])
    more = f" and {len(rows) - most} more" if len(rows) > most else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _check_one(item, spec: tf.TensorSpec, name: str, *, allow_integer: bool, first_row: int = 0) -> np.ndarray:
    if isinstance(item, tf.Tensor):
        item = item.numpy()
    if item is None or isinstance(item, (dict, set, str, bytes)):
        raise ValueError(f"{name} must be an array of shape {_expected_shape(spec)}; got {type(item).__name__}")
    try:
        array = np.asarray(item)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"{name} must be an array of shape {_expected_shape(spec)}; could not convert {type(item).__name__}: {exc}"
        ) from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must be numeric, of shape {_expected_shape(spec)}; got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, of shape {_expected_shape(spec)}; got dtype {array.dtype}")
    expected_rank = len(spec.shape)
    if array.ndim != expected_rank or any(d is not None and d != a for d, a in zip(spec.shape[1:], array.shape[1:])):
        raise ValueError(f"{name} must have shape {_expected_shape(spec)}; got {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{name} is empty: expected at least one row of shape {_expected_shape(spec)}")
    dtype = spec.dtype.as_numpy_dtype
    if np.issubdtype(array.dtype, np.floating) and _not_finite(array):
        raise ValueError(
            f"{name} contains {_not_finite(array)} NaN or infinite value(s), in {_rows_not_finite(array, first_row)}; "
            "expected finite numbers"
        )
    if spec.dtype.is_floating:
        with np.errstate(over="ignore"):
            converted = array.astype(dtype, copy=False)
        if _not_finite(converted):
            raise ValueError(
                f"{name} has {_not_finite(converted)} value(s) too large for the model input dtype "
                f"{spec.dtype.name}, in {_rows_not_finite(converted, first_row)}; "
                f"expected finite {spec.dtype.name} numbers"
            )
    if not spec.dtype.is_floating and not allow_integer:
        raise ValueError(
            f"model input {name} has dtype {spec.dtype.name}, which has no gradient: attribute to a layer's "
            "output instead, e.g. tfshap.compile(model, background, inputs='embedding')"
        )
    if spec.dtype.is_integer and np.issubdtype(array.dtype, np.floating) and not np.all(array == np.round(array)):
        raise ValueError(f"{name} must hold integers (the model input is {spec.dtype.name}); got fractional values")
    return array.astype(dtype, copy=False)


def explicit_references(references, n: int, specs: Sequence[tf.TensorSpec], *, allow_integer: bool) -> References:
    """``references=``: one array ``(n, K, *input_shape)`` per model input, as a reference table."""
    items = list(references) if isinstance(references, (list, tuple)) and len(specs) > 1 else [references]
    if len(items) != len(specs):
        raise ValueError(f"references must be a list of {len(specs)} arrays (n, K, *input_shape), one per model input; "
                         f"got {len(items)}")
    table = []
    for index, (item, spec) in enumerate(zip(items, specs)):
        name = "references" if len(specs) == 1 else f"references[{index}]"
        array = item.numpy() if isinstance(item, tf.Tensor) else np.asarray(item)
        if array.ndim != len(spec.shape) + 1 or len(array) != n:
            raise ValueError(f"{name} must have shape (n, K, {_dims_text(spec)}) with n = {n} (one block of "
                             f"K reference rows per sample of x); got {array.shape}")
        if array.shape[1] == 0:
            raise ValueError(f"{name} has K = 0 reference rows per sample; expected at least one")
        rows = array.reshape(-1, *array.shape[2:])
        table.append(_check_one(rows, spec, name, allow_integer=allow_integer))
    k = items and np.asarray(items[0]).shape[1]
    if any(np.asarray(item).shape[1] != k for item in items):
        raise ValueError(
            f"references: every input needs the same K rows per sample; got {[np.shape(i)[1] for i in items]}"
        )
    return References(table, np.arange(n + 1) * k)


def references_from_function(fn, samples: list[np.ndarray], specs: Sequence[tf.TensorSpec], *,
                             allow_integer: bool) -> References:
    """Per-sample references from shap's data function: ``fn([x_i per input]) -> (K_i, *input_shape)`` per input."""
    n, tables, offsets = len(samples[0]), [[] for _ in specs], [0]
    for i in range(n):
        returned = fn([s[i] for s in samples])
        where = f"the background function, for sample {i},"
        if returned is None:
            raise ValueError(f"{where} returned None; expected an array (K, *input_shape) or a list of them, "
                             "one per model input")
        items = list(returned) if isinstance(returned, (list, tuple)) else [returned]
        if len(items) != len(specs):
            raise ValueError(f"{where} returned {len(items)} array(s); expected {len(specs)}, one per model input")
        counts = set()
        for index, (item, spec) in enumerate(zip(items, specs)):
            name = f"{where} input {index}" if len(specs) > 1 else where.rstrip(",")
            array = item.numpy() if isinstance(item, tf.Tensor) else np.asarray(item)
            if array.ndim == len(spec.shape) and len(array) == 0:
                raise ValueError(f"{name} returned K = 0 reference rows; expected at least one")
            if array.ndim != len(spec.shape) or array.shape[1:] != samples[index].shape[1:]:
                raise ValueError(
                    f"{name} returned shape {array.shape}; "
                    f"expected (K, {', '.join(map(str, samples[index].shape[1:]))}) like the sample"
                )
            tables[index].append(_check_one(array, spec, name, allow_integer=allow_integer))
            counts.add(len(array))
        if len(counts) > 1:
            raise ValueError(f"{where} returned different numbers of rows per input: {sorted(counts)}")
        offsets.append(offsets[-1] + counts.pop())
    return References([np.concatenate(t) for t in tables], np.asarray(offsets))
