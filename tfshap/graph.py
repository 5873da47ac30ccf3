"""Walking a traced graph: which tensors vary with the explained inputs, which reach the output, and shapes
in terms of the paired batch size ``B`` where it is unknown when tracing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from . import _tf_private
from .registry import NOT_DIFFERENTIABLE


def reapply(op: tf.Operation, *inputs: tf.Tensor) -> tf.Tensor:
    """Run ``op``'s computation again on new inputs, with the same attributes (via ``tf.raw_ops``)."""
    fn = getattr(tf.raw_ops, op.type)
    input_args = op.op_def.input_arg
    kwargs = {arg.name: t for arg, t in zip(input_args, inputs)}
    inferred = {a for arg in input_args for a in (arg.type_attr, arg.number_attr, arg.type_list_attr) if a}
    for attr in op.op_def.attr:
        if attr.name not in inferred:
            kwargs[attr.name] = op.get_attr(attr.name)
    out = fn(**kwargs)
    return out[0] if isinstance(out, (list, tuple)) else out


WHILE_OPS = frozenset({"While", "StatelessWhile"})
BRANCH_OPS = frozenset({"If", "StatelessIf", "Case", "StatelessCase"})
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def varying_tensors(ops: Iterable[tf.Operation], sources: Sequence[tf.Tensor],
                    blocked: Sequence[tf.Tensor] = ()) -> set:
    """Refs of the tensors computed from ``sources`` (in topological ``ops``), never through ``blocked``.

    A loop's outputs vary only where its loop variables do (a fixed point over the body).
    """
    varying = {t.ref() for t in sources}
    blocked_refs = {t.ref() for t in blocked}
    for op in ops:
        if op.type in NOT_DIFFERENTIABLE:
            continue
        flags = [t.ref() in varying for t in op.inputs]
        if not any(flags):
            continue
        outputs = op.outputs
        if op.type in WHILE_OPS and _tf_private.while_body_and_cond(op) is not None:
            loop_vars = varying_loop_vars(op, flags)
            outputs = [t for i, t in enumerate(op.outputs) if i in loop_vars]
        varying.update(t.ref() for t in outputs if t.ref() not in blocked_refs)
    return varying


def reaching_tensors(ops: Sequence[tf.Operation], targets: Sequence[tf.Tensor]) -> set:
    """Refs of the tensors that ``targets`` are computed from (``ops`` in topological order)."""
    reaching = {t.ref() for t in targets}
    for op in reversed(list(ops)):
        reached = [i for i, t in enumerate(op.outputs) if t.ref() in reaching]
        if not reached:
            continue
        inputs = op.inputs
        if op.type in WHILE_OPS and _tf_private.while_body_and_cond(op) is not None:
            inputs = [op.inputs[i] for i in reaching_loop_vars(op, reached)]
        reaching.update(t.ref() for t in inputs)
    return reaching


def varying_loop_vars(op: tf.Operation, flags: Sequence[bool]) -> set[int]:
    """Indices of the loop variables of a While op that vary, given which of its inputs do."""
    body, _ = _tf_private.while_body_and_cond(op)
    body_ops = body.get_operations()
    current = {i for i, v in enumerate(flags) if v}
    while True:
        inside = varying_tensors(body_ops, [body.inputs[i] for i in current])
        grown = current | {j for j, t in enumerate(body.outputs) if t.ref() in inside}
        if grown == current:
            return current
        current = grown


def reaching_loop_vars(op: tf.Operation, reached_outputs: Iterable[int]) -> set[int]:
    """Indices of the loop variables of a While op that the ``reached_outputs`` depend on."""
    body, _ = _tf_private.while_body_and_cond(op)
    body_ops = body.get_operations()
    current = set(reached_outputs)
    while True:
        inside = reaching_tensors(body_ops, [body.outputs[j] for j in current])
        grown = current | {i for i, t in enumerate(body.inputs) if t.ref() in inside}
        if grown == current:
            return current
        current = grown


def reduced_axes(op: tf.Operation) -> list[int] | None:
    """The non-negative axes a reduction ``op(input, axes)`` reduces, or None when not static."""
    axes = tf.get_static_value(op.inputs[1])
    rank = op.inputs[0].shape.rank
    if axes is None or rank is None:
        return None
    return sorted({int(a) % rank for a in np.atleast_1d(axes)})


def batch_axis_refusal(op: tf.Operation) -> str | None:
    """Why a reduction cannot be treated pair by pair, or None when it keeps the batch axis.

    The batch axis is where :mod:`tfshap.batch_axis` tracked the rows of the op's input (axis 0
    where they were not tracked): a reduction over other axes keeps every row apart wherever
    the rows lie, and one over the rows' axis mixes samples with references wherever it is.
    """
    from .batch_axis import rows_refusal

    axes = reduced_axes(op)
    if axes is None:
        return "its reduction axes or its input rank are not known when tracing"
    return rows_refusal(op.inputs[0], axes, "it reduces over")


