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
from .runner import tile_shape

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
    batch_size = explainer.batch_size(n_outputs)
    most_samples_per_tile, _ = tile_shape(n_background, batch_size)
    value_specs = tf.nest.flatten(chunk.structured_outputs)

    def explain_rows(samples: list[tf.Tensor]) -> dict:
        n = tf.shape(samples[0])[0]
        checks = [tf.debugging.assert_positive(n, message="explain needs at least one row of samples")]
        with tf.control_dependencies(checks):
            # runner.tile_shape for n known only now: a block of samples against a block of background rows
            samples_per_tile = tf.minimum(n, most_samples_per_tile)
            rows_per_tile = tf.maximum(1, tf.minimum(n_background, batch_size // samples_per_tile))
            steps = (n + samples_per_tile - 1) // samples_per_tile
            background_tiles = (n_background + rows_per_tile - 1) // rows_per_tile
        reference = [b.read_value() for b in background]

        def tile(block, j):
            """The chunk's sums for a block of samples against background tile ``j``."""
            rows = [r[j * rows_per_tile : (j + 1) * rows_per_tile] for r in reference]
            m, c = tf.shape(block[0])[0], tf.shape(rows[0])[0]
            return chunk(block, rows, tf.repeat(tf.range(m), c), tf.tile(tf.range(c), [m]), tf.tile(tf.range(n_outputs)[None], [m, 1]))

        def step(i, parts):
            block = [s[i * samples_per_tile : (i + 1) * samples_per_tile] for s in samples]
            _, sums = tf.while_loop(
                lambda j, _: j < background_tiles,
                lambda j, totals: (j + 1, [t + s for t, s in zip(totals, tile(block, j))]),
                [tf.constant(1), tile(block, 0)],
                parallel_iterations=1,  # the tiles do not depend on each other: 10 would run at once
            )
            return i + 1, [part.write(i, s) for part, s in zip(parts, sums)]

        parts = [
            tf.TensorArray(spec.dtype, size=steps, infer_shape=False, element_shape=spec.shape) for spec in value_specs
        ]
        _, parts = tf.while_loop(lambda i, _: i < steps, step, [tf.constant(0), parts], parallel_iterations=1)
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
