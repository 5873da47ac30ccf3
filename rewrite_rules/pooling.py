"""Max pooling and max/min reductions: exact Shapley values per window, or cross-max for large windows.

**Shapley** (the default for windows of at most :data:`SHAPLEY_MAX_WINDOW` inputs): the multiplier
of input ``i`` is ``m_i = φ_i / (x_i − r_i)`` with ``φ`` the Shapley values of the window's own
game ``v(S) = max(x_S, r_rest)``, in closed form. With ``t_0 ≤ … ≤ t_{2w−1}`` the values of
``x ∪ r``, ``v(S) = t_0 + Σ_k ℓ_k · 1[v(S) > t_k]`` (``ℓ_k = t_{k+1} − t_k``), and each indicator
is a game of its own. Where some input has both ``x_i, r_i > t_k`` it is 1 for every ``S``: no
credit. That happens exactly below ``L = max_i min(x_i, r_i)``; above ``L`` the ``p_k`` inputs
with ``x_i > t_k`` (their ``r_i ≤ t_k``) and the ``q_k`` with ``r_i > t_k`` play
``1 − 1[S ∩ P = ∅, N ⊆ S]``, whose Shapley values are ``q!(p−1)!/(p+q)!`` for each of ``P``
and ``−(q−1)!p!/(p+q)!`` for each of ``N`` (the orderings in which that player decides).
Above ``L`` each input has one value, its top ``max(x_i, r_i)``, so the intervals are the gaps
between the tops: ``φ_i`` sums ``ℓ · weight`` over the gaps below input ``i``'s top, found by
comparing each pair of inputs once (O(w²) per window, no sort). ``Σ φ = ΔM`` exactly; each ``m_i`` lies in
[0, 1] (max is nondecreasing and 1-Lipschitz in each input); an input that never decides gets 0;
inputs that play the same role get the same value (ties included).

**Cross-max** (larger windows, and every window under ``rules="crossmax"``): credit goes to the
argmax of whichever of ``x`` and ``r`` holds the larger max ``M``: with ``i`` that position,
``m_i = (Mx − Mr) / (x_i − r_i)`` and every other ``m`` is 0. Since ``|x_i − r_i| ≥ |Mx − Mr|``,
``m_i`` lies in [0, 1] and ``Σ m·Δ = ΔM`` exactly. It is exact in summation too, not an
approximation of the Shapley rule: of two exact splits, the cheaper one where the Shapley
split's w² work per window would cost most. It is also the rule of shap.DeepExplainer.

Either way a minimum is a maximum of the negation, and where ``x_i`` and ``r_i`` agree to rounding
``m_i`` is the true gradient (1 at the first argmax of ``x``, 0 elsewhere).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import tensorflow as tf

from tfshap.batch_axis import apply_refusal, reading_refusal, row_axis, rows_refusal
from tfshap.graph import batch_axis_refusal, reduced_axes
from tfshap.pair import (
    assert_same_for_sample_and_reference,
    cached_multipliers,
    foreground,
    halves,
    on_foreground,
    ratio,
    same_to_rounding,
)
from tfshap.registry import ANY_ROWS, APPLY, DEFAULT_RULES, LEADING_ROWS, Refusal, rule
from tfshap.rewrite import reaches_targets

#: The largest window (inputs per maximum) that gets the Shapley split; larger ones get cross-max.
#: Its work grows as w² per window and its graph as w²/2 pairs: on 4M inputs, alone, it takes about
#: 3× cross-max's time at w = 4, 12× at 16 (2,200 ops, a third of a second of tracing) and 22× at 25
#: (5,400 ops); on the digits CNN and the wide CNN (2×2 windows) the whole explanation takes about
#: 1.5× the time of ``rules="crossmax"`` (BENCHMARKS.md, ``tools/faithfulness.py --cost``).
#: 16 covers 2×2, 3×3, 4×4, 2×2×2 pooling.
SHAPLEY_MAX_WINDOW = 16

#: Why ``jit_compile=True`` is refused for these rules (misses of 1e-4 in float32 were measured).
XLA_MOVES_WINNERS = "XLA's fused recomputation does not keep the winning position of each window fixed"

#: The rule set that keeps cross-max for every window (shap.DeepExplainer's rule; tfshap's default before).
CROSS_MAX_RULES = "crossmax"

CROSS_MAX_DOC = "Cross-max: m = (Mx − Mr) / (x_i − r_i) at the argmax i of the larger max, 0 elsewhere"
RULE_DOC = (
    f"Shapley per window of w ≤ {SHAPLEY_MAX_WINDOW} inputs: m_i = φ_i / Δx_i, φ the exact Shapley values of "
    "max(x_S, r_rest), closed form, O(w²); larger windows: cross-max, m = ΔM / Δx_i at the argmax i of the "
    "larger max (exact in summation too)"
)


# -- the Shapley split of one window ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _weight_tables(w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W_P, W_N)`` flattened: ``q!(p−1)!/(p+q)!`` and ``(q−1)!p!/(p+q)!`` at ``p·(w+1) + q`` (0 for p or q = 0)."""
    wp, wn = np.zeros((w + 1, w + 1)), np.zeros((w + 1, w + 1))
    for p in range(w + 1):
        for q in range(w + 1):
            total = math.factorial(p + q)
            if p:
                wp[p, q] = math.factorial(q) * math.factorial(p - 1) / total
            if q:
                wn[p, q] = math.factorial(q - 1) * math.factorial(p) / total
    return wp.ravel(), wn.ravel()


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    """float32 for half precision (its gaps and sums of gaps would keep 3 digits), else ``dtype``."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def shapley_max_multipliers(x: tf.Tensor, r: tf.Tensor, valid: np.ndarray | None = None) -> tf.Tensor:
    """``m = φ / (x − r)`` over the last axis, ``φ`` the exact Shapley values of ``max(x_S, r_rest)``.

    Above ``L = max_j min(x_j, r_j)`` each input has at most one value, its top ``h_j = max(x_j, r_j)``,
    so the intervals that carry credit lie between the tops (clipped to ``L``) taken in order. Each
    pair of inputs is compared once (ties by position): ``ℓ_j`` is the gap below ``h_j``, ``p_j``
    and ``q_j`` count the rising and falling inputs at or above ``j``, and ``φ_i`` sums
    ``ℓ_j · W(p_j, q_j)`` over the ``j`` at or below ``i``. O(w²) per window, no sort; the pairs are
    unrolled (one elementwise op per pair and quantity: about 4× faster here than w × w tensors).

    Parameters
    ----------
    x, r : tf.Tensor
        ``(..., w)``: each window's foreground and reference values, ``w`` known when tracing.
    valid : np.ndarray of bool, optional
        Broadcastable to ``x``: False where a position is padding (its ``x`` and ``r`` must be
        equal and no larger than any value of the window); it never takes the true gradient.

    Returns
    -------
    tf.Tensor
        ``(..., w)`` in ``x``'s dtype; where ``x_i`` and ``r_i`` agree to rounding, the true
        gradient: 1 at the first argmax of ``x`` (valid positions only), else 0.
    """
    w, out_dtype = x.shape[-1], x.dtype
    dtype = _compute_dtype(x.dtype)
    x, r = tf.cast(x, dtype), tf.cast(r, dtype)
    rises, falls = tf.cast(x > r, dtype), tf.cast(r > x, dtype)
    floor = tf.reduce_max(tf.minimum(x, r), -1)  # L: below it some input is above on both sides
    top = tf.unstack(tf.maximum(tf.maximum(x, r), floor[..., None]), axis=-1)
    # The table's cell p·(w + 1) + q in one count: a rising input weighs w + 1, a falling one 1.
    code = tf.unstack((w + 1) * rises + falls, axis=-1)
    zero = tf.zeros_like(floor)
    previous, cell, first = [floor] * w, list(code), {}
    for i, j in itertools.combinations(range(w), 2):
        i_first = first[i, j] = top[i] <= top[j]  # input i comes before input j (ties: by position)
        previous[j] = tf.maximum(previous[j], tf.where(i_first, top[i], floor))
        previous[i] = tf.maximum(previous[i], tf.where(i_first, floor, top[j]))
        cell[i] += tf.where(i_first, code[j], zero)  # j is at or above i
        cell[j] += tf.where(i_first, zero, code[i])
    table_p, table_n = (tf.constant(table, dtype) for table in _weight_tables(w))
    # On the gap just below each top, the credit of each rising input at or above it, and the debit of each falling one.
    gaps = [(h - below, tf.cast(c, tf.int32)) for h, below, c in zip(top, previous, cell)]
    credit = [gap * tf.gather(table_p, c) for gap, c in gaps]
    debit = [gap * tf.gather(table_n, c) for gap, c in gaps]
    credit_sum, debit_sum = list(credit), list(debit)  # over the inputs at or below each
    for (i, j), i_first in first.items():
        credit_sum[j] += tf.where(i_first, credit[i], zero)
        credit_sum[i] += tf.where(i_first, zero, credit[j])
        debit_sum[j] += tf.where(i_first, debit[i], zero)
        debit_sum[i] += tf.where(i_first, zero, debit[j])
    phi = rises * tf.stack(credit_sum, -1) - falls * tf.stack(debit_sum, -1)
    candidates = x if valid is None else tf.where(valid, x, tf.fill(tf.shape(x), tf.constant(-np.inf, dtype)))
    gradient = tf.one_hot(tf.argmax(candidates, -1), w, dtype=dtype)
    m = ratio(phi, x - r, same_to_rounding(x, r) | tf.equal(x, r), gradient)  # φ/Δ lies in [0, 1]: no unit scale
    return tf.cast(m, out_dtype)


# -- reductions: Max, Min, TopKV2 (k = 1) -----------------------------------------------------------
def _cross_max_multiplier(mx, mr, x_at, r_at):
    """m at the chosen position: ΔM / Δx there; 1 where both are equal (the true gradient)."""
    delta_at = x_at - r_at
    return ratio(mx - mr, delta_at, tf.equal(delta_at, 0), tf.ones_like(delta_at))


def cross_max_multipliers(x: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    """Cross-max over the last axis: ``(Mx − Mr) / (x_i − r_i)`` at the argmax ``i`` of the larger max, else 0."""
    arg_x, arg_r = tf.argmax(x, -1), tf.argmax(r, -1)
    mx, mr = tf.reduce_max(x, -1), tf.reduce_max(r, -1)
    chosen = tf.where(mx >= mr, arg_x, arg_r)
    batch_dims = x.shape.rank - 1
    at = lambda t: tf.gather(t, chosen, batch_dims=batch_dims)  # noqa: E731
    m = _cross_max_multiplier(mx, mr, at(x), at(r))
    return tf.one_hot(chosen, tf.shape(x)[-1], dtype=x.dtype) * m[..., None]


def _uses_shapley(w: int | None, rule_set: str) -> bool:
    """Whether windows of ``w`` inputs get the Shapley split under ``rule_set`` (cross-max otherwise)."""
    return rule_set != CROSS_MAX_RULES and w is not None and w <= SHAPLEY_MAX_WINDOW


def _to_last(t: tf.Tensor, axes: list) -> tuple[tf.Tensor, list, int | None]:
    """``t`` with ``axes`` moved last and flattened into one, the permutation used, and that axis's length."""
    kept = [a for a in range(t.shape.rank) if a not in axes]
    moved = tf.transpose(t, kept + axes)
    dims = [t.shape[a] for a in axes]
    w = int(np.prod(dims)) if None not in dims else None
    flat = tf.reshape(moved, tf.concat([tf.shape(moved)[: len(kept)], [-1 if w is None else w]], 0))
    return flat, kept + axes, w


