"""Where the rows of the paired batch lie, in every tensor on the varying path.

The paired batch enters with its rows along axis 0, one entry per row. Most ops keep them
there; some move them: Transpose, Einsum and the matmuls (by the labels of their axes), Pack,
ExpandDims, Squeeze, Reshape, a gather or a reduction along an earlier axis. The rewrite
tracks them once per graph (:func:`track`) and hands the table to the plans
(:func:`tracked`, :func:`layout_of`), so that

* a reduction or a scan is accepted where it runs along other axes, and refused where it runs
  along the rows' axis, wherever that is (:func:`rows_refusal`);
* a product labels each varying operand's batch axis where its rows are;
* a rule that reads a row's reference (:func:`tfshap.pair.halves`) reads it where the rows
  are, or is refused where it cannot (:func:`apply_refusal`).

A tensor's rows are :class:`Rows` (along one axis, each row a run of consecutive entries, or
interleaved with the other rows' entries), :class:`Mixed` (no axis holds them apart: reduced,
repeated, combined across rows), or unknown (None): then, as before this tracking, they are
taken to lie along axis 0.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from .graph import (
    BATCH,
    ONE,
    PRODUCT_LABELS,
    WHILE_OPS,
    Monomial,
    batch_power,
    dim_of,
    leading_shape,
    monomial_product,
    monomial_quotient,
    product_labels,
    reduced_axes,
    reshape_dims,
    symbolic_shape_value,
)
from .registry import ALIGNED_ROWS as ALIGNED
from .registry import ANY_ROWS as ANY
from .registry import LEADING_ROWS as LEADING
from .registry import NOT_DIFFERENTIABLE, lookup


@dataclass(frozen=True)
class Rows:
    """The rows lie along ``axis``: each a run of ``per_row`` consecutive entries (None: unknown), or interleaved.

    ``per_row`` is a :data:`tfshap.graph.Monomial` (a length unknown when tracing is a symbol).
    ``by`` names the op that last moved them or interleaved them (for messages).
    """

    axis: int
    per_row: Monomial | None = ONE
    interleaved: bool = False
    by: str | None = None


@dataclass(frozen=True)
class Mixed:
    """No axis holds the rows apart any more, and why."""

    reason: str


Layout = Rows | Mixed | None

_CONSTANT = object()  # the layout of an input that does not vary


def describe(op: tf.Operation) -> str:
    return f"{op.type} {op.name!r}"


# ---------------------------------------------------------------------------------------
# the table, and the plans' view of it

_active = threading.local()


def track(ops: Sequence[tf.Operation], sources: Sequence[tf.Tensor], varying: set,
          layouts: Sequence[Layout] | None = None) -> dict:
    """Refs of the varying tensors of ``ops`` (topological) -> where their rows lie.

    ``layouts`` gives each source's (default: along axis 0, one entry per row).
    """
    tracker = _Tracker(varying)
    for t, layout in zip(sources, [Rows(0)] * len(sources) if layouts is None else layouts):
        tracker.layouts[t.ref()] = layout
    for op in ops:
        if op.type not in NOT_DIFFERENTIABLE and any(t.ref() in varying for t in op.inputs):
            tracker.propagate(op)
    return tracker.layouts


@contextlib.contextmanager
def tracked(table: dict):
    """Make ``table`` the one :func:`layout_of` reads inside (nested graphs push their own)."""
    previous = getattr(_active, "table", None)
    _active.table = table
    try:
        yield
    finally:
        _active.table = previous


def layout_of(t: tf.Tensor) -> Layout:
    """Where the rows of ``t`` lie, as tracked by the rewrite running now (None: unknown, or no rewrite)."""
    table = getattr(_active, "table", None)
    return None if table is None else table.get(t.ref())


def row_axis(t: tf.Tensor) -> int:
    """The axis of ``t`` that holds its rows (0 where unknown)."""
    layout = layout_of(t)
    return layout.axis if isinstance(layout, Rows) else 0


def rows_refusal(t: tf.Tensor, axes: Sequence[int], doing: str) -> str | None:
    """Why an op that runs along ``axes`` of ``t`` (``doing`` them) mixes rows, or None.

    It does where the axes include the rows' axis, or where the rows are not held apart.
    """
    layout = layout_of(t)
    if isinstance(layout, Mixed):
        return (f"{doing} a tensor whose rows are no longer held apart ({layout.reason}), "
                "which mixes samples with references")
    axis = row_axis(t)
    if axis not in axes:
        return None
    where = "the batch axis" if axis == 0 else f"axis {axis}, the batch axis ({layout.by} moved it there)"
    return f"{doing} {where}, which mixes samples with references"


def reading_refusal(t: tf.Tensor, name: str, leading: bool) -> str | None:
    """Why a rule cannot read the rows of its input ``t`` (named ``name``): not held apart, interleaved, or moved."""
    layout = layout_of(t)
    cannot = "a rule that pairs rows cannot read it"
    if isinstance(layout, Mixed):
        return f"its input {name} no longer holds the rows apart ({layout.reason}); {cannot}"
    if isinstance(layout, Rows) and layout.interleaved:
        return f"its input {name} holds the rows interleaved along axis {layout.axis} (by {layout.by}); {cannot}"
    if leading and isinstance(layout, Rows) and layout.axis != 0:
        return f"its input {name}'s batch axis was moved to axis {layout.axis} by {layout.by}; {cannot}"
    return None


def apply_refusal(op: tf.Operation, varying: tuple[bool, ...], rows: str) -> str | None:
    """Why a rule whose gradient reads rows as ``rows`` says cannot read this op's varying inputs, or None."""
    if rows == ANY:
        return None
    names = _input_names(op)
    for t, flag, name in zip(op.inputs, varying, names):
        reason = reading_refusal(t, name, rows == LEADING) if flag else None
        if reason:
            return reason
    if rows == ALIGNED and row_axes(op, varying) is not None and len(set(_from_end(op, varying).values())) > 1:
        return ("its varying inputs hold their rows on different axes, so it pairs each row with other rows "
                "(" + ", ".join(f"{names[i]}: axis {row_axis(op.inputs[i])}" for i in _from_end(op, varying)) + ")")
    return None


