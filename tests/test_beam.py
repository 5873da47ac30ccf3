"""tfshap.beam: RunInference handlers and the ``tfshap explain --out DIR/`` pipeline, on Beam's local runner.

Two pipelines run with two worker processes: the Keras 3 two-input model through
``ExplainModelHandler`` (keyed, from .npz and TFRecord shards, a worker dying in its first
bundle) and the tf_keras masked model exported and run by ``SavedModelExplainHandler`` on
workers that cannot import tfshap. The others run in this process (the tf_keras model through
``ExplainModelHandler``, Beam's bundle retry, the command line). Every row's values are
compared with in-process ``explain``. The functions of this module that workers run are
pickled by value.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import uuid

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")

from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.ml.inference.base import PredictionResult, RunInference

import tfshap
from tfshap import beam as tb
from tfshap import cli

cloudpickle.register_pickle_by_value(sys.modules[__name__])

EPS32 = 2.0**-23
STEPS, FEATURES = 4, 2  # the masked model's rows: the last step is padding (zeros)
N_BACKGROUND, N_ROWS, ROWS_PER_BATCH = 6, 12, 4
MASKED_WIDTH, TWO_WIDTH = max(5, N_BACKGROUND), max(6, N_BACKGROUND)  # the longest sum in each model


def _tolerance(width: int, *magnitudes: np.ndarray) -> float:
    """Two batchings of the same float32 graph differ only in the order of their accumulations.

    A float32 sum of n terms is off by at most n·eps·Σ|terms| (Higham), and each value here
    goes through at most 4 such sums (two dense layers forward and back) of n ≤ ``width``
    terms (the widest layer or the background), each bounded by the largest magnitude of
    the values and outputs involved (at least 1): 4·n·eps per sum, ×4 sums.
    """
    scale = max([1.0] + [float(np.max(np.abs(m))) for m in magnitudes])
    return 16 * width * EPS32 * scale


# -- models and files (module scope: built once) ----------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A two-input Keras 3 model (.keras), a tf_keras model behind a Masking layer (SavedModel), backgrounds, rows."""
    import keras
    import tf_keras

    d = tmp_path_factory.mktemp("beam")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    hidden = keras.layers.Dense(6, activation="relu")(a)
    two = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([hidden, b])))
    two.save(d / "two.keras")
    np.savez(d / "two_bg.npz", a=rng.normal(size=(N_BACKGROUND, 4)).astype(np.float32),
             b=rng.normal(size=(N_BACKGROUND, 3)).astype(np.float32))
    two_rows = [rng.normal(size=(N_ROWS, 4)).astype(np.float32), rng.normal(size=(N_ROWS, 3)).astype(np.float32)]

    tf_keras.utils.set_random_seed(1)
    masked = tf_keras.Sequential([
        tf_keras.Input((STEPS, FEATURES)), tf_keras.layers.Masking(0.0), tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(5, activation="tanh"), tf_keras.layers.Dense(3),
    ])
    # a SavedModel directory loads with tf_keras (.h5 loads with Keras 3)
    masked.save(d / "masked_tf", save_format="tf")
    np.save(d / "masked_bg.npy", _padded(rng, N_BACKGROUND))
    masked_rows = _padded(rng, N_ROWS)
    return {"dir": d, "two": two, "two_rows": two_rows, "masked": masked, "masked_rows": masked_rows}


def _padded(rng, n: int) -> np.ndarray:
    x = rng.normal(size=(n, STEPS, FEATURES)).astype(np.float32)
    x[:, -1] = 0.0
    return x


@pytest.fixture(scope="module")
def reference(models):
    """In-process ``explain`` of every good row, in one batch."""
    d = models["dir"]
    with np.load(d / "two_bg.npz") as z:
        two = tfshap.compile(models["two"], [z["a"], z["b"]]).explain(models["two_rows"])
    masked = tfshap.compile(models["masked"], np.load(d / "masked_bg.npy")).explain(models["masked_rows"])
    return {"two": two, "masked": masked}


