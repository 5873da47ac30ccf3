"""``CompiledExplainer.export``: a SavedModel that explains in a process where tfshap cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import explain_bound, floatx
from tensorflow.core.protobuf import saved_model_pb2

import tfshap
from tfshap.export import ExplainModule, gradient_overrides, strip_gradient_overrides

# Loads every exported model with tfshap hidden from imports, explains two batch sizes through
# `explain` and one through `serving_default`, and saves what came back.
LOAD_WITHOUT_TFSHAP = r"""
import importlib.abc, json, sys

class HideTfshap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tfshap":
            raise ImportError(f"{name} is hidden in this process")

sys.meta_path.insert(0, HideTfshap())
sys.modules.pop("tfshap", None)
try:
    import tfshap  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("tfshap could be imported")

import numpy as np
import tensorflow as tf

for case in json.loads(sys.argv[1]):
    loaded = tf.saved_model.load(case["model"])
    with np.load(case["inputs"]) as z:
        x = [z[k] for k in sorted(z.files)]
    arg = lambda rows: [a[:rows] for a in x] if len(x) > 1 else x[0][:rows]  # noqa: E731
    found = {}
    for rows in (len(x[0]), 2):
        result = loaded.explain(arg(rows))
        values = result["values"] if isinstance(result["values"], list) else [result["values"]]
        found.update({f"explain{rows}_values_{i}": v.numpy() for i, v in enumerate(values)})
        found[f"explain{rows}_outputs"] = result["outputs"].numpy()
        found[f"explain{rows}_base_values"] = result["base_values"].numpy()
    names = ["x"] if len(x) == 1 else [f"x_{i}" for i in range(len(x))]
    served = loaded.signatures["serving_default"](**{n: tf.constant(a[:3]) for n, a in zip(names, x)})
    found.update({f"serve_{k}": v.numpy() for k, v in served.items()})
    np.savez(case["out"], **found)