def row_axes(op: tf.Operation, varying: tuple[bool, ...]) -> tuple[int | None, ...] | None:
    """The rows' axis of each varying input (None for the others), or None where every one is axis 0."""
    axes = tuple(row_axis(t) if flag else None for t, flag in zip(op.inputs, varying))
    return axes if any(a for a in axes) else None


def _from_end(op: tf.Operation, varying: tuple[bool, ...]) -> dict[int, int]:
    """Input index -> its rows' axis counted from the end, for the varying inputs of known rank."""
    return {i: row_axis(t) - t.shape.rank for i, (t, flag) in enumerate(zip(op.inputs, varying))
            if flag and t.shape.rank is not None}


def _input_names(op: tf.Operation) -> list[str]:
    names = [a.name for a in op.op_def.input_arg]
    return names if len(names) == len(op.inputs) else [f"{names[0]}[{i}]" for i in range(len(op.inputs))]


# ---------------------------------------------------------------------------------------
# propagation, op by op

#: Elementwise ops whose rule (if any) keeps TensorFlow's gradient or reads rows aligned; the
#: registry adds every rule registered to read rows aligned (the rescale and two-operand rules).
ELEMENTWISE = frozenset({
    "Identity", "EnsureShape", "CheckNumerics", "StopGradient", "PreventGradient", "Snapshot",
    "AddV2", "Add", "Sub", "Neg", "AddN", "BiasAdd", "BiasAddV1", "Cast", "Select", "SelectV2",
    "Complex", "Real", "Imag", "ClipByValue", "FloorDiv", "FloorMod", "Mod", "TruncateDiv",
    "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "IsNan", "IsInf", "IsFinite",
    "LogicalAnd", "LogicalOr", "LogicalNot",
})

#: Ops with a batch axis of their own, axis 0 of their data input (convolutions, pooling, resizing).
OWN_BATCH_AXIS = {
    "Conv2D": 0, "Conv3D": 0, "DepthwiseConv2dNative": 0, "Conv2DBackpropInput": 2, "Conv3DBackpropInputV2": 2,
    "AvgPool": 0, "AvgPool3D": 0, "MaxPool": 0, "MaxPool3D": 0, "ResizeNearestNeighbor": 0, "ResizeBilinear": 0,
    "ResizeBicubic": 0, "DepthToSpace": 0, "SpaceToDepth": 0, "ExtractImagePatches": 0, "ExtractVolumePatches": 0,
}

