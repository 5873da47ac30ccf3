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

from . import _tf_private, precision

SAVED_MODEL_FILE = "saved_model.pb"


def export(explainer, path: str | os.PathLike, *, per_sample_references: bool | None = None) -> Path:
    """Write ``explainer`` as a SavedModel at ``path``; returns the path.

    Parameters
    ----------
    explainer : DeepSHAPExplainer
        A ``method="deep"`` explainer.
    path : str or PathLike
        A new or empty directory.
    per_sample_references : bool, optional
        False: the background is baked in and the functions take ``x``. True: they take
        ``(x, references)`` with references ``(n, K, *input_shape)`` per input, as
        ``explain(x, references=...)``. None: True exactly when the explainer's background
        is a function.

    Raises
    ------
    ValueError
        ``path`` is not a new or empty directory, or the explainer cannot be exported.
    """
    if explainer.method != "deep":
        raise ValueError(f"export supports method='deep' only; this explainer uses method={explainer.method!r}")
    if per_sample_references is None:
        per_sample_references = explainer.background is None
    if not per_sample_references and explainer.background is None:
        raise ValueError("this explainer has no shared background (its background is a function): "
                         "export it with per_sample_references=True")
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"cannot export to {str(path)!r}: expected a new or empty directory")
    module = ExplainModule(explainer, per_sample_references)
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.serve},
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    strip_gradient_overrides(path)
    return path


class ExplainModule(tf.Module):
    """``explain(x)`` or ``explain(x, references)``, and ``serve``: every pair, averaged in the graph."""

    def __init__(self, explainer, per_sample_references: bool = False):
        super().__init__(name="tfshap_explainer")
        specs = [tf.TensorSpec(s.shape, s.dtype) for s in explainer.input_specs]
        several = len(specs) > 1
        if per_sample_references:
            self.background = []
            reference_specs = [tf.TensorSpec([None, None, *s.shape[1:]], s.dtype) for s in specs]
        else:
            self.background = [tf.Variable(b, trainable=False, name=f"background_{i}")
                               for i, b in enumerate(explainer.background)]
            reference_specs = []
        explain_rows = _explain_rows_fn(explainer, self.background)

        def one_or_list(items):
            return list(items) if several else [items]

        if per_sample_references:
            def explain(x, references):
                return explain_rows(one_or_list(x), one_or_list(references))

            signature = [specs if several else specs[0], reference_specs if several else reference_specs[0]]
        else:
            def explain(x):
                return explain_rows(one_or_list(x), None)

            signature = [specs if several else specs[0]]

        def serve(*tensors):
            xs = list(tensors[: len(specs)])
            result = explain_rows(xs, list(tensors[len(specs):]) if per_sample_references else None)
            values = result.pop("values")
            named = {f"values_{i}": v for i, v in enumerate(values)} if several else {"values": values}
            # TF Serving's row format ("instances") needs every output to share the batch axis.
            base = tf.broadcast_to(result["base_values"], tf.shape(result["outputs"]))
            return {**named, "outputs": result["outputs"], "base_values": base,
                    "additivity_tolerance": result["additivity_tolerance"]}

        names = [f"x_{i}" for i in range(len(specs))] if several else ["x"]
        serve_specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(specs, names)]
        if per_sample_references:
            ref_names = [f"references_{i}" for i in range(len(specs))] if several else ["references"]
            serve_specs += [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(reference_specs, ref_names)]
        self.explain = tf.function(explain, input_signature=signature, autograph=False)
        self.serve = tf.function(serve, input_signature=serve_specs, autograph=False)
        # The model's weights, as the traced functions read them: tracked, so they are saved.
        self.weights = list(self.explain.get_concrete_function().graph.variables)