# -- what the workers run, pickled by value ------------------------------------------------------
def _save_result(element, directory: str) -> None:
    """Write one result (keyed or not) to ``directory``, with the worker's pid and whether it imported tfshap."""
    key, result = element if not isinstance(element, PredictionResult) else (uuid.uuid4().hex, element)
    example = result.example if isinstance(result.example, (tuple, list)) else [result.example]
    inference = result.inference
    values = inference["values"] if isinstance(inference["values"], list) else [inference["values"]]
    np.savez(
        os.path.join(directory, f"{key}.npz"),
        **{f"x_{i}": np.asarray(x) for i, x in enumerate(example)},
        **{f"values_{i}": v for i, v in enumerate(values)},
        outputs=inference["outputs"], base_values=inference["base_values"],
        pid=os.getpid(), tfshap_imported="tfshap" in sys.modules,
    )


def _save_failure(bad, directory: str) -> None:
    """Write one dead letter (keyed or not) to ``directory``: its error and its first input."""
    element, _ = bad
    key, result = element if not isinstance(element, PredictionResult) else (uuid.uuid4().hex, element)
    example = result.example if isinstance(result.example, (tuple, list)) else [result.example]
    with open(os.path.join(directory, f"{key}.json"), "w") as f:
        json.dump({"key": key, "error": result.inference["error"], "x_0": np.asarray(example[0]).tolist()}, f)


def _first_time(marker: str) -> bool:
    """True for the first caller across processes (the marker file is created once)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class FailsFirstBundle(tb.ExplainModelHandler):
    """The first bundle of the whole pipeline fails: the worker raises, or its process exits."""

    def __init__(self, *args, marker: str, how: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.how = marker, how

    def run_inference(self, batch, model, inference_args=None):
        if _first_time(self.marker):
            if self.how == "die":
                os._exit(3)
            raise RuntimeError("injected: the first bundle fails")
        return super().run_inference(batch, model, inference_args)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _dead_letters(out) -> list[dict]:
    """The JSON lines of ``out/failed-*.jsonl``."""
    found = []
    for path in glob.glob(os.path.join(str(out), "failed-*.jsonl")):
        with open(path) as f:
            found += [json.loads(line) for line in f]
    return found


def _load_saved(directory) -> dict:
    found = {}
    for path in glob.glob(os.path.join(directory, "*.npz")):
        with np.load(path) as z:
            found[os.path.basename(path)[: -len(".npz")]] = {k: z[k] for k in z.files}
    return found


def _run_local(build, workers: int, tmp_path):
    """Run the pipeline that ``build(pipeline)`` makes on the local runner with ``workers`` processes."""
    options = tb.local_options(workers)
    log = str(tmp_path / "workers.log")
    pipeline = beam.Pipeline(runner=tb.local_runner(options, log), options=options)
    build(pipeline)
    pipeline.run().wait_until_finish()


# -- the exported SavedModel: workers without tfshap ----------------------------------------------
BLOCKER = 'raise ImportError("tfshap is hidden from the Beam workers of this test")\n'


def test_exported_savedmodel_explains_on_workers_that_cannot_import_tfshap(models, reference, tmp_path, monkeypatch):
    """tf_keras's masked model, exported; unkeyed rows, one with a mask the background does not share."""
    d = models["dir"]
    tfshap.compile(models["masked"], np.load(d / "masked_bg.npy")).export(tmp_path / "exported")
    (tmp_path / "hide" / "tfshap").mkdir(parents=True)
    (tmp_path / "hide" / "tfshap" / "__init__.py").write_text(BLOCKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "hide"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)  # `python -m` puts the working directory first on the workers' path
    out = tmp_path / "out"
    out.mkdir()
    rows = list(models["masked_rows"])
    bad = rows[3].copy()
    bad[-1] = 1.0  # its last step is not padding: the Masking layer's mask differs from the background's
    handler = tb.SavedModelExplainHandler(
        tmp_path / "exported", min_batch_size=ROWS_PER_BATCH, max_batch_size=ROWS_PER_BATCH
    )

    def build(p):
        results, dead = (p | beam.Create([*rows, bad]) | beam.Reshuffle()
                         | RunInference(handler).with_exception_handling(exc_class=ValueError))
        _ = results | "save" >> beam.Map(_save_result, str(out))
        _ = dead.failed_postprocessing[0] | "dead" >> beam.Map(_save_failure, str(out))

    _run_local(build, 2, tmp_path)
    saved = list(_load_saved(out).values())
    assert len(saved) == N_ROWS
    assert not any(bool(s["tfshap_imported"]) for s in saved)
    assert os.getpid() not in {int(s["pid"]) for s in saved}
    ref = reference["masked"]
    tol = _tolerance(MASKED_WIDTH, ref.values, ref.outputs)
    for s in saved:
        (i,) = [i for i in range(N_ROWS) if np.array_equal(s["x_0"], rows[i])]
        np.testing.assert_allclose(s["values_0"], ref.values[i], rtol=0, atol=tol)
        np.testing.assert_allclose(s["outputs"], ref.outputs[i], rtol=0, atol=tol)
    failures = [_read_json(path) for path in glob.glob(str(out / "*.json"))]
    assert len(failures) == 1 and np.array_equal(failures[0]["x_0"], bad)
    masking = next(layer.name for layer in models["masked"].layers if layer.name.startswith("masking"))
    assert re.match(  # the layer's name depends on how many Masking layers the process built before
        rf"MaskMismatchError: the mask or condition used by '\w+/{masking}/Cast'", failures[0]["error"]
    ), failures


