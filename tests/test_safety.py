"""Loading a model file never runs code from it: a saved Lambda is refused by ``tfshap.compile(path)``.

There is no opt-in argument on the public API (``trace.load_model(path, safe_mode=False)`` is
internal; the command line has ``--allow-lambda``): a user who trusts the file loads it with
Keras (``safe_mode=False``) and passes the model object.

The Lambda's function writes a sentinel file each time Python runs it (its path comes from an
environment variable, so the function needs no closure and survives saving): tfshap's loading
must leave no sentinel, and the test shows that running the function does leave one.
"""

from __future__ import annotations

import numpy as np
import pytest
from models._helpers import float32_bound

import tfshap
from tfshap.trace import load_model

SENTINEL = "TFSHAP_TEST_SENTINEL"

#: ``2·t``, and a file written where $TFSHAP_TEST_SENTINEL says: the trace of Python code having
#: run. A lambda (Keras saves its bytecode; a named function it saves by name only) that uses
#: builtins only, so that it runs wherever its bytecode is loaded.
_DOUBLING_WITH_A_SIDE_EFFECT = lambda t: (  # noqa: E731
    open(__import__("os").environ["TFSHAP_TEST_SENTINEL"], "a").close(),  # noqa: SIM115
    2.0 * t,
)[1]


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """The sentinel file's path (not there yet)."""
    path = tmp_path / "the lambda ran"
    monkeypatch.setenv(SENTINEL, str(path))
    return path


def _lambda_model(K, sentinel):
    """``Dense(1)(2 · x)``, the doubling in a Lambda layer whose function writes ``sentinel``."""
    inp = K.Input((3,))
    model = K.Model(inp, K.layers.Dense(1)(K.layers.Lambda(_DOUBLING_WITH_A_SIDE_EFFECT)(inp)))
    assert sentinel.exists()  # building the model ran it: the sentinel works
    sentinel.unlink()
    return model


def _closed_form_bound(kernel, x, background) -> float:
    """float32 roundings of ``2·w·(x − mean r)``: the doubling, Δx, the product with w, the mean over the rows."""
    return float32_bound(
        4 + len(background), 2 * np.abs(kernel).max() * np.abs(np.concatenate([x, background])).max() * 2
    )


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_saved_lambda_is_refused_unless_loaded_by_the_user(K, tmp_path, rng, suffix, sentinel):
    model = _lambda_model(K, sentinel)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    sentinel.unlink(missing_ok=True)
    background, x = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"(?s)could not load.*Lambda.*safe_mode=False"):
        tfshap.compile(str(path), background)
    assert not sentinel.exists()  # refused without running the function

    trusted = load_model(path, safe_mode=False)  # what the user does: keras' load_model(..., safe_mode=False)
    assert sentinel.exists()  # that does run the saved function: the sentinel would have seen tfshap run it
    result = tfshap.compile(trusted, background).explain(x)
    kernel = model.layers[-1].get_weights()[0][:, 0]
    expected = 2.0 * kernel * (x - background.mean(axis=0))
    np.testing.assert_allclose(result.values[..., 0], expected, rtol=0, atol=_closed_form_bound(kernel, x, background))


def test_a_keras2_saved_model_with_a_lambda_loads_from_its_graph_without_running_code(tmp_path, sentinel):
    import tf_keras

    model = _lambda_model(tf_keras, sentinel)
    model.save(tmp_path / "saved", save_format="tf")
    sentinel.unlink(missing_ok=True)  # saving traces the function
    loaded = load_model(tmp_path / "saved")  # safe mode: the Lambda is revived from its traced graph
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    # the same float32 ops in the same order: a doubling and a dot product of 3 terms and a bias
    assert not sentinel.exists()  # neither loading nor running the graph ran the Python function
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=float32_bound(5, 1.0))


def test_a_keras2_saved_model_with_a_lambda_is_explained(tmp_path, rng, sentinel):
    import tf_keras

    model = _lambda_model(tf_keras, sentinel)
    model.save(tmp_path / "saved", save_format="tf")
    sentinel.unlink(missing_ok=True)  # saving traces the function
    background, x = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    result = tfshap.compile(str(tmp_path / "saved"), background).explain(x)
    assert not sentinel.exists()  # compiled and explained from the saved graph only
    kernel = model.layers[-1].get_weights()[0][:, 0]
    expected = 2.0 * kernel * (x - background.mean(axis=0))
    np.testing.assert_allclose(result.values[..., 0], expected, rtol=0, atol=_closed_form_bound(kernel, x, background))
