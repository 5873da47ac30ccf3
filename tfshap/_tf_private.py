"""Every touch of a TensorFlow private API, in one place.

Each function here has a test in ``tests/test_tf_private.py`` that fails loudly when
TensorFlow changes the behaviour relied on.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2

#: The node attribute that ``ops.get_gradient_function`` reads before the op type when it
#: looks up a gradient (it is how ``Graph.gradient_override_map`` works).
GRADIENT_OP_TYPE_ATTR = "_gradient_op_type"


def set_string_attr(op: tf.Operation, name: str, value: str) -> None:
    """Set a string attribute on an op already in a graph (``Operation._set_attr``)."""
    op._set_attr(name, attr_value_pb2.AttrValue(s=value.encode()))  # noqa: SLF001


def get_string_attr(op: tf.Operation, name: str) -> str | None:
    """The string attribute ``name`` of ``op``, or None where it has none."""
    try:
        value = op.get_attr(name)
    except ValueError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def override_gradient(op: tf.Operation, gradient_name: str) -> None:
    """Make symbolic ``tf.gradients`` use the gradient registered as ``gradient_name`` for ``op``."""
    set_string_attr(op, GRADIENT_OP_TYPE_ATTR, gradient_name)


def registered_gradient_names() -> frozenset[str]:
    """Names in TensorFlow's gradient registry (``ops._gradient_registry``)."""
    from tensorflow.python.framework import ops

    return frozenset(ops._gradient_registry.list())  # noqa: SLF001


def while_body_and_cond(op: tf.Operation):
    """The body and cond ``FuncGraph``s of a ``While``/``StatelessWhile`` op built by while_v2
    (the Python attributes ``_body_graph`` and ``_cond_graph`` it sets on the op), or None."""
    body = getattr(op, "_body_graph", None)
    cond = getattr(op, "_cond_graph", None)
    if body is None or cond is None:
        return None
    return body, cond


# Keras private attributes that choose a fused recurrent kernel (cuDNN on GPU; in tf_keras a
# backend-selecting nested function) whose gates no rule can see. While tracing for an
# explanation they are set to the standard cell, which runs as a While loop of plain ops.
_FUSED_RNN_SWITCHES = (
    ("_could_use_gpu_kernel", lambda value: value is True, False),  # tf_keras LSTM and GRU
    ("use_cudnn", lambda value: value in ("auto", True), False),  # Keras 3 LSTM and GRU
)


@contextlib.contextmanager
def standard_rnn_cells(layers):
    """Within the block, every Keras LSTM/GRU in ``layers`` runs its standard cell; restored after."""
    saved = []
    try:
        for layer in layers:
            for attr, is_fused, standard in _FUSED_RNN_SWITCHES:
                if is_fused(getattr(layer, attr, None)):
                    saved.append((layer, attr, getattr(layer, attr)))
                    setattr(layer, attr, standard)
        yield
    finally:
        for layer, attr, value in reversed(saved):
            setattr(layer, attr, value)
