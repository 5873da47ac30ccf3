"""Every touch of a TensorFlow private API, in one place.

Each function here has a test in ``tests/test_tf_private.py`` that fails loudly when
TensorFlow changes the behaviour relied on.
"""

from __future__ import annotations

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
