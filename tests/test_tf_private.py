"""Each TensorFlow private API that tfshap touches, checked so that a TensorFlow change fails loudly.

The gradients these tests register get a name no other run or test can take (a uuid), and
leave TensorFlow's gradient registry as they found it (:func:`registered_gradient`).
"""

import contextlib
import uuid

import numpy as np
import tensorflow as tf

from tfshap import _tf_private


@contextlib.contextmanager
def registered_gradient(fn):
    """Register ``fn`` with ``tf.RegisterGradient`` under a fresh name for the block, then remove it.

    TensorFlow has no public way to unregister a gradient: the name is popped from the dict
    behind ``ops._gradient_registry`` (the private registry ``_tf_private.registered_gradient_names``
    lists). A TensorFlow that changes it fails the check below, here, not silently elsewhere.
    """
    from tensorflow.python.framework import ops

    name = f"tfshap/test/{uuid.uuid4().hex}"
    tf.RegisterGradient(name)(fn)
    try:
        yield name
    finally:
        ops._gradient_registry._registry.pop(name)  # noqa: SLF001
    assert name not in _tf_private.registered_gradient_names()


def _double(op, *grads):
    return [2.0 * g for g in grads]


def test_registered_gradient_leaves_the_registry_as_it_was():
    before = _tf_private.registered_gradient_names()
    with registered_gradient(_double) as name:
        assert _tf_private.registered_gradient_names() == before | {name}
    assert _tf_private.registered_gradient_names() == before


def test_set_and_get_string_attr_roundtrip():
    @tf.function(autograph=False)
    def f(x):
        y = tf.nn.relu(x)
        _tf_private.set_string_attr(y.op, "_tfshap_probe", "10")
        assert _tf_private.get_string_attr(y.op, "_tfshap_probe") == "10"
        assert _tf_private.get_string_attr(y.op, "_tfshap_absent") is None
        return y

    f.get_concrete_function(tf.TensorSpec([None, 2], tf.float64))


def test_override_gradient_is_honoured_by_tf_gradients_in_tf_function():
    with registered_gradient(_double) as name:

        @tf.function(autograph=False)
        def f(x):
            y = tf.nn.relu(x)
            _tf_private.override_gradient(y.op, name)
            return tf.gradients(y, x)[0]

        x = tf.constant([[1.0, -1.0]], tf.float64)
        np.testing.assert_array_equal(f(x).numpy(), [[2.0, 2.0]])


def test_gradient_tape_ignores_the_override():
    """DESIGN.md fact 2: the tape looks gradients up by op type, which is why tfshap uses tf.gradients."""
    with registered_gradient(_double) as name:

        @tf.function(autograph=False)
        def f(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.relu(x)
            _tf_private.override_gradient(y.op, name)
            return tape.gradient(y, x)

        np.testing.assert_array_equal(f(tf.constant([[1.0, -1.0]], tf.float64)).numpy(), [[1.0, 0.0]])


def test_registered_gradient_names_lists_tfshap_rules():
    import tfshap  # noqa: F401  (registers the rules)

    names = _tf_private.registered_gradient_names()
    assert "tfshap/elementwise/Relu" in names
    assert "Relu" in names


@tf.function(autograph=False)
def _nested_tanh(x):
    return tf.tanh(x)


def test_override_gradient_replaces_a_nested_function_calls_own_gradient_on_that_op_only():
    x = tf.constant([[0.3, -1.0]], tf.float64)
    with registered_gradient(_double) as name:

        @tf.function(autograph=False)
        def f(x):
            y = _nested_tanh(x)
            assert y.op.type == "PartitionedCall" and y.op._gradient_function is not None
            _tf_private.override_gradient(y.op, name)
            return tf.gradients(y, x)[0]

        np.testing.assert_array_equal(f(x).numpy(), [[2.0, 2.0]])
    with tf.GradientTape() as tape:  # the nested function elsewhere keeps its true gradient
        tape.watch(x)
        y = _nested_tanh(x)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), 1 - np.tanh(x.numpy()) ** 2)


def test_called_function_copy_is_a_fresh_graph_of_the_callee():
    @tf.function(autograph=False)
    def f(x):
        y = _nested_tanh(x)
        copy = _tf_private.called_function_copy(y.op)
        assert copy is not _tf_private.called_function_copy(y.op)
        assert [op.type for op in copy.get_operations() if op.type == "Tanh"] == ["Tanh"]
        assert len(copy.inputs) == 1 and copy.inputs[0].shape.as_list() == [None, 2]
        return y

    f.get_concrete_function(tf.TensorSpec([None, 2], tf.float64))


def test_branch_graphs_are_the_graphs_the_cond_gradient_differentiates():
    with registered_gradient(_double) as name:

        @tf.function(autograph=False)
        def f(x, index):
            y_if = tf.cond(index > 0, lambda: tf.tanh(x), lambda: tf.sigmoid(x))
            y_case = tf.switch_case(index, [lambda: tf.sigmoid(x), lambda: tf.tanh(x)])
            for y in (y_if, y_case):
                op = y.op if y.op.type.endswith(("If", "Case")) else y.op.inputs[0].op
                for branch in _tf_private.branch_graphs(op):
                    for inner in branch.get_operations():
                        if inner.type in ("Tanh", "Sigmoid"):
                            _tf_private.override_gradient(inner, name)
            return tf.gradients(y_if, x)[0], tf.gradients(y_case, x)[0]

        for grad in f(tf.constant([0.5, -2.0], tf.float64), tf.constant(1)):
            np.testing.assert_array_equal(grad.numpy(), [2.0, 2.0])


def test_write_saved_model_fingerprint_follows_an_edited_saved_model(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path))
    before = tf.saved_model.experimental.read_fingerprint(str(tmp_path)).saved_model_checksum
    pb = tmp_path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    saved.meta_graphs[0].meta_info_def.meta_graph_version = "edited"
    pb.write_bytes(saved.SerializeToString())
    _tf_private.write_saved_model_fingerprint(tmp_path)
    assert tf.saved_model.experimental.read_fingerprint(str(tmp_path)).saved_model_checksum not in (0, before)
    assert float(tf.saved_model.load(str(tmp_path)).v.numpy()) == 1.0


def test_keras2_safe_mode_is_the_flag_tf_keras_legacy_loaders_read():
    from tf_keras.src.saving import serialization_lib

    before = serialization_lib.in_safe_mode()
    with _tf_private.keras2_safe_mode(True):
        assert serialization_lib.in_safe_mode() is True
        with _tf_private.keras2_safe_mode(False):
            assert serialization_lib.in_safe_mode() is False
        assert serialization_lib.in_safe_mode() is True
    assert serialization_lib.in_safe_mode() == before


def test_profiled_op_seconds_reads_the_op_types_the_profiler_recorded(tmp_path):
    """The profiler's XSpace protobuf still names host compute events by op type (the kernel's)."""
    x = tf.random.stateless_normal([256, 256], seed=[1, 2])
    matmul = tf.function(lambda a: tf.nn.relu(tf.matmul(a, a)))
    matmul(x)
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(3):
        matmul(x).numpy()
    tf.profiler.experimental.stop()
    seconds = _tf_private.profiled_op_seconds(str(tmp_path))
    # oneDNN's kernels run as _MklMatMul, or fuse the ReLU into a _MklFusedMatMul
    assert sum(s for op_type, s in seconds.items() if "MatMul" in op_type) > 0.0, seconds
    assert sum(seconds.values()) < 60.0  # picoseconds read as picoseconds, not as seconds
