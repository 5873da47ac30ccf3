"""Parity with shap.DeepExplainer 0.51 (the anchor) where the rules coincide.

shap runs in a subprocess with ``TF_USE_LEGACY_KERAS=1`` (see ``_shap_reference.py``); the
same models are rebuilt here in both Kerases with the same weights and compared.
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
from ._helpers import predict

ATOL = 2e-5


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
        pytest.skip(f"shap cannot run here: {proc.stderr.strip().splitlines()[-1]}")
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
    if isinstance(expected, list):
        assert isinstance(values, list) and len(values) == len(expected)
        for got, want in zip(values, expected):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    else:
        assert values.shape == expected.shape  # (n, features, n_outputs), the trailing axis kept for one output
        np.testing.assert_allclose(values, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(explainer.expected_value, arrays["expected"], rtol=0, atol=ATOL)
    assert np.abs(np.concatenate([np.ravel(v) for v in (values if isinstance(values, list) else [values])])).max() > 0.05


def test_two_heads_match_shap_per_head(K, shap_dir):
    """tfshap concatenates the heads' outputs; shap explains one head at a time."""
    arrays = _load(shap_dir, "two_heads")
    model = _model(K, "two_heads", arrays)
    background, x = arrays["background"], arrays["x"]

    explainer = tfshap.DeepExplainer(model, background)
    values = explainer.shap_values(x)

    head_a, head_b = arrays["values/head_a"], arrays["values/head_b"]
    assert values.shape == (len(x), ref.N_FEATURES, head_a.shape[-1] + head_b.shape[-1])
    np.testing.assert_allclose(values[..., :3], head_a, rtol=0, atol=ATOL)
    np.testing.assert_allclose(values[..., 3:], head_b, rtol=0, atol=ATOL)
    expected = np.concatenate([arrays["expected/head_a"], arrays["expected/head_b"]])
    np.testing.assert_allclose(explainer.expected_value, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("order", ["max", "min"])
def test_ranked_outputs_match_shap(K, shap_dir, order):
    arrays = _load(shap_dir, "relu")
    model = _model(K, "relu", arrays)
    background, x = arrays["background"], arrays["x"]
    out = predict(model, x)
    want_indexes = arrays[f"ranked/{order}/indexes"]
    key = -out if order == "max" else out
    assert np.all(np.diff(np.take_along_axis(key, want_indexes, axis=1), axis=1) > 1e-4)  # no near-ties

    values, indexes = _explainer(K, "relu", model, background).shap_values(x, ranked_outputs=2, output_rank_order=order)

    np.testing.assert_array_equal(indexes, want_indexes)
    assert values.shape == arrays[f"ranked/{order}/values"].shape == (len(x), ref.N_FEATURES, 2)
    np.testing.assert_allclose(values, arrays[f"ranked/{order}/values"], rtol=0, atol=ATOL)


def test_ranked_max_abs_takes_the_largest_magnitudes(K, shap_dir):
    """A deliberate difference: shap 0.51 sorts "max_abs" by *ascending* |output|
    (``np.argsort(np.abs(...))`` in deep_tf.py); tfshap ranks the largest |output| first, as the
    name says. The values of each ranked column still match shap's full explanation."""
    arrays = _load(shap_dir, "relu")
    model = _model(K, "relu", arrays)
    background, x = arrays["background"], arrays["x"]
    out = predict(model, x)
    np.testing.assert_array_equal(arrays["ranked/max_abs/indexes"], np.argsort(np.abs(out), axis=1)[:, :2])

    values, indexes = _explainer(K, "relu", model, background).shap_values(x, ranked_outputs=2, output_rank_order="max_abs")

    np.testing.assert_array_equal(indexes, np.argsort(-np.abs(out), axis=1)[:, :2])
    np.testing.assert_allclose(values, np.take_along_axis(arrays["values"], indexes[:, None, :], axis=2), rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["relu", "two_inputs"])
def test_calling_the_explainer_gives_shaps_explanation_field_by_field(K, shap_dir, name):
    """``e(X)``: the values and data of shap's ``Explanation``, in its layout; base values filled in (shap's are None)."""
    pytest.importorskip("shap")
    arrays = _load(shap_dir, name)
    model = _model(K, name, arrays)
    background, x = _unpack(arrays, "background"), _unpack(arrays, "x")
    explainer = _explainer(K, name, model, background)

    explanation = explainer(x)

    want_values, want_data = _unpack(arrays, "call/values"), _unpack(arrays, "call/data")
    several = isinstance(want_values, list)
    assert isinstance(explanation.values, list) == several
    for got, want in zip(explanation.values if several else [explanation.values], want_values if several else [want_values]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    for got, want in zip(explanation.data if several else [explanation.data], want_data if several else [want_data]):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert bool(arrays["call/base_values_is_none"])  # shap leaves them out ...
    np.testing.assert_allclose(  # ... tfshap gives each sample's base values
        explanation.base_values, np.broadcast_to(explainer.expected_value, (len(predict(model, x)), 2 if name == "two_inputs" else 3)),
        rtol=0, atol=1e-6)