REDUCTIONS = frozenset({"Sum", "Mean", "Prod", "Max", "Min", "Any", "All", "EuclideanNorm"})


@dataclass(frozen=True)
class Carry:
    """How each output of an op carries its inputs' axes: ``maps[output][input] = {input axis: output axis}``
    for the axes whose entries it keeps in order; rows on any other axis are ``verb`` (mixed). None for an
    input the output does not depend on (an IdentityN's other inputs)."""

    maps: list
    verb: str


class _Tracker:
    """The layouts of the varying tensors, and their shapes in terms of lengths unknown when tracing."""

    def __init__(self, varying: set):
        self.varying = varying
        self.layouts: dict = {}
        self.dims: dict = {}  # ref -> each axis's length (a symbol where unknown), carried from the inputs
        self.same: dict[str, str] = {}  # symbol -> a symbol of the same length (union-find)

    def symbol(self, name: str) -> str:
        while self.same.get(name, name) != name:
            name = self.same[name]
        return name

    def canonical(self, m: Monomial) -> Monomial:
        """``m`` with each symbol replaced by the one that stands for its length."""
        return monomial_product([(m[0], ())] + [(1, ((self.symbol(name), k),)) for name, k in m[1]])

    def unify(self, a: Monomial, b: Monomial) -> None:
        """Record that two lengths unknown when tracing are equal (aligned axes of an elementwise op)."""
        a, b = self.canonical(a), self.canonical(b)
        single = all(m[0] == 1 and len(m[1]) == 1 and m[1][0][1] == 1 and m[1][0][0] != BATCH for m in (a, b))
        if a != b and single:
            self.same[b[1][0][0]] = a[1][0][0]

    def propagate(self, op: tf.Operation) -> None:
        ins = [self.layouts.get(t.ref()) if t.ref() in self.varying else _CONSTANT for t in op.inputs]
        layouts = _outcome(op, ins, self)
        for t, layout in zip(op.outputs, layouts):
            # A source computed here (a mask beside the attributed layer) keeps its given layout
            # unless its inputs tell more.
            if t.ref() in self.varying and (t.ref() not in self.layouts or layout is not None):
                self.layouts[t.ref()] = layout

    def dims_of(self, t: tf.Tensor) -> list[Monomial]:
        return self.dims.get(t.ref()) or [dim_of(t, a) for a in range(t.shape.rank)]

    def shape(self, t: tf.Tensor) -> list[Monomial] | None:
        """The shape of ``t`` in terms of ``B`` where its rows lie (axis 0 for a tensor that does not vary)."""
        if t.shape.rank is None:
            return None
        if t.ref() not in self.varying:
            dims = leading_shape(t, symbols=True)
            return None if dims is None else [self.canonical(m) for m in dims]
        layout = self.layouts.get(t.ref())
        if not isinstance(layout, Rows) or layout.per_row is None or layout.interleaved:
            return None
        dims = list(self.dims_of(t))
        dims[layout.axis] = monomial_product([layout.per_row, (1, ((BATCH, 1),))])
        return [self.canonical(m) for m in dims]

    def carry_dims(self, op: tf.Operation, carry: Carry) -> None:
        """Each output's unknown lengths, from the input axes it carries (so that equal lengths share a symbol)."""
        for t, maps in zip(op.outputs, carry.maps):
            if t.shape.rank is None:
                continue
            dims = [dim_of(t, a) for a in range(t.shape.rank)]
            for source, mapping in zip(op.inputs, maps):
                for a, o in (mapping or {}).items():
                    if t.shape[o] is None and source.shape.rank is not None and source.shape[a] is None:
                        self.unify(self.dims_of(source)[a], dims[o])
                        dims[o] = self.dims_of(source)[a]
            self.dims[t.ref()] = dims


def _outcome(op: tf.Operation, ins: list, tracker: _Tracker) -> list[Layout]:
    """The layout of each output of ``op`` from its varying inputs' (``_CONSTANT`` for the others)."""
    handler = _HANDLERS.get(op.type)
    if handler is None and (op.type in ELEMENTWISE or _aligned_rule(op.type)):
        handler = _elementwise
    out = handler(op, ins, tracker) if handler is not None else None
    if isinstance(out, Carry):
        tracker.carry_dims(op, out)
    varying = [layout for layout in ins if layout is not _CONSTANT]
    mixed = next((layout for layout in varying if isinstance(layout, Mixed)), None)
    if mixed is not None:
        return [mixed] * len(op.outputs)
    if any(layout is None for layout in varying) or out is None:
        return [None] * len(op.outputs)
    if isinstance(out, Carry):
        return [_carried(op, ins, maps, out.verb) for maps in out.maps]
    return out if isinstance(out, list) else [out] * len(op.outputs)


