"""Shared fixtures: both Kerases, float64 models, quiet TensorFlow logs; seeds, a dtype guard, a clean exit.

Every fixture and every test body starts from seeds derived from its own name
(:func:`pytest_fixture_setup`, :func:`pytest_runtest_call`), so that Keras' initialisers give
the same weights whichever tests ran before in the same worker, and whichever test first
asked for a module fixture.
"""

from __future__ import annotations

import gc
import os
import zlib

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


def _seed(name: str) -> None:
    """Python's, numpy's global, TensorFlow's and both Kerases' random state from ``name``."""
    import keras  # Keras 3's set_random_seed seeds TensorFlow too, which tf_keras' initialisers draw from

    keras.utils.set_random_seed(zlib.crc32(name.encode()))


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Seed before each fixture is built: a module fixture's weights do not depend on which test built it first."""
    param = getattr(request, "param", None)
    _seed(f"{fixturedef.baseid}::{fixturedef.argname}[{param!r}]")
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Seed before each test body: what it builds does not depend on what ran before it."""
    _seed(item.nodeid)
    return (yield)


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
        policy = tf_keras.mixed_precision.global_policy().name
        state["tf_keras policy follows floatx"] = policy == tf_keras.backend.floatx()
        tf_keras.backend.set_floatx(floatx)
    return state


_DTYPE_STATE_BEFORE = pytest.StashKey[dict]()
#: The state of a Keras just imported (a test may be the first to import one).
_DEFAULT_DTYPE_STATE = {
    "tf_keras": ("float32", "float32"),
    "keras": ("float32", "float32"),
    "tf_keras policy follows floatx": True,
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    """The Keras dtype state before any fixture of the test, module and session fixtures included, is set up."""
    item.stash[_DTYPE_STATE_BEFORE] = _keras_dtype_state()
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Fail the test that leaves floatx or a mixed-precision policy behind, or one of its fixtures that holds it.

    Compared once the test's fixtures are torn down with the state before any was set up: a
    module fixture that changes the state and keeps it changed fails its first test (later
    tests would build float64 models, or float32 ones, without asking).
    """
    result = yield
    after = _keras_dtype_state()
    before = {name: item.stash[_DTYPE_STATE_BEFORE].get(name, _DEFAULT_DTYPE_STATE[name]) for name in after}
    assert after == before, f"this test or a fixture it set up changed global Keras dtype state: {before} -> {after}"
    return result


def pytest_sessionfinish(session):
    """Collect the suite's garbage while the session runs, and keep the survivors out of later collections.

    Under pytest-xdist a worker reports "finished" at the end of this hook, then pytest's
    unconfigure runs full garbage collections; if the worker is still busy 5 s after the
    controller asks it to exit, execnet sends it SIGINT. A worker's heap holds every graph and
    function it traced, and a full collection takes seconds on a loaded 2-core machine: the
    KeyboardInterrupt then lands in the first Python code after the collector, hypothesis' gc
    callback (it times collections), and pytest prints it as a PytestUnraisableExceptionWarning
    after ``[100%]``. Collected here, and frozen, the heap costs the later collections nothing.
    """
    gc.collect()
    gc.freeze()
