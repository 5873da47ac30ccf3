"""Property: every random architecture of supported layers is accepted and sums exactly.

A hypothesis strategy draws a random DAG (a plain-data spec, so shrunk failures can be
pinned as ``@example``s) of Dense, Conv1D/Conv2D, activations, Multiply/Add/Subtract/
Concatenate, softmax, max/average/global pooling, small LSTM/GRU, MultiHeadAttention and
LayerNormalization; every leaf of the DAG feeds the head. Each is built with the functional
API, in float64, in the Keras the spec names, and ``tfshap.compile(...).explain`` must sum to
``f(x) − E f(background)`` within ``1e-9 · max(1, |f|)`` and give the model's inference
outputs, or raise ``UnsupportedOpError``. Every layer the strategy draws has rules for all
its ops, so refusals must stay rare: at least ``MIN_ACCEPTANCE`` of the examples are accepted
(a compiler that refused everything would otherwise pass).

Profiles: ``ci`` (the default; fixed seed, 25 examples, each in one Keras) and ``long`` (by
hand): ``HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_properties.py``.
"""

from __future__ import annotations

import collections
import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from models._helpers import (
    KERASES,
    additivity_gap,
    floatx,
    keras_module,
    predict,
    random_weights,
)

import tfshap

settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("long", max_examples=400, deadline=None, print_blob=True)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: The least share of drawn architectures that must be accepted: every drawn layer has rules.
MIN_ACCEPTANCE = 0.9

#: Attention and layer normalisation rules are on the registry; set False to leave them out.
INCLUDE_ATTENTION = True

ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "softsign", "swish", "gelu", "hard_sigmoid", "linear",
)
WIDTHS = st.integers(2, 4)  # few widths, so that shapes meet and merges are possible
RELATIVE_TOLERANCE = 1e-9


# -- the spec: a list of ops over a growing list of tensor shapes (batch axis left out) ----------
def _shape_after(op: tuple, shapes: list[tuple]) -> tuple:
    """The output shape of one spec op, given the shapes of the tensors before it."""
    kind, src = op[0], shapes[op[1]]
    if kind == "dense":
        return (*src[:-1], op[2])
    if kind in ("activation", "softmax", "layer_norm", "attention"):
        return src
    if kind == "conv":
        k = op[3]
        return (*(d - k + 1 for d in src[:-1]), op[2])
    if kind == "pool":
        return (*(d // 2 for d in src[:-1]), src[-1])
    if kind == "global_pool":
        return (src[-1],)
    if kind == "rnn":
        return (src[0], op[3]) if op[4] else (op[3],)
    if kind == "merge":
        other = shapes[op[2]]
        return (*src[:-1], src[-1] + other[-1]) if op[3] == "concatenate" else src
    raise AssertionError(kind)


def _unary_choices(shape: tuple) -> list[str]:
    rank = len(shape)
    kinds = ["dense", "activation", "softmax"]
    if rank in (2, 3):
        kinds += ["global_pool"]
        if min(shape[:-1]) >= 2:
            kinds += ["conv", "pool"]
    if rank == 2:
        kinds += ["rnn"] + (["attention"] if INCLUDE_ATTENTION else [])
    if INCLUDE_ATTENTION:
        kinds += ["layer_norm"]
    return kinds


def _mergeable(shapes: list[tuple]) -> list[tuple[int, int, str]]:
    pairs = []
    for i, a in enumerate(shapes):
        for j, b in enumerate(shapes):
            if i < j and a[:-1] == b[:-1]:
                pairs.append((i, j, "concatenate"))
                if a == b:
                    pairs += [(i, j, kind) for kind in ("multiply", "add", "subtract")]
    return pairs


@st.composite
def _unary_op(draw, index: int, shape: tuple) -> tuple:
    kind = draw(st.sampled_from(_unary_choices(shape)))
    if kind == "dense":
        return ("dense", index, draw(WIDTHS), draw(st.sampled_from(ACTIVATIONS)))
    if kind == "activation":
        return ("activation", index, draw(st.sampled_from(ACTIVATIONS)))
    if kind == "conv":
        return ("conv", index, draw(WIDTHS), draw(st.integers(1, min(2, min(shape[:-1])))))
    if kind in ("pool", "global_pool"):
        return (kind, index, draw(st.sampled_from(["max", "average"])))
    if kind == "rnn":
        return ("rnn", index, draw(st.sampled_from(["lstm", "gru"])), 2, draw(st.booleans()))
    if kind == "attention":
        return ("attention", index, draw(st.integers(1, 2)), 2)
    return (kind, index)


@st.composite
def architectures(draw) -> dict:
    """A random DAG spec: input shape, ops, the number of outputs, the head's activation, a seed."""
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(2, 4)) for _ in range(rank - 1)) + (draw(st.integers(1, 3)),)
    shapes, ops = [shape], []
    for _ in range(draw(st.integers(1, 5))):
        merges = _mergeable(shapes)
        if merges and draw(st.integers(0, 2)) == 0:
            i, j, kind = draw(st.sampled_from(merges))
            op = ("merge", i, j, kind)
        else:
            index = draw(st.integers(0, len(shapes) - 1))
            op = draw(_unary_op(index, shapes[index]))
        ops.append(op)
        shapes.append(_shape_after(op, shapes))
    return {
        "input": shape,
        "ops": ops,
        "outputs": draw(st.integers(1, 3)),
        "head": draw(st.sampled_from(["linear", "softmax", "sigmoid"])),
        "seed": draw(st.integers(0, 2**16)),
        "keras": draw(st.sampled_from(KERASES)),
    }


