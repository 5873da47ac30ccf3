"""Helpers shared by the rules: every op sees a paired batch, foreground rows then reference rows.

The foreground rows are one per (sample, background row) pair; the reference rows are each
background row of the chunk once, so their forward pass is shared by all the samples
paired with them. :func:`paired_rows` says, while the rules build their gradients, how many
rows are foreground and which reference row each pairs with. A rule computes multipliers
``m`` on :func:`halves` and returns ``on_foreground(m) * grad``: attributions are read from
the foreground rows only, so the reference rows get no gradient.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass

import tensorflow as tf

from . import _tf_private
from .errors import MISMATCH_MARKER

VARYING_ATTR = "_tfshap_varying"

#: ``|x - r|`` below this many ulps of ``max(|x|, |r|, 1)`` counts as no difference: the
#: ratio ``Δf / Δx`` would be rounding noise, so the derivative at the midpoint is used.
_CLOSE_ULPS = 32


@dataclass(frozen=True)
class Layout:
    """A paired batch of ``n_foreground`` pair rows, then ``n_reference`` rows, as the rules read it.

    The tensors are built once, in the chunk's graph, so that a rule inside a loop body's
    gradient captures them instead of repeating the arithmetic at every step.
    """

    by_row: tf.Tensor  # [n_foreground + n_reference, -1]: a reshape to one row per batch row
    foreground_by_row: tf.Tensor  # [n_foreground, -1]
    foreground_end: tf.Tensor  # [n_foreground], the end of a slice
    reference_rows: tf.Tensor  # n_foreground + reference_index: each pair row's reference row
    reference_padding: tf.Tensor  # [[0, n_reference], [0, 0]]


_current = threading.local()


@contextlib.contextmanager
def paired_rows(n_foreground, n_reference, reference_index):
    """The layout of the paired batch, for the rules' gradients built inside this block.

    Pair row ``p`` pairs with reference row ``reference_index[p]``.
    """
    previous = getattr(_current, "layout", None)
    n_foreground = tf.convert_to_tensor(n_foreground, tf.int32)
    n_reference = tf.convert_to_tensor(n_reference, tf.int32)
    _current.layout = Layout(
        tf.stack([n_foreground + n_reference, -1]),
        tf.stack([n_foreground, -1]),
        tf.reshape(n_foreground, [1]),
        tf.convert_to_tensor(reference_index, tf.int32) + n_foreground,
        tf.stack([tf.stack([0, n_reference]), [0, 0]]),
    )
    try:
        yield
    finally:
        _current.layout = previous


def one_to_one(n: int | tf.Tensor):
    """``paired_rows`` for ``n`` foreground rows followed by their ``n`` references, in order."""
    return paired_rows(n, n, tf.range(n))


def _layout() -> Layout:
    layout = getattr(_current, "layout", None)
    if layout is None:
        raise RuntimeError("a tfshap rule built its gradient outside tfshap.pair.paired_rows: the paired layout is unknown")
    return layout


def halves(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The foreground rows of a paired tensor, and each one's reference row.

    Axis 0 may hold ``g`` consecutive entries per row (a reshape that folds time steps or
    channels into the batch axis, as TimeDistributed and tf_keras's fused layer normalization
    do): viewed as one row per batch row, each row's entries move together.
    """
    rows = tf.reshape(t, _layout().by_row)
    return _foreground_of_rows(rows, t), tf.reshape(tf.gather(rows, _layout().reference_rows), _entries(t))


def foreground(t: tf.Tensor) -> tf.Tensor:
    """The foreground rows of a paired tensor (``halves(t)[0]``, without building the reference rows)."""
    return _foreground_of_rows(tf.reshape(t, _layout().by_row), t)


def _foreground_of_rows(rows: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.strided_slice(rows, [0], _layout().foreground_end, [1]), _entries(t))


def on_foreground(m: tf.Tensor) -> tf.Tensor:
    """``m`` (shaped like a foreground half) on the foreground rows and zero on the reference rows."""
    layout = _layout()
    rows = tf.reshape(m, layout.foreground_by_row)
    return tf.reshape(tf.pad(rows, layout.reference_padding), _entries(m))


