"""Every error of API.md: unsupported ops at compile time, bad input as ValueError, AdditivityError."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from models._helpers import explain_bound, predict

import tfshap
from tfshap import Attributions

# -- unsupported ops ----------------------------------------------------------------------------
UNSUPPORTED = {
    # layer function, op types that must be named (any of them)
    "cumprod": (lambda t: tf.math.cumprod(t, axis=1), ["Cumprod"]),
    "sort": (lambda t: tf.sort(t, axis=-1), ["TopKV2"]),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_op_is_a_compile_time_error_that_says_what_and_how(K, case):
    fn, op_types = UNSUPPORTED[case]
    inp = K.Input((6,))
    hidden = K.layers.Lambda(fn, name=f"my_{case}")(inp)
    model = K.Model(inp, K.layers.Dense(2)(hidden))
    background = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")

    with pytest.raises(tfshap.UnsupportedOpError) as info:
        tfshap.compile(model, background)  # fails here, before anything is explained

    message = str(info.value)
    assert isinstance(info.value, tfshap.CompileError)
    named = [op for op in op_types if re.search(rf"\b{op}\b", message)]
    assert named, f"no op type of {op_types} is named in:\n{message}"
    op = named[0]
    # a count and an example op name, on the op type's line
    line = next(line for line in message.splitlines() if re.search(rf"\b{op}\b", line))
    assert re.search(r"\b\d+ ops?\b", line), line
    assert re.search(r"e\.g\. '[^']*/[^']*'", line), line  # an op name, e.g. 'model/my_sort/TopKV2'
    assert f"my_{case}" in line, f"the Keras layer is not named: {line}"
    assert "register_rule" in message


def test_unsupported_op_error_lists_every_op_type_at_once(K):
    inp = K.Input((6,))
    a = K.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cp1")(inp)
    b = K.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cp2")(inp)
    c = K.layers.Lambda(lambda t: tf.sort(t, axis=-1), name="srt")(inp)
    model = K.Model(inp, K.layers.Dense(1)(K.layers.Concatenate()([a, b, c])))

    with pytest.raises(tfshap.UnsupportedOpError) as info:
        tfshap.compile(model, np.zeros((3, 6), "float32"))

    message = str(info.value)
    assert re.search(r"Cumprod: 2 ops\b", message), message
    assert "TopKV2" in message


def test_unsupported_op_off_the_explained_path_is_fine(K):
    """Only the path from the inputs to the explained output matters (here output= skips it)."""
    inp = K.Input((6,))
    hidden = K.layers.Dense(4, name="hidden")(inp)
    K.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cp")(hidden)
    model = K.Model(inp, K.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cp_out")(hidden))
    rng = np.random.default_rng(0)
    background, x = rng.normal(size=(5, 6)).astype("float32"), rng.normal(size=(2, 6)).astype("float32")
    result = tfshap.compile(model, background, output="hidden").explain(x)
    assert result.values.shape == (2, 6, 4)
    hidden_model = K.Model(inp, hidden)
    bound = explain_bound(hidden_model, np.concatenate([background, x]), len(background), result.values)
    assert result.additivity_error <= bound
    np.testing.assert_allclose(result.outputs, predict(hidden_model, x), rtol=0, atol=bound)


# -- bad input ------------------------------------------------------------------------------------
_CACHE: dict = {}


def _cached(key, build):
    """Models and explainers reused across the tests of this module (compiling costs ~1 s)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


@pytest.fixture
def one_input(K):
    def build():
        inp = K.Input((6,))
        hidden = K.layers.Dense(4, name="hidden")(inp)
        model = K.Model(inp, K.layers.Dense(3, activation="relu", name="dense_out")(hidden))
        background = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
        return model, background

    return _cached(("one_input", K.__name__), build)


@pytest.fixture
def one_input_explainer(K, one_input):
    model, background = one_input
    return _cached(("one_input_explainer", K.__name__), lambda: tfshap.DeepExplainer(model, background))