# -- the handlers without a pipeline ----------------------------------------------------------------
def test_a_failing_batch_is_explained_in_halves_down_to_the_failing_row(models, reference):
    d = models["dir"]
    handler = tb.ExplainModelHandler(d / "masked_tf", d / "masked_bg.npy")
    model = handler.load_model()
    rows = [r.copy() for r in models["masked_rows"][:8]]
    rows[5][-1] = 2.0  # the mask differs from the background's: the whole batch raises MaskMismatchError
    results = handler.run_inference(rows, model)
    assert [r.inference.get("error", "").split(":")[0] for r in results] == [""] * 5 + ["MaskMismatchError"] + [""] * 2
    assert all(r.example is row for r, row in zip(results, rows))
    ref = reference["masked"]
    tol = _tolerance(MASKED_WIDTH, ref.values, ref.outputs)
    for i in (0, 1, 2, 3, 4, 6, 7):
        np.testing.assert_allclose(results[i].inference["values"], ref.values[i], rtol=0, atol=tol)
        assert results[i].inference["additivity_error"] < tol
    with pytest.raises(ValueError, match="MaskMismatchError"):
        tb.reject_failed_rows(("key", results[5]))
    assert tb.reject_failed_rows(results[0]) is results[0]


def test_rows_over_the_additivity_tolerance_fail_alone(models, tmp_path):
    """A tolerance below float32's reach: rows whose sums miss by more than it fail, each on its own; with the
    export's own per-row tolerance (tfshap's bound, with the model's noise measured when exporting) none does."""
    d = models["dir"]
    with np.load(d / "two_bg.npz") as z:
        tfshap.compile(models["two"], [z["a"], z["b"]]).export(tmp_path / "exported")
    tiny = 1e-12
    handler = tb.SavedModelExplainHandler(tmp_path / "exported", additivity_tolerance=tiny)
    rows = [(models["two_rows"][0][i], models["two_rows"][1][i]) for i in range(N_ROWS)]
    results = handler.run_inference(rows, handler.load_model())
    loose_handler = tb.SavedModelExplainHandler(tmp_path / "exported")
    loose = loose_handler.run_inference(rows, loose_handler.load_model())
    assert not any("error" in r.inference for r in loose)
    errors = [r.inference["additivity_error"] for r in loose]
    failed = ["error" in r.inference for r in results]
    assert failed == [e > tiny for e in errors]
    assert any(failed), "float32 sums should miss a 1e-12 tolerance somewhere"
    assert all(r.inference["error"].startswith("AdditivityError") for r in results if "error" in r.inference)


