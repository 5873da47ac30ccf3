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

import numpy as np
import tensorflow as tf

from . import _tf_private
from .errors import MISMATCH_MARKER

VARYING_ATTR = "_tfshap_varying"
#: Where the rows of each input of an op lie, where the rewrite found them off axis 0 (see :func:`rows_along`).
ROWS_ATTR = "_tfshap_rows"

#: ``|x - r|`` below this many ulps counts as no difference (see :func:`close` and :func:`secant`):
#: the ratio ``Δf / Δx`` would be rounding noise, so the derivative at the midpoint is used.
_CLOSE_ULPS = 32
#: ``Δf`` within this many ulps of ``f`` is indistinguishable from 0: the two roundings of ``f(x)`` and
#: ``f(r)`` and the subtraction's, each at most half an ulp (see :func:`secant`).
_NOISE_ULPS = 2


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
        raise RuntimeError("a tfshap rule built its gradient outside tfshap.pair.paired_rows: "
                           "the paired layout is unknown")
    return layout


def halves(t: tf.Tensor, axis: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """The foreground rows of a paired tensor, and each one's reference row.

    The rows lie along ``axis`` (default: axis 0, or where :func:`rows_along` says). That axis
    may hold ``g`` consecutive entries per row (a reshape that folds time steps or channels into
    the batch axis, as TimeDistributed and tf_keras's fused layer normalization do): viewed as
    one row per batch row, each row's entries move together. Both halves keep ``t``'s layout.
    """
    axis = _row_axis(t, axis)
    if axis:
        perm, back = _to_front(t, axis)
        return tuple(tf.transpose(h, back) for h in halves(tf.transpose(t, perm), 0))
    rows = tf.reshape(t, _layout().by_row)
    return _foreground_of_rows(rows, t), tf.reshape(tf.gather(rows, _layout().reference_rows), _entries(t))


def foreground(t: tf.Tensor, axis: int | None = None) -> tf.Tensor:
    """The foreground rows of a paired tensor (``halves(t)[0]``, without building the reference rows)."""
    axis = _row_axis(t, axis)
    if axis:
        perm, back = _to_front(t, axis)
        return tf.transpose(foreground(tf.transpose(t, perm), 0), back)
    return _foreground_of_rows(tf.reshape(t, _layout().by_row), t)


def _foreground_of_rows(rows: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.strided_slice(rows, [0], _layout().foreground_end, [1]), _entries(t))


def on_foreground(m: tf.Tensor, axis: int | None = None) -> tf.Tensor:
    """``m`` (shaped like a foreground half) on the foreground rows and zero on the reference rows."""
    axis = _row_axis(m, axis)
    if axis:
        perm, back = _to_front(m, axis)
        return tf.transpose(on_foreground(tf.transpose(m, perm), 0), back)
    layout = _layout()
    rows = tf.reshape(m, layout.foreground_by_row)
    return tf.reshape(tf.pad(rows, layout.reference_padding), _entries(m))


def _entries(t: tf.Tensor):
    """The shape of ``t`` with any length on axis 0 (a constant where the other axes are known)."""
    if t.shape.rank is not None and t.shape[1:].is_fully_defined():
        return [-1, *t.shape[1:].as_list()]
    return tf.concat([[-1], tf.shape(t)[1:]], 0)


def _to_front(t: tf.Tensor, axis: int) -> tuple[list[int], list[int]]:
    """The permutation that moves ``axis`` of ``t`` to the front, and its inverse."""
    perm = [axis] + [a for a in range(t.shape.rank) if a != axis]
    return perm, [int(a) for a in np.argsort(perm)]


def _row_axis(t: tf.Tensor, axis: int | None) -> int:
    """``axis``, or the axis :func:`rows_along` puts the rows on in ``t`` (counted from the end), else 0."""
    if axis is not None:
        return axis
    from_end = getattr(_current, "from_end", None)
    if from_end is None:
        return 0
    if t.shape.rank is None or t.shape.rank + from_end < 0:
        raise RuntimeError(f"a tfshap rule read rows {-from_end} axes from the end of a tensor of rank {t.shape.rank}")
    return t.shape.rank + from_end


def mark_rows(op: tf.Operation, axes: tuple[int | None, ...]) -> None:
    """Record the axis of each input of ``op`` that holds the rows (None: the input does not vary)."""
    _tf_private.set_string_attr(op, ROWS_ATTR, ",".join("" if a is None else str(a) for a in axes))


def rows_of(op: tf.Operation) -> tuple[int | None, ...]:
    """The axis of each input of ``op`` that holds the rows, as the rewrite recorded it (axis 0 where it did not)."""
    flags = _tf_private.get_string_attr(op, ROWS_ATTR)
    if flags is None:
        return tuple(0 for _ in op.inputs)
    return tuple(int(a) if a else None for a in flags.split(","))


@contextlib.contextmanager
def rows_along(op: tf.Operation):
    """Inside, :func:`halves`, :func:`foreground` and :func:`on_foreground` read the rows of an elementwise op.

    Its varying inputs hold their rows on the same axis counted from the end (broadcasting
    aligns axes from the end), and so do its output and every tensor shaped like it.
    """
    from_end = None
    if _tf_private.get_string_attr(op, ROWS_ATTR) is not None:
        from_end = next(a - t.shape.rank for t, a in zip(op.inputs, rows_of(op)) if a is not None)
    previous = getattr(_current, "from_end", None)
    _current.from_end = from_end
    try:
        yield
    finally:
        _current.from_end = previous


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
    """Where ``x`` and ``r`` are equal up to rounding at unit scale: ``|x − r| ≤ 32 ulps of max(|x|, |r|, 1)``.

    For values that are differences of larger ones (centred logits, a branch of a ``where``), whose
    rounding is that of their inputs. A rule that divides by ``x − r`` only to take a secant of a
    function of ``x`` uses :func:`secant`, which does not assume that scale.
    """
    eps = _CLOSE_ULPS * _eps(x.dtype)
    scale = tf.maximum(tf.maximum(tf.abs(x), tf.abs(r)), tf.ones_like(x))
    return tf.abs(x - r) <= eps * scale


def same_to_rounding(x: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    """Where ``x`` and ``r`` are equal up to their own rounding: ``|x − r| ≤ 32 ulps of max(|x|, |r|)``."""
    return tf.abs(x - r) <= _CLOSE_ULPS * _eps(x.dtype) * tf.maximum(tf.abs(x), tf.abs(r))


def secant(delta_f: tf.Tensor, x: tf.Tensor, r: tf.Tensor, slope: tf.Tensor, f_scale: tf.Tensor) -> tf.Tensor:
    """``Δf / Δx`` with ``Δx = x − r``, or ``slope`` (the derivative at the midpoint) where it gives the same ``Δf``.

    The slope is taken where ``x`` and ``r`` are equal to their own rounding, or where both ``Δf``
    and ``slope · Δx`` are within the rounding of ``f`` (two ulps of ``f_scale``, the largest ``|f|`` involved):
    either way ``slope · Δx = Δf`` to rounding, and ``x == r`` gives the true gradient. Elsewhere the
    secant is exact. No unit scale is assumed: ``rsqrt(v + 1e-6)`` of a small variance ``v`` in
    float32 has ``Δv`` far below 32 ulps of 1 that its curvature makes far from ``slope · Δv``.
    """
    delta_x = x - r
    tolerance = _NOISE_ULPS * _eps(x.dtype) * f_scale
    below = (tf.abs(delta_f) <= tolerance) & (tf.abs(slope * delta_x) <= tolerance)
    return ratio(delta_f, delta_x, same_to_rounding(x, r) | below, slope)


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
    """The vector-Jacobian product of ``fn`` at ``at`` with ``output_gradients`` (``fn`` linear in ``at``:
    its gradient)."""
    with tf.GradientTape() as tape:
        tape.watch(at)
        y = fn(at)
    return tape.gradient(y, at, output_gradients=output_gradients)


def assert_same_for_sample_and_reference(op: tf.Operation, mask: tf.Tensor, axis: int = 0) -> tf.Operation:
    """An op that fails, naming ``op``, unless both halves of the paired ``mask`` (rows along ``axis``) are equal.

    A run-time check, added to the traced function where the plan runs.
    """
    sample, reference = halves(mask, axis)
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
