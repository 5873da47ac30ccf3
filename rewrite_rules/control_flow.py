"""Loops, branches, nested functions, and the TensorList ops that carry loop state.

A ``While`` op keeps TensorFlow's gradient: while_v2 differentiates the body graph with
symbolic gradients, which honour the rules the rewrite installs on the body's ops, so the
multipliers flow through every iteration. The loop's trip count must not depend on the
explained inputs. TensorList ops only move tensors in and out of lists: linear. ``If`` and
``Case`` keep their gradient too, which differentiates the branch graphs the rewrite
reached, as long as the branch taken does not vary. A nested ``tf.function`` (a call op)
shares its graph with every other caller, so the rewrite marks a private copy of it, and
the call's gradient inlines that copy and differentiates it.
"""

from __future__ import annotations

import tensorflow as tf

from tfshap.registry import ANY_ROWS, KEEP, Refusal, linear, rule
from tfshap.rewrite import called_copy

linear("While", "StatelessWhile", family="control_flow", doc="m flows through the body's rules, iteration by iteration")

# Linear in the list handle and the element tensors; indices, shapes and lengths are constants.
_LIST_DOC = "m = ∂out/∂in (moves tensors in and out of a list)"
linear("TensorListFromTensor", "TensorListStack", "TensorListGetItem", inputs=(0,), family="control_flow",
       doc=_LIST_DOC)
linear("TensorListSetItem", inputs=(0, 2), family="control_flow", doc=_LIST_DOC)


def _branch_plan(op: tf.Operation, varying: tuple[bool, ...]):
    if varying[0]:
        return Refusal("which branch runs depends on the explained inputs, so a sample and its reference may differ")
    return KEEP


linear("If", "StatelessIf", "Case", "StatelessCase", family="control_flow", plan=_branch_plan,
       doc="m flows through the rules of the branch taken")


@rule("PartitionedCall", "StatefulPartitionedCall", family="control_flow", rows=ANY_ROWS)  # the copy's rules read them
def inlined_call(op: tf.Operation, *grads):
    """m flows through the rules of a private copy of the called function"""
    copy = called_copy(op)
    # One distinct tensor per argument: the same tensor passed twice must not be counted twice.
    arguments = [tf.identity(t) for t in op.inputs]
    outputs = tf.graph_util.import_graph_def(
        copy.as_graph_def(),
        input_map={inner.name: outer for inner, outer in zip(copy.inputs, arguments)},
        return_elements=[t.name for t in copy.outputs],
        name=op.name.replace("/", "_") + "_tfshap_inlined",
    )
    grads = [tf.zeros_like(o) if g is None else g for o, g in zip(outputs, grads)]
    return tf.gradients(outputs, arguments, grad_ys=grads)