print("loaded without tfshap:", ", ".join(sorted(m for m in sys.modules if m.split(".")[0] == "tfshap")) or "none")
"""


def _cnn(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _lstm(keras):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])


def _two_inputs(keras):
    keras.utils.set_random_seed(2)
    a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(5, activation="relu")(a)
    return keras.Model([a, b], keras.layers.Dense(2, activation="sigmoid")(keras.layers.Concatenate()([hidden, b])))


def _case(name, model, shapes, tmp, rng, n_background=6, n=5, steps=1):
    """Export, and explain here: (the subprocess's case, the expected attributions, their float32 bound).

    The exported function and ``explain`` compute the same float32 values, each within the
    bound of one attribution (``steps``: the recurrent layer's time steps).
    """
    background = [rng.random((n_background, *s), dtype=np.float32) for s in shapes]
    x = [rng.random((n, *s), dtype=np.float32) for s in shapes]
    one = len(shapes) == 1
    explainer = tfshap.compile(model, background[0] if one else background, batch_size=16)
    path = explainer.export(tmp / name)
    np.savez(tmp / f"{name}_x.npz", **{f"x{i}": a for i, a in enumerate(x)})
    expected = {rows: explainer.explain(x[0][:rows] if one else [a[:rows] for a in x]) for rows in (n, 2, 3)}
    rows = [np.concatenate([b, a]) for b, a in zip(background, x)]
    bound = explain_bound(model, rows[0] if one else rows, n_background, expected[n].values, steps=steps)
    case = dict(name=name, model=str(path), inputs=str(tmp / f"{name}_x.npz"), out=str(tmp / f"{name}_got.npz"))
    return case, expected, bound


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Three exported models, loaded in a subprocess that cannot import tfshap."""
    import keras
    import tf_keras

    tmp = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    cases = [
        _case("cnn", _cnn(keras), [(6, 6, 1)], tmp, rng),
        _case("lstm", _lstm(tf_keras), [(5, 3)], tmp, rng, steps=5),
        _case("two_inputs", _two_inputs(keras), [(4,), (2,)], tmp, rng),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TFSHAP, json.dumps([c for c, _, _ in cases])],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded without tfshap: none" in proc.stdout
    got = {}
    for case, expected, bound in cases:
        with np.load(case["out"]) as z:
            got[case["name"]] = ({k: z[k] for k in z.files}, expected, bound)
    return got, proc.stderr, {c["name"]: c["model"] for c, _, _ in cases}


def _values(found: dict, prefix: str) -> list[np.ndarray]:
    return [found[k] for k in sorted(found) if k.startswith(prefix)]


@pytest.mark.parametrize("name", ["cnn", "lstm", "two_inputs"])
def test_loaded_without_tfshap_matches_explain_and_adds_up(exported, name):
    got, _, _ = exported
    found, expected, bound = got[name]
    for rows in (5, 2):  # two batch sizes through one exported function: the batch axis is dynamic
        reference = expected[rows]
        ref_values = reference.values if isinstance(reference.values, list) else [reference.values]
        values = _values(found, f"explain{rows}_values_")
        assert [v.shape for v in values] == [v.shape for v in ref_values]
        for v, r in zip(values, ref_values):
            np.testing.assert_allclose(v, r, atol=2 * bound, rtol=0)
        np.testing.assert_allclose(found[f"explain{rows}_outputs"], reference.outputs, atol=2 * bound, rtol=0)
        np.testing.assert_allclose(found[f"explain{rows}_base_values"], reference.base_values, atol=2 * bound, rtol=0)
        total = sum(v.reshape(rows, -1, v.shape[-1]).sum(axis=1, dtype=np.float64) for v in values)
        np.testing.assert_allclose(
            total + found[f"explain{rows}_base_values"], found[f"explain{rows}_outputs"], atol=bound, rtol=0
        )


@pytest.mark.parametrize("name", ["cnn", "lstm", "two_inputs"])
def test_serving_signature_returns_the_same_flat_outputs(exported, name):
    got, _, _ = exported
    found, expected, bound = got[name]
    reference = expected[3]
    ref_values = reference.values if isinstance(reference.values, list) else [reference.values]
    keys = ["serve_values"] if len(ref_values) == 1 else [f"serve_values_{i}" for i in range(len(ref_values))]
    for key, r in zip(keys, ref_values):
        np.testing.assert_allclose(found[key], r, atol=2 * bound, rtol=0)
    np.testing.assert_allclose(found["serve_outputs"], reference.outputs, atol=2 * bound, rtol=0)
    # one row of base values per sample: TF Serving's row format needs a shared batch axis
    np.testing.assert_allclose(
        found["serve_base_values"], np.tile(reference.base_values, (3, 1)), atol=2 * bound, rtol=0
    )


def test_loading_warns_about_no_custom_gradient(exported):
    _, stderr, _ = exported
    assert "custom gradients" not in stderr


def test_no_gradient_overrides_and_no_pickle_in_the_saved_model(exported):
    _, _, paths = exported
    for path in paths.values():
        assert gradient_overrides(path) == []
        files = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
        assert files == [
            "fingerprint.pb", "saved_model.pb", "variables/variables.data-00000-of-00001", "variables/variables.index"
        ]
        saved = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
        objects = saved.meta_graphs[0].object_graph_def.nodes
        kinds = {node.WhichOneof("kind") for node in objects}
        assert kinds <= {"user_object", "variable", "function", "bare_concrete_function", "constant", "resource"}
        # tf.Module, list and signature containers only: no Keras object, whose metadata could carry Python
        identifiers = {node.user_object.identifier for node in objects if node.HasField("user_object")}
        assert identifiers == {"_generic_user_object", "trackable_list_wrapper", "signature_map"}
        assert all(not node.user_object.metadata for node in objects if node.HasField("user_object"))


def test_strip_removes_the_rules_saved_inside_loop_bodies(tmp_path):
    """Saved as is, the LSTM's loop body would name tfshap's gradients; the export removes them."""
    import tf_keras

    explainer = tfshap.compile(_lstm(tf_keras), np.zeros((2, 5, 3), np.float32))
    module = ExplainModule(explainer)
    tf.saved_model.save(
        module, str(tmp_path), signatures={"serving_default": module.serve},
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    before = gradient_overrides(tmp_path)
    assert {"tfshap/elementwise/Sigmoid", "tfshap/elementwise/Tanh", "tfshap/binary/Mul"} <= set(before)
    checksum = tf.saved_model.experimental.read_fingerprint(str(tmp_path)).saved_model_checksum
    assert strip_gradient_overrides(tmp_path) == len(before)
    assert gradient_overrides(tmp_path) == []
    assert tf.saved_model.experimental.read_fingerprint(str(tmp_path)).saved_model_checksum != checksum


def test_in_process_reload_rejects_an_empty_batch(exported):
    _, _, paths = exported
    loaded = tf.saved_model.load(paths["cnn"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one row"):
        loaded.explain(tf.zeros((0, 6, 6, 1)))


def test_export_runs_explains_tiles_of_samples_by_background_rows(tmp_path):
    # batch_size=4 against 7 background rows: tiles of 2 samples × 2 rows, so each block of
    # samples runs 4 background tiles (2 + 2 + 2 + 1 rows), as explain's run_pairs does
    import tf_keras

    with floatx(tf_keras, "float64"):
        tf_keras.utils.set_random_seed(4)
        model = tf_keras.Sequential([tf_keras.Input((5,)), tf_keras.layers.Dense(6, activation="tanh"),
                                     tf_keras.layers.Dense(2, activation="softmax")])
    rng = np.random.default_rng(3)
    background, x = rng.normal(size=(7, 5)), rng.normal(size=(5, 5))
    explainer = tfshap.compile(model, background, batch_size=4)
    found = tfshap.batching.tiles(len(x), tfshap.batching.References([background]), 4)
    assert len({tile.rows.start for tile in found}) > 1  # the premise: a block of samples runs several background tiles
    expected = explainer.explain(x)
    loaded = tf.saved_model.load(str(explainer.export(tmp_path / "tiled")))
    result = loaded.explain(tf.constant(x))
    np.testing.assert_allclose(result["values"].numpy(), expected.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["outputs"].numpy(), expected.outputs, rtol=0, atol=1e-12)


def test_export_refuses_gradient_methods_and_used_directories(tmp_path):
    import keras

    model = _two_inputs(keras)
    background = [np.zeros((2, 4), np.float32), np.zeros((2, 2), np.float32)]
    with pytest.raises(ValueError, match="method='deep'"):
        tfshap.compile(model, background, method="expected_gradients").export(tmp_path / "eg")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(ValueError, match="new or empty directory"):
        tfshap.compile(model, background).export(tmp_path / "used")
