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
    """Make symbolic ``tf.gradients`` use the gradient registered as ``gradient_name`` for ``op``.

    A call op of a nested ``tf.function`` carries its own gradient function in the Python
    attribute ``_gradient_function``, which ``ops.get_gradient_function`` reads before the
    attribute; it is cleared on this op (of the graph being explained) only.
    """
    set_string_attr(op, GRADIENT_OP_TYPE_ATTR, gradient_name)
    if getattr(op, "_gradient_function", None) is not None:
        op._gradient_function = None  # noqa: SLF001


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


def write_saved_model_fingerprint(export_dir) -> None:
    """Recompute a SavedModel's ``fingerprint.pb`` from its files (``fingerprinting_utils.write_fingerprint``),
    after ``saved_model.pb`` was edited."""
    from tensorflow.python.saved_model import fingerprinting_utils

    fingerprinting_utils.write_fingerprint(str(export_dir))


def branch_graphs(op: tf.Operation):
    """The branch ``FuncGraph``s that the gradient of an ``If``/``StatelessIf`` or ``Case``/``StatelessCase``
    op will differentiate, or None.

    cond_v2 keeps an If's branch graphs on the op (``_true_graph``, ``_false_graph``); a Case's
    gradient rebuilds its branches from the library unless the op caches them as
    ``_branch_graph_<i>`` (``cond_v2.get_func_graphs``), so copies are built and cached there,
    on this op only.
    """
    if op.type in ("If", "StatelessIf"):
        branches = [getattr(op, "_true_graph", None), getattr(op, "_false_graph", None)]
        return None if None in branches else branches
    shapes = [t.shape for t in op.inputs[1:]]  # input 0 is the branch index
    for i, branch in enumerate(op.get_attr("branches")):
        if getattr(op, f"_branch_graph_{i}", None) is None:
            setattr(op, f"_branch_graph_{i}", _function_copy(op, branch.name, shapes))
    return [getattr(op, f"_branch_graph_{i}") for i in range(len(op.get_attr("branches")))]


def called_function_copy(op: tf.Operation):
    """A private ``FuncGraph`` copy of the function a ``PartitionedCall``/``StatefulPartitionedCall`` runs.

    A copy, because the function's own graph is shared with every other caller of it: the
    rewrite may mark the copy's ops without touching anything outside this explanation.
    """
    return _function_copy(op, op.get_attr("f").name, [t.shape for t in op.inputs])


def _function_copy(op: tf.Operation, function_name: str, input_shapes):
    """A fresh ``FuncGraph`` of a library function, found from ``op``'s graph outwards
    (``control_flow_util_v2.get_func_graph``, which cond_v2 and while_v2 use the same way)."""
    from tensorflow.python.ops import control_flow_util_v2

    return control_flow_util_v2.get_func_graph(op, input_shapes, function_name)


def keras2_safe_mode(safe_mode: bool):
    """tf_keras's thread-local safe-mode scope (``serialization_lib.SafeModeScope``): its legacy
    ``.h5``/SavedModel loader ignores ``load_model(safe_mode=...)`` and reads the flag from here."""
    from tf_keras.src.saving import serialization_lib

    return serialization_lib.SafeModeScope(safe_mode)


def profiled_op_seconds(logdir: str) -> dict[str, float]:
    """Seconds per op type that TensorFlow's profiler recorded on the host's compute threads, read from
    the ``.xplane.pb`` under ``logdir`` that ``tf.profiler.experimental.start(logdir)`` wrote (its
    ``tsl.profiler`` protobuf; used by ``tools/bench.py --profile``). Ops are the events named
    ``op_name:OpType``."""
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    seconds: dict[str, float] = {}
    for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
        with open(path, "rb") as f:
            space = xplane_pb2.XSpace.FromString(f.read())
        for plane in space.planes:
            if plane.name != "/host:CPU":
                continue
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    meta = plane.event_metadata.get(event.metadata_id)
                    name = meta.name if meta else ""
                    if name.count(":") != 1:  # the executor's own events (ExecutorState::Process, …), not an op
                        continue
                    op_type = name.split(":")[1]
                    seconds[op_type] = seconds.get(op_type, 0.0) + event.duration_ps / 1e12
    return seconds
