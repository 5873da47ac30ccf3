"""Masks and conditions: boolean and integer tensors computed from the explained inputs.

A mask (``Masking``, ``Embedding(mask_zero=True)``, a padding test, ``x > 0`` in a
``tf.where``) is piecewise constant and has no gradient. Comparisons and logical ops are
kept as they are; what matters is where a mask re-enters float arithmetic:

* the condition of ``Select``: where it agrees for a sample and its reference, the op is
  linear in the branch taken. Where it switches, the whole ``Δy = y(x) − y(r)`` is sent
  through one branch with ``m = Δy / Δbranch``: the branch the sample takes, or the other
  one where the sample's branch did not change. The sums stay exact; for
  ``where(t > 0, t, 0.1·t)`` this is exactly the rescale rule of leaky relu, and for a
  recurrent mask it credits the step's inputs. If neither branch changed but the output
  did, the jump cannot be attributed and explaining stops with
  :class:`tfshap.MaskMismatchError`;
* a ``Cast`` of a mask to a float (a mask multiplying a value): it must be the same for the
  sample and its reference, checked at run time, with the same error otherwise;
* a ``OneHot`` of integer indices that vary (a mixture of experts routing each token to the
  experts of its top-k router scores): where a sample and its reference pick the same
  indices, the one-hot output is the same for both and passes nothing back; that is checked
  at run time, with the same error where they do not.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.batch_axis import reading_refusal, row_axis
from tfshap.errors import MISMATCH_MARKER
from tfshap.graph import batch_axis_refusal
from tfshap.pair import (
    assert_same_for_sample_and_reference,
    cached_multipliers,
    close,
    halves,
    on_foreground,
    ratio,
    rows_along,
    unbroadcast,
    varying_inputs,
)
from tfshap.registry import ALIGNED_ROWS, ANY_ROWS, APPLY, KEEP, Refusal, linear, rule

#: Why ``jit_compile=True`` is refused wherever a mask is checked.
CHECKED_AT_RUN_TIME = "its mask is checked at run time (Assert ops), which XLA drops"

COMPARISONS = ("Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "IsNan", "IsInf", "IsFinite")
LOGICAL = ("LogicalAnd", "LogicalOr", "LogicalNot")


@cached_multipliers
def _select_multipliers(op: tf.Operation) -> tuple[tf.Tensor, tf.Tensor, tf.Operation]:
    condition = op.inputs[0]
    shape = tf.shape(op.outputs[0])
    c_x, c_r = halves(tf.broadcast_to(condition, shape))
    a_x, a_r = _halves_of(op, 1, shape)
    b_x, b_r = _halves_of(op, 2, shape)
    y_x, y_r = halves(op.outputs[0])
    a_still, b_still = close(a_x, a_r), close(b_x, b_r)
    switched = tf.not_equal(c_x, c_r)
    # Where the condition switches, all of Δy goes through one branch: the one the sample
    # takes, or the other where the sample's branch did not change.
    through_then = tf.logical_not(a_still) & (c_x | b_still)
    through_else = tf.logical_not(through_then) & tf.logical_not(b_still)
    zeros = tf.zeros_like(y_x)
    m_then = tf.where(switched, ratio(y_x - y_r, a_x - a_r, tf.logical_not(through_then), zeros),
                      tf.cast(c_x, y_x.dtype))
    m_else = tf.where(switched, ratio(y_x - y_r, b_x - b_r, tf.logical_not(through_else), zeros),
                      tf.cast(~c_x, y_x.dtype))
    stuck = switched & a_still & b_still & tf.logical_not(close(y_x, y_r))
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(stuck)), [f"{MISMATCH_MARKER} {op.name}"])
    return on_foreground(m_then), on_foreground(m_else), check


def _halves_of(op: tf.Operation, index: int, shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sample and reference values of a branch, broadcast to the output's shape (a constant's halves are equal)."""
    return halves(tf.broadcast_to(op.inputs[index], shape))


def _select_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if not varying[0]:
        return KEEP  # linear in both branches
    if op.type == "Select" and op.inputs[0].shape.rank not in (None, op.inputs[1].shape.rank):
        return Refusal("Select with a vector condition picks whole rows, which cannot be checked pair by pair")
    return APPLY


@rule("Select", "SelectV2", family="mask", plan=_select_plan, xla_inexact=CHECKED_AT_RUN_TIME, rows=ALIGNED_ROWS)
def switching_select(op: tf.Operation, grad: tf.Tensor):
    """m = ∂out/∂branch where the condition agrees; where it switches, m = Δy / Δbranch through one branch"""
    with rows_along(op):
        m_then, m_else, check = _select_multipliers(op)
    with tf.control_dependencies([check]):
        then_grad, else_grad = m_then * grad, m_else * grad
    flags = varying_inputs(op)
    return [
        None,
        unbroadcast(then_grad, tf.shape(op.inputs[1])) if flags[1] else None,
        unbroadcast(else_grad, tf.shape(op.inputs[2])) if flags[2] else None,
    ]


def _cast_plan(op: tf.Operation, varying: tuple[bool, ...]):
    source, target = op.inputs[0].dtype, op.outputs[0].dtype
    if not target.is_floating or source.is_floating:
        return KEEP  # float to float is linear; a cast to a mask or an index passes nothing back
    # A mask re-enters float arithmetic here. TensorFlow never differentiates through a
    # non-float tensor, so the check cannot ride on the gradient: it is added to the traced
    # function itself, whose automatic control dependencies run every stateful op.
    if op.graph is not tf.compat.v1.get_default_graph():
        return Refusal(f"it casts a {source.name} mask to {target.name} inside a loop body, where it cannot be checked")
    return _checked_mask(op, op.inputs[0], "x")


def _checked_mask(op: tf.Operation, mask: tf.Tensor, name: str):
    """APPLY, with a run-time check that a sample and its reference agree on ``mask``; or why its rows cannot
    be read."""
    unreadable = reading_refusal(mask, name, leading=False)
    if unreadable:
        return Refusal(unreadable)
    assert_same_for_sample_and_reference(op, mask, row_axis(mask))
    return APPLY


@rule("Cast", family="mask", plan=_cast_plan, xla_inexact=CHECKED_AT_RUN_TIME, rows=ANY_ROWS)
def mask_to_float(op: tf.Operation, grad: tf.Tensor):
    """m = 1 float to float; a mask cast to float must be the same for sample and reference (checked)"""
    return [None]  # nothing flows back into a mask


def _one_hot_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if any(varying[1:]):
        return Refusal("its depth, on value or off value varies with the explained inputs")
    if op.graph is not tf.compat.v1.get_default_graph():
        return Refusal("its indices vary with the explained inputs inside a loop body, where they cannot be checked")
    return _checked_mask(op, op.inputs[0], "indices")


@rule("OneHot", family="mask", plan=_one_hot_plan, xla_inexact=CHECKED_AT_RUN_TIME, rows=ANY_ROWS)
def one_hot(op: tf.Operation, grad: tf.Tensor):
    """indices that vary (routing): the same for sample and reference (checked), so the one-hot output does
    too: m = 0"""
    return [None] * len(op.inputs)  # nothing flows back into indices, nor into the constant depth and values


linear(*COMPARISONS, *LOGICAL, family="mask", doc="a mask: no gradient; checked where it meets floats")
linear("Any", "All", family="mask", when=batch_axis_refusal, doc="a mask reduced along non-batch axes: no gradient")
