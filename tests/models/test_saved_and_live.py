"""A model given by path explains like the model in memory; a compiled explainer follows live weights."""

from __future__ import annotations

import numpy as np
import pytest

import tfshap

from ._helpers import assert_additive, explain_bound, predict


def _mlp(K, rng):
    inp = K.Input((5,))
    h = K.layers.Dense(8, activation="relu", name="d1")(inp)
    h = K.layers.Dense(6, activation="tanh", name="d2")(h)
    model = K.Model(inp, K.layers.Dense(3, activation="softmax", name="d3")(h))
    model.set_weights([rng.normal(scale=0.8, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


# -- saved models -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_compile_from_a_saved_file(K, rng, tmp_path, suffix):
    model = _mlp(K, rng)
    path = tmp_path / f"model{suffix}"
    model.save(str(path))
    background = rng.normal(size=(10, 5)).astype("float32")
    x = rng.normal(size=(4, 5)).astype("float32")
    in_memory = tfshap.compile(model, background).explain(x)

    from_path = tfshap.compile(str(path), background).explain(x)

    # the same float32 weights, loaded: two float32 computations, each within the bound of one attribution
    bound = explain_bound(model, np.concatenate([background, x]), len(background), in_memory.values)
    np.testing.assert_allclose(from_path.values, in_memory.values, rtol=0, atol=2 * bound)
    np.testing.assert_allclose(from_path.outputs, predict(model, x), rtol=0, atol=2 * bound)
    np.testing.assert_allclose(from_path.base_values, in_memory.base_values, rtol=0, atol=2 * bound)
    assert_additive(from_path, bound)


def test_compile_from_a_saved_model_directory(rng, tmp_path):
    import tf_keras

    model = _mlp(tf_keras, rng)
    path = tmp_path / "saved_model"
    model.save(str(path), save_format="tf")
    background = rng.normal(size=(10, 5)).astype("float32")
    x = rng.normal(size=(4, 5)).astype("float32")
    in_memory = tfshap.compile(model, background).explain(x)

    from_path = tfshap.compile(path, background).explain(x)  # a PathLike works too

    bound = explain_bound(model, np.concatenate([background, x]), len(background), in_memory.values)
    np.testing.assert_allclose(from_path.values, in_memory.values, rtol=0, atol=2 * bound)
    np.testing.assert_allclose(from_path.outputs, predict(model, x), rtol=0, atol=2 * bound)
    assert_additive(from_path, bound)


# -- live weights -----------------------------------------------------------------------------
def test_explainer_follows_assigned_weights(K64, rng):
    model = _mlp(K64, rng)
    background, x = rng.normal(size=(10, 5)), rng.normal(size=(4, 5))
    explainer = tfshap.compile(model, background)
    before = explainer.explain(x)

    layer = model.get_layer("d1")
    layer.kernel.assign(rng.normal(scale=0.8, size=tuple(layer.kernel.shape)))
    after = explainer.explain(x)  # no recompiling
    fresh = tfshap.compile(model, background).explain(x)

    assert np.abs(after.values - before.values).max() > 1e-2  # the change matters
    np.testing.assert_allclose(after.values, fresh.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(after.base_values, fresh.base_values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(explainer.expected_value, predict(model, background).mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(after.outputs, predict(model, x), rtol=0, atol=1e-12)
    assert_additive(after, 1e-9)


def test_explainer_follows_a_fit_step(K64, rng):
    model = _mlp(K64, rng)
    background, x = rng.normal(size=(10, 5)), rng.normal(size=(4, 5))
    explainer = tfshap.compile(model, background)
    before = explainer.explain(x)

    model.compile(optimizer=K64.optimizers.SGD(learning_rate=1.0), loss="categorical_crossentropy")
    targets = np.eye(3)[rng.integers(0, 3, size=32)]
    model.fit(rng.normal(size=(32, 5)), targets, epochs=2, batch_size=16, verbose=0)
    after = explainer.explain(x)
    fresh = tfshap.compile(model, background).explain(x)

    assert np.abs(after.values - before.values).max() > 1e-3
    np.testing.assert_allclose(after.values, fresh.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(after.outputs, predict(model, x), rtol=0, atol=1e-12)
    assert_additive(after, 1e-9)
