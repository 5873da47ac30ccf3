"""The rule contract, for every registered op type (see DESIGN.md, "Tests that keep it honest").

For each case of the table in :mod:`.cases`, one graph per dtype is traced the way the
runner traces a model, with the case's rule set (``Case.rules``): the varying inputs are
paired (foreground rows, then reference rows), the case builds its op,
:func:`tfshap.rewrite.rewrite` installs the rules, and symbolic ``tf.gradients`` of the
foreground outputs, weighted by ``w``, gives the multipliers ``m``. Then

* local summation-to-delta, per row: ``Σ m · (x − r) = Σ w · (f(x) − f(r))`` (float64, 1e-9);
* ``x == r`` gives the true gradient (an eager ``tf.GradientTape``, which ignores overrides);
* float32 tracks float64;
* the rule fired: a tfshap gradient is installed on the op exactly when the plan says so;
* and the uses with no exact treatment fail to compile, naming the op type.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from models._helpers import ELEMENTWISE_ROUNDINGS, float32_bound  # noqa: E402

import tfshap  # noqa: E402,F401  (registers every rule)
from tfshap import _tf_private, registry  # noqa: E402
from tfshap.errors import UnsupportedOpError  # noqa: E402
from tfshap.graph import reaching_tensors, varying_tensors  # noqa: E402
from tfshap.pair import VARYING_ATTR, one_to_one  # noqa: E402
from tfshap.rewrite import rewrite  # noqa: E402

from .cases import CASES, REFUSALS, N, sample  # noqa: E402
from .test_mask_inputs import MASK_OP_TYPES  # noqa: E402

BY_ID = {c.id: c for c in CASES}
SEED = {c.id: 1000 + i for i, c in enumerate(CASES)}
BOTH_DTYPES = [c for c in CASES if {"float64", "float32"} <= set(c.dtypes)]

#: Roundings of a rule's multipliers, by family: a rescale's f(x), f(r), Δf, Δx and ratio; a
#: two-player rule's four evaluations of the op and two of those; softmax's and a normalisation's
#: four rescale steps; a mask or a linear op's one. Pooling: the exact Shapley split of a window's
#: maximum sums up to one term per input of the window (at most 16: SHAPLEY_MAX_WINDOW), each a
#: difference times a weight, then a ratio: 2 · 16 roundings.
FAMILY_ROUNDINGS = {
    "linear": 1, "mask": 1, "control_flow": 1, "elementwise": ELEMENTWISE_ROUNDINGS, "pooling": 32,
    "bilinear": ELEMENTWISE_ROUNDINGS, "binary": 2 * ELEMENTWISE_ROUNDINGS, "softmax": 4 * ELEMENTWISE_ROUNDINGS,
    "normalization": 4 * ELEMENTWISE_ROUNDINGS,
}
#: The loops of the case table run their bodies three times.
LOOP_STEPS = 3


def roundings(case) -> int:
    """Roundings of one row's local sums: every element of its inputs and outputs, and every rule on the way.

    The rules are those the rewrite used in the case's graph (inside loop bodies three times over).
    """
    c = compiled(case.id, case.dtypes[0])
    out_elements = sum(int(np.prod(w.shape)) for w in c.weights) // N
    chain = sum(FAMILY_ROUNDINGS[family] * count for (family, _), count in c.used.items())
    loops = any(family == "control_flow" for family, _ in c.used)
    return sum(int(np.prod(a.shape)) for a in case.args) + out_elements + chain * (LOOP_STEPS if loops else 1)


def relative_tolerance(case, dtype) -> float:
    """How far the case's sums may be off, relative to the sum of their terms' absolute values, in ``dtype``.

    float64: 1e-9, far above its roundings (2**-53 each). float32 and half precision: the
    roundings of :func:`roundings`, each at most half the dtype's eps (see ``float32_bound``).
    """
    if dtype in ("float16", "bfloat16"):
        return float32_bound(roundings(case), 1.0, float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps))
    if _precision(case, dtype) == "float64":
        return 1e-9
    return float32_bound(roundings(case), 1.0)


def _ids(cases):
    return [c.id for c in cases]


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@dataclass
class OpRecord:
    """An op of the case's type on the path, as the rewrite left it."""

    name: str
    flags: tuple[bool, ...]
    plan: object
    gradient_op_type: str | None
    varying_attr: str | None


