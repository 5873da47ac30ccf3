"""Bad input is a ValueError that says what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def _expected_shape(spec: tf.TensorSpec) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape[1:])
    return f"(n, {dims})" if dims else "(n,)"


def as_arrays(data, specs: Sequence[tf.TensorSpec], what: str, *, allow_integer: bool) -> list[np.ndarray]:
    """Check ``data`` against the model inputs and return one array per input, in the input dtype."""
    n_inputs = len(specs)
    if isinstance(data, (list, tuple)) and (n_inputs > 1 or _holds_arrays(data)):
        items = list(data)
        if len(items) != n_inputs:
            raise ValueError(f"{what} must be a list of {n_inputs} array(s), one per model input; got {len(items)}")
    elif n_inputs == 1:
        items = [data]
    else:
        raise ValueError(f"{what} must be a list of {n_inputs} arrays, one per model input; got a single {type(data).__name__}")
    arrays = []
    for index, (item, spec) in enumerate(zip(items, specs)):
        name = what if n_inputs == 1 else f"{what}[{index}]"
        arrays.append(_check_one(item, spec, name, allow_integer=allow_integer))
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"the arrays of {what} must have the same number of rows; got {[len(a) for a in arrays]}")
    return arrays


def _holds_arrays(data: Sequence) -> bool:
    """A list of arrays (one per input), as opposed to nested lists of numbers (one array)."""
    return len(data) == 0 or all(isinstance(item, (np.ndarray, tf.Tensor)) for item in data)


def _not_finite(array: np.ndarray) -> int:
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _check_one(item, spec: tf.TensorSpec, name: str, *, allow_integer: bool) -> np.ndarray:
    if isinstance(item, tf.Tensor):
        item = item.numpy()
    if item is None or isinstance(item, (dict, set, str, bytes)):
        raise ValueError(f"{name} must be an array of shape {_expected_shape(spec)}; got {type(item).__name__}")
    try:
        array = np.asarray(item)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{name} must be an array of shape {_expected_shape(spec)}; could not convert {type(item).__name__}: {exc}") from None
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
        raise ValueError(f"{name} contains {_not_finite(array)} NaN or infinite value(s); expected finite numbers")
    if spec.dtype.is_floating:
        with np.errstate(over="ignore"):
            converted = array.astype(dtype, copy=False)
        if _not_finite(converted):
            raise ValueError(
                f"{name} has {_not_finite(converted)} value(s) too large for the model input dtype "
                f"{spec.dtype.name}; expected finite {spec.dtype.name} numbers"
            )
    if not spec.dtype.is_floating and not allow_integer:
        raise ValueError(
            f"model input {name} has dtype {spec.dtype.name}, which has no gradient: attribute to a layer's "
            "output instead, e.g. tfshap.compile(model, background, inputs='embedding')"
        )
    if spec.dtype.is_integer and np.issubdtype(array.dtype, np.floating) and not np.all(array == np.round(array)):
        raise ValueError(f"{name} must hold integers (the model input is {spec.dtype.name}); got fractional values")
    return array.astype(dtype, copy=False)
