"""The ``tfshap`` command line: rules, check, explain, demo; errors as one line, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models._helpers import explain_bound, predict, replaced_rule

from tfshap import cli, stream

README = Path(__file__).resolve().parents[1] / "README.md"


def run(capsys, *argv):
    """``tfshap ARGV`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("tfshap: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# -- fixtures: small saved Keras 3 models and arrays ----------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ]
    )
    cnn.save(d / "cnn.keras")
    # sparsemax sorts (TopKV2) and thresholds (Greater/SelectV2): no exact rule for those.
    unsupported = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.Activation("sparsemax"), keras.layers.Dense(2)]
    )
    unsupported.save(d / "sparsemax.keras")
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(4, activation="relu")(a)
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([hidden, b])))
    two.save(d / "two.keras")

    rng = np.random.default_rng(0)
    np.save(d / "bg.npy", rng.random((6, 8, 8, 1), dtype=np.float32))
    np.save(d / "x.npy", rng.random((3, 8, 8, 1), dtype=np.float32))
    np.save(d / "x_bad.npy", rng.random((3, 7, 8, 1), dtype=np.float32))
    np.savez(d / "bg2.npz", rng.random((5, 3), dtype=np.float32), rng.random((5, 2), dtype=np.float32))
    np.savez(d / "x2.npz", rng.random((4, 3), dtype=np.float32), rng.random((4, 2), dtype=np.float32))
    with np.load(d / "x2.npz") as z:
        np.savez(d / "x2_named.npz", b=z["arr_1"], a=z["arr_0"])  # by input name, not in input order
    lambda_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Lambda(lambda t: 2.0 * t)])
    lambda_model.save(d / "lambda.keras")
    np.save(d / "bg3.npy", rng.random((4, 3), dtype=np.float32))
    return d


def _bound(model_path, background, x, values) -> float:
    """The float32 bound of one attribution (and of the additivity gap) of the saved model explained on ``x``."""
    import keras

    model = keras.saving.load_model(model_path, safe_mode=False)
    if isinstance(x, list):
        rows = [np.concatenate([b, a]) for b, a in zip(background, x)]
    else:
        rows = np.concatenate([background, x])
    return explain_bound(model, rows, len(background[0] if isinstance(x, list) else background), values)


# -- rules ------------------------------------------------------------------------------------
def test_rules_lists_every_registered_op_with_its_family(capsys):
    import tfshap

    status, out, err = run(capsys, "rules")
    assert status == 0 and not err
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line.startswith("#")}
    assert lines["Relu"] == "elementwise"
    assert lines["Reshape"] == "linear"
    assert set(lines) == {r.op_type for r in tfshap.rules()}
    relu_line = next(line for line in out.splitlines() if line.startswith("Relu "))
    assert "(x - r)" in relu_line or "x − r" in relu_line  # the one-line formula


def test_readme_table_of_supported_ops_is_up_to_date():
    text = README.read_text(encoding="utf-8")
    assert cli.RULES_BEGIN in text and cli.RULES_END in text, "README.md lost its rules markers"
    table = text.split(cli.RULES_BEGIN, 1)[1].split(cli.RULES_END, 1)[0].strip()
    assert table == cli.rules_markdown().strip(), (
        "README.md's table of supported ops differs from the registry; regenerate it with "
        "`python tools/rules_table.py --write`"
    )


# -- check ------------------------------------------------------------------------------------
def test_check_supported_model_lists_rules(capsys, files):
    status, out, err = run(capsys, "check", files / "cnn.keras")
    assert status == 0, err
    assert "supported" in out and "NOT" not in out
    assert re.search(r"Conv2D\s+linear", out)
    assert re.search(r"Relu\s+elementwise", out)
    assert re.search(r"Softmax\s+softmax", out)


def test_check_with_background_file(capsys, files, tmp_path):
    status, out, _ = run(capsys, "check", files / "two.keras", "--background", files / "bg2.npz")
    assert status == 0
    assert "input 1: (None, 2)" in out
    # the background is read and checked against the model, not ignored
    np.savez(tmp_path / "bad.npz", np.zeros((5, 3), np.float32), np.zeros((5, 4), np.float32))
    status, out, err = run(capsys, "check", files / "two.keras", "--background", tmp_path / "bad.npz")
    assert status == 2 and not out
    assert_one_line_error(err, "--background", "(n, 2)", "(5, 4)")


def test_check_and_explain_a_layer_output(capsys, files, tmp_path):
    """``--output conv``: the conv layer's 8·8·4 outputs are explained, not the 3 probabilities."""
    import keras

    status, out, err = run(capsys, "check", files / "cnn.keras", "--output", "conv")
    assert status == 0, err
    assert "outputs explained: 256 (layer 'conv')" in out
    status, out, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", files / "x.npy",
        "--out", tmp_path / "conv.npz", "--output", "conv",
    )
    assert status == 0, err
    model = keras.saving.load_model(files / "cnn.keras")
    conv = keras.Model(model.inputs[0], model.get_layer("conv").output)
    background, x = np.load(files / "bg.npy"), np.load(files / "x.npy")
    with np.load(tmp_path / "conv.npz") as z:
        assert z["values"].shape == (3, 8, 8, 1, 256)
        bound = _bound(files / "cnn.keras", background, x, z["values"])
        np.testing.assert_allclose(z["outputs"], predict(conv, x), rtol=0, atol=bound)
        np.testing.assert_allclose(z["base_values"], predict(conv, background).mean(0), rtol=0, atol=bound)
        total = z["values"].reshape(3, -1, 256).sum(axis=1, dtype=np.float64) + z["base_values"]
        np.testing.assert_allclose(total, z["outputs"], rtol=0, atol=bound)
    status, _, err = run(capsys, "check", files / "cnn.keras", "--output", "nope")
    assert status == 2
    assert_one_line_error(err, "output='nope' is not a layer")


def test_check_unsupported_model_exits_1_with_one_line(capsys, files):
    status, out, err = run(capsys, "check", files / "sparsemax.keras")
    assert status == 1
    assert_one_line_error(err, "not supported", "TopKV2")
    assert "NOT supported" in out and "register_rule" in out  # the details, with how to add a rule


# -- explain ----------------------------------------------------------------------------------
def test_explain_writes_npz_that_adds_up(capsys, files, tmp_path):
    out_npz, png = tmp_path / "out.npz", tmp_path / "out.png"
    status, out, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", files / "x.npy",
        "--out", out_npz, "--plot", png,
    )
    assert status == 0, err
    with np.load(out_npz) as z:
        values, base, outputs = z["values"], z["base_values"], z["outputs"]
    assert values.shape == (3, 8, 8, 1, 3) and base.shape == (3,) and outputs.shape == (3, 3)
    total = values.reshape(3, -1, 3).sum(axis=1, dtype=np.float64) + base
    bound = _bound(files / "cnn.keras", np.load(files / "bg.npy"), np.load(files / "x.npy"), values)
    np.testing.assert_allclose(total, outputs, rtol=0, atol=bound)
    import matplotlib.image

    # plots.image at 100 dpi: (3 outputs + the image) · 1.5 inches by 3 rows · 1.5 + 0.6 (colour bar) + 0.3 (title)
    assert matplotlib.image.imread(png).shape[:2] == (540, 600)


def test_explain_several_inputs_from_npz(capsys, files, tmp_path):
    out_npz = tmp_path / "two.npz"
    status, _, err = run(
        capsys, "explain", files / "two.keras", "--background", files / "bg2.npz", "--inputs", files / "x2.npz",
        "--out", out_npz,
    )
    assert status == 0, err
    with np.load(out_npz) as z:
        assert "values" not in z.files
        v0, v1 = z["values_0"], z["values_1"]
        assert v0.shape == (4, 3, 2) and v1.shape == (4, 2, 2)
        total = v0.sum(axis=1, dtype=np.float64) + v1.sum(axis=1, dtype=np.float64) + z["base_values"]
        with np.load(files / "bg2.npz") as b, np.load(files / "x2.npz") as x:
            bound = _bound(files / "two.keras", [b["arr_0"], b["arr_1"]], [x["arr_0"], x["arr_1"]], [v0, v1])
        np.testing.assert_allclose(total, z["outputs"], rtol=0, atol=bound)


def test_explain_unsupported_model_exits_1(capsys, files, tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((2, 4), np.float32))
    status, _, err = run(
        capsys, "explain", files / "sparsemax.keras", "--background", tmp_path / "v.npy",
        "--inputs", tmp_path / "v.npy", "--out", tmp_path / "o.npz",
    )
    assert status == 1
    assert_one_line_error(err, "not supported", "TopKV2")
    assert not (tmp_path / "o.npz").exists()


def test_explain_exits_1_when_the_sums_miss(capsys, files, tmp_path):
    """Relu given TensorFlow's own gradient: its relus switch between samples and background, the sums miss."""
    with replaced_rule("Relu", "linear"):
        status, out, err = run(
            capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", files / "x.npy",
            "--out", tmp_path / "o.npz",
        )
    assert status == 1 and not out
    assert_one_line_error(err, "additivity check failed", "Relu (linear)")
    assert not (tmp_path / "o.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # nor its scratch files
    status, _, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", files / "x.npy",
        "--out", tmp_path / "o.npz",
    )
    assert status == 0, err  # the rule is back


# -- errors: one line, non-zero, no traceback ---------------------------------------------------
def test_bad_model_path(capsys, tmp_path):
    status, out, err = run(capsys, "check", tmp_path / "missing.keras")
    assert status == 2 and not out
    assert_one_line_error(err, "missing.keras")


def test_bad_npy_path(capsys, files, tmp_path):
    status, _, err = run(
        capsys, "explain", files / "cnn.keras", "--background", tmp_path / "nope.npy", "--inputs", files / "x.npy",
        "--out", tmp_path / "o.npz",
    )
    assert status == 2
    assert_one_line_error(err, "--background", "nope.npy")


def test_bad_npy_shape(capsys, files, tmp_path):
    status, _, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", files / "x_bad.npy",
        "--out", tmp_path / "o.npz",
    )
    assert status == 2
    assert_one_line_error(err, "--inputs", "(n, 8, 8, 1)", "(3, 7, 8, 1)")
    assert not (tmp_path / "o.npz").exists()


def test_plot_needs_image_like_inputs(capsys, files, tmp_path):
    status, _, err = run(
        capsys, "explain", files / "two.keras", "--background", files / "bg2.npz", "--inputs", files / "x2.npz",
        "--out", tmp_path / "o.npz", "--plot", tmp_path / "o.png",
    )
    assert status == 2
    assert_one_line_error(err, "--plot")


def test_module_entry_point_reports_errors_without_traceback(files, tmp_path):
    """``python -m tfshap.cli``: the real process, its exit status and its stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "tfshap.cli", "explain", str(files / "cnn.keras"), "--background", str(files / "bg.npy"),
         "--inputs", str(files / "x_bad.npy"), "--out", str(tmp_path / "o.npz")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("tfshap: error: ")]
    assert len(ours) == 1 and "(3, 7, 8, 1)" in ours[0], proc.stderr
    assert proc.stdout == ""


# -- safe loading ---------------------------------------------------------------------------
def test_lambda_layers_are_refused_unless_allowed(capsys, files, tmp_path):
    out_npz = tmp_path / "lambda.npz"
    argv = [
        "explain", files / "lambda.keras", "--background", files / "bg3.npy", "--inputs", files / "bg3.npy",
        "--out", out_npz,
    ]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert_one_line_error(err, "Lambda", "--allow-lambda")
    assert not out_npz.exists()
    status, _, err = run(capsys, *argv, "--allow-lambda")
    assert status == 0, err
    with np.load(out_npz) as z:
        rows = np.load(files / "bg3.npy")
        bound = _bound(files / "lambda.keras", rows, rows, z["values"])
        total = z["values"].sum(axis=1, dtype=np.float64) + z["base_values"]
        np.testing.assert_allclose(total, z["outputs"], rtol=0, atol=bound)


def test_lambda_layers_are_found_in_h5_and_savedmodel_files(capsys, tmp_path):
    """tf_keras loads Lambda layers from these even in safe mode: the command line looks first."""
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.Input((3,)), tf_keras.layers.Dense(2), tf_keras.layers.Lambda(lambda t: 2.0 * t)]
    )
    model.save(tmp_path / "lambda.h5")
    model.save(tmp_path / "lambda_savedmodel", save_format="tf")
    plain = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.h5")
    capsys.readouterr()  # tf_keras's own warnings about saving
    for path in ("lambda.h5", "lambda_savedmodel"):
        status, out, err = run(capsys, "check", tmp_path / path)
        assert status == 2 and not out
        assert_one_line_error(err, "Lambda", "--allow-lambda")
    status, out, err = run(capsys, "check", tmp_path / "lambda.h5", "--allow-lambda")
    assert status == 0 and "supported" in out, err
    assert run(capsys, "check", tmp_path / "plain.h5")[0] == 0


# -- inputs: .npz by name, memory-mapped .npy in blocks, progress ------------------------------
def test_npz_arrays_by_input_name(capsys, files, tmp_path):
    results = {}
    for name in ("x2.npz", "x2_named.npz"):
        status, _, err = run(
            capsys, "explain", files / "two.keras", "--background", files / "bg2.npz", "--inputs", files / name,
            "--out", tmp_path / name,
        )
        assert status == 0, err
        with np.load(tmp_path / name) as z:
            results[name] = (z["values_0"], z["values_1"])
    for by_order, by_name in zip(results["x2.npz"], results["x2_named.npz"]):
        np.testing.assert_array_equal(by_order, by_name)


def test_npz_with_wrong_names_or_count(capsys, files, tmp_path):
    rows = np.zeros((2, 3), np.float32)
    np.savez(tmp_path / "missing.npz", a=rows)
    np.savez(tmp_path / "three.npz", rows, rows, rows)
    for name, needles in (("missing.npz", ["lacks ['b']"]), ("three.npz", ["holds 3 array(s)", "expected 2"])):
        status, _, err = run(
            capsys, "explain", files / "two.keras", "--background", files / "bg2.npz", "--inputs", tmp_path / name,
            "--out", tmp_path / "o.npz",
        )
        assert status == 2
        assert_one_line_error(err, "--inputs", *needles)


def test_large_inputs_are_memory_mapped_and_explained_in_blocks(capsys, files, tmp_path, monkeypatch):
    import tfshap

    x = np.random.default_rng(1).random((23, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "many.npy", x)
    assert isinstance(cli.load_arrays(tmp_path / "many.npy", "--inputs", ["x"], mmap=True)[0], np.memmap)
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 5)  # 5 blocks, appended to a scratch .npy
    status, out, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", tmp_path / "many.npy",
        "--out", tmp_path / "many.npz", "--progress",
    )
    assert status == 0, err
    assert "Traceback" not in err
    assert "explaining [" in err and err.rstrip().endswith("s left") and "23/23 rows" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tfshap")] == []  # the scratch file is gone
    whole = tfshap.compile(files / "cnn.keras", np.load(files / "bg.npy")).explain(x)
    # blocks of 5 rows against the whole: two float32 computations of the same values
    bound = _bound(files / "cnn.keras", np.load(files / "bg.npy"), x, whole.values)
    with np.load(tmp_path / "many.npz") as z:
        np.testing.assert_allclose(z["values"], whole.values, rtol=0, atol=2 * bound)
        np.testing.assert_allclose(z["outputs"], whole.outputs, rtol=0, atol=2 * bound)
        total = z["values"].reshape(23, -1, 3).sum(axis=1, dtype=np.float64) + z["base_values"]
        np.testing.assert_allclose(total, z["outputs"], rtol=0, atol=bound)
        assert float(z["additivity_error"]) <= bound


def test_bad_rows_in_a_later_block_leave_no_output(capsys, files, tmp_path, monkeypatch):
    x = np.random.default_rng(2).random((9, 8, 8, 1), dtype=np.float32)
    x[7, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 4)
    status, _, err = run(
        capsys, "explain", files / "cnn.keras", "--background", files / "bg.npy", "--inputs", tmp_path / "nan.npy",
        "--out", tmp_path / "o.npz", "--no-progress",
    )
    assert status == 2
    assert_one_line_error(err, "--inputs", "NaN")
    assert not (tmp_path / "o.npz").exists()


def test_usage_errors_are_one_line(capsys, files):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", str(files / "cnn.keras")])
    assert exit_.value.code == 2
    _, err = capsys.readouterr()
    assert_one_line_error(err, "--inputs", "--help")


# -- the console script: answers before TensorFlow is imported, quiet after ----------------------
ROOT = Path(__file__).resolve().parents[1]

# Runs the console script's entry point as the installed `tfshap` command does, then reports
# which heavy modules the process imported (also when argparse exits).
CONSOLE_SCRIPT = r"""
import sys
sys.argv = ["tfshap", *sys.argv[1:]]
import _tfshap_cli
try:
    status = _tfshap_cli.main()
except SystemExit as exc:
    status = exc.code
heavy = sorted(m for m in ("tensorflow", "numpy", "keras", "tf_keras", "apache_beam") if m in sys.modules)
print("imported:", ",".join(heavy) or "none")
sys.exit(status)
"""


def _console_script(*argv, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, *map(str, argv)], capture_output=True, text=True, env=env, timeout=300,
        cwd=ROOT,
    )


def test_console_script_is_the_launcher_outside_the_package():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options.entry_points"]["console_scripts"].split() == ["tfshap", "=", "_tfshap_cli:main"]
    assert "_tfshap_cli" in config["options"]["packages"].split()
    assert "_tfshap_cli = tfshap/_console" in config["options"]["package_dir"]


def test_installed_metadata_names_a_home_page_and_an_author():
    from importlib.metadata import metadata

    installed = metadata("tfshap")  # what `pip show tfshap` prints as Home-page and Author
    home_page = installed.get("Home-page") or installed.get("Project-URL", "")
    assert home_page.startswith("https://") and installed["Author"].strip()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["explain", "--help"]])
def test_help_and_version_import_no_tensorflow_and_print_nothing_on_stderr(argv):
    import tfshap

    proc = _console_script(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.rstrip().endswith("imported: none"), proc.stdout
    if argv == ["--version"]:
        assert proc.stdout.startswith(f"tfshap {tfshap.__version__}\n")
    else:
        assert proc.stdout.startswith("usage: tfshap")


def test_an_argument_error_is_one_line_before_any_tensorflow_import(files):
    proc = _console_script("explain", files / "cnn.keras")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "--inputs", "--help")  # argparse's error, our one-line form
    assert proc.stdout.strip() == "imported: none"


def test_a_command_prints_nothing_of_tensorflow_on_stderr():
    """TF_CPP_MIN_LOG_LEVEL unset: the command line quiets TensorFlow, its load-time lines included."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = _console_script("rules", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "tensorflow" in proc.stdout.splitlines()[-1] and "Relu" in proc.stdout


# What `import tensorflow` 2.21 printed here with TF_CPP_MIN_LOG_LEVEL=3 (the static initializers of
# libtensorflow_framework.so.2 and of _pywrap_profiler_plugin.so, before TensorFlow reads the level).
TF_LOAD_LINES = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796138699.885084    6778 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796138699.885564    6778 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796138704.267183    6832 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
/x/keras/src/saving.py:12: UserWarning: a Python warning
E0000 00:00:1796138788.762190    8304 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512.
F0000 00:00:1796138788.762190    8304 check.cc:1] a fatal line
"""  # noqa: E501  (TensorFlow's log lines, verbatim)


def test_load_time_lines_are_filtered_by_the_level_the_user_chose():
    from tfshap._quiet import filter_lines

    lines = TF_LOAD_LINES.splitlines()
    assert filter_lines(TF_LOAD_LINES, 0) == TF_LOAD_LINES
    assert filter_lines(TF_LOAD_LINES, 1).splitlines() == lines[5:]  # the I lines and their continuation go
    assert filter_lines(TF_LOAD_LINES, 2).splitlines() == lines[5:]
    assert filter_lines(TF_LOAD_LINES, 3).splitlines() == [lines[5], lines[7]]  # Python's warning and FATAL stay


# -- demo -------------------------------------------------------------------------------------
def test_demo_quick_writes_png_and_adds_up(capsys, tmp_path):
    png = tmp_path / "demo.png"
    status, out, err = run(capsys, "demo", "--quick", "--out", png)
    assert status == 0, err
    assert png.stat().st_size > 1000
    found = re.search(r"additivity: max \|sum\(values\) \+ base_values - outputs\| = (\S+) \(tolerance (\S+)\)", out)
    assert found, out
    assert float(found.group(1)) <= float(found.group(2))
    assert "samples/s" in out and "floor" in out
    assert "demo OK" in out