def _carried(op: tf.Operation, ins: list, maps: list, verb: str) -> Layout:
    """Where one output holds the rows its varying inputs hold, by the axes it carries."""
    related = [(layout, mapping) for layout, mapping in zip(ins, maps)
               if layout is not _CONSTANT and mapping is not None]
    found = set()
    for layout, mapping in related:
        axis = mapping.get(layout.axis)
        if axis is None:
            return Mixed(f"{describe(op)} {verb} them")
        found.add((axis, layout.interleaved))
    if len(found) != 1:
        return None if not found else Mixed(f"{describe(op)} combines tensors that hold their rows on different axes")
    (axis, _), = found
    per_row = {layout.per_row for layout, _ in related} - {None}  # aligned axes: the same where known
    first = related[0][0]
    return _moved(first, axis, op, per_row=per_row.pop() if len(per_row) == 1 else None)


def _aligned_rule(op_type: str) -> bool:
    rule = lookup(op_type)
    return rule is not None and rule.rows == ALIGNED


def _static(t: tf.Tensor):
    value = tf.get_static_value(t)
    return None if value is None else np.atleast_1d(value).astype(np.int64).tolist()


def _moved(layout: Rows, axis: int, op: tf.Operation, **changes) -> Rows:
    """``layout`` on ``axis``, naming ``op`` as the one that moved it where it did."""
    moved = axis != layout.axis or changes.get("interleaved", layout.interleaved) != layout.interleaved
    return replace(layout, axis=axis, by=describe(op) if moved else layout.by, **changes)


def _rank(t: tf.Tensor) -> int | None:
    return t.shape.rank


def _same(rank: int, skip=()) -> dict[int, int]:
    """Every axis of a tensor of ``rank`` to itself, but ``skip``."""
    return {a: a for a in range(rank) if a not in skip}


def _one_input(op, index: int, mapping: dict | None, verb: str, outputs: int | None = None) -> Carry:
    """Every output carries input ``index`` by ``mapping`` (and no other input)."""
    maps = [None] * len(op.inputs)
    maps[index] = mapping
    return Carry([maps] * (len(op.outputs) if outputs is None else outputs), verb)


def _elementwise(op, ins, tracker) -> Carry | None:
    """Broadcasting aligns axes from the end (a vector condition of Select picks rows of axis 0)."""
    rank = _rank(op.outputs[0])
    if rank is None or any(_rank(t) is None for t in op.inputs):
        return None
    maps = []
    for t in op.inputs:
        shift = rank - t.shape.rank
        if op.type == "Select" and t is op.inputs[0] and t.shape.rank == 1 < rank:
            shift = 0
        maps.append({a: a + shift for a in range(t.shape.rank) if not _broadcast(t, a, op.outputs[0], a + shift)})
    return Carry([maps] * len(op.outputs), "broadcasts along")


def _broadcast(t: tf.Tensor, axis: int, out: tf.Tensor, out_axis: int) -> bool:
    """Whether axis ``axis`` of ``t`` (length 1) is repeated along ``out_axis`` of ``out``."""
    return t.shape[axis] == 1 and out.shape[out_axis] != 1


def _identity_n(op, ins, tracker):
    return Carry([[_same(_rank(t)) if i == j and _rank(t) is not None else None for j, t in enumerate(op.inputs)]
                  for i in range(len(op.outputs))], "mixes")


def _transpose(op, ins, tracker):
    perm = _static(op.inputs[1])
    return None if perm is None else _one_input(op, 0, {a: perm.index(a) for a in perm}, "transposes")


def _expand_dims(op, ins, tracker):
    dim, rank = _static(op.inputs[1]), _rank(op.outputs[0])
    if dim is None or rank is None:
        return None
    d = dim[0] % rank
    return _one_input(op, 0, {a: a + (a >= d) for a in range(rank - 1)}, "moves")