# -- building a spec in one Keras ------------------------------------------------------------------
def _layer(K, op: tuple, rank: int):
    """The Keras layer of a unary spec op on a tensor of ``rank`` (batch axis included: 3 or 4 for
    convolutions and pooling)."""
    kind, layers = op[0], K.layers
    if kind == "dense":
        return layers.Dense(op[2], activation=op[3])
    if kind == "activation":
        return layers.Activation(op[2])
    if kind == "softmax":
        return layers.Softmax()
    if kind == "layer_norm":
        return layers.LayerNormalization()
    if kind == "conv":
        return (layers.Conv1D, layers.Conv2D)[rank - 3](op[2], op[3])
    if kind == "pool":
        family = {"max": ("MaxPooling1D", "MaxPooling2D"), "average": ("AveragePooling1D", "AveragePooling2D")}[op[2]]
        return getattr(layers, family[rank - 3])(2)
    if kind == "global_pool":
        family = {
            "max": ("GlobalMaxPooling1D", "GlobalMaxPooling2D"),
            "average": ("GlobalAveragePooling1D", "GlobalAveragePooling2D"),
        }[op[2]]
        return getattr(layers, family[rank - 3])()
    if kind == "rnn":
        return {"lstm": layers.LSTM, "gru": layers.GRU}[op[2]](op[3], return_sequences=op[4])
    raise AssertionError(kind)


_RANKS: dict[int, int] = {}


def _rank_of(op: tuple) -> int:
    return _RANKS[id(op)]


def build(K, spec: dict):
    """The spec as a functional model of Keras ``K`` (in its current floatx); every leaf feeds the head."""
    inp = K.Input(spec["input"])
    tensors, used = [inp], set()
    for op in spec["ops"]:
        src = tensors[op[1]]
        used.add(op[1])
        if op[0] == "merge":
            used.add(op[2])
            merge = {"concatenate": K.layers.Concatenate, "multiply": K.layers.Multiply,
                     "add": K.layers.Add, "subtract": K.layers.Subtract}[op[3]]()
            tensors.append(merge([src, tensors[op[2]]]))
        elif op[0] == "attention":
            tensors.append(K.layers.MultiHeadAttention(op[2], op[3])(src, src))
        else:
            tensors.append(_layer(K, op, len(src.shape))(src))
    leaves = [t for i, t in enumerate(tensors) if i not in used]
    flat = [K.layers.Flatten()(t) if len(t.shape) > 2 else t for t in leaves]
    joined = flat[0] if len(flat) == 1 else K.layers.Concatenate()(flat)
    return K.Model(inp, K.layers.Dense(spec["outputs"], activation=spec["head"])(joined))


