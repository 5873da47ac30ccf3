"""``tfshap.register_rule``, the README's way to add a rule, and replacing a rule.

A rule registered for an op type that has none stays registered for the life of the process
(there is no public way to remove one): that test runs in a fresh process, as a user's
program would. Replacing a rule (``replace=True``) is undone through the public API, so those
tests run here (:func:`models._helpers.replaced_rule`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from models._helpers import assert_additive, predict, replaced_rule

import tfshap

# A user's program: a model with Erfinv (no rule), refused; the README's register_rule with a
# rescale rule written with tfshap.pair; then the exact values of w·(erfinv(x) − mean erfinv(r)).
_USER_PROGRAM = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, tf_keras as K
    import tfshap
    from tfshap.pair import halves, on_foreground

    K.backend.set_floatx("float64")
    inp = K.Input((3,))
    model = K.Model(inp, K.layers.Dense(1, use_bias=False)(K.layers.Lambda(tf.math.erfinv, name="erfinv")(inp)))
    w = np.array([[0.5], [-1.5], [2.0]])
    model.set_weights([w])
    rng = np.random.default_rng(0)
    background, x = rng.uniform(-0.9, 0.9, (4, 3)), rng.uniform(-0.9, 0.9, (2, 3))
    try:
        tfshap.compile(model, background)
        refused = ""
    except tfshap.UnsupportedOpError as error:
        refused = str(error)

    def erfinv_rescale(op, grad):
        "m = (erfinv(x) - erfinv(r)) / (x - r): the samples here differ from every reference."
        x, r = halves(op.inputs[0])
        fx, fr = halves(op.outputs[0])
        return [on_foreground((fx - fr) / (x - r)) * grad]

    tfshap.register_rule("Erfinv", family="user", gradient=erfinv_rescale)
    explainer = tfshap.compile(model, background)
    result = explainer.explain(x)
    print(json.dumps({
        "refused": refused,
        "values": result.values[..., 0].tolist(),
        "outputs": result.outputs.tolist(),
        "inference": model(x, training=False).numpy().tolist(),
        "additivity_error": result.additivity_error,
        "rules_used": explainer.rules_used,
        "listed": [(r.op_type, r.family) for r in tfshap.rules() if r.op_type == "Erfinv"],
        "x": x.tolist(), "background": background.tolist(), "w": w[:, 0].tolist(),
    }))
    """
)


def test_a_rule_registered_for_an_op_type_without_one_explains_it_exactly():
    from scipy.special import erfinv

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _USER_PROGRAM], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert "Erfinv" in report["refused"] and "register_rule" in report["refused"]  # refused before
    assert report["listed"] == [["Erfinv", "user"]]
    assert "Erfinv (user)" in report["rules_used"]
    x, background, w = (np.array(report[k]) for k in ("x", "background", "w"))
    expected = w * (erfinv(x) - erfinv(background).mean(axis=0))  # one elementwise op, then a linear one
    np.testing.assert_allclose(report["values"], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(report["outputs"], report["inference"], rtol=0, atol=1e-12)
    assert report["additivity_error"] < 1e-12


def test_a_second_rule_for_an_op_type_needs_replace():
    with pytest.raises(
        ValueError, match=r"a rule for 'Relu' is already registered \(family 'elementwise'\); pass replace=True"
    ):
        tfshap.register_rule("Relu", "user")
    with pytest.raises(ValueError, match="op_type must be a TensorFlow op type name"):
        tfshap.register_rule("", "user")


def _switching_relu_model(K):
    """Dense(4) → relu → Dense(2), float64, with weights under which the relus switch between rows."""
    with_weights = K.Sequential([K.Input((3,), dtype="float64"), K.layers.Dense(4, activation="relu", dtype="float64"),
                                 K.layers.Dense(2, dtype="float64")])
    rng = np.random.default_rng(3)
    with_weights.set_weights([rng.normal(size=w.shape) for w in with_weights.get_weights()])
    return with_weights, rng.normal(size=(6, 3)), rng.normal(size=(4, 3))


def test_a_replaced_rule_is_used_when_compiling_and_the_old_one_comes_back(K):
    """Relu given TensorFlow's own gradient (the linear family): the sums miss where a relu switches."""
    model, background, x = _switching_relu_model(K)
    with replaced_rule("Relu", "linear"):
        wrong = tfshap.compile(model, background)
        assert "Relu (linear)" in wrong.rules_used
        result = wrong.explain(x)
        with pytest.raises(tfshap.AdditivityError, match="miss"):
            wrong.check_additivity(result)
    assert result.additivity_error > 1e-2  # the gradient is not a DeepLIFT multiplier

    restored = tfshap.compile(model, background)
    assert "Relu (elementwise)" in restored.rules_used
    exact = restored.explain(x)
    assert_additive(exact, 1e-12)
    np.testing.assert_allclose(exact.outputs, predict(model, x), rtol=0, atol=1e-12)
