"""The command line for the sequence workflow and the other round-two options: ``--output logits``,
per-sample ``--references`` (an array, or dinucleotide shuffles), ``--hypothetical`` and
``--modisco``, and variable-length token models; each checked against ``tfshap.compile`` in this
process, in both Kerases where the model is saved in both formats."""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import keras_module

import tfshap
from tfshap import cli
from tfshap.sequence import dinuc_shuffle, one_hot, shuffled_references

L = 24


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module", params=["tf_keras", "keras3"])
def saved(request, tmp_path_factory):
    K = keras_module(request.param)
    d = tmp_path_factory.mktemp(f"cli_seq_{request.param}")
    K.utils.set_random_seed(0)
    inputs = K.Input((L, 4))
    h = K.layers.Conv1D(4, 5, padding="same", activation="relu")(inputs)
    h = K.layers.Conv1D(4, 3, dilation_rate=2, padding="same", activation="relu")(h)
    model = K.Model(inputs, K.layers.Dense(2, activation="softmax")(K.layers.GlobalAveragePooling1D()(h)))
    suffix = ".keras" if request.param == "keras3" else ".h5"
    model.save(d / f"seq{suffix}")
    tokens = K.Sequential([K.Input((None,), dtype="int32"), K.layers.Embedding(30, 4, name="embedding"),
                           K.layers.GRU(3), K.layers.Dense(2)])
    token_path = d / ("tokens.keras" if request.param == "keras3" else "tokens_savedmodel")
    tokens.save(token_path)
    rng = np.random.default_rng(0)
    x = one_hot(["".join(rng.choice(list("ACGT"), L)) for _ in range(3)])
    np.save(d / "x.npy", x)
    np.save(d / "refs.npy", dinuc_shuffle(x, 4, seed=1))
    np.save(d / "bg.npy", dinuc_shuffle(x[0], 5, seed=2))
    return d, model, suffix, x


def test_logits_from_the_command_line_equal_compile(capsys, saved):
    d, model, suffix, x = saved
    status, out, err = run(capsys, "explain", d / f"seq{suffix}", "--background", d / "bg.npy", "--inputs", d / "x.npy",
                           "--out", d / "logits.npz", "--output", "logits")
    assert status == 0, err
    expected = tfshap.compile(model, np.load(d / "bg.npy"), output="logits").explain(x)
    with np.load(d / "logits.npz") as z:
        np.testing.assert_allclose(z["values"], expected.values, rtol=0, atol=1e-6 * np.abs(expected.values).max())
        np.testing.assert_allclose(z["outputs"], expected.outputs, rtol=0, atol=1e-6 * np.abs(expected.outputs).max())


def test_per_sample_references_hypothetical_and_modisco(capsys, saved, tmp_path):
    d, model, suffix, x = saved
    status, out, err = run(capsys, "explain", d / f"seq{suffix}", "--references", d / "refs.npy", "--inputs",
                           d / "x.npy", "--out", tmp_path / "h.npz", "--hypothetical",
                           "--modisco", tmp_path / "modisco")
    assert status == 0, err
    refs = np.load(d / "refs.npy")
    expected = tfshap.compile(model, refs[0]).explain(x, references=refs, hypothetical=True)
    with np.load(tmp_path / "h.npz") as z:
        scale = np.abs(expected.values).max()
        np.testing.assert_allclose(z["values"], expected.values, rtol=0, atol=1e-6 * scale)
        assert z["base_values"].shape == (3, 2)
    with np.load(tmp_path / "modisco" / "ohe.npz") as ohe, np.load(tmp_path / "modisco" / "shap_1.npz") as shap:
        np.testing.assert_array_equal(ohe["arr_0"], np.transpose(x, (0, 2, 1)))
        np.testing.assert_allclose(shap["arr_0"], np.transpose(expected.values[..., 1], (0, 2, 1)), atol=1e-6 * scale)


def test_shuffled_references_from_the_command_line(capsys, saved, tmp_path):
    d, model, suffix, x = saved
    status, out, err = run(capsys, "explain", d / f"seq{suffix}", "--references", "shuffle:3:7", "--inputs",
                           d / "x.npy", "--out", tmp_path / "s.npz")
    assert status == 0, err
    expected = tfshap.compile(model, shuffled_references(3, 7)).explain(x)
    with np.load(tmp_path / "s.npz") as z:
        np.testing.assert_allclose(z["values"], expected.values, rtol=0, atol=1e-6 * np.abs(expected.values).max())


@pytest.mark.parametrize("argv, message", [
    (["--references", "shuffle:x"], "expected shuffle:K or shuffle:K:SEED"),
    (["--modisco", "m"], "--modisco writes hypothetical contributions"),
    ([], "needs --background"),
])
def test_bad_sequence_options_are_one_line_errors(capsys, saved, tmp_path, argv, message):
    d, model, suffix, x = saved
    status, out, err = run(capsys, "explain", d / f"seq{suffix}", "--inputs", d / "x.npy", "--out", tmp_path / "o.npz",
                           *argv)
    assert status == 2 and message in err and "Traceback" not in err


def test_variable_length_token_models_from_the_command_line(capsys, saved, tmp_path):
    d, model, suffix, x = saved
    path = d / ("tokens.keras" if suffix == ".keras" else "tokens_savedmodel")
    rng = np.random.default_rng(3)
    for length in (7, 11):
        np.save(tmp_path / f"bg{length}.npy", rng.integers(1, 30, size=(4, length)).astype(np.int32))
        np.save(tmp_path / f"x{length}.npy", rng.integers(1, 30, size=(2, length)).astype(np.int32))
        status, out, err = run(capsys, "check", path, "--background", tmp_path / f"bg{length}.npy",
                               "--attribute-to", "embedding")
        assert status == 0, err
        status, out, err = run(capsys, "explain", path, "--background", tmp_path / f"bg{length}.npy", "--inputs",
                               tmp_path / f"x{length}.npy", "--out", tmp_path / f"t{length}.npz",
                               "--attribute-to", "embedding")
        assert status == 0, err
        expected = tfshap.compile(tfshap.trace.load_model(path), np.load(tmp_path / f"bg{length}.npy"),
                                  inputs="embedding").explain(np.load(tmp_path / f"x{length}.npy"))
        with np.load(tmp_path / f"t{length}.npz") as z:
            assert z["values"].shape == (2, length, 4, 2)
            np.testing.assert_allclose(z["values"], expected.values, rtol=0, atol=1e-6 * np.abs(expected.values).max())
