"""Streaming: CompiledExplainer.explain_to writes values block by block to .npy files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import predict, replaced_rule

import tfshap
from tfshap import stream


def _linear(K, n_in=6, n_out=3):
    inp = K.Input((n_in,))
    return K.Model(inp, K.layers.Dense(n_out)(inp))


def _closed_form(model, x, background):
    """A linear model's DeepSHAP values: φ[n, i, j] = W[i, j] · (x − mean background)[n, i]."""
    kernel = model.layers[-1].get_weights()[0]
    return np.einsum("ni,ij->nij", x - background.mean(axis=0), kernel)


def test_memory_mapped_input_streams_to_npy_in_blocks(K64, rng, tmp_path, monkeypatch):
    model = _linear(K64)
    background, x = rng.normal(size=(5, 6)), rng.normal(size=(23, 6))
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 5)  # 5 blocks, the last of 3 rows
    explainer = tfshap.compile(model, background)

    result = explainer.explain_to(tmp_path / "values.npy", np.load(tmp_path / "x.npy", mmap_mode="r"), progress=False)

    assert isinstance(result.values, np.memmap) and result.values.shape == (23, 6, 3)
    np.testing.assert_allclose(
        np.load(tmp_path / "values.npy"), _closed_form(model, x, background), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(result.outputs, model(x).numpy(), rtol=1e-12)
    assert result.additivity_error < 1e-12


def test_a_dataset_of_unknown_length_streams_every_row(K64, rng, tmp_path, monkeypatch):
    model = _linear(K64)
    background, x = rng.normal(size=(5, 6)), rng.normal(size=(17, 6))
    dataset = tf.data.Dataset.from_tensor_slices(x).filter(lambda row: True).batch(4)
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    explainer = tfshap.compile(model, background)
    bar, progress = io.StringIO(), stream.Progress
    monkeypatch.setattr(stream, "Progress", lambda total, enabled: progress(total, enabled=enabled, stream=bar))
    result = explainer.explain_to(str(tmp_path / "v.npy"), dataset, progress=True)

    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), _closed_form(model, x, background), rtol=1e-12, atol=1e-13)
    assert result.outputs.shape == (17, 3)
    assert bar.getvalue().count("\r") == 5 and "explaining 17 rows" in bar.getvalue()


def test_several_inputs_write_one_file_each(K64, rng, tmp_path):
    K = K64
    a, b = K.Input((3,)), K.Input((2,))
    model = K.Model([a, b], K.layers.Dense(2, activation="tanh")(K.layers.Concatenate()([a, b])))
    background = [rng.normal(size=(4, 3)), rng.normal(size=(4, 2))]
    x = [rng.normal(size=(9, 3)), rng.normal(size=(9, 2))]
    explainer = tfshap.compile(model, background)

    result = explainer.explain_to([tmp_path / "a.npy", tmp_path / "b.npy"], x, progress=False)

    whole = explainer.explain(x)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), whole.values[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), whole.values[1], rtol=1e-12, atol=1e-14)
    assert [v.shape for v in result.values] == [(9, 3, 2), (9, 2, 2)]
    with pytest.raises(ValueError, match=r"2 input\(s\), so expected 2 \.npy path\(s\); got 1"):
        explainer.explain_to(tmp_path / "a.npy", x)
    with pytest.raises(ValueError, match="a different file for each input"):
        explainer.explain_to([tmp_path / "a.npy", tmp_path / "a.npy"], x)


def test_bad_paths_and_empty_input_are_value_errors(K64, rng, tmp_path):
    explainer = tfshap.compile(_linear(K64), rng.normal(size=(3, 6)))
    with pytest.raises(ValueError, match="expected a .npy file name"):
        explainer.explain_to(tmp_path / "v.npz", rng.normal(size=(2, 6)))
    with pytest.raises(ValueError, match="does not exist"):
        explainer.explain_to(tmp_path / "missing" / "v.npy", rng.normal(size=(2, 6)))
    with pytest.raises(ValueError, match="x is empty"):
        explainer.explain_to(tmp_path / "v.npy", tf.data.Dataset.from_tensor_slices(np.zeros((0, 6))).batch(2))


def test_a_bad_later_block_keeps_the_rows_before_it(K64, rng, tmp_path, monkeypatch):
    model = _linear(K64)
    background, x = rng.normal(size=(5, 6)), rng.normal(size=(10, 6))
    x[7, 2] = np.nan
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 4)
    explainer = tfshap.compile(model, background)
    with pytest.raises(ValueError, match="NaN"):
        explainer.explain_to(tmp_path / "v.npy", x, progress=False)
    kept = np.load(tmp_path / "v.npy")  # a valid file holding the first block (rows 4 to 7 hold the NaN)
    np.testing.assert_allclose(kept, _closed_form(model, x[:4], background), rtol=1e-12, atol=1e-13)


