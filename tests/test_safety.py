"""Loading a model file never runs code from it: a saved Lambda is refused by ``tfshap.compile(path)``.

There is no opt-in argument on the public API (``trace.load_model(path, safe_mode=False)`` is
internal; the command line has ``--allow-lambda``): a user who trusts the file loads it with
Keras (``safe_mode=False``) and passes the model object.
"""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import float32_bound

import tfshap
from tfshap.trace import load_model


def _lambda_model(K):
    """``Dense(1)(2 · x)``, the doubling in a Lambda layer holding a Python lambda."""
    inp = K.Input((3,))
    return K.Model(inp, K.layers.Dense(1)(K.layers.Lambda(lambda t: 2.0 * t)(inp)))


def _closed_form_bound(kernel, x, background) -> float:
    """float32 roundings of ``2·w·(x − mean r)``: the doubling, Δx, the product with w, the mean over the rows."""
    return float32_bound(4 + len(background), 2 * np.abs(kernel).max() * np.abs(np.concatenate([x, background])).max() * 2)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_saved_lambda_is_refused_unless_loaded_by_the_user(K, tmp_path, rng, suffix):
    model = _lambda_model(K)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    background, x = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"(?s)could not load.*Lambda.*safe_mode=False"):
        tfshap.compile(str(path), background)

    trusted = load_model(path, safe_mode=False)  # what the user does: keras' load_model(..., safe_mode=False)
    result = tfshap.compile(trusted, background).explain(x)
    kernel = model.layers[-1].get_weights()[0][:, 0]
    expected = 2.0 * kernel * (x - background.mean(axis=0))
    np.testing.assert_allclose(result.values[..., 0], expected, rtol=0, atol=_closed_form_bound(kernel, x, background))


def test_a_keras2_saved_model_with_a_lambda_loads_from_its_graph_without_running_code(tmp_path):
    import tf_keras

    model = _lambda_model(tf_keras)
    model.save(tmp_path, save_format="tf")
    loaded = load_model(tmp_path)  # safe mode: the Lambda is revived from its traced graph
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    # the same float32 ops in the same order: a doubling and a dot product of 3 terms and a bias
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=float32_bound(5, 1.0))


def test_a_keras2_saved_model_with_a_lambda_is_explained(tmp_path, rng):
    import tf_keras

    model = _lambda_model(tf_keras)
    model.save(tmp_path, save_format="tf")
    background, x = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    result = tfshap.compile(str(tmp_path), background).explain(x)
    kernel = model.layers[-1].get_weights()[0][:, 0]
    expected = 2.0 * kernel * (x - background.mean(axis=0))
    np.testing.assert_allclose(result.values[..., 0], expected, rtol=0, atol=_closed_form_bound(kernel, x, background))