@pytest.fixture
def two_inputs(K):
    def build():
        a, b = K.Input((3,)), K.Input((2,))
        model = K.Model([a, b], K.layers.Dense(1)(K.layers.Concatenate()([a, b])))
        rng = np.random.default_rng(0)
        return model, [rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")]

    return _cached(("two_inputs", K.__name__), build)


def test_wrong_shape_names_the_expected_shape(one_input, one_input_explainer):
    model, background = one_input
    with pytest.raises(ValueError, match=re.escape("(n, 6)")) as info:
        tfshap.compile(model, background[:, :5])
    assert "(8, 5)" in str(info.value)  # and what it got
    with pytest.raises(ValueError, match=re.escape("(n, 6)")):
        tfshap.compile(model, background[:, :, None])  # wrong rank
    explainer = one_input_explainer.explainer
    with pytest.raises(ValueError, match=re.escape("(n, 6)")) as info:
        explainer.explain(np.zeros((2, 7), "float32"))
    assert "x" in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(n, 6)")):
        explainer.explain(np.zeros(6, "float32"))  # a single row without its batch axis


def test_wrong_number_of_inputs(two_inputs):
    model, background = two_inputs
    with pytest.raises(ValueError, match=r"2 arrays.*one per model input"):
        tfshap.compile(model, background[0])
    with pytest.raises(ValueError, match=r"list of 2 array.*got 3"):
        tfshap.compile(model, background + [background[1]])
    explainer = tfshap.compile(model, background)
    with pytest.raises(ValueError, match=r"list of 2 array.*got 1"):
        explainer.shap_values([background[0]])
    with pytest.raises(ValueError, match=r"same number of rows.*\[8, 5\]"):
        explainer.explain([background[0], background[1][:5]])
    with pytest.raises(ValueError, match=re.escape("(n, 2)")):
        explainer.explain([background[0], background[0]])  # second input of the wrong width


def test_empty_background(one_input, one_input_explainer):
    model, background = one_input
    with pytest.raises(ValueError, match=r"empty.*\(n, 6\)"):
        tfshap.compile(model, background[:0])
    explainer = one_input_explainer.explainer
    with pytest.raises(ValueError, match="empty"):
        explainer.explain(background[:0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_values(one_input, one_input_explainer, bad):
    model, background = one_input
    spoiled = background.copy()
    spoiled[2, 3] = bad
    with pytest.raises(ValueError, match=r"background contains 1 NaN or infinite value"):
        tfshap.compile(model, spoiled)
    explainer = one_input_explainer.explainer
    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value"):
        explainer.explain(spoiled)


@pytest.mark.parametrize(
    "data",
    [
        np.array([["a"] * 6] * 3),
        np.array([[object()] * 6] * 3, dtype=object),
        np.array([[1.0] * 6, [2.0] * 6], dtype=object),  # numbers, but in an object array
    ],
    ids=["strings", "objects", "object_dtype_numbers"],
)
def test_non_numeric_dtype(one_input, one_input_explainer, data):
    model, background = one_input
    with pytest.raises(ValueError, match=r"must be numeric.*\(n, 6\).*dtype"):
        tfshap.compile(model, data)
    explainer = one_input_explainer.explainer
    with pytest.raises(ValueError, match=r"x must be numeric"):
        explainer.explain(data)


@pytest.mark.parametrize("bad", [0, 4, -1, 1.5, "2"])
def test_bad_ranked_outputs(one_input, one_input_explainer, bad):
    model, background = one_input
    explainer = one_input_explainer
    with pytest.raises(ValueError, match=r"ranked_outputs must be an integer from 1 to 3"):
        explainer.shap_values(background[:2], ranked_outputs=bad)


@pytest.mark.parametrize("bad", ["maximum", "MAX", None, "abs"])
def test_bad_output_rank_order(one_input, one_input_explainer, bad):
    model, background = one_input
    explainer = one_input_explainer
    with pytest.raises(ValueError, match=r"output_rank_order must be one of.*'max'.*'min'.*'max_abs'"):
        explainer.shap_values(background[:2], ranked_outputs=2, output_rank_order=bad)


def test_bad_layer_name(one_input):
    model, background = one_input
    with pytest.raises(ValueError, match=r"output='nope' is not a layer of this model.*hidden"):
        tfshap.compile(model, background, output="nope")
    with pytest.raises(ValueError, match=r"inputs='nope' is not a layer of this model.*dense_out"):
        tfshap.compile(model, background, inputs="nope")


def test_bad_path(tmp_path):
    background = np.zeros((2, 6), "float32")
    with pytest.raises(ValueError, match=r"no model at .*missing\.keras.*\.keras or \.h5"):
        tfshap.compile(str(tmp_path / "missing.keras"), background)
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"cannot load .*model\.txt.*expected a \.keras or \.h5"):
        tfshap.compile(str(text), background)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"could not load the model at .*corrupt\.keras"):
        tfshap.compile(str(corrupt), background)


def test_bad_model_and_options(one_input):
    model, background = one_input
    with pytest.raises(ValueError, match=r"model must be a Keras model"):
        tfshap.compile(lambda t: t, background)
    with pytest.raises(ValueError, match=r"method must be one of"):
        tfshap.compile(model, background, method="lime")
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        tfshap.compile(model, background, batch_size=0)
    with pytest.raises(ValueError, match=r"takes the options.*steps"):
        tfshap.compile(model, background, steps=10)
    with pytest.raises(ValueError, match=r"session"):
        tfshap.DeepExplainer(model, background, session=object())


# -- AdditivityError ------------------------------------------------------------------------------
def test_additivity_error_is_an_assertion_error():
    assert issubclass(tfshap.AdditivityError, AssertionError)
    assert not issubclass(tfshap.AdditivityError, ValueError)


def _stated_tolerance(explainer, attributions) -> float:
    """The tolerance the AdditivityError of ``attributions`` states (its field)."""
    with pytest.raises(tfshap.AdditivityError) as info:
        explainer.check_additivity(attributions)
    return info.value.tolerance


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_additivity_names_the_miss_the_tolerance_and_the_rules(K, dtype):
    """The tolerance scales with the magnitudes compared, sits above the dtype's legitimate rounding,
    and far below a real miss."""
    before = K.backend.floatx()
    K.backend.set_floatx(dtype)
    policy = K.config.dtype_policy() if hasattr(K, "config") and hasattr(K.config, "set_dtype_policy") else None
    if policy is not None:
        K.config.set_dtype_policy(dtype)
    try:
        inp = K.Input((4,))
        model = K.Model(inp, K.layers.Dense(2, activation="relu")(inp))
    finally:
        K.backend.set_floatx(before)
        if policy is not None:
            K.config.set_dtype_policy(policy)
    background = np.random.default_rng(0).normal(size=(5, 4)).astype(dtype)
    explainer = tfshap.compile(model, background)
    real = explainer.explain(background[:2])
    explainer.check_additivity(real)  # a correct explanation passes

    outputs = np.array([[3.0, -1.0], [0.5, 2.0]], dtype)
    bad = Attributions(
        values=np.zeros((2, 4, 2), dtype), base_values=np.zeros(2, dtype), outputs=outputs, additivity_error=0.25
    )
    with pytest.raises(tfshap.AdditivityError) as info:
        explainer.check_additivity(bad)
    error = info.value
    tolerance = error.tolerance
    message = str(error)
    assert "0.25" in message and error.miss == 0.25
    assert f"{tolerance:.3g}" in message and dtype in message
    assert "Relu" in message and "MatMul" in message  # the rules involved
    # Without data there is no model noise to measure: the tolerance is a few dozen ulps of the
    # magnitudes compared (|outputs| = 3 here), so a rule off by one part in a million is caught.
    eps = np.finfo(dtype).eps
    assert error.model_noise is None
    assert 3 * eps * 8 <= tolerance <= 3 * eps * 1e3
    with pytest.raises(AssertionError):  # catchable as shap users do
        explainer.check_additivity(bad)

    # proportional to the magnitudes compared: ten times the outputs, ten times the tolerance
    assert _stated_tolerance(explainer, bad) == tolerance
    ten_times = Attributions(bad.values, bad.base_values, 10 * outputs, additivity_error=25.0)
    assert _stated_tolerance(explainer, ten_times) == pytest.approx(10 * tolerance, rel=1e-2)
    # above the dtype's legitimate rounding of this model's sums, so that a correct explanation never
    # fails, and below a miss of 1% of the outputs, so that a wrong one does
    rows = np.concatenate([background, background[:2]])
    rounding = explain_bound(model, rows, len(background), real.values, eps=float(np.finfo(dtype).eps))
    assert rounding <= explainer.tolerance(real.outputs, real.base_values) + 2 * explainer.model_noise(real.data)
    assert tolerance < 1e-2 * 3.0

    # just within the tolerance passes; just outside fails
    explainer.check_additivity(Attributions(bad.values, bad.base_values, outputs, additivity_error=0.9 * tolerance))
    with pytest.raises(tfshap.AdditivityError):
        explainer.check_additivity(Attributions(bad.values, bad.base_values, outputs, additivity_error=1.1 * tolerance))