def test_path_methods_stream_without_the_exactness_check(K64, rng, tmp_path):
    model = _linear(K64)
    background, x = rng.normal(size=(4, 6)), rng.normal(size=(6, 6))
    explainer = tfshap.compile(model, background, method="integrated_gradients", steps=4)
    result = explainer.explain_to(tmp_path / "ig.npy", x, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "ig.npy"), explainer.explain(x).values, rtol=1e-12, atol=1e-13)
    assert result.values.shape == (6, 6, 3)


@pytest.mark.parametrize(
    "dtype, row_shape, rows", [("float32", (8, 8, 1, 10), 3), ("float64", (), 1000), ("float16", (2, 3), 0)]
)
def test_appended_files_load_with_numpy(tmp_path, dtype, row_shape, rows):
    data = np.arange(rows * int(np.prod(row_shape))).reshape(rows, *row_shape).astype(dtype)
    writer = stream.NpyAppender(tmp_path / "a.npy", row_shape, dtype)
    for start in range(0, rows, 7):
        writer.append(data[start : start + 7])
    writer.close()
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == (rows, *row_shape)
    np.testing.assert_array_equal(loaded, data)
    # The header was sized for any row count: rewriting it with 10**17 rows keeps its length.
    assert len(writer._header(10**17 - 1, writer._header_bytes)) == writer._header_bytes
    with pytest.raises(ValueError, match="expected rows of shape"):
        stream.NpyAppender(tmp_path / "b.npy", row_shape, dtype).append(np.zeros((1, 5)))


def test_progress_bar_redraws_one_line():
    out = io.StringIO()
    with stream.Progress(10, enabled=True, stream=out) as progress:
        for done in (4, 8, 10):
            progress.update(done)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[" + "#" * 30 + "] 10/10 rows" in text
    quiet = io.StringIO()
    with stream.Progress(10, enabled=False, stream=quiet) as progress:
        progress.update(10)
    assert quiet.getvalue() == ""


def test_ranked_outputs_stream_the_ranked_columns(K64, rng, tmp_path, monkeypatch):
    inp = K64.Input((4,))
    model = K64.Model(inp, K64.layers.Dense(5)(K64.layers.Dense(6, activation="tanh")(inp)))
    background, x = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 4)  # 3 blocks
    explainer = tfshap.compile(model, background)

    result = explainer.explain_to(tmp_path / "v.npy", x, ranked_outputs=2, output_rank_order="min", progress=False)

    whole = explainer.explain(x, ranked_outputs=2, output_rank_order="min")
    outputs = predict(model, x)
    np.testing.assert_array_equal(result.output_indices, np.argsort(outputs, axis=1, kind="stable")[:, :2])
    np.testing.assert_array_equal(result.output_indices, whole.output_indices)
    assert np.load(tmp_path / "v.npy").shape == (11, 4, 2)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), whole.values, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.outputs, np.take_along_axis(outputs, result.output_indices, axis=1), rtol=1e-12)
    np.testing.assert_allclose(result.base_values, np.take_along_axis(np.tile(explainer.expected_value, (11, 1)),
                                                                      result.output_indices, axis=1), rtol=1e-12)
    assert result.additivity_error < 1e-12


def test_an_additivity_error_in_a_later_block_keeps_the_blocks_before_it(K64, rng, tmp_path, monkeypatch):
    """Relu given TensorFlow's own gradient: exact while no relu switches, a miss in the block where one does."""
    inp = K64.Input((3,))
    model = K64.Model(inp, K64.layers.Dense(2)(K64.layers.Dense(4, activation="relu")(inp)))
    model.set_weights([np.abs(rng.normal(size=(3, 4))), np.full(4, 0.1), rng.normal(size=(4, 2)), np.zeros(2)])
    background = np.abs(rng.normal(size=(5, 3)))  # positive rows: every relu is on for them
    x = np.abs(rng.normal(size=(10, 3)))
    x[9] = -x[9]  # its relus are off: they switch against every background row
    monkeypatch.setattr(stream, "MAX_BLOCK_ROWS", 4)  # blocks of rows 0-3, 4-7, 8-9
    with replaced_rule("Relu", "linear"):
        explainer = tfshap.compile(model, background)
    with pytest.raises(tfshap.AdditivityError, match=r"miss .* more than the float64 tolerance"):
        explainer.explain_to(tmp_path / "v.npy", x, progress=False)

    kept = np.load(tmp_path / "v.npy")  # a valid file holding the two blocks before the miss
    assert kept.shape == (8, 3, 2)
    exact = tfshap.compile(model, background).explain(x[:8])  # with the relu rule back
    np.testing.assert_allclose(kept, exact.values, rtol=1e-12, atol=1e-14)  # no relu switched there