def _reduction_window(op: tf.Operation) -> tuple[float, list]:
    """The sign that turns the op into a max (−1 for Min), and the axes it reduces (the last for TopKV2)."""
    if op.type == "TopKV2":
        return 1.0, [op.inputs[0].shape.rank - 1]
    return (-1.0 if op.type == "Min" else 1.0), reduced_axes(op)


def _reduction_multipliers(rule_set: str):
    """A cached ``op -> m`` of every input of each maximum, ``(foreground rows, kept axes…, w)``, for ``rule_set``."""

    @cached_multipliers
    def multipliers(op: tf.Operation) -> tf.Tensor:
        sign, axes = _reduction_window(op)
        # m is a ratio of differences, the same for the values and their negation.
        flat, _, w = _to_last(sign * op.inputs[0], axes)
        x, r = halves(flat)
        return shapley_max_multipliers(x, r) if _uses_shapley(w, rule_set) else cross_max_multipliers(x, r)

    return multipliers


_REDUCTION_MULTIPLIERS = {rule_set: _reduction_multipliers(rule_set) for rule_set in (DEFAULT_RULES, CROSS_MAX_RULES)}


def _reduction_gradient(op: tf.Operation, grad: tf.Tensor, rule_set: str) -> tf.Tensor:
    """The multipliers of the reduced input times ``grad`` (shaped like the op's output), at the input's shape."""
    _, axes = _reduction_window(op)
    paired = op.inputs[0]
    flat, perm, _ = _to_last(paired, axes)
    g = foreground(tf.reshape(grad, tf.shape(flat)[:-1]))
    moved_shape = tf.shape(tf.transpose(paired, perm))
    scattered = on_foreground(_REDUCTION_MULTIPLIERS[rule_set](op) * g[..., None])
    return tf.transpose(tf.reshape(scattered, moved_shape), np.argsort(perm))


