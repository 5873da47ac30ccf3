"""shap.DeepExplainer's values for the parity tests, computed in a separate process.

shap 0.51 wants Keras 2 models as ``tf.keras``; with ``TF_USE_LEGACY_KERAS=1`` set before
TensorFlow is imported, ``tf.keras`` is ``tf_keras``. The tests run this file as a script::

    TF_USE_LEGACY_KERAS=1 python _shap_reference.py OUT_DIR

It writes ``OUT_DIR/<name>.npz`` for every model in ``NAMES``: the weights (``w/<layer>/<i>``),
the background and samples, shap's values and expected values. The tests rebuild the same
models with ``build`` in either Keras, load the weights and compare. Only numpy is imported
at module level, so the tests can import ``build`` without touching ``tf.keras``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

N_FEATURES = 5
N_BACKGROUND = 30
N_SAMPLES = 6

#: Multilayer perceptrons where shap's rules and tfshap's coincide (linear, relu, tanh, sigmoid).
MLPS = {
    "relu": [(12, "relu"), (8, "relu"), (3, None)],
    "tanh": [(10, "tanh"), (1, None)],
    "sigmoid": [(10, "sigmoid"), (6, "relu"), (2, "sigmoid")],
    "mixed": [(10, "relu"), (8, "tanh"), (6, "sigmoid"), (4, None)],
}
NAMES = [*MLPS, "two_heads", "two_inputs"]
RANK_ORDERS = ("max", "min", "max_abs")


def build(K, name):
    """The model ``name`` in the Keras module ``K`` (tf_keras, keras, or tf.keras)."""
    L = K.layers
    if name in MLPS:
        inp = K.Input((N_FEATURES,))
        h = inp
        for i, (units, activation) in enumerate(MLPS[name]):
            h = L.Dense(units, activation=activation, name=f"d{i}")(h)
        return K.Model(inp, h)
    if name == "two_heads":
        inp = K.Input((N_FEATURES,))
        shared = L.Dense(8, activation="relu", name="shared")(inp)
        head_a = L.Dense(3, activation="tanh", name="head_a")(shared)
        head_b = L.Dense(2, activation="sigmoid", name="head_b")(shared)
        return K.Model(inp, [head_a, head_b])
    if name == "two_inputs":
        a, b = K.Input((3,)), K.Input((2,))
        h = L.Concatenate(name="concat")([a, b])
        h = L.Dense(6, activation="relu", name="d0")(h)
        return K.Model([a, b], L.Dense(2, activation="tanh", name="d1")(h))
    raise KeyError(name)


def data(name, rng):
    """(background, samples): arrays, or lists of arrays for ``two_inputs``."""
    background = rng.normal(size=(N_BACKGROUND, N_FEATURES)).astype("float32")
    samples = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype("float32")
    if name == "two_inputs":
        return [background[:, :3], background[:, 3:]], [samples[:, :3], samples[:, 3:]]
    return background, samples


def load_weights(model, arrays) -> None:
    """Set every layer's weights from the ``w/<layer>/<i>`` entries of an npz."""
    for layer in model.layers:
        n = len(layer.get_weights())
        if n:
            layer.set_weights([arrays[f"w/{layer.name}/{i}"] for i in range(n)])


def _pack(prefix, value, into):
    if isinstance(value, list):
        for i, v in enumerate(value):
            into[f"{prefix}{i}"] = np.asarray(v)
    else:
        into[prefix] = np.asarray(value)


def main(out_dir: str) -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    try:
        import shap
    except ImportError as exc:  # the test turns this exit code into a skip with the reason
        print(f"shap is not importable: {exc}", file=sys.stderr)
        sys.exit(3)
    if not tf.keras.layers.Dense.__module__.startswith("tf_keras"):
        print(f"tf.keras is not tf_keras here: {tf.keras.layers.Dense.__module__}", file=sys.stderr)
        sys.exit(3)

    for index, name in enumerate(NAMES):
        rng = np.random.default_rng(100 + index)
        model = build(tf.keras, name)
        saved = {}
        for layer in model.layers:
            weights = [rng.normal(scale=0.8, size=w.shape).astype("float32") for w in layer.get_weights()]
            layer.set_weights(weights)
            for i, w in enumerate(weights):
                saved[f"w/{layer.name}/{i}"] = w
        background, samples = data(name, rng)
        _pack("background", background, saved)
        _pack("x", samples, saved)
        if name == "two_heads":
            # shap explains one output tensor at a time: one pair (inputs, head) per head
            for head in ("head_a", "head_b"):
                explainer = shap.DeepExplainer((model.input, model.get_layer(head).output), background)
                saved[f"values/{head}"] = np.asarray(explainer.shap_values(samples))
                saved[f"expected/{head}"] = np.asarray(explainer.expected_value)
        else:
            explainer = shap.DeepExplainer(model, background)
            _pack("values", explainer.shap_values(samples), saved)
            saved["expected"] = np.asarray(explainer.expected_value)
            if name in ("relu", "two_inputs"):  # shap's explainer(X): a shap.Explanation
                explanation = explainer(samples)
                _pack("call/values", explanation.values, saved)
                _pack("call/data", explanation.data, saved)
                saved["call/base_values_is_none"] = np.asarray(explanation.base_values is None)
            if name == "relu":
                for order in RANK_ORDERS:
                    # shap's own additivity check is wrong with ranked_outputs (it compares
                    # against the unranked outputs), hence check_additivity=False
                    values, indexes = explainer.shap_values(
                        samples, ranked_outputs=2, output_rank_order=order, check_additivity=False
                    )
                    saved[f"ranked/{order}/values"] = np.asarray(values)
                    saved[f"ranked/{order}/indexes"] = np.asarray(indexes)
        np.savez(os.path.join(out_dir, f"{name}.npz"), **saved)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
