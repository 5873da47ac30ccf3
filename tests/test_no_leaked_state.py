"""No leaked state: after any tfshap call, successful or failed, the model's own gradients are
untouched; explainers in two threads at once give what they give alone; compiling twice is
deterministic (float64, both Kerases)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import assert_explains_inference

import tfshap
from tfshap import Attributions, _tf_private


def _model_with_an_unsupported_branch(K):
    """Explaining the whole model is refused (Cumprod); ``output="hidden"`` is fine."""
    inp = K.Input((5,))
    hidden = K.layers.Dense(4, activation="tanh", name="hidden")(inp)
    gated = K.layers.Multiply()([hidden, K.layers.Dense(4, activation="sigmoid")(inp)])
    cumulative = K.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cumprod")(gated)
    return K.Model(inp, K.layers.Dense(2, activation="relu")(K.layers.Concatenate()([gated, cumulative])))


def _tape_gradient(model, x) -> np.ndarray:
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(model(x) * tf.constant([1.0, -2.0], x.dtype))
    return tape.gradient(y, x).numpy()


def _symbolic_gradient(model, x) -> np.ndarray:
    """``tf.gradients`` in a ``tf.function``: the path that reads a graph's gradient overrides."""

    @tf.function(autograph=False)
    def grad(t):
        return tf.gradients(tf.reduce_sum(model(t) * tf.constant([1.0, -2.0], t.dtype)), t)[0]

    return grad(tf.convert_to_tensor(x)).numpy()


def _finite_differences(model, x, h=1e-6) -> np.ndarray:
    weights = np.array([1.0, -2.0])
    f = lambda z: (model(z).numpy() * weights).sum(axis=1)  # noqa: E731
    grad = np.zeros_like(x)
    for i in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, i] = h
        grad[:, i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def _every_kind_of_call(model, background, x) -> None:
    """A success, an UnsupportedOpError, ValueErrors from bad input, an AdditivityError."""
    explainer = tfshap.compile(model, background, output="hidden")
    explainer.explain(x)
    with pytest.raises(tfshap.UnsupportedOpError):
        tfshap.compile(model, background)
    with pytest.raises(ValueError):
        explainer.explain(x[:, :3])
    with pytest.raises(ValueError):
        tfshap.compile(model, np.full_like(background, np.nan), output="hidden")
    wrong = Attributions(values=np.zeros((len(x), 5, 4)), base_values=np.zeros(4), outputs=np.ones((len(x), 4)),
                         additivity_error=1.0)
    with pytest.raises(tfshap.AdditivityError):
        explainer.check_additivity(wrong)


def test_the_models_own_gradients_are_true_after_every_kind_of_call(K64, rng):
    model = _model_with_an_unsupported_branch(K64)
    background, x = rng.normal(size=(6, 5)), rng.normal(size=(3, 5))
    tape_before, symbolic_before = _tape_gradient(model, x), _symbolic_gradient(model, x)
    registry_before = _tf_private.registered_gradient_names()

    _every_kind_of_call(model, background, x)

    np.testing.assert_array_equal(_tape_gradient(model, x), tape_before)
    np.testing.assert_array_equal(_symbolic_gradient(model, x), symbolic_before)
    np.testing.assert_allclose(tape_before, _finite_differences(model, x), rtol=1e-6, atol=1e-8)
    assert _tf_private.registered_gradient_names() == registry_before  # nothing registered while explaining


def test_recurrent_layers_get_their_fused_kernel_switch_back(K64, rng):
    """Explaining forces the standard LSTM cell while tracing; the layer's own setting is restored."""
    model = K64.Sequential([K64.Input((4, 2)), K64.layers.LSTM(3), K64.layers.Dense(1)])
    lstm = model.layers[0]
    switches = ("_could_use_gpu_kernel", "use_cudnn")
    before = {name: getattr(lstm, name) for name in switches if hasattr(lstm, name)}
    assert before  # one of the two Kerases' switches is there
    background, x = rng.normal(size=(3, 4, 2)), rng.normal(size=(2, 4, 2))
    result = tfshap.compile(model, background).explain(x)
    assert result.additivity_error < 1e-9
    assert_explains_inference(result, model, x, background)
    assert {name: getattr(lstm, name) for name in before} == before


def _two_models(K, rng):
    first_in = K.Input((6,))
    first = K.Model(first_in, K.layers.Dense(3, activation="softmax")(K.layers.Dense(5, activation="elu")(first_in)))
    second_in = K.Input((4, 4, 1))
    conv = K.layers.Conv2D(2, 2, activation="relu")(second_in)
    second = K.Model(second_in, K.layers.Dense(2)(K.layers.GlobalMaxPooling2D()(conv)))
    return [(first, rng.normal(size=(8, 6)), rng.normal(size=(5, 6))),
            (second, rng.normal(size=(8, 4, 4, 1)), rng.normal(size=(5, 4, 4, 1)))]


def test_two_explainers_in_two_threads_at_once_match_each_alone(K64, rng):
    cases = _two_models(K64, rng)
    alone = [tfshap.compile(model, background).explain(x).values for model, background, x in cases]

    start = threading.Barrier(len(cases))
    results, errors = [None] * len(cases), []

    def work(i: int) -> None:
        model, background, x = cases[i]
        try:
            start.wait()
            explainer = tfshap.compile(model, background)  # compiling concurrently too
            results[i] = [explainer.explain(x).values for _ in range(3)]
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for expected, runs in zip(alone, results):
        for values in runs:
            np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-15)


def test_compiling_the_same_model_twice_gives_identical_results(K64, rng):
    model, background, x = _two_models(K64, rng)[1]
    first = tfshap.compile(model, background).explain(x)
    second = tfshap.compile(model, background).explain(x)
    np.testing.assert_array_equal(first.values, second.values)
    np.testing.assert_array_equal(first.base_values, second.base_values)
    np.testing.assert_array_equal(first.outputs, second.outputs)