# ---------------------------------------------------------------------------------------
# shapes in terms of the paired batch size B

#: ``c · Π s**k``: a dimension as a coefficient times powers of symbols, sorted by name: ``B`` (the
#: paired batch size, unknown when tracing) and, where asked for, the other lengths unknown when
#: tracing (one symbol per axis of the tensor whose length it is: ``"name:0[1]"``).
Monomial = tuple[int, tuple[tuple[str, int], ...]]
BATCH = "B"
ONE: Monomial = (1, ())


def constant(c: int) -> Monomial:
    return (int(c), ())


def batch_power(m: Monomial) -> int:
    """The power of ``B`` in ``m``."""
    return dict(m[1]).get(BATCH, 0)


def monomial_product(items) -> Monomial:
    """The product of monomials."""
    powers: dict[str, int] = {}
    for _, factors in items:
        for name, k in factors:
            powers[name] = powers.get(name, 0) + k
    return int(np.prod([c for c, _ in items], dtype=np.int64)), tuple(sorted((n, k) for n, k in powers.items() if k))


def monomial_quotient(a: Monomial, b: Monomial) -> Monomial | None:
    """``a / b`` where it is a monomial (whole coefficient, no negative power), else None."""
    if b[0] == 0 or a[0] % b[0]:
        return None
    inverse = (1, tuple((name, -k) for name, k in b[1]))
    quotient = monomial_product([(a[0] // b[0], a[1]), inverse])
    return quotient if all(k > 0 for _, k in quotient[1]) else None


def leading_shape(t: tf.Tensor, symbols: bool = False) -> list[Monomial] | None:
    """The shape of ``t`` with an unknown axis 0 as ``B``; None where another axis is unknown (or, with
    ``symbols``, that axis as a symbol of its own)."""
    dims = t.shape.as_list() if t.shape.rank is not None else None
    if dims is None or None in dims[1:] and not symbols:
        return None
    return [(1, ((BATCH, 1),)) if d is None and i == 0 else dim_of(t, i) for i, d in enumerate(dims)]


def dim_of(t: tf.Tensor, axis: int) -> Monomial:
    """Axis ``axis`` of ``t``: its length, or a symbol of its own where it is unknown when tracing."""
    d = t.shape[axis]
    return constant(d) if d is not None else (1, ((f"{t.name}[{axis}]", 1),))


def symbolic_shape_value(t: tf.Tensor, shape_of=leading_shape, depth: int = 0) -> list[Monomial] | None:
    """The value of a small int32/int64 vector (or scalar, as one item) in terms of ``B``.

    Follows the ops Keras builds shapes from: Shape (of a tensor whose shape ``shape_of`` knows),
    constants, StridedSlice, GatherV2 (tensordot's), Prod, Mul, Pack, ConcatV2, Cast, Identity, Reshape.
    None for anything else.
    """
    op = t.op
    if op.type == "Shape":
        dims = shape_of(op.inputs[0])
        if dims is not None:
            return dims
    elif depth <= 16 and op.type in _SHAPE_ARITHMETIC:
        inner = [symbolic_shape_value(i, shape_of, depth + 1) for i in op.inputs]
        if not any(v is None for v in inner[: _SHAPE_ARITHMETIC[op.type]]):
            value = _shape_arithmetic(op, inner)
            if value is not None:
                return value
    static = tf.get_static_value(t)
    if static is not None:
        return [constant(v) for v in np.ravel(static)]
    return None


#: The shape arithmetic that is followed, and how many leading inputs must be known (-1: all but the last).
_SHAPE_ARITHMETIC = {"Cast": 1, "Identity": 1, "Pack": None, "ConcatV2": -1, "Prod": 1, "Mul": 2, "StridedSlice": 1,
                     "GatherV2": 1, "Reshape": 1}


def _shape_arithmetic(op: tf.Operation, inner: list) -> list[Monomial] | None:
    if op.type in ("Cast", "Identity", "Reshape"):  # a reshape keeps the values in order
        return inner[0]
    if op.type == "Pack":
        return [v[0] for v in inner] if op.get_attr("axis") == 0 and all(len(v) == 1 for v in inner) else None
    if op.type == "ConcatV2":
        return [m for v in inner[:-1] for m in v]
    if op.type == "Prod":
        return None if op.get_attr("keep_dims") else [monomial_product(inner[0])]
    if op.type == "Mul":
        short, other = sorted(inner, key=len)
        return [monomial_product([short[0], m]) for m in other] if len(short) == 1 else None
    if op.type == "GatherV2":
        indices, axis = tf.get_static_value(op.inputs[1]), tf.get_static_value(op.inputs[2])
        if indices is None or axis != 0 or op.get_attr("batch_dims") or np.ndim(indices) > 1:
            return None
        return [inner[0][int(i)] for i in np.atleast_1d(indices)]
    return _strided_slice(op, inner[0])


def _strided_slice(op: tf.Operation, vector: list[Monomial]) -> list[Monomial] | None:
    begin, end, strides = (tf.get_static_value(i) for i in op.inputs[1:])
    names = ("begin_mask", "end_mask", "shrink_axis_mask", "ellipsis_mask", "new_axis_mask")
    masks = {name: op.get_attr(name) for name in names}
    unknown = any(v is None for v in (begin, end, strides))
    if unknown or len(begin) != 1 or masks["ellipsis_mask"] or masks["new_axis_mask"]:
        return None
    start = None if masks["begin_mask"] & 1 else int(begin[0])
    if masks["shrink_axis_mask"] & 1:
        return [vector[start]] if start is not None and -len(vector) <= start < len(vector) else None
    stop = None if masks["end_mask"] & 1 else int(end[0])
    return vector[start:stop:int(strides[0])]


def reshape_dims(reshape: tf.Operation, shape_of=leading_shape) -> list[Monomial] | None:
    """The target shape of a Reshape in terms of ``B``, a ``-1`` resolved; None if unknown."""
    dims = symbolic_shape_value(reshape.inputs[1], shape_of)
    source = shape_of(reshape.inputs[0])
    if dims is None or source is None:
        return None
    dims = list(dims)
    unknown = [i for i, (c, _) in enumerate(dims) if c == -1]
    if len(unknown) > 1:
        return None
    if unknown:
        rest = monomial_quotient(monomial_product(source), monomial_product([m for m in dims if m[0] != -1]))
        if rest is None:
            return None
        dims[unknown[0]] = rest
    return dims


# ---------------------------------------------------------------------------------------
# products: every axis of the operands and of the product labelled, einsum style


def product_labels(op: tf.Operation) -> tuple[list[list[str]], list[str]] | None:
    """Einsum-style labels of each operand's axes and of the product's, or None where ranks are unknown."""
    return PRODUCT_LABELS[op.type](op)


def _batch_labels(rank: int, common: int) -> list[str]:
    """Labels of the leading ``rank`` broadcast axes, aligned to the right among ``common``."""
    return [f"batch{common - rank + i}" for i in range(rank)]


def _matmul_labels(op: tf.Operation) -> tuple[list[list[str]], list[str]] | None:
    """Einsum-style labels of a (batch) matmul's operands and product, or None for unknown ranks."""
    ranks = [t.shape.rank for t in op.inputs[:2]]
    if None in ranks:
        return None
    if op.type == "MatMul":
        swap_a, swap_b = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    else:
        swap_a, swap_b = op.get_attr("adj_x"), op.get_attr("adj_y")
    common = max(ranks) - 2
    a = _batch_labels(ranks[0] - 2, common) + (["k", "i"] if swap_a else ["i", "k"])
    b = _batch_labels(ranks[1] - 2, common) + (["j", "k"] if swap_b else ["k", "j"])
    return [a, b], _batch_labels(common, common) + ["i", "j"]


def _einsum_labels(op: tf.Operation) -> tuple[list[list[str]], list[str]] | None:
    """The labels of an Einsum's equation, an ellipsis expanded to right-aligned batch labels."""
    inputs, _, output = op.get_attr("equation").decode().replace(" ", "").partition("->")  # the op needs "->"
    specs = inputs.split(",")
    ranks = [t.shape.rank for t in op.inputs]
    if None in ranks or len(specs) != len(ranks):
        return None
    spans = [rank - len(spec.replace("...", "")) for spec, rank in zip(specs, ranks)]
    common = max(spans)

    def expand(spec: str, span: int) -> list[str]:
        head, dots, tail = spec.partition("...")
        return list(head) + (_batch_labels(span, common) if dots else []) + list(tail)

    return [expand(s, n) for s, n in zip(specs, spans)], expand(output, common)


#: The product ops and how their axes are labelled.
PRODUCT_LABELS = {
    "MatMul": _matmul_labels,
    "BatchMatMul": _matmul_labels,
    "BatchMatMulV2": _matmul_labels,
    "BatchMatMulV3": _matmul_labels,
    "Einsum": _einsum_labels,
}