def _reduction_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if varying[1]:
        return Refusal("its reduction axes vary with the explained inputs")
    reason = batch_axis_refusal(op)
    return Refusal(reason) if reason else APPLY


@rule("Max", "Min", family="pooling", plan=_reduction_plan, xla_inexact=XLA_MOVES_WINNERS,
      doc=f"{RULE_DOC}, over the reduced axes (Min: of the negation)")
def reduce_max(op: tf.Operation, grad: tf.Tensor):
    """The max (min) over the reduced axes: Shapley per window of w ≤ SHAPLEY_MAX_WINDOW inputs, else cross-max."""
    return [_reduction_gradient(op, grad, DEFAULT_RULES), None]


@rule("Max", "Min", family="pooling", plan=_reduction_plan, xla_inexact=XLA_MOVES_WINNERS, rules=CROSS_MAX_RULES,
      doc=f"{CROSS_MAX_DOC}, over the reduced axes (Min: of the negation)")
def reduce_max_cross(op: tf.Operation, grad: tf.Tensor):
    """The max (min) over the reduced axes, cross-max whatever the window."""
    return [_reduction_gradient(op, grad, CROSS_MAX_RULES), None]


def _top_k_plan(op: tf.Operation, varying: tuple[bool, ...]):
    k = tf.get_static_value(op.inputs[1])
    if varying[1]:
        return Refusal("its k varies with the explained inputs")
    if not reaches_targets(op.outputs[0]):
        return _indices_only_plan(op)
    if k != 1:
        k_text = "unknown when compiling" if k is None else f"= {k}"
        return Refusal(
            f"top_k with k {k_text} (tf.sort, tf.math.top_k) returns order statistics: no exact rule "
            "assigns their change to the inputs whose order decides them; only k = 1, the maximum, is exact"
        )
    rank = op.inputs[0].shape.rank
    if rank is None:
        return Refusal("its input rank is not known when tracing")
    reason = (rows_refusal(op.inputs[0], [rank - 1], "it takes the maximum along")
              or apply_refusal(op, varying, LEADING_ROWS))
    return Refusal(reason) if reason else APPLY