def _squeeze(op, ins, tracker):
    t = op.inputs[0]
    if _rank(t) is None:
        return None
    dims = [d % t.shape.rank for d in op.get_attr("squeeze_dims")] or [a for a, d in enumerate(t.shape) if d == 1]
    if not op.get_attr("squeeze_dims") and any(d is None for d in t.shape.as_list()):
        return None  # which unknown lengths are 1 is known only when running
    kept = {a: a - sum(d < a for d in dims) for a in range(t.shape.rank) if a not in dims}
    return _one_input(op, 0, kept, "squeezes")


def _pack(op, ins, tracker):
    rank = _rank(op.outputs[0])
    if rank is None:
        return None
    p = op.get_attr("axis") % rank
    return Carry([[{a: a + (a >= p) for a in range(rank - 1)}] * len(op.inputs)], "stacks")


def _unpack(op, ins, tracker):
    rank = _rank(op.inputs[0])
    if rank is None:
        return None
    p = op.get_attr("axis") % rank
    return _one_input(op, 0, {a: a - (a > p) for a in range(rank) if a != p}, "unstacks along")


def _along_axes(axes_input: int, data: int, verb: str):
    """Ops that keep the shape but run along the axes in input ``axes_input`` (scans, rolls, reversals, splits)."""

    def handler(op, ins, tracker):
        axes, rank = _static(op.inputs[axes_input]), _rank(op.inputs[data])
        if axes is None or rank is None:
            return None
        return _one_input(op, data, _same(rank, {a % rank for a in axes}), verb)

    return handler


def _concat(op, ins, tracker):
    axis, rank = _static(op.inputs[-1]), _rank(op.outputs[0])
    if axis is None or rank is None:
        return None
    return Carry([[_same(rank, {axis[0] % rank})] * (len(op.inputs) - 1) + [None]], "concatenates along")


def _last_axis(verb: str):
    def handler(op, ins, tracker):
        rank = _rank(op.inputs[0])
        return None if rank is None else _one_input(op, 0, _same(rank, {rank - 1}), verb)

    return handler


def _tile(op, ins, tracker):
    multiples, rank = symbolic_shape_value(op.inputs[1], tracker.shape), _rank(op.inputs[0])
    if multiples is None or rank is None or len(multiples) != rank:
        return None
    return _one_input(op, 0, {a: a for a in range(rank) if multiples[a] == ONE}, "repeats")


def _pad(op, ins, tracker):
    paddings, rank = tf.get_static_value(op.inputs[1]), _rank(op.inputs[0])
    if paddings is None or rank is None:
        return None
    return _one_input(op, 0, {a: a for a in range(rank) if not np.any(paddings[a])}, "pads along")


def _broadcast_to(op, ins, tracker):
    t, rank = op.inputs[0], _rank(op.outputs[0])
    if rank is None or _rank(t) is None:
        return None
    shift = rank - t.shape.rank
    return _one_input(op, 0, {a: a + shift for a in range(t.shape.rank) if t.shape[a] != 1}, "repeats")


def _reduction(op, ins, tracker):
    axes, rank = reduced_axes(op), _rank(op.inputs[0])
    if axes is None:
        return None
    keep = op.get_attr("keep_dims") if op.type in REDUCTIONS else False
    return _one_input(op, 0, {a: a if keep else a - sum(r < a for r in axes) for a in range(rank) if a not in axes},
                      "reduces over")


def _slice(op, ins, tracker):
    begin, size, t = _static(op.inputs[1]), _static(op.inputs[2]), op.inputs[0]
    if begin is None or size is None or _rank(t) is None:
        return None
    whole = [begin[a] == 0 and (size[a] == -1 or size[a] == t.shape[a]) for a in range(t.shape.rank)]
    return _one_input(op, 0, {a: a for a in range(t.shape.rank) if whole[a]}, "slices")


def _strided_slice(op, ins, tracker):
    mapped = _strided_slice_axes(op)
    if mapped is None:
        return None
    return _one_input(op, 0, {a: out for a, (out, whole) in enumerate(mapped) if out is not None and whole}, "slices")


