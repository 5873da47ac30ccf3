"""Bad input, at every public entry point: a ValueError that names what was expected.

Each entry point that takes data (``tfshap.compile`` for every method, ``DeepExplainer``,
``GradientExplainer``, and ``explain``/``shap_values`` of each) gets wrong shapes, strings
and objects, complex numbers, NaN/inf, values beyond float32, empty arrays, the wrong number
of arrays, and non-arrays (None, dicts). The checks are Keras-independent (Keras 3 here;
tests/test_errors.py covers both Kerases on a smaller matrix).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tfshap

SHAPE = "(n, 8, 8, 1)"
_rng = np.random.default_rng(0)
GOOD = _rng.normal(size=(3, 8, 8, 1)).astype("float32")


def _with(value, index=(0, 0, 0, 0)):
    spoiled = GOOD.astype("float64")
    spoiled[index] = value
    return spoiled


#: name: (bad data, regex the message must match; "{what}" is "background" or "x")
BAD = {
    "wrong_channels": (GOOD.repeat(2, axis=-1), rf"{{what}} must have shape {re.escape(SHAPE)}; got \(3, 8, 8, 2\)"),
    "missing_batch_axis": (GOOD[0], rf"{{what}} must have shape {re.escape(SHAPE)}; got \(8, 8, 1\)"),
    "strings": (GOOD.astype(str), rf"{{what}} must be numeric, of shape {re.escape(SHAPE)}; got dtype <U"),
    "objects": (GOOD.astype(object), rf"{{what}} must be numeric, of shape {re.escape(SHAPE)}; got dtype object"),
    "complex": (GOOD.astype(complex), rf"{{what}} must be real numbers, of shape {re.escape(SHAPE)}"),
    "nan": (
        _with(np.nan, (2, 0, 0, 0)), r"{what} contains 1 NaN or infinite value\(s\), in row 2; expected finite numbers"
    ),
    "inf": (_with(-np.inf), r"{what} contains 1 NaN or infinite value\(s\), in row 0; expected finite numbers"),
    "beyond_float32": (_with(1e300), r"{what} has 1 value\(s\) too large for the model input dtype float32"),
    "empty": (GOOD[:0], rf"{{what}} is empty: expected at least one row of shape {re.escape(SHAPE)}"),
    "none": (None, rf"{{what}} must be an array of shape {re.escape(SHAPE)}; got NoneType"),
    "dict": ({"image": GOOD}, rf"{{what}} must be an array of shape {re.escape(SHAPE)}; got dict"),
    "ragged_lists": ([[1.0, 2.0], [3.0]], rf"{{what}} must be an array of shape {re.escape(SHAPE)}; could not convert"),
    "two_arrays": ([GOOD, GOOD], r"{what} must be a list of 1 array\(s\), one per model input; got 2"),
    "no_arrays": ([], r"{what} must be a list of 1 array\(s\), one per model input; got 0"),
}


@pytest.fixture(scope="module")
def image_model():
    import keras

    inp = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(2, 3, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv)))


@pytest.fixture(scope="module")
def explainers(image_model):
    return {
        "compile": tfshap.compile(image_model, GOOD),
        "DeepExplainer": tfshap.DeepExplainer(image_model, GOOD),
        "GradientExplainer": tfshap.GradientExplainer(image_model, GOOD),
        "integrated_gradients": tfshap.compile(image_model, GOOD, method="integrated_gradients", steps=2),
    }


#: entry point: (what the data is called, a call with it); ``e`` holds the compiled explainers
ENTRIES = {
    "compile": ("background", lambda model, e, data: tfshap.compile(model, data)),
    "DeepExplainer": ("background", lambda model, e, data: tfshap.DeepExplainer(model, data)),
    "GradientExplainer": ("background", lambda model, e, data: tfshap.GradientExplainer(model, data)),
    "integrated_gradients": (
        "background", lambda model, e, data: tfshap.compile(model, data, method="integrated_gradients")
    ),
    "expected_gradients": (
        "background", lambda model, e, data: tfshap.compile(model, data, method="expected_gradients")
    ),
    "compile.explain": ("x", lambda model, e, data: e["compile"].explain(data)),
    "compile.shap_values": ("x", lambda model, e, data: e["compile"].shap_values(data)),
    "DeepExplainer.shap_values": ("x", lambda model, e, data: e["DeepExplainer"].shap_values(data)),
    "GradientExplainer.shap_values": ("x", lambda model, e, data: e["GradientExplainer"].shap_values(data, nsamples=2)),
    "integrated_gradients.explain": ("x", lambda model, e, data: e["integrated_gradients"].explain(data)),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_bad_data(image_model, explainers, entry, case):
    data, message = BAD[case]
    what, call = ENTRIES[entry]
    with pytest.raises(ValueError, match=message.format(what=what)):
        call(image_model, explainers, data)


def test_nested_lists_of_numbers_are_one_array(explainers):
    explainer = explainers["compile"]
    np.testing.assert_array_equal(explainer.explain(GOOD.tolist()).values, explainer.explain(GOOD).values)


# -- a model with two inputs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_input_explainers():
    import keras

    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([a, b], keras.layers.Dense(1, activation="tanh")(keras.layers.Concatenate()([a, b])))
    background = [_rng.normal(size=(4, 3)), _rng.normal(size=(4, 2))]
    return model, background, [tfshap.compile(model, background), tfshap.GradientExplainer(model, background)]


TWO_INPUT_BAD = {
    "one_array": (lambda bg: bg[0], r"{what} must be a list of 2 arrays, one per model input; got a single ndarray"),
    "dict": (
        lambda bg: {"a": bg[0], "b": bg[1]},
        r"{what} must be a list of 2 arrays, one per model input; got a single dict",
    ),
    "none": (lambda bg: None, r"{what} must be a list of 2 arrays, one per model input; got a single NoneType"),
    "none_item": (lambda bg: [bg[0], None], r"{what}\[1\] must be an array of shape \(n, 2\); got NoneType"),
    "swapped": (lambda bg: [bg[1], bg[0]], r"{what}\[0\] must have shape \(n, 3\); got \(4, 2\)"),
    "three_arrays": (lambda bg: [*bg, bg[1]], r"{what} must be a list of 2 array\(s\), one per model input; got 3"),
}


@pytest.mark.parametrize("case", sorted(TWO_INPUT_BAD))
def test_two_input_model(two_input_explainers, case):
    model, background, explainers_ = two_input_explainers
    make, message = TWO_INPUT_BAD[case]
    with pytest.raises(ValueError, match=message.format(what="background")):
        tfshap.compile(model, make(background))
    with pytest.raises(ValueError, match=message.format(what="background")):
        tfshap.GradientExplainer(model, make(background))
    for explainer in explainers_:
        with pytest.raises(ValueError, match=message.format(what="x")):
            explainer.shap_values(make(background))