def _indices_only_plan(op: tf.Operation):
    """Only the indices are used (a mixture of experts routing tokens): a mask, checked at run time."""
    if op.graph is not tf.compat.v1.get_default_graph():
        return Refusal("its indices vary with the explained inputs inside a loop body, where they cannot be checked")
    rank = op.inputs[0].shape.rank
    reason = rows_refusal(op.inputs[0], [rank - 1], "it ranks along") if rank is not None else "its rank is unknown"
    reason = reason or reading_refusal(op.outputs[1], "indices", leading=False)
    if reason:
        return Refusal(reason)
    assert_same_for_sample_and_reference(op, op.outputs[1], row_axis(op.outputs[1]))
    return APPLY


_TOP_K_DOC = "; only the indices used (routing): the same for sample and reference (checked), m = 0"
_XLA_TOP_K = f"{XLA_MOVES_WINNERS}; its indices, where only they are used, are checked at run time (Assert ops)"


@rule("TopKV2", family="pooling", plan=_top_k_plan, xla_inexact=_XLA_TOP_K, rows=ANY_ROWS,
      doc=f"k = 1: {RULE_DOC}, over the last axis; k > 1 refused{_TOP_K_DOC}")
def top_1(op: tf.Operation, grad_values: tf.Tensor, grad_indices: tf.Tensor):
    """k = 1: the max over the last axis, as for Max; k > 1 refused; only the indices used: a checked mask."""
    return [_reduction_gradient(op, grad_values, DEFAULT_RULES), None]  # indices only: never on a gradient's path