def _strided_slice_axes(op) -> list[tuple[int | None, bool]] | None:
    """For each input axis of a StridedSlice: its output axis (None: shrunk) and whether it is taken whole."""
    shape, n = op.inputs[0].shape, op.inputs[1].shape.num_elements()
    if shape.rank is None or n is None:
        return None
    # Bounds known only when running (x[:, :length]) leave their axes not whole, and the others as they are.
    begin, end, strides = (_static(t) or [None] * n for t in op.inputs[1:])
    mask = {name: op.get_attr(f"{name}_mask") for name in ("begin", "end", "ellipsis", "new_axis", "shrink_axis")}
    bit = lambda name, i: bool(mask[name] >> i & 1)  # noqa: E731
    consumed = sum(1 for i in range(n) if not bit("ellipsis", i) and not bit("new_axis", i))
    mapped, axis, out = [], 0, 0
    for i in range(n):
        if bit("ellipsis", i):
            for _ in range(shape.rank - consumed):
                mapped.append((out, True))
                axis, out = axis + 1, out + 1
        elif bit("new_axis", i):
            out += 1
        elif bit("shrink_axis", i):
            mapped.append((None, False))
            axis += 1
        else:
            dim = shape[axis]
            starts = bit("begin", i) or begin[i] == 0
            ends = bit("end", i) or dim is not None and end[i] is not None and end[i] >= dim
            mapped.append((out, strides[i] == 1 and starts and ends))
            axis, out = axis + 1, out + 1
    mapped += [(out + j, True) for j in range(shape.rank - axis)]
    return mapped


def _gather(op, ins, tracker):
    """Gather, GatherV2, ResourceGather: params' axes but the gathered one, then the indices' axes."""
    params, indices = op.inputs[0], op.inputs[1]
    if op.type == "GatherV2":
        static_axis, batch_dims = _static(op.inputs[2]), op.get_attr("batch_dims")
        if static_axis is None or _rank(params) is None:
            return None
        axis = static_axis[0] % params.shape.rank
    else:
        axis, batch_dims = 0, op.get_attr("batch_dims") if op.type == "ResourceGather" else 0
    if _rank(indices) is None or op.type != "ResourceGather" and _rank(params) is None:
        return None
    batch_dims += indices.shape.rank if batch_dims < 0 else 0
    if ins[0] is not _CONSTANT and op.type != "ResourceGather" and ins[0] is not None and ins[0].axis == axis:
        return None  # rows picked by indices: where they go is known only when running
    width = indices.shape.rank - batch_dims
    maps = [None] * len(op.inputs)
    if op.type != "ResourceGather":
        maps[0] = {a: a if a < axis else a + width - 1 for a in range(params.shape.rank) if a != axis}
    maps[1] = {a: a if a < batch_dims else axis + a - batch_dims for a in range(indices.shape.rank)}
    return Carry([maps], "gathers along")


def _gather_nd(op, ins, tracker):
    params, indices = op.inputs[:2]
    depth = indices.shape[-1] if _rank(indices) else None
    if depth is None or _rank(params) is None:
        return None
    if ins[0] is not _CONSTANT and ins[0] is not None and ins[0].axis < depth:
        return None  # rows picked by indices
    maps = [{a: indices.shape.rank - 1 + a - depth for a in range(depth, params.shape.rank)},
            {a: a for a in range(indices.shape.rank - 1)}]
    return Carry([maps], "gathers along")


def _reshape(op, ins, tracker):
    """Where the batch factor B of the target shape lands, and whether each row still owns a run of entries.

    In terms of B and the lengths unknown when tracing: the rows stay a run of entries of the axis
    that holds B where the axes before it hold as many entries as before; they are interleaved
    along it where those axes hold fewer (a whole multiple). Where the shapes cannot be compared
    (lengths known only as different symbols), the layout is unknown.
    """
    layout = ins[0]
    if layout is _CONSTANT or layout is None or isinstance(layout, Mixed):
        return None
    if layout.interleaved:
        return Mixed(f"{describe(op)} reshapes a tensor whose rows are interleaved")
    source = tracker.shape(op.inputs[0])
    target = reshape_dims(op, tracker.shape)
    powers = [batch_power(m) for m in target or []]
    if source is None or target is None or sorted(powers) != [0] * (len(powers) - 1) + [1]:
        return None
    j = powers.index(1)
    tracker.dims[op.outputs[0].ref()] = target
    before_in, before_out = monomial_product(source[: layout.axis]), monomial_product(target[:j])
    # a row, per index before
    row_run = tracker.canonical(monomial_product([layout.per_row, *source[layout.axis + 1:]]))
    after_out = monomial_product(target[j + 1:])
    per_row = monomial_quotient(row_run, after_out)
    if before_in == before_out and per_row is not None:
        return _moved(layout, j, op, per_row=per_row)
    if per_row is not None and monomial_quotient(before_in, before_out) is not None:
        return _moved(layout, j, op, per_row=None, interleaved=True)
    if all(not m[1] for m in (before_in, before_out, row_run, after_out)):
        return Mixed(f"{describe(op)} folds the rows into other axes")
    return None