def check_sums_or_refuses(spec: dict) -> bool:
    """The property: exact summation-to-delta in float64 (True), or ``UnsupportedOpError`` at compile time (False)."""
    K = keras_module(spec.get("keras", "keras3"))
    with floatx(K, "float64"):
        model = build(K, spec)
    rng = np.random.default_rng(spec["seed"])
    random_weights(model, rng)
    background = rng.normal(size=(4, *spec["input"]))
    x = rng.normal(size=(3, *spec["input"]))
    try:
        explainer = tfshap.compile(model, background)
    except tfshap.UnsupportedOpError:
        return False
    result = explainer.explain(x)
    np.testing.assert_allclose(result.outputs, predict(model, x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.base_values, predict(model, background).mean(0), rtol=1e-12, atol=1e-12)
    scale = max(1.0, float(np.max(np.abs(result.outputs))))
    gap = np.max(np.abs(additivity_gap(result.values, result.base_values, result.outputs)))
    assert gap <= RELATIVE_TOLERANCE * scale, (
        f"additivity gap {gap:.3g} > {RELATIVE_TOLERANCE} · {scale:.3g} for {spec}"
    )
    assert np.all(np.isfinite(result.values))
    return True


# -- the property, and regressions kept from it ------------------------------------------------------
def test_random_architectures_sum_exactly_and_are_accepted():
    tally = collections.Counter()

    @settings(PROFILE, suppress_health_check=[HealthCheck.too_slow])
    @given(spec=architectures())
    @example(spec={"input": (3, 2), "ops": [("rnn", 0, "gru", 2, True), ("merge", 0, 1, "concatenate"),
                                             ("attention", 2, 2, 2), ("layer_norm", 3)],
                   "outputs": 2, "head": "softmax", "seed": 7, "keras": "tf_keras"})
    @example(spec={"input": (4, 4, 1), "ops": [("conv", 0, 2, 2), ("pool", 1, "max"), ("activation", 2, "swish"),
                                                ("merge", 2, 3, "multiply"), ("global_pool", 4, "average")],
                   "outputs": 3, "head": "linear", "seed": 3, "keras": "keras3"})
    @example(spec={"input": (3,), "ops": [("dense", 0, 3, "gelu"), ("merge", 0, 1, "subtract"),
                                           ("softmax", 2), ("merge", 1, 3, "multiply")],
                   "outputs": 1, "head": "sigmoid", "seed": 11, "keras": "tf_keras"})
    def check(spec):
        tally["accepted" if check_sums_or_refuses(spec) else "refused"] += 1
        tally[spec["keras"]] += 1

    check()
    examples = tally["accepted"] + tally["refused"]
    assert examples >= PROFILE.max_examples  # the explicit examples, then the search
    assert tally["accepted"] >= MIN_ACCEPTANCE * examples, f"only {tally['accepted']} of {examples} accepted"
    assert tally["tf_keras"] and tally["keras3"]


def test_the_strategy_covers_every_layer_family():
    """The generator can reach every op kind (so the property is not silently narrower than it says)."""
    kinds = set()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(spec=architectures())
    def collect(spec):
        kinds.update(op[0] if op[0] != "merge" else op[3] for op in spec["ops"])

    collect()
    expected = {"dense", "activation", "softmax", "conv", "pool", "global_pool", "rnn",
                "concatenate", "multiply", "add", "subtract"}
    if INCLUDE_ATTENTION:
        expected |= {"attention", "layer_norm"}
    assert expected <= kinds, sorted(expected - kinds)