def test_the_savedmodel_workers_copy_of_the_mask_marker_agrees():
    """The SavedModel workers cannot import tfshap: the mask marker they look for is a copy."""
    from tfshap.errors import MISMATCH_MARKER

    assert tb._MASK_MISMATCH.pattern.startswith(MISMATCH_MARKER + " ")


def test_row_checks_say_what_was_expected():
    specs = [tb.RowSpec((3,), "float32"), tb.RowSpec((None, 2), "float32")]
    with pytest.raises(ValueError, match="tuple of 2 arrays"):
        tb.row_arrays(np.zeros(3), specs)
    with pytest.raises(ValueError, match=r"shape \(\?, 2\) for model input 1; got \(4, 3\)"):
        tb.row_arrays((np.zeros(3), np.zeros((4, 3))), specs)
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        tb.row_arrays((np.array([np.nan, np.inf, 0]), np.zeros((4, 2))), specs)
    a, b = tb.row_arrays((np.zeros(3, np.float64), np.zeros((7, 2))), specs)
    assert a.dtype == np.float32 and b.shape == (7, 2)


def test_files_are_copied_through_beams_filesystems(tmp_path):
    """What the workers do with a remote model or background (gs://, ...), here through Beam's local filesystem."""
    (tmp_path / "model" / "variables").mkdir(parents=True)
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "model" / "variables" / "variables.index").write_bytes(b"index")
    np.save(tmp_path / "bg.npy", np.arange(6.0))
    tb.copy_files(str(tmp_path / "model"), str(tmp_path / "copy" / "model"))
    tb.copy_files(str(tmp_path / "bg.npy"), str(tmp_path / "copy" / "bg.npy"))
    assert (tmp_path / "copy" / "model" / "variables" / "variables.index").read_bytes() == b"index"
    assert (tmp_path / "copy" / "model" / "saved_model.pb").read_bytes() == b"graph"
    np.testing.assert_array_equal(np.load(tmp_path / "copy" / "bg.npy"), np.arange(6.0))
    with pytest.raises(ValueError, match="no file or directory"):
        tb.copy_files(str(tmp_path / "missing"), str(tmp_path / "x"))
    assert tb.localize(str(tmp_path / "bg.npy")) == str(tmp_path / "bg.npy")  # local paths are used as they are


def test_feature_spec_forms():
    names, shapes = ("pixels", "mask"), ((8, 8, 1), (None,))
    assert tb.parse_feature_spec("img=8x8x1,m=5", names, shapes) == (("img", (8, 8, 1)), ("m", (5,)))
    with pytest.raises(ValueError, match="give it"):
        tb.parse_feature_spec(None, names, shapes)  # the mask's length is unknown
    with pytest.raises(ValueError, match="2 comma-separated"):
        tb.parse_feature_spec("img", names, shapes)
    with pytest.raises(ValueError, match=r"has shape \(8, 8, 1\)"):
        tb.parse_feature_spec("img=8x8,m=5", names, shapes)
    with pytest.raises(ValueError, match="positive integers"):
        tb.parse_feature_spec("img=8x8xa,m=5", names, shapes)