@rule("TopKV2", family="pooling", plan=_top_k_plan, xla_inexact=_XLA_TOP_K, rules=CROSS_MAX_RULES, rows=ANY_ROWS,
      doc=f"k = 1: {CROSS_MAX_DOC}, over the last axis; k > 1 refused{_TOP_K_DOC}")
def top_1_cross(op: tf.Operation, grad_values: tf.Tensor, grad_indices: tf.Tensor):
    """k = 1: cross-max over the last axis; k > 1 refused; only the indices used: a checked mask."""
    return [_reduction_gradient(op, grad_values, CROSS_MAX_RULES), None]


# -- pooling windows: MaxPool, MaxPool3D --------------------------------------------------------------
_POOL_ROUTE_AND_PICK = {
    # route: send a per-window value to the argmax of orig_input; pick: read a tensor at that argmax.
    "MaxPool": (tf.raw_ops.MaxPoolGrad, tf.raw_ops.MaxPoolGradGrad),
    "MaxPool3D": (tf.raw_ops.MaxPool3DGrad, tf.raw_ops.MaxPool3DGradGrad),
}


def _pool_attrs(op: tf.Operation) -> dict:
    attrs = {name: op.get_attr(name) for name in ("ksize", "strides")}
    attrs.update({name: op.get_attr(name).decode() for name in ("padding", "data_format")})
    return attrs


