"""Max pooling and max/min reductions: the cross-max rule.

Credit goes to the argmax of whichever of ``x`` and ``r`` holds the larger max ``M``:
with ``i`` that position, ``m_i = (Mx − Mr) / (x_i − r_i)`` and every other ``m`` is 0. Since
``|x_i − r_i| ≥ |Mx − Mr|``, ``m_i`` lies in [0, 1] and ``Σ m·Δ = ΔM`` exactly. A minimum is
a maximum of the negation.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfshap.graph import batch_axis_refusal, reduced_axes
from tfshap.pair import cached_multipliers, foreground, halves, on_foreground, ratio
from tfshap.registry import APPLY, Refusal, rule


def _cross_max_multiplier(mx, mr, x_at, r_at):
    """m at the chosen position: ΔM / Δx there; 1 where both are equal (the true gradient)."""
    delta_at = x_at - r_at
    return ratio(mx - mr, delta_at, tf.equal(delta_at, 0), tf.ones_like(delta_at))


#: Why ``jit_compile=True`` is refused for the cross-max rules (misses of 1e-4 in float32 were measured).
XLA_MOVES_WINNERS = "XLA's fused recomputation does not keep the winning position of each window fixed"


def _reduction_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if varying[1]:
        return Refusal("its reduction axes vary with the explained inputs")
    reason = batch_axis_refusal(op)
    return Refusal(reason) if reason else APPLY


@rule("Max", "Min", family="pooling", plan=_reduction_plan, xla_inexact=XLA_MOVES_WINNERS)
def reduce_max(op: tf.Operation, grad: tf.Tensor):
    """Cross-max over the reduced axes: m = (Mx − Mr) / (x_i − r_i) at the argmax i of the larger max."""
    sign = -1.0 if op.type == "Min" else 1.0
    # m is a ratio of differences, the same for the values and their negation.
    return [_cross_max(sign * op.inputs[0], reduced_axes(op), grad), None]


def _cross_max(paired: tf.Tensor, axes: list, grad: tf.Tensor) -> tf.Tensor:
    """The multipliers of the max of ``paired`` over ``axes`` times ``grad``, at the input's shape."""
    rank = paired.shape.rank
    kept = [a for a in range(rank) if a not in axes]
    perm = kept + axes
    moved = tf.transpose(paired, perm)
    moved_shape = tf.shape(moved)
    flat = tf.reshape(moved, tf.concat([moved_shape[: len(kept)], [-1]], 0))
    x, r = halves(flat)
    arg_x, arg_r = tf.argmax(x, -1), tf.argmax(r, -1)
    mx, mr = tf.reduce_max(x, -1), tf.reduce_max(r, -1)
    chosen = tf.where(mx >= mr, arg_x, arg_r)
    x_at = tf.gather(x, chosen, batch_dims=len(kept))
    r_at = tf.gather(r, chosen, batch_dims=len(kept))
    m = _cross_max_multiplier(mx, mr, x_at, r_at)
    g = foreground(tf.reshape(grad, tf.shape(flat)[:-1]))
    scattered = on_foreground(tf.one_hot(chosen, tf.shape(flat)[-1], dtype=grad.dtype) * (m * g)[..., None])
    return tf.transpose(tf.reshape(scattered, moved_shape), np.argsort(perm))


_POOL_ROUTE_AND_PICK = {
    # route: send a per-window value to the argmax of orig_input; pick: read a tensor at that argmax.
    "MaxPool": (tf.raw_ops.MaxPoolGrad, tf.raw_ops.MaxPoolGradGrad),
    "MaxPool3D": (tf.raw_ops.MaxPool3DGrad, tf.raw_ops.MaxPool3DGradGrad),
}


def _pool_attrs(op: tf.Operation) -> dict:
    attrs = {name: op.get_attr(name) for name in ("ksize", "strides")}
    attrs.update({name: op.get_attr(name).decode() for name in ("padding", "data_format")})
    return attrs


@cached_multipliers
def _window_multipliers(op: tf.Operation):
    """Per window: whether x holds the larger max, and m at the chosen argmax."""
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


def _max_pool_plan(op: tf.Operation, varying: tuple[bool, ...]):
    return Refusal("it uses explicit padding") if op.get_attr("padding") not in (b"SAME", b"VALID") else APPLY


@rule(*_POOL_ROUTE_AND_PICK, family="pooling", plan=_max_pool_plan, xla_inexact=XLA_MOVES_WINNERS)
def max_pool(op: tf.Operation, grad: tf.Tensor):
    """Cross-max per window: m = (Mx − Mr) / (x_i − r_i) at the argmax i of the larger window max."""
    route, _ = _POOL_ROUTE_AND_PICK[op.type]
    attrs = _pool_attrs(op)
    x, r = halves(op.inputs[0])
    mx, mr = halves(op.outputs[0])
    x_wins, m = _window_multipliers(op)
    credit = foreground(grad) * m
    zeros = tf.zeros_like(credit)
    to_x = route(orig_input=x, orig_output=mx, grad=tf.where(x_wins, credit, zeros), **attrs)
    to_r = route(orig_input=r, orig_output=mr, grad=tf.where(x_wins, zeros, credit), **attrs)
    return [on_foreground(to_x + to_r)]


def _top_k_plan(op: tf.Operation, varying: tuple[bool, ...]):
    k = tf.get_static_value(op.inputs[1])
    if varying[1]:
        return Refusal("its k varies with the explained inputs")
    if k != 1:
        k_text = "unknown when compiling" if k is None else f"= {k}"
        return Refusal(
            f"top_k with k {k_text} (tf.sort, tf.math.top_k) returns order statistics: no exact rule "
            "assigns their change to the inputs whose order decides them; only k = 1, the maximum, is exact"
        )
    if op.inputs[0].shape.rank is None or op.inputs[0].shape.rank < 2:
        return Refusal("its last axis is the batch axis, or its rank is unknown")
    return APPLY


@rule("TopKV2", family="pooling", plan=_top_k_plan, xla_inexact=XLA_MOVES_WINNERS)
def top_1(op: tf.Operation, grad_values: tf.Tensor, grad_indices: tf.Tensor):
    """k = 1: cross-max over the last axis (m as for Max); k > 1 refused"""
    return [_cross_max(op.inputs[0], [op.inputs[0].shape.rank - 1], grad_values), None]