def _one_hot(op, ins, tracker):
    rank = _rank(op.outputs[0])
    if rank is None:
        return None
    h = op.get_attr("axis") % rank
    return _one_input(op, 0, {a: a + (a >= h) for a in range(rank - 1)}, "moves")


def _product(op, ins, tracker):
    """Einsum and the matmuls: each operand's axes follow their labels into the product."""
    labelled = product_labels(op)
    if labelled is None:
        return None
    operands, output = labelled
    maps = [{a: output.index(label) for a, label in enumerate(labels)
             if label in output and not _broadcast(t, a, op.outputs[0], output.index(label))}
            for t, labels in zip(op.inputs, operands)]
    return Carry([maps], "sums over")


def _own_batch_axis(op, ins, tracker):
    """Convolutions, pooling, resizing: they treat axis 0 as their batch, so the rows must be there."""
    return _one_input(op, OWN_BATCH_AXIS[op.type], {0: 0}, "takes axis 0 for its batch axis and mixes")


def _fused_batch_norm(op, ins, tracker):
    rank = _rank(op.inputs[0])
    if rank is None:
        return None
    maps = [None] * len(op.inputs)
    maps[0] = _same(rank)
    moments = [{}] + [None] * (len(op.inputs) - 1)  # the batch moments depend on every row
    return Carry([maps] + [moments] * (len(op.outputs) - 1), "computes batch moments of")


def _space_to_batch(op, ins, tracker):
    layout = ins[0]
    return None if not isinstance(layout, Rows) else [_moved(layout, 0, op, per_row=None, interleaved=True)]


def _batch_to_space(op, ins, tracker):
    layout = ins[0]
    return None if not isinstance(layout, Rows) else [_moved(layout, 0, op, per_row=None, interleaved=False)]


def _while(op, ins, tracker):
    return Carry([[_same(_rank(t)) if i == j and _rank(t) is not None else None for j, t in enumerate(op.inputs)]
                  for i in range(len(op.outputs))], "mixes")


_HANDLERS: dict[str, Callable] = {
    "IdentityN": _identity_n,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "ExpandDims": _expand_dims,
    "Squeeze": _squeeze,
    "Pack": _pack,
    "Unpack": _unpack,
    "ConcatV2": _concat,
    "Split": _along_axes(0, 1, "splits along"),
    "SplitV": _along_axes(2, 0, "splits along"),
    "Slice": _slice,
    "StridedSlice": _strided_slice,
    "Gather": _gather,
    "GatherV2": _gather,
    "ResourceGather": _gather,
    "GatherNd": _gather_nd,
    "Cumsum": _along_axes(1, 0, "scans along"),
    "Cumprod": _along_axes(1, 0, "scans along"),
    "Roll": _along_axes(2, 0, "rolls along"),
    "ReverseV2": _along_axes(1, 0, "reverses"),
    "ArgMax": _reduction,
    "ArgMin": _reduction,
    "Softmax": _last_axis("normalizes across"),
    "LogSoftmax": _last_axis("normalizes across"),
    "TopKV2": _last_axis("sorts"),
    "Tile": _tile,
    "Pad": _pad,
    "PadV2": _pad,
    "MirrorPad": _pad,
    "BroadcastTo": _broadcast_to,
    "OneHot": _one_hot,
    "SpaceToBatchND": _space_to_batch,
    "BatchToSpaceND": _batch_to_space,
    **{name: _reduction for name in REDUCTIONS},
    **{name: _product for name in PRODUCT_LABELS},
    **{name: _own_batch_axis for name in OWN_BATCH_AXIS},
    **{name: _fused_batch_norm for name in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")},
    **{name: _while for name in WHILE_OPS},
}