def _explain_rows_fn(explainer, background: list[tf.Variable]):
    """A graph-mode function: (samples, per-sample references or None) → dict of values, outputs, base_values.

    It runs ``explain``'s tiles (:func:`tfshap.batching.tile_shape`): a block of samples
    against a block of reference rows at a time, one tile after the other.
    """
    n_outputs = explainer.n_outputs
    chunk = explainer._chunk(n_outputs, "contributions")
    forward = explainer.forward
    batch_size = explainer.batch_size(n_outputs)
    value_specs = tf.nest.flatten(chunk.structured_outputs[0])
    # The model's own float noise, measured now on background rows (0 in float64): the export's
    # per-row additivity tolerance, as tfshap's check_additivity computes it (tfshap.precision).
    noise = 0.0
    if background and precision.noise_matters(explainer.compute_dtype):
        noise = explainer.model_noise([b.numpy() for b in background])

    def explain_rows(samples: list[tf.Tensor], references: list[tf.Tensor] | None) -> dict:
        n = tf.shape(samples[0])[0]
        per_sample = references is not None
        if per_sample:
            k_rows = tf.shape(references[0])[1]
            checks = [tf.debugging.assert_equal(tf.shape(r)[0], n, message="references must have one block per sample")
                      for r in references]
        else:
            k_rows = tf.constant(int(background[0].shape[0]))
            checks = []
            table = [b.read_value() for b in background]
        checks.append(tf.debugging.assert_positive(n, message="explain needs at least one row of samples"))
        checks.append(tf.debugging.assert_positive(k_rows, message="explain needs at least one reference row"))
        with tf.control_dependencies(checks):
            # batching.tile_shape, with n and K known only now: a block of samples against a block of rows
            most_samples = tf.maximum(tf.maximum(tf.cast(tf.math.sqrt(float(batch_size)), tf.int32),
                                                 batch_size // k_rows), 1)
            samples_per_tile = tf.minimum(n, most_samples)
            rows_per_tile = tf.maximum(1, tf.minimum(k_rows, batch_size // samples_per_tile))
            steps = (n + samples_per_tile - 1) // samples_per_tile
            reference_tiles = (k_rows + rows_per_tile - 1) // rows_per_tile

        def tile(i, j):
            """The chunk's sums for sample block ``i`` against reference tile ``j``."""
            block = [s[i * samples_per_tile : (i + 1) * samples_per_tile] for s in samples]
            m = tf.shape(block[0])[0]
            if per_sample:
                own = [r[i * samples_per_tile : (i + 1) * samples_per_tile, j * rows_per_tile : (j + 1) * rows_per_tile]
                       for r in references]
                c = tf.shape(own[0])[1]
                rows = [tf.reshape(r, tf.concat([[-1], tf.shape(r)[2:]], 0)) for r in own]
                reference_index = tf.range(m * c)
            else:
                rows = [r[j * rows_per_tile : (j + 1) * rows_per_tile] for r in table]
                c = tf.shape(rows[0])[0]
                reference_index = tf.tile(tf.range(c), [m])
            values, reference_outputs, _ = chunk(block, rows, tf.repeat(tf.range(m), c), reference_index,
                                                 tf.tile(tf.range(n_outputs)[None], [m, 1]))
            return [*values, reference_outputs]

        def step(i, parts):
            _, sums = tf.while_loop(
                lambda j, _: j < reference_tiles,
                lambda j, totals: (j + 1, [t + s for t, s in zip(totals, tile(i, j))]),
                [tf.constant(1), tile(i, 0)],
                parallel_iterations=1,  # the tiles do not depend on each other: 10 would run at once
            )
            return i + 1, [part.write(i, s) for part, s in zip(parts, sums)]

        specs = [*value_specs, tf.TensorSpec([None, n_outputs], tf.float64)]
        parts = [tf.TensorArray(spec.dtype, size=steps, infer_shape=False, element_shape=spec.shape) for spec in specs]
        _, parts = tf.while_loop(lambda i, _: i < steps, step, [tf.constant(0), parts], parallel_iterations=1)
        k = tf.cast(k_rows, tf.float64)
        dtype = explainer.output_dtype
        values = [tf.cast(part.concat() / k, dtype) for part in parts[:-1]]
        outputs = forward(samples)
        outputs.set_shape([None, n_outputs])
        if per_sample:
            base = tf.cast(parts[-1].concat() / k, dtype)
        else:
            base = tf.reduce_mean(forward(table), axis=0)
        return {
            "values": values if len(values) > 1 else values[0],
            "outputs": outputs,
            "base_values": base,
            "additivity_tolerance": precision.row_tolerances(explainer.compute_dtype, outputs, base, values, noise),
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
