"""Parity with shap.DeepExplainer (>= 0.51, the anchor) where the rules coincide.

shap runs in a subprocess with ``TF_USE_LEGACY_KERAS=1`` (see ``_shap_reference.py``); the
same models are rebuilt here in both Kerases with the same weights and compared. What is
compared is what shap has kept stable: DeepLIFT's rescale rule on dense relu, tanh and sigmoid
layers, the ``(n, features, outputs)`` layout (since 0.45) and the values of each ranked output.

Where shap cannot run (not installed, or ``tf.keras`` is not tf_keras) the tests skip, unless
``TFSHAP_REQUIRE_SHAP=1`` (CI sets it: the outside oracle must never be skipped silently).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfshap

from . import _shap_reference as ref
from ._helpers import explain_bound, predict


def _tolerance(model, background, x, values) -> float:
    """shap and tfshap compute the same float32 values by different kernels: each within the bound of one
    attribution."""
    if isinstance(x, list):
        rows = [np.concatenate(pair) for pair in zip(background, x)]
    else:
        rows = np.concatenate([background, x])
    return 2 * explain_bound(model, rows, len(background[0] if isinstance(x, list) else background), values)


@pytest.fixture(scope="module")
def shap_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shap_reference")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(Path(ref.__file__)), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode == 3:
        reason = f"shap cannot run here: {proc.stderr.strip().splitlines()[-1]}"
        if os.environ.get("TFSHAP_REQUIRE_SHAP") == "1":
            pytest.fail(f"{reason} (TFSHAP_REQUIRE_SHAP=1: the parity tests must run)")
        pytest.skip(reason)
    if proc.returncode != 0:
        pytest.fail(f"the shap reference process failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return out


def _load(shap_dir, name):
    return dict(np.load(shap_dir / f"{name}.npz"))


_EXPLAINERS: dict = {}


def _model(K, name, arrays):
    model = ref.build(K, name)
    ref.load_weights(model, arrays)
    return model


def _explainer(K, name, model, background):
    """One tfshap.DeepExplainer per (Keras, model), shared by the tests of this module."""
    key = (K.__name__, name)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = tfshap.DeepExplainer(model, background)
    return _EXPLAINERS[key]


def _unpack(arrays, prefix):
    if prefix in arrays:
        return arrays[prefix]
    return [arrays[f"{prefix}{i}"] for i in range(2)]


@pytest.mark.parametrize("name", list(ref.MLPS) + ["two_inputs"])
def test_values_match_shap(K, shap_dir, name):
    arrays = _load(shap_dir, name)
    model = _model(K, name, arrays)
    background, x = _unpack(arrays, "background"), _unpack(arrays, "x")

    explainer = _explainer(K, name, model, background)
    values = explainer.shap_values(x)

    expected = _unpack(arrays, "values")
    atol = _tolerance(model, background, x, expected)
    if isinstance(expected, list):
        assert isinstance(values, list) and len(values) == len(expected)
        for got, want in zip(values, expected):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    else:
        assert values.shape == expected.shape  # (n, features, n_outputs), the trailing axis kept for one output
        np.testing.assert_allclose(values, expected, rtol=0, atol=atol)
    np.testing.assert_allclose(explainer.expected_value, arrays["expected"], rtol=0, atol=atol)
    flat = np.concatenate([np.ravel(v) for v in (values if isinstance(values, list) else [values])])
    assert np.abs(flat).max() > 0.05


def test_two_heads_match_shap_per_head(K, shap_dir):
    """tfshap concatenates the heads' outputs; shap explains one head at a time."""
    arrays = _load(shap_dir, "two_heads")
    model = _model(K, "two_heads", arrays)
    background, x = arrays["background"], arrays["x"]

    explainer = tfshap.DeepExplainer(model, background)
    values = explainer.shap_values(x)

    head_a, head_b = arrays["values/head_a"], arrays["values/head_b"]
    assert values.shape == (len(x), ref.N_FEATURES, head_a.shape[-1] + head_b.shape[-1])
    atol = _tolerance(model, background, x, np.concatenate([head_a, head_b], axis=-1))
    np.testing.assert_allclose(values[..., :3], head_a, rtol=0, atol=atol)
    np.testing.assert_allclose(values[..., 3:], head_b, rtol=0, atol=atol)
    expected = np.concatenate([arrays["expected/head_a"], arrays["expected/head_b"]])
    np.testing.assert_allclose(explainer.expected_value, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("order", ["max", "min"])
def test_ranked_outputs_match_shap(K, shap_dir, order):
    arrays = _load(shap_dir, "relu")
    model = _model(K, "relu", arrays)
    background, x = arrays["background"], arrays["x"]
    out = predict(model, x)
    want_indexes = arrays[f"ranked/{order}/indexes"]
    key = -out if order == "max" else out
    # no near-ties: the ranked outputs differ by far more than float32 forward passes can
    gaps = np.diff(np.take_along_axis(key, want_indexes, axis=1), axis=1)
    assert np.all(gaps > 100 * _tolerance(model, background, x, arrays["values"]))

    values, indexes = _explainer(K, "relu", model, background).shap_values(x, ranked_outputs=2, output_rank_order=order)

    np.testing.assert_array_equal(indexes, want_indexes)
    assert values.shape == arrays[f"ranked/{order}/values"].shape == (len(x), ref.N_FEATURES, 2)
    atol = _tolerance(model, background, x, arrays["values"])
    np.testing.assert_allclose(values, arrays[f"ranked/{order}/values"], rtol=0, atol=atol)


def test_ranked_max_abs_takes_the_largest_magnitudes(K, shap_dir):
    """tfshap ranks the largest |output| first, as the name says, and each ranked column holds
    shap's values for that output. (A deliberate difference: shap 0.51 sorts "max_abs" by
    *ascending* |output|, ``np.argsort(np.abs(...))`` in deep_tf.py, so its indexes are not compared.)"""
    arrays = _load(shap_dir, "relu")
    model = _model(K, "relu", arrays)
    background, x = arrays["background"], arrays["x"]
    out = predict(model, x)

    values, indexes = _explainer(K, "relu", model, background).shap_values(
        x, ranked_outputs=2, output_rank_order="max_abs"
    )

    np.testing.assert_array_equal(indexes, np.argsort(-np.abs(out), axis=1)[:, :2])
    atol = _tolerance(model, background, x, arrays["values"])
    np.testing.assert_allclose(
        values, np.take_along_axis(arrays["values"], indexes[:, None, :], axis=2), rtol=0, atol=atol
    )


@pytest.mark.parametrize("name", ["relu", "two_inputs"])
def test_calling_the_explainer_gives_shaps_explanation_field_by_field(K, shap_dir, name):
    """``e(X)``: the values and data of shap's ``Explanation``, in its layout; base values filled in
    (shap's are None)."""
    pytest.importorskip("shap")
    arrays = _load(shap_dir, name)
    model = _model(K, name, arrays)
    background, x = _unpack(arrays, "background"), _unpack(arrays, "x")
    explainer = _explainer(K, name, model, background)

    explanation = explainer(x)

    want_values, want_data = _unpack(arrays, "call/values"), _unpack(arrays, "call/data")
    several = isinstance(want_values, list)
    assert isinstance(explanation.values, list) == several
    atol = _tolerance(model, background, x, want_values)
    for got, want in zip(
        explanation.values if several else [explanation.values], want_values if several else [want_values]
    ):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    for got, want in zip(explanation.data if several else [explanation.data], want_data if several else [want_data]):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert bool(arrays["call/base_values_is_none"])  # shap leaves them out ...
    # ... tfshap gives each sample's base values: the mean output over the background, as the chunk
    # computes it (float32 outputs summed in float64: within the bound of one forward pass)
    expected = np.broadcast_to(explainer.expected_value, (len(predict(model, x)), 2 if name == "two_inputs" else 3))
    np.testing.assert_allclose(explanation.base_values, expected, rtol=0, atol=atol)
