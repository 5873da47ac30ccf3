"""Shared fixtures: both Kerases, float64 models, quiet TensorFlow logs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _kerases():
    import keras
    import tf_keras

    return {"tf_keras": tf_keras, "keras3": keras}


@pytest.fixture(params=["tf_keras", "keras3"])
def K(request):
    """Each Keras in turn (Keras 2 from tf_keras, Keras 3), with floatx restored afterwards."""
    module = _kerases()[request.param]
    floatx = module.backend.floatx()
    # Keras 3 caches its global dtype policy from floatx; set_floatx alone does not undo it.
    policy = module.config.dtype_policy().name if request.param == "keras3" else None
    yield module
    module.backend.set_floatx(floatx)
    if policy is not None:
        module.config.set_dtype_policy(policy)


@pytest.fixture
def K64(K):
    """Each Keras in turn, building float64 models."""
    K.backend.set_floatx("float64")
    if hasattr(K, "config") and hasattr(K.config, "set_dtype_policy"):
        K.config.set_dtype_policy("float64")
    yield K


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _keras_dtype_state():
    """What decides the dtype of a new layer in each Keras: floatx and the global policy."""
    import sys

    state = {}
    for name in ("tf_keras", "keras"):
        module = sys.modules.get(name)
        if module is None:
            continue
        state[name] = (module.backend.floatx(), module.mixed_precision.global_policy().name)
    if "tf_keras" in state:  # an explicitly set tf_keras policy pins new layers, whatever floatx says
        tf_keras = sys.modules["tf_keras"]
        floatx = tf_keras.backend.floatx()
        tf_keras.backend.set_floatx("float16" if floatx != "float16" else "float32")
        state["tf_keras policy follows floatx"] = tf_keras.mixed_precision.global_policy().name == tf_keras.backend.floatx()
        tf_keras.backend.set_floatx(floatx)
    return state


@pytest.fixture(autouse=True)
def _no_leaked_keras_dtype_state():
    """Fail the test that leaves floatx or a mixed-precision policy behind (later tests would build float32)."""
    before = _keras_dtype_state()
    yield
    after = {name: value for name, value in _keras_dtype_state().items() if name in before}
    assert after == before, f"this test changed global Keras dtype state: {before} -> {after}"