def _entries(t: tf.Tensor):
    """The shape of ``t`` with any length on axis 0 (a constant where the other axes are known)."""
    if t.shape.rank is not None and t.shape[1:].is_fully_defined():
        return [-1, *t.shape[1:].as_list()]
    return tf.concat([[-1], tf.shape(t)[1:]], 0)


def mark_varying(op: tf.Operation, varying: tuple[bool, ...]) -> None:
    _tf_private.set_string_attr(op, VARYING_ATTR, "".join("1" if v else "0" for v in varying))


def varying_inputs(op: tf.Operation) -> tuple[bool, ...]:
    """Which inputs of ``op`` vary with the explained inputs, as decided at compile time."""
    flags = _tf_private.get_string_attr(op, VARYING_ATTR)
    if flags is None:
        raise RuntimeError(f"op {op.name} was not prepared by the tfshap rewrite")
    return tuple(c == "1" for c in flags)


def operand_halves(op: tf.Operation, index: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Foreground and reference values of input ``index``; a constant input is its own reference."""
    t = op.inputs[index]
    return halves(t) if varying_inputs(op)[index] else (t, t)


def close(x: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    """Where ``x`` and ``r`` are equal up to rounding."""
    eps = _CLOSE_ULPS * _eps(x.dtype)
    scale = tf.maximum(tf.maximum(tf.abs(x), tf.abs(r)), tf.ones_like(x))
    return tf.abs(x - r) <= eps * scale


def _eps(dtype: tf.DType) -> float:
    import ml_dtypes  # a TensorFlow dependency; its finfo knows bfloat16, which numpy's does not

    return float(ml_dtypes.finfo(dtype.as_numpy_dtype).eps)


def ratio(numerator: tf.Tensor, delta: tf.Tensor, is_close: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    """``numerator / delta``, or ``fallback`` where ``is_close`` (no 0/0 enters the graph)."""
    safe = tf.where(is_close, tf.ones_like(delta), delta)
    return tf.where(is_close, fallback, numerator / safe)


def derivative(fn, *args: tf.Tensor, wrt: int = 0) -> tf.Tensor:
    """The elementwise derivative of ``fn(*args)`` with respect to ``args[wrt]``."""
    at = args[wrt]
    with tf.GradientTape() as tape:
        tape.watch(at)
        y = fn(*args)
    d = tape.gradient(y, at, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return d


def derivative_along(fn, at: tf.Tensor, output_gradients: tf.Tensor):
    """The vector-Jacobian product of ``fn`` at ``at`` with ``output_gradients`` (``fn`` linear in ``at``: its gradient)."""
    with tf.GradientTape() as tape:
        tape.watch(at)
        y = fn(at)
    return tape.gradient(y, at, output_gradients=output_gradients)


def assert_same_for_sample_and_reference(op: tf.Operation, mask: tf.Tensor) -> tf.Operation:
    """An op that fails, naming ``op``, unless both halves of the paired ``mask`` are equal (a run-time check)."""
    sample, reference = halves(mask)
    return tf.debugging.Assert(tf.reduce_all(tf.equal(sample, reference)), [f"{MISMATCH_MARKER} {op.name}"])


def unbroadcast(grad: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    grad_shape = tf.shape(grad)
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=grad_shape, s1=shape)
    return tf.reshape(tf.reduce_sum(grad, axis=axes), shape)


def cached_multipliers(compute):
    """Compute a rule's multipliers once per op and graph, not once per backward pass.

    The multipliers depend only on the forward values, so every ``tf.gradients`` call in the
    same graph (one per explained output) reuses them. Inside a loop's gradient each body
    gets a graph of its own, and so a cache of its own.
    """

    caches = weakref.WeakKeyDictionary()  # graph being built -> {op name: multipliers}

    def cached(op: tf.Operation):
        cache = caches.setdefault(tf.compat.v1.get_default_graph(), {})
        key = (id(op.graph), op.name)
        if key not in cache:
            cache[key] = compute(op)
        return cache[key]

    return cached
