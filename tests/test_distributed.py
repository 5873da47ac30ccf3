"""Chunks dealt out to the devices of a tf.distribute strategy give the single-device values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Logical devices must be configured before TensorFlow starts, so the check runs in a fresh process.
_SCRIPT = textwrap.dedent(
    """
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, tfshap
    from tfshap import batching
    from models._helpers import explain_bound

    used = []
    original = batching.tf.device
    def spy(name):
        used.append(name)
        return original(name)
    batching.tf.device = spy

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(0)
    background, x = rng.normal(size=(20, 8, 8, 1)).astype("float32"), rng.normal(size=(6, 8, 8, 1)).astype("float32")
    alone = tfshap.compile(model, background, batch_size=16).explain(x)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    given = tfshap.compile(model, background, batch_size=16, strategy=strategy).explain(x)
    with strategy.scope():
        scoped_explainer = tfshap.compile(model, background, batch_size=16)
    scoped = scoped_explainer.explain(x)
    print(json.dumps({
        "bound": explain_bound(model, np.concatenate([background, x]), len(background), alone.values),
        "devices": sorted(set(d for d in used if d)),
        "given": float(np.max(np.abs(given.values - alone.values))),
        "scoped": float(np.max(np.abs(scoped.values - alone.values))),
        "additivity": max(r.additivity_error for r in (alone, given, scoped)),
    }))
    """
)


def test_mirrored_strategy_over_two_logical_cpus_matches_one_device():
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["devices"]) == 2 and all("CPU:" in d.upper() for d in report["devices"]), report
    # the same float32 values from other devices: each within the bound of one attribution
    assert report["given"] <= 2 * report["bound"] and report["scoped"] <= 2 * report["bound"], report
    assert report["additivity"] <= report["bound"], report


def test_strategy_must_be_a_tf_distribute_strategy(rng):
    import keras

    import tfshap

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="tf.distribute.Strategy"):
        tfshap.compile(model, rng.normal(size=(2, 3)).astype("float32"), strategy="two gpus")
