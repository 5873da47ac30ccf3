"""The pass: give every op on the path from the explained inputs to the output its rule."""

from __future__ import annotations

import re
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import tensorflow as tf

from . import _tf_private, registry
from .errors import UnsupportedOpError
from .graph import BRANCH_OPS, CALL_OPS, WHILE_OPS, reaching_loop_vars, reaching_tensors, varying_loop_vars, varying_tensors
from .pair import mark_varying


@dataclass
class RewriteReport:
    """What the pass did: how many ops each (family, op type) rule treated."""

    used: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        return ", ".join(f"{op_type} ({family}) ×{n}" for (family, op_type), n in sorted(self.used.items()))


def rewrite(
    ops: Sequence[tf.Operation],
    sources: Sequence[tf.Tensor],
    targets: Sequence[tf.Tensor],
    layer_of: Callable[[str], str | None] = lambda name: None,
) -> RewriteReport:
    """Install rules on ``ops`` (topologically ordered) for explaining ``targets`` by ``sources``.

    Raises :class:`UnsupportedOpError` naming every op type on the path without an exact
    treatment, before anything runs.
    """
    report = RewriteReport()
    problems: dict[str, list[tuple[tf.Operation, str]]] = defaultdict(list)
    _rewrite_graph(ops, sources, targets, report, problems)
    if problems:
        raise UnsupportedOpError(_describe(problems, layer_of))
    return report


def _rewrite_graph(ops, sources, targets, report: RewriteReport, problems) -> None:
    """Plan every op of one graph on the path from ``sources`` to ``targets``; recurse into loop bodies."""
    varying = varying_tensors(ops, sources)
    reaching = reaching_tensors(ops, targets)
    for op in ops:
        flags = tuple(t.ref() in varying for t in op.inputs)
        if not any(flags) or not any(t.ref() in reaching for t in op.outputs):
            continue
        if op.type in registry.STRUCTURAL_OPS:
            continue
        rule = registry.lookup(op.type)
        if rule is None:
            problems[op.type].append((op, "no rule is registered"))
            continue
        decision = rule.plan(op, flags)
        if isinstance(decision, registry.Refusal):
            problems[op.type].append((op, decision.reason))
            continue
        if op.type in WHILE_OPS:
            _rewrite_loop_body(op, flags, reaching, report, problems)
        elif op.type in BRANCH_OPS:
            _rewrite_branches(op, flags, reaching, report, problems)
        elif op.type in CALL_OPS:
            _rewrite_called_function(op, flags, reaching, report, problems)
        if decision is not registry.KEEP:
            mark_varying(op, flags)
            _tf_private.override_gradient(op, decision)
        report.used[(rule.family, op.type)] += 1


def _rewrite_loop_body(op, flags, reaching, report, problems) -> None:
    """Rules inside a While body see the paired batch just as top-level ops do."""
    bodies = _tf_private.while_body_and_cond(op)
    if bodies is None:
        problems[op.type].append((op, "its body graph cannot be reached (not built by while_v2)"))
        return
    body, cond = bodies
    loop_vars = varying_loop_vars(op, flags)
    if varying_tensors(cond.get_operations(), [cond.inputs[i] for i in loop_vars]).intersection(
        t.ref() for t in cond.outputs
    ):
        problems[op.type].append((op, "its trip count depends on the explained inputs"))
        return
    reached = reaching_loop_vars(op, [i for i, t in enumerate(op.outputs) if t.ref() in reaching])
    _rewrite_graph(
        body.get_operations(),
        [body.inputs[i] for i in sorted(loop_vars)],
        [body.outputs[j] for j in sorted(reached)],
        report,
        problems,
    )


def _rewrite_branches(op, flags, reaching, report, problems) -> None:
    """Rules inside each branch of an If or Case (whose branch index does not vary)."""
    branches = _tf_private.branch_graphs(op)
    if branches is None:
        problems[op.type].append((op, "its branch graphs cannot be reached (not built by cond_v2)"))
        return
    varying = [i for i, v in enumerate(flags[1:]) if v]  # input 0 picks the branch
    reached = [j for j, t in enumerate(op.outputs) if t.ref() in reaching]
    for branch in branches:
        _rewrite_graph(
            branch.get_operations(),
            [branch.inputs[i] for i in varying],
            [branch.outputs[j] for j in reached],
            report,
            problems,
        )


#: Private, rewritten copies of the functions that call ops run. Each call op names its copy
#: in an attribute, which survives when the call's gradient inlines an enclosing copy (and
#: so copies this op too); the copies live as long as the graph holding the call.
COPY_ATTR = "_tfshap_called_copy"
_copies_kept: "weakref.WeakKeyDictionary[tf.Graph, list]" = weakref.WeakKeyDictionary()
_copies_by_key: "weakref.WeakValueDictionary[str, tf.Graph]" = weakref.WeakValueDictionary()


def called_copy(op: tf.Operation):
    """The rewritten copy of the function ``op`` calls."""
    return _copies_by_key[_tf_private.get_string_attr(op, COPY_ATTR)]


def _rewrite_called_function(op, flags, reaching, report, problems) -> None:
    """Rules inside a private copy of a nested ``tf.function``: its own graph is shared with other callers."""
    copy = _tf_private.called_function_copy(op)
    _copies_kept.setdefault(op.graph, []).append(copy)
    _copies_by_key[str(id(copy))] = copy
    _tf_private.set_string_attr(op, COPY_ATTR, str(id(copy)))
    _rewrite_graph(
        copy.get_operations(),
        [copy.inputs[i] for i, v in enumerate(flags) if v],
        [copy.outputs[j] for j, t in enumerate(op.outputs) if t.ref() in reaching],
        report,
        problems,
    )


def _describe(problems: dict[str, list[tuple[tf.Operation, str]]], layer_of) -> str:
    lines = [
        f"tfshap has no exact rule for {len(problems)} op type(s) on the path from the explained "
        "inputs to the output (nothing was run, and nothing falls back to the plain gradient):"
    ]
    for op_type, found in sorted(problems.items()):
        op, reason = found[0]
        layer = layer_of(op.name)
        where = f" in layer {layer!r}" if layer else ""
        count = f"{len(found)} op" + ("s" if len(found) != 1 else "")
        lines.append(f"  - {op_type}: {count}, e.g. {op.name!r}{where}: {reason}")
    lines.append(registry.HOW_TO_REGISTER)
    return "\n".join(lines)


def layer_lookup(layer_names: Iterable[str]) -> Callable[[str], str | None]:
    """Map an op name to the innermost Keras layer whose name scope it was created in."""
    names = set(layer_names)

    def layer_of(op_name: str) -> str | None:
        for part in reversed(op_name.split("/")[:-1]):
            # Keras 3 suffixes name scopes it has used before: layer "act" runs in "act_1".
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in names:
                    return candidate
        return None

    return layer_of