class _Windows:
    """The windows of a max pooling, ``(batch, windows, channels, w)``, and the adjoint that sums per-window
    values back into the input, on channels-last tensors (:meth:`channels_last` converts).

    Windows that tile the input (strides = window, no padding) are a reshape; any other geometry is a
    gather of ``index[o, t]``, the flat spatial position of offset ``t`` of window ``o`` (one past the
    last for padding, where ``valid`` is False). Offsets are row-major, the order in which TensorFlow's
    max pooling takes the first of equal maxima.
    """

    def __init__(self, op: tf.Operation):
        attrs = _pool_attrs(op)
        rank = op.inputs[0].shape.rank
        self.channels_first = attrs["data_format"] in ("NCHW", "NCDHW")
        spatial = list(range(2, rank)) if self.channels_first else list(range(1, rank - 1))
        channel_axis = 1 if self.channels_first else rank - 1
        self.in_sizes = [op.inputs[0].shape[a] for a in spatial]
        self.out_sizes = [op.outputs[0].shape[a] for a in spatial]
        self.channels = op.inputs[0].shape[channel_axis]
        self.ksize = [attrs["ksize"][a] for a in spatial]
        strides = [attrs["strides"][a] for a in spatial]
        across = any(attrs[name][a] != 1 for name in ("ksize", "strides") for a in (0, channel_axis))
        known = None not in self.in_sizes and None not in self.out_sizes and self.channels is not None
        #: Inputs per window; None where the windows span batch rows or channels, or shapes are unknown.
        self.w = int(np.prod(self.ksize)) if known and not across else None
        if self.w is None:
            return
        self.tiles = strides == self.ksize and [o * k for o, k in zip(self.out_sizes, self.ksize)] == [
            min(o * k, n) for o, k, n in zip(self.out_sizes, self.ksize, self.in_sizes)
        ]
        self.index, self.valid = _window_index(self.in_sizes, self.out_sizes, self.ksize, strides, attrs["padding"])
        if self.tiles:
            self.valid = None

    def channels_last(self, t: tf.Tensor, back: bool = False) -> tf.Tensor:
        """``t`` moved to channels last (``back``: from channels last to the op's layout)."""
        if not self.channels_first:
            return t
        rank = t.shape.rank
        perm = [0, *range(2, rank), 1] if not back else [0, rank - 1, *range(1, rank - 1)]
        return tf.transpose(t, perm)

    def gather(self, t: tf.Tensor, fill: tf.Tensor | None = None) -> tf.Tensor:
        """Each window's values ``(batch, windows, channels, w)`` from channels-last ``t``; padding takes ``fill``."""
        n = len(self.in_sizes)
        if self.tiles:
            covered = t[(slice(None), *(slice(o * k) for o, k in zip(self.out_sizes, self.ksize)))]
            pairs = [d for o, k in zip(self.out_sizes, self.ksize) for d in (o, k)]
            split = tf.reshape(covered, [-1, *pairs, self.channels])
            moved = tf.transpose(split, [0, *range(1, 2 * n, 2), 2 * n + 1, *range(2, 2 * n + 1, 2)])
            return tf.reshape(moved, [-1, len(self.index), self.channels, self.w])
        rows = tf.transpose(tf.reshape(t, [-1, int(np.prod(self.in_sizes)), self.channels]), [1, 0, 2])
        if fill is None:
            fill = tf.zeros_like(rows[:1])
        windows = tf.gather(tf.concat([rows, fill], 0), self.index)  # (windows, w, batch, channels)
        return tf.transpose(windows, [2, 0, 3, 1])

    def scatter(self, per_window: tf.Tensor) -> tf.Tensor:
        """The adjoint of :meth:`gather`: ``(batch, windows, channels, w)`` summed into channels-last inputs."""
        n = len(self.in_sizes)
        if self.tiles:
            split = tf.reshape(per_window, [-1, *self.out_sizes, self.channels, *self.ksize])
            moved = tf.transpose(split, [0, *[a for d in range(n) for a in (1 + d, n + 2 + d)], n + 1])
            covered = tf.reshape(moved, [-1, *[o * k for o, k in zip(self.out_sizes, self.ksize)], self.channels])
            uncovered = [[0, size - o * k] for size, o, k in zip(self.in_sizes, self.out_sizes, self.ksize)]
            rest = [[0, 0], *uncovered, [0, 0]]
            return tf.pad(covered, rest)
        moved = tf.transpose(per_window, [1, 3, 0, 2])  # (windows, w, batch, channels)
        flat = tf.reshape(moved, tf.concat([[-1], tf.shape(moved)[2:]], 0))
        positions = int(np.prod(self.in_sizes))
        summed = tf.math.unsorted_segment_sum(flat, self.index.ravel(), positions + 1)[:positions]
        return tf.reshape(tf.transpose(summed, [1, 0, 2]), [-1, *self.in_sizes, self.channels])

    def per_window(self, t: tf.Tensor) -> tf.Tensor:
        """A tensor shaped like the pooling's output (its layout) as ``(batch, windows, channels, 1)``."""
        return tf.reshape(self.channels_last(t), [-1, len(self.index), self.channels, 1])