# -- the pipeline of `tfshap explain --out DIR/`: files in, Parquet out ------------------------------
def _example(**features: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = {
        name: tf.train.Feature(float_list=tf.train.FloatList(value=row.ravel().tolist()))
        for name, row in features.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def masked_files(models):
    """The masked model's rows in two .npy shards and one TFRecord shard, with a NaN row and a record
    without the feature."""
    import tensorflow as tf

    d, rows = models["dir"] / "files", models["masked_rows"].copy()
    d.mkdir()
    rows[2, 0, 0] = np.nan
    np.save(d / "part-0.npy", rows[:4])
    np.save(d / "part-1.npy", rows[4:8])
    with tf.io.TFRecordWriter(str(d / "part-2.tfrecord")) as writer:
        for row in rows[8:]:
            writer.write(_example(steps=row))
        writer.write(_example(other=rows[8]))  # no "steps" feature: a dead letter
    keys = [f"{d}/part-0.npy:{i}" for i in range(4)] + [f"{d}/part-1.npy:{i}" for i in range(4)]
    keys += [f"{d}/part-2.tfrecord:{i}" for i in range(4)]
    return d, keys


@pytest.fixture(scope="module")
def two_files(models):
    """The two-input model's rows: a .npz shard (a NaN in row 2) and a TFRecord shard with features a and b
    (and a last record whose b holds 2 values, not 3)."""
    import tensorflow as tf

    d, (a, b) = models["dir"] / "two_files", [r.copy() for r in models["two_rows"]]
    d.mkdir()
    a[2, 1] = np.nan
    np.savez(d / "part-0.npz", b=b[:6], a=a[:6])  # by input name, not in input order
    with tf.io.TFRecordWriter(str(d / "part-1.tfrecord")) as writer:
        for i in range(6, N_ROWS):
            writer.write(_example(a=a[i], b=b[i]))
        writer.write(_example(a=a[0], b=b[0, :2]))
    keys = [f"{d}/part-0.npz:{i}" for i in range(6)] + [f"{d}/part-1.tfrecord:{i}" for i in range(6)]
    return d, keys, {f"{d}/part-0.npz:2", f"{d}/part-1.tfrecord:6"}


def _check_results(out, keys, ref, bad_keys, width=MASKED_WIDTH) -> None:
    """The Parquet results hold every good key once, with in-process values; the dead letters hold the bad keys."""
    results = tb.load_results(str(out))
    order = np.argsort(results["key"])
    got_keys = list(results["key"][order])
    assert got_keys == sorted(k for k in keys if k not in bad_keys), "every good row exactly once"
    by_key = {k: i for i, k in enumerate(keys)}
    index = [by_key[k] for k in got_keys]
    got_values = results["values"] if isinstance(results["values"], list) else [results["values"]]
    ref_values = ref.values if isinstance(ref.values, list) else [ref.values]
    tol = _tolerance(width, *ref_values, ref.outputs)
    for got, expected in zip(got_values, ref_values, strict=True):
        np.testing.assert_allclose(got[order], expected[index], rtol=0, atol=tol)
    np.testing.assert_allclose(results["outputs"][order], ref.outputs[index], rtol=0, atol=tol)
    np.testing.assert_allclose(results["base_values"], np.tile(ref.base_values, (len(index), 1)), rtol=0, atol=tol)
    assert sorted(f["key"] for f in _dead_letters(out)) == sorted(bad_keys)


def test_a_worker_that_dies_in_its_first_bundle_costs_a_rerun_and_changes_nothing(
    models, reference, two_files, tmp_path
):
    """Two worker processes, the Keras 3 two-input model: one worker exits in the first bundle; the rerun's
    results equal in-process explain, each good row once, the two bad rows in the dead letters."""
    d, keys, bad = two_files
    handler = FailsFirstBundle(models["dir"] / "two.keras", models["dir"] / "two_bg.npz", marker=str(tmp_path / "died"),
                               how="die", min_batch_size=ROWS_PER_BATCH, max_batch_size=ROWS_PER_BATCH)
    layout = tb.layout_of(handler.compile(), ["a", "b"])
    lines = []
    summary = tb.explain_files(handler, tb.match_inputs(str(d / "part-*")), str(tmp_path / "out"), layout,
                               options=tb.local_options(2), attempts=2, worker_log=str(tmp_path / "workers.log"),
                               log=lines.append)
    assert (tmp_path / "died").exists() and summary.attempts == 2
    assert len(lines) == 1 and "running it again (attempt 2 of 2)" in lines[0]
    _check_results(tmp_path / "out", keys + [f"{d}/part-1.tfrecord:6"], reference["two"], bad, width=TWO_WIDTH)
    failed = {f["key"]: f["error"] for f in _dead_letters(tmp_path / "out")}
    assert "NaN" in failed[f"{d}/part-0.npz:2"] and "for model input 0" in failed[f"{d}/part-0.npz:2"]
    assert "feature 'b' holds 2 values; expected 3" in failed[f"{d}/part-1.tfrecord:6"]
    assert (summary.rows_explained, summary.rows_failed) == (N_ROWS - 1, 2)
    two = reference["two"]
    # the worst row's miss is the in-process one, up to the two batchings' rounding (see _tolerance)
    assert 0 <= summary.worst_additivity_error <= two.additivity_error + _tolerance(TWO_WIDTH, *two.values, two.outputs)


def test_a_worker_that_raises_in_its_first_bundle_is_retried_by_beam(models, reference, masked_files, tmp_path):
    """Beam's bundle-based DirectRunner retries a bundle that raised; the retry's results replace the failed ones."""
    d, keys = masked_files
    handler = FailsFirstBundle(
        models["dir"] / "masked_tf", models["dir"] / "masked_bg.npy", marker=str(tmp_path / "raised"),
        how="raise", min_batch_size=ROWS_PER_BATCH, max_batch_size=ROWS_PER_BATCH,
    )
    layout = tb.layout_of(handler.compile(), ["x"], "steps")
    summary = tb.explain_files(
        handler, tb.match_inputs(str(d / "part-*")), str(tmp_path / "out"), layout,
        runner="BundleBasedDirectRunner", options=beam.options.pipeline_options.PipelineOptions([]),
    )
    assert (tmp_path / "raised").exists() and summary.attempts == 1
    bad = {f"{d}/part-0.npy:2", f"{d}/part-2.tfrecord:4"}
    _check_results(tmp_path / "out", keys + [f"{d}/part-2.tfrecord:4"], reference["masked"], bad)


def test_explain_command_runs_the_pipeline_into_a_directory(models, reference, masked_files, tmp_path, capsys):
    d, keys = masked_files
    argv = ["explain", str(models["dir"] / "masked_tf"), "--background", str(models["dir"] / "masked_bg.npy"),
            "--inputs", str(d / "part-*"), "--out", str(tmp_path / "out"), "--feature-spec", "steps=4x2",
            "--rows-per-batch", "3"]
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "explained 11 of 13 rows" in out and "worst additivity error" in out
    assert "2 row(s) could not be explained" in err
    bad = {f"{d}/part-0.npy:2", f"{d}/part-2.tfrecord:4"}
    _check_results(tmp_path / "out", keys + [f"{d}/part-2.tfrecord:4"], reference["masked"], bad)
    assert cli.main(argv) == 2  # the directory holds results now
    assert "already holds results" in capsys.readouterr().err


@pytest.mark.parametrize("extra, needle", [
    (["--runner", "DataflowRunner", "--num-workers", "2"], "--num-workers sets the local runner"),
    (["--not_a_beam_option=1"], "unrecognized arguments: --not_a_beam_option"),
    (["--feature-spec", "a,b"], "1 comma-separated"),
])
def test_pipeline_usage_errors_are_one_line(models, masked_files, tmp_path, capsys, extra, needle):
    d, _ = masked_files
    argv = ["explain", str(models["dir"] / "masked_tf"), "--background", str(models["dir"] / "masked_bg.npy"),
            "--inputs", str(d / "part-*"), "--out", str(tmp_path / "out"), *extra]
    assert cli.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tfshap: error: ") and needle in lines[0], lines


def test_pipeline_flags_need_a_directory_out(models, tmp_path, capsys):
    d = models["dir"]
    np.save(tmp_path / "x.npy", models["masked_rows"])
    status = cli.main(["explain", str(d / "masked_tf"), "--background", str(d / "masked_bg.npy"), "--inputs",
                       str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npz"), "--num-workers", "2"])
    assert status == 2
    assert "--num-workers" in capsys.readouterr().err