@dataclass
class Compiled:
    fn: object  # (xs, rs, ws) -> (outputs, gradients wrt the paired inputs)
    records: list[OpRecord]
    used: dict
    out_dtypes: list[tf.DType]
    weights: list[np.ndarray]


@functools.lru_cache(maxsize=None)
def compiled(case_id: str, dtype: str) -> Compiled:
    """Trace the case once for ``dtype``: pair, build, rewrite, ``tf.gradients``."""
    case = BY_ID[case_id]
    dt = tf.as_dtype(dtype)
    xs, rs = sample(case.args, SEED[case_id])
    # An eager run tells the outputs' shapes and dtypes, which fix the weights' signature.
    eager = _as_list(case.build(*[tf.constant(np.concatenate([x, r]), dt) for x, r in zip(xs, rs)]))
    rng = np.random.default_rng(SEED[case_id] + 1)
    weights = [rng.normal(size=(N, *o.shape[1:])) for o in eager]
    in_specs = [tf.TensorSpec((N, *a.shape), dt) for a in case.args]
    w_specs = [tf.TensorSpec((N, *o.shape[1:]), o.dtype) for o in eager]
    records: list[OpRecord] = []
    used: dict = {}

    def fn(xs, rs, ws):
        paired = [tf.concat([x, r], 0) for x, r in zip(xs, rs)]
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        outs = _as_list(case.build(*paired))
        ops = graph.get_operations()[first:]
        report = rewrite(ops, sources=paired, targets=outs, rule_set=case.rules)
        used.update(report.used)
        varying, reaching = varying_tensors(ops, paired), reaching_tensors(ops, outs)
        for op in ops:
            if op.type != case.op_type or not any(t.ref() in reaching for t in op.outputs):
                continue
            flags = tuple(t.ref() in varying for t in op.inputs)
            if not any(flags):
                continue
            records.append(
                OpRecord(
                    op.name,
                    flags,
                    registry.lookup(op.type, case.rules).decide(op, flags),
                    _tf_private.get_string_attr(op, _tf_private.GRADIENT_OP_TYPE_ATTR),
                    _tf_private.get_string_attr(op, VARYING_ATTR),
                )
            )
        grads = tf.gradients(
            [o[:N] for o in outs], paired, grad_ys=ws, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return outs, [tf.convert_to_tensor(g) for g in grads]

    def in_layout(xs, rs, ws):
        with one_to_one(N):
            return fn(xs, rs, ws)

    concrete = tf.function(in_layout, autograph=False).get_concrete_function(in_specs, in_specs, w_specs)
    return Compiled(concrete, records, used, [o.dtype for o in eager], weights)


def run(case, dtype, xs, rs):
    """Outputs (float64 numpy, paired) and foreground multipliers of the case's graph for ``dtype``."""
    c = compiled(case.id, dtype)
    dt = tf.as_dtype(dtype)
    outs, grads = c.fn(
        [tf.constant(x, dt) for x in xs],
        [tf.constant(r, dt) for r in rs],
        [tf.constant(w, o) for w, o in zip(c.weights, c.out_dtypes)],
    )
    return [o.numpy().astype(np.float64) for o in outs], [g.numpy()[:N].astype(np.float64) for g in grads]


def true_gradient(case, dtype, xs):
    """The plain gradient at ``x`` (paired with itself), from an eager tape: no override applies."""
    c = compiled(case.id, dtype)
    dt = tf.as_dtype(dtype)
    paired = [tf.constant(np.concatenate([x, x]), dt) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(paired)
        outs = [o[:N] for o in _as_list((case.twin or case.build)(*paired))]
    grads = tape.gradient(
        outs,
        paired,
        output_gradients=[tf.constant(w, o.dtype) for w, o in zip(c.weights, outs)],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return [tf.convert_to_tensor(g).numpy()[:N].astype(np.float64) for g in grads]


def _precision(case, dtype):
    names = {dtype} | {d.name for d in compiled(case.id, dtype).out_dtypes}
    return "float32" if "float32" in names else "float64"


def _rows(a):
    return a.reshape(a.shape[0], -1)


# ---------------------------------------------------------------------------------------


def test_the_case_table_covers_exactly_the_registered_op_types():
    registered = {r.op_type for r in registry.rules()}
    tabled = {c.op_type for c in CASES} | MASK_OP_TYPES  # integer mask inputs: test_mask_inputs.py
    assert not registered - tabled, (
        f"registered op types with no case in tests/rules/cases.py: {sorted(registered - tabled)}"
    )
    assert not tabled - registered, f"cases for op types with no registered rule: {sorted(tabled - registered)}"


@pytest.mark.parametrize("rule_set", registry.rule_sets()[1:])
def test_every_rule_set_has_cases_for_its_own_rules(rule_set):
    """A rule set's own rules (those that replace a default rule) are tabled under that set."""
    own = {r.op_type for r in registry.rules(rule_set) if r.rules == rule_set}
    tabled = {c.op_type for c in CASES if c.rules == rule_set}
    assert own == tabled, f"rule set {rule_set!r}: rules {sorted(own)}, cases for {sorted(tabled)}"


def test_case_ids_are_unique():
    assert len(BY_ID) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_the_rule_fired(case):
    c = compiled(case.id, case.dtypes[0])
    assert c.records, f"no {case.op_type} op with a varying input on the path: the case does not build its op"
    rule = registry.lookup(case.op_type, case.rules)
    assert c.used.get((rule.family, case.op_type), 0) >= len(c.records)
    for rec in c.records:
        assert not isinstance(rec.plan, registry.Refusal), f"{rec.name}: refused: {rec.plan.reason}"
        if case.expect == "keep":
            assert rec.plan is registry.KEEP, f"{rec.name}: expected the linear rule, plan gave {rec.plan!r}"
            assert rec.gradient_op_type is None or not rec.gradient_op_type.startswith("tfshap/"), rec
            assert rec.varying_attr is None, rec
        else:
            assert isinstance(rec.plan, registry.Override) and rec.plan.gradient.startswith("tfshap/"), \
                f"{rec.name}: plan gave {rec.plan!r}"
            assert rec.gradient_op_type == rec.plan.gradient, rec
            assert rec.varying_attr == "".join("1" if f else "0" for f in rec.flags), rec


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_local_summation_to_delta(case):
    dtype = case.dtypes[0]
    xs, rs = sample(case.args, SEED[case.id])
    outs, ms = run(case, dtype, xs, rs)
    weights = compiled(case.id, dtype).weights
    lhs = sum(_rows(m * (x - r)).sum(1) for m, x, r in zip(ms, xs, rs))
    rhs = sum(_rows(w * (o[:N] - o[N:])).sum(1) for w, o in zip(weights, outs))
    scale = sum(_rows(np.abs(w) * (np.abs(o[:N]) + np.abs(o[N:]))).sum(1) for w, o in zip(weights, outs))
    scale = scale + sum(_rows(np.abs(m * (x - r))).sum(1) for m, x, r in zip(ms, xs, rs))
    assert np.all(np.isfinite(lhs)), lhs
    if not case.rowwise:
        lhs, rhs, scale = lhs.sum(keepdims=True), rhs.sum(keepdims=True), scale.sum(keepdims=True)
    rtol = relative_tolerance(case, dtype)
    bad = np.abs(lhs - rhs) > rtol * (scale + 1e-12)
    assert not bad.any(), f"Σ m·Δin {lhs} != Σ w·Δout {rhs} (relative {np.abs(lhs - rhs) / (scale + 1e-12)})"


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_equal_reference_gives_the_true_gradient(case):
    dtype = case.dtypes[0]
    xs, _ = sample(case.args, SEED[case.id])
    _, ms = run(case, dtype, xs, xs)
    expected = true_gradient(case, dtype, xs)
    # two computations of the same derivative (the rule's at the midpoint, which is x, and the
    # tape's): in float32, within the roundings of the case's sums and its rule's chain
    tol = 1e-8 if _precision(case, dtype) == "float64" else relative_tolerance(case, dtype)
    for m, g in zip(ms, expected):
        np.testing.assert_allclose(m, g, rtol=tol, atol=tol * max(1.0, np.abs(g).max()))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_nearly_equal_reference(case):
    """A reference within rounding of ``x``, or a hair away: finite multipliers near the gradient."""
    dtype = case.dtypes[0]
    xs, _ = sample(case.args, SEED[case.id])
    expected = true_gradient(case, dtype, xs)
    eps = np.finfo(dtype).eps
    # float64: r a hair away (1e-9) gives the secant slope, within 1e-4 of the tangent on these domains.
    # float32 (cases with no float64 kernel): r = x·(1 + 1e-4) makes Δf = f(x) − f(r) of about
    # 1e-4·|x·f'|, so the roundings of f(x) and f(r) weigh float32_bound(n, |f|) / (1e-4·|x|) in m.
    far = 1e-9 if dtype == "float64" else 1e-4
    outs, _ = run(case, dtype, xs, xs)
    magnitude = max(float(np.abs(o).max()) for o in outs)
    smallest = min(float(np.abs(x[x != 0]).min()) for x in xs)
    far_tol = 1e-4 if dtype == "float64" else float32_bound(roundings(case), magnitude) / (far * smallest)
    # r within 4 ulps: the derivative at the midpoint, 2 ulps from x (moving it by 2·eps·|x·f''/f'|,
    # at most 4·eps on these domains), to the rounding of the case's sums
    near_tol = 1e-6 if dtype == "float64" else relative_tolerance(case, dtype) + 4 * eps
    for rel, tol in ((4 * eps, near_tol), (far, far_tol)):
        rs = [x * (1 + rel) for x in xs]
        _, ms = run(case, dtype, xs, rs)
        for m, g in zip(ms, expected):
            assert np.all(np.isfinite(m)), f"non-finite multipliers with r = x·(1 + {rel:g})"
            np.testing.assert_allclose(
                m, g, rtol=tol, atol=tol * max(1.0, np.abs(g).max()), err_msg=f"r = x·(1 + {rel:g})"
            )


MONOTONE = [c for c in CASES if c.monotone]


@pytest.mark.parametrize("case", MONOTONE, ids=_ids(MONOTONE))
def test_monotone_ops_get_nonnegative_multipliers(case):
    """An op nondecreasing in its inputs never gets a negative multiplier (cross-max: m in [0, 1])."""
    dtype = case.dtypes[0]
    c = compiled(case.id, dtype)
    xs, rs = sample(case.args, SEED[case.id])
    dt = tf.as_dtype(dtype)
    _, grads = c.fn(
        [tf.constant(x, dt) for x in xs],
        [tf.constant(r, dt) for r in rs],
        [tf.ones(w.shape, o) for w, o in zip(c.weights, c.out_dtypes)],
    )
    for g in grads:
        m = g.numpy()[:N]
        assert np.all(m >= -1e-12 * max(1.0, np.abs(m).max())), m


@pytest.mark.parametrize("case", BOTH_DTYPES, ids=_ids(BOTH_DTYPES))
def test_float32_tracks_float64(case):
    """Each input's share ``m·Δx`` in float32 is the float64 one, to float32's roundings.

    Multipliers themselves are ratios Δf/Δx, whose rounding grows as Δx shrinks; their shares
    of the row's sum are not: each is within ``relative_tolerance`` of the sum of the absolute
    terms of its row (the same scale as summation-to-delta).
    """
    xs, rs = sample(case.args, SEED[case.id])
    outs, m64 = run(case, "float64", xs, rs)
    _, m32 = run(case, "float32", xs, rs)
    weights = compiled(case.id, "float64").weights
    scale = sum(_rows(np.abs(w) * (np.abs(o[:N]) + np.abs(o[N:]))).sum(1) for w, o in zip(weights, outs))
    scale = scale + sum(_rows(np.abs(m * (x - r))).sum(1) for m, x, r in zip(m64, xs, rs))
    if not case.rowwise:
        scale = np.full_like(scale, scale.sum())
    tolerance = relative_tolerance(case, "float32") * scale
    for a, b, x, r in zip(m32, m64, xs, rs):
        miss = _rows(np.abs((a - b) * (x - r))).max(1)
        assert np.all(miss <= tolerance), f"float32 shares miss float64 by {miss} > {tolerance}"


#: One case for each kind of tfshap gradient, in half precision (mixed-precision models).
HALF = ["Relu-normal", "Sigmoid-normal", "Mul-both", "RealDiv-both", "Maximum-both", "Pow-both",
        "Max-axis 1", "MaxPool-2x2 valid", "MaxPool-3x3 stride 1 same", "Softmax-n5", "LogSoftmax-n5",
        "Max-axis 1@crossmax", "MaxPool-3x3 stride 2 same@crossmax", "Softmax-n5@shapley", "LogSoftmax-n5@shapley"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case_id", HALF)
def test_half_precision(case_id, dtype):
    """The rules build and sum to delta, to the precision of the dtype, in float16 and bfloat16."""
    case = BY_ID[case_id]
    # The values the graph sees, so that Δ below is the Δ it multiplies.
    xs, rs = (
        [tf.cast(tf.constant(v, tf.as_dtype(dtype)), tf.float64).numpy() for v in vs]
        for vs in sample(case.args, SEED[case_id])
    )
    outs, ms = run(case, dtype, xs, rs)
    weights = compiled(case_id, dtype).weights
    lhs = sum(_rows(m * (x - r)).sum(1) for m, x, r in zip(ms, xs, rs))
    rhs = sum(_rows(w * (o[:N] - o[N:])).sum(1) for w, o in zip(weights, outs))
    scale = sum(_rows(np.abs(w) * (np.abs(o[:N]) + np.abs(o[N:]))).sum(1) for w, o in zip(weights, outs))
    rtol = relative_tolerance(case, dtype)  # the case's roundings, each at most half the dtype's eps
    assert np.all(np.abs(lhs - rhs) <= rtol * scale), (lhs, rhs, scale, rtol)


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.name for r in REFUSALS])
def test_refusals_name_the_op_type(refusal):
    dt = tf.float32
    specs = [tf.TensorSpec((N, *a.shape), dt) for a in refusal.args]

    def fn(xs, rs):
        paired = [tf.concat([x, r], 0) for x, r in zip(xs, rs)]
        graph = tf.compat.v1.get_default_graph()
        first = len(graph.get_operations())
        out = refusal.build(*paired)
        with one_to_one(N):
            rewrite(graph.get_operations()[first:], sources=paired, targets=[out])
        return out

    with pytest.raises(UnsupportedOpError) as error:
        tf.function(fn, autograph=False).get_concrete_function(specs, specs)
    message = str(error.value)
    for op_type in refusal.op_types:
        assert f"- {op_type}:" in message, message
    assert refusal.reason in message, message