def _window_index(in_sizes, out_sizes, ksize, strides, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """``(index, valid)``, both ``(windows, w)``, row-major over the output and over each window's offsets
    (the order in which TensorFlow's max pooling takes the first of equal maxima)."""
    axes_index, axes_valid = [], []
    for size, out, k, s in zip(in_sizes, out_sizes, ksize, strides):
        before = max((out - 1) * s + k - size, 0) // 2 if padding == "SAME" else 0
        at = np.arange(out)[:, None] * s - before + np.arange(k)[None, :]  # (out, k)
        axes_index.append(at)
        axes_valid.append((at >= 0) & (at < size))
    n = len(in_sizes)
    # Broadcast to (out_1, …, out_n, k_1, …, k_n).
    shape = [*out_sizes, *ksize]
    index = np.zeros(shape, np.int64)
    valid = np.ones(shape, bool)
    for d, (at, ok) in enumerate(zip(axes_index, axes_valid)):
        view = [1] * (2 * n)
        view[d], view[n + d] = at.shape
        index = index * in_sizes[d] + np.clip(at, 0, in_sizes[d] - 1).reshape(view)
        valid = valid & ok.reshape(view)
    index, valid = index.reshape(int(np.prod(out_sizes)), -1), valid.reshape(int(np.prod(out_sizes)), -1)
    return np.where(valid, index, int(np.prod(in_sizes))), valid


@cached_multipliers
def _pool_shapley_multipliers(op: tf.Operation) -> tf.Tensor:
    """m of every input of each window, ``(foreground rows, windows, channels, w)``."""
    windows = _Windows(op)
    x, r = (windows.channels_last(t) for t in halves(op.inputs[0]))
    # Padding plays x = r = the least value of its channel: it never decides a maximum.
    spatial = list(range(1, x.shape.rank - 1))
    fill = None if windows.tiles else tf.reshape(tf.reduce_min(tf.minimum(x, r), spatial), [1, -1, windows.channels])
    valid = None if windows.valid is None else windows.valid[:, None, :]
    return shapley_max_multipliers(windows.gather(x, fill), windows.gather(r, fill), valid)


@cached_multipliers
def _window_multipliers(op: tf.Operation):
    """Cross-max, per window: whether x holds the larger max, and m at the chosen argmax."""
    _, pick = _POOL_ROUTE_AND_PICK[op.type]
    attrs = _pool_attrs(op)
    x, r = halves(op.inputs[0])
    mx, mr = halves(op.outputs[0])
    x_wins = mx >= mr
    r_at_argmax_x = pick(orig_input=x, orig_output=mx, grad=r, **attrs)
    x_at_argmax_r = pick(orig_input=r, orig_output=mr, grad=x, **attrs)
    m = tf.where(
        x_wins,
        _cross_max_multiplier(mx, mr, mx, r_at_argmax_x),
        _cross_max_multiplier(mx, mr, x_at_argmax_r, mr),
    )
    return x_wins, m


def _cross_max_pool(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
    """Cross-max through the pooling's own gradient kernels: each window's ΔM / Δx to its chosen argmax."""
    route, _ = _POOL_ROUTE_AND_PICK[op.type]
    attrs = _pool_attrs(op)
    x, r = halves(op.inputs[0])
    mx, mr = halves(op.outputs[0])
    x_wins, m = _window_multipliers(op)
    credit = foreground(grad) * m
    zeros = tf.zeros_like(credit)
    to_x = route(orig_input=x, orig_output=mx, grad=tf.where(x_wins, credit, zeros), **attrs)
    to_r = route(orig_input=r, orig_output=mr, grad=tf.where(x_wins, zeros, credit), **attrs)
    return on_foreground(to_x + to_r)


@cached_multipliers
def _pool_cross_max_multipliers(op: tf.Operation) -> tf.Tensor:
    """Cross-max m of every input of each window that tiles the input, ``(foreground rows, windows, channels, w)``."""
    windows = _Windows(op)
    x, r = (windows.channels_last(t) for t in halves(op.inputs[0]))
    return cross_max_multipliers(windows.gather(x), windows.gather(r))


def _at_inputs(windows: _Windows, per_window: tf.Tensor) -> tf.Tensor:
    """Per-window multipliers of tiling windows at their inputs' places, ``(rows, o_1·k_1, …, o_n·k_n, c)``."""
    n = len(windows.out_sizes)
    m = tf.reshape(per_window, [-1, *windows.out_sizes, windows.channels, *windows.ksize])
    m = tf.transpose(m, [0, *[a for d in range(n) for a in (1 + d, n + 2 + d)], n + 1])
    return tf.reshape(m, [-1, *[o * k for o, k in zip(windows.out_sizes, windows.ksize)], windows.channels])


@cached_multipliers
def _tiled_shapley_multipliers(op: tf.Operation) -> tf.Tensor:
    """The Shapley multipliers of windows that tile the input, at their inputs' places."""
    return _at_inputs(_Windows(op), _pool_shapley_multipliers(op))


@cached_multipliers
def _tiled_cross_max_multipliers(op: tf.Operation) -> tf.Tensor:
    """The cross-max multipliers of windows that tile the input, at their inputs' places."""
    return _at_inputs(_Windows(op), _pool_cross_max_multipliers(op))


def _tiled_pool(op: tf.Operation, grad: tf.Tensor, multipliers: tf.Tensor) -> tf.Tensor:
    """Windows that tile the input: each input's multiplier times its one window's gradient (no scatter)."""
    windows = _Windows(op)
    spread = windows.channels_last(foreground(grad))
    # Repeat one axis at a time, each as a rank-4 tile: a product broadcasting over every alternate axis
    # at once has more axis groups than TensorFlow's CPU kernels take (3-d pooling, or 2-d under
    # tf.vectorized_map), and tf.repeat builds a dozen ops per axis in every backward pass.
    sizes = [*windows.out_sizes, windows.channels]
    for d, k in enumerate(windows.ksize):
        inner = int(np.prod(sizes[d + 1:]))
        spread = tf.tile(tf.reshape(spread, [-1, sizes[d], 1, inner]), [1, 1, k, 1])
        sizes[d] *= k
    covered = multipliers * tf.reshape(spread, [-1, *sizes])
    uncovered = [[0, size - o * k] for size, o, k in zip(windows.in_sizes, windows.out_sizes, windows.ksize)]
    to_inputs = tf.pad(covered, [[0, 0], *uncovered, [0, 0]]) if any(b for _, b in uncovered) else covered
    return on_foreground(windows.channels_last(to_inputs, back=True))


def _shapley_pool(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
    """Each window's multipliers times its incoming gradient, summed over the windows each input is in."""
    windows = _Windows(op)
    if windows.tiles:
        return _tiled_pool(op, grad, _tiled_shapley_multipliers(op))
    per_window = _pool_shapley_multipliers(op) * windows.per_window(foreground(grad))
    return on_foreground(windows.channels_last(windows.scatter(per_window), back=True))


def _cross_max(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
    """Cross-max: by the precomputed multipliers where windows tile the input (one product per pass), else
    through the pooling's own gradient kernels."""
    windows = _Windows(op)
    if windows.w is not None and windows.tiles:
        return _tiled_pool(op, grad, _tiled_cross_max_multipliers(op))
    return _cross_max_pool(op, grad)


def _max_pool_plan(op: tf.Operation, varying: tuple[bool, ...]):
    return Refusal("it uses explicit padding") if op.get_attr("padding") not in (b"SAME", b"VALID") else APPLY


@rule(*_POOL_ROUTE_AND_PICK, family="pooling", plan=_max_pool_plan, xla_inexact=XLA_MOVES_WINNERS,
      doc=f"{RULE_DOC}, per pooling window")
def max_pool(op: tf.Operation, grad: tf.Tensor):
    """Per window: Shapley for w ≤ SHAPLEY_MAX_WINDOW inputs (shapes known when tracing), else cross-max."""
    if _uses_shapley(_Windows(op).w, DEFAULT_RULES):
        return [_shapley_pool(op, grad)]
    return [_cross_max(op, grad)]


@rule(*_POOL_ROUTE_AND_PICK, family="pooling", plan=_max_pool_plan, xla_inexact=XLA_MOVES_WINNERS,
      rules=CROSS_MAX_RULES, doc=f"{CROSS_MAX_DOC}, per pooling window")
def max_pool_cross(op: tf.Operation, grad: tf.Tensor):
    """Cross-max per window, whatever its size."""
    return [_cross_max(op, grad)]
