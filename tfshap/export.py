"""``CompiledExplainer.export``: a SavedModel that explains without tfshap.

The exported ``explain`` function calls the explainer's chunk function, whose body already
holds the backward pass that ``tf.gradients`` built with tfshap's rules when it was traced
(loop bodies included). A SavedModel stores that body as plain ops, so loading needs
neither tfshap nor its gradient registrations. The ``_gradient_op_type`` attributes that
named tfshap's gradients are removed from the saved graph: nothing needs them any more,
and without them TensorFlow has no reason to warn about unsaved custom gradients.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from . import _tf_private

SAVED_MODEL_FILE = "saved_model.pb"


def export(explainer, path: str | os.PathLike) -> Path:
    """Write ``explainer`` as a SavedModel at ``path`` (with its background baked in); returns the path."""
    method = getattr(explainer, "method", "deep")
    if method != "deep":
        raise ValueError(f"export supports method='deep' only; this explainer uses method={method!r}")
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"cannot export to {str(path)!r}: expected a new or empty directory")
    module = ExplainModule(explainer)
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.serve},
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    strip_gradient_overrides(path)
    return path


class ExplainModule(tf.Module):
    """``explain(x)`` and ``serve(x...)``: every (sample, background row) pair, averaged in the graph."""

    def __init__(self, explainer):
        super().__init__(name="tfshap_explainer")
        specs = [tf.TensorSpec(s.shape, s.dtype) for s in explainer.traced.input_specs]
        self.background = [tf.Variable(b, trainable=False, name=f"background_{i}") for i, b in enumerate(explainer.background)]
        explain_rows = _explain_rows_fn(explainer, self.background)
        several = len(specs) > 1

        def explain(x):
            return explain_rows(list(x) if several else [x])

        def serve(*xs):
            result = explain_rows(list(xs))
            values = result.pop("values")
            named = {f"values_{i}": v for i, v in enumerate(values)} if several else {"values": values}
            # TF Serving's row format ("instances") needs every output to share the batch axis.
            base = tf.broadcast_to(result["base_values"], tf.shape(result["outputs"]))
            return {**named, "outputs": result["outputs"], "base_values": base}

        names = [f"x_{i}" for i in range(len(specs))] if several else ["x"]
        self.explain = tf.function(explain, input_signature=[specs if several else specs[0]], autograph=False)
        self.serve = tf.function(
            serve, input_signature=[tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(specs, names)], autograph=False
        )
        # The model's weights, as the traced functions read them: tracked, so they are saved.
        self.weights = list(self.explain.get_concrete_function().graph.variables)


def _explain_rows_fn(explainer, background: list[tf.Variable]):
    """A graph-mode function: samples → dict of values (per input), outputs, base_values."""
    n_outputs = explainer.n_outputs
    chunk = explainer.program.chunk(n_outputs)
    forward = explainer.program.forward
    n_background = int(background[0].shape[0])
    samples_per_step = max(1, explainer.batch_size(n_outputs) // n_background)
    value_specs = tf.nest.flatten(chunk.structured_outputs)

    def explain_rows(samples: list[tf.Tensor]) -> dict:
        n = tf.shape(samples[0])[0]
        checks = [tf.debugging.assert_positive(n, message="explain needs at least one row of samples")]
        with tf.control_dependencies(checks):
            steps = (n + samples_per_step - 1) // samples_per_step
        reference = [b.read_value() for b in background]
        pair_background = tf.tile(tf.range(n_background), [samples_per_step])

        def step(i, parts):
            start = i * samples_per_step
            block = [s[start : start + samples_per_step] for s in samples]
            m = tf.shape(block[0])[0]
            sums = chunk(
                block,
                reference,
                tf.repeat(tf.range(m), n_background),
                pair_background[: m * n_background],
                tf.tile(tf.range(n_outputs)[None], [m, 1]),
            )
            return i + 1, [part.write(i, s) for part, s in zip(parts, sums)]

        parts = [
            tf.TensorArray(spec.dtype, size=steps, infer_shape=False, element_shape=spec.shape) for spec in value_specs
        ]
        _, parts = tf.while_loop(lambda i, _: i < steps, step, [tf.constant(0), parts])
        values = [part.concat() / tf.cast(n_background, spec.dtype) for part, spec in zip(parts, value_specs)]
        outputs = forward(samples)
        outputs.set_shape([None, n_outputs])
        return {
            "values": values if len(values) > 1 else values[0],
            "outputs": outputs,
            "base_values": tf.reduce_mean(forward(reference), axis=0),
        }

    return explain_rows


def strip_gradient_overrides(path: str | os.PathLike) -> int:
    """Remove every ``_gradient_op_type`` attribute from the saved graph; returns how many were removed."""
    file = Path(path) / SAVED_MODEL_FILE
    saved = saved_model_pb2.SavedModel.FromString(file.read_bytes())
    marked = [node for node in _nodes(saved) if _tf_private.GRADIENT_OP_TYPE_ATTR in node.attr]
    for node in marked:
        del node.attr[_tf_private.GRADIENT_OP_TYPE_ATTR]
    if marked:
        file.write_bytes(saved.SerializeToString())
        _tf_private.write_saved_model_fingerprint(path)
    return len(marked)


def gradient_overrides(path: str | os.PathLike) -> list[str]:
    """The ``_gradient_op_type`` values left in a SavedModel's graph (none after ``export``)."""
    saved = saved_model_pb2.SavedModel.FromString((Path(path) / SAVED_MODEL_FILE).read_bytes())
    attr = _tf_private.GRADIENT_OP_TYPE_ATTR
    return [node.attr[attr].s.decode() for node in _nodes(saved) if attr in node.attr]


def _nodes(saved):
    """Every node of every graph and function in a SavedModel proto."""
    for meta_graph in saved.meta_graphs:
        graph = meta_graph.graph_def
        yield from graph.node
        for function in graph.library.function:
            yield from function.node_def
