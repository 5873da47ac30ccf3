"""Loops and the TensorList ops that carry their state.

A ``While`` op keeps TensorFlow's gradient: while_v2 differentiates the body graph with
symbolic gradients, which honour the rules the rewrite installs on the body's ops, so the
multipliers flow through every iteration. The loop's trip count must not depend on the
explained inputs. TensorList ops only move tensors in and out of lists: linear.
"""

from __future__ import annotations

from tfshap.registry import register_rule
from .linear import linear_in

for _op_type in ("While", "StatelessWhile"):
    register_rule(_op_type, "control_flow", plan=linear_in(), doc="m flows through the body's rules, iteration by iteration")

# Linear in the list handle and the element tensors; indices, shapes and lengths are constants.
for _op_type, _indices in {
    "TensorListFromTensor": (0,),
    "TensorListStack": (0,),
    "TensorListGetItem": (0,),
    "TensorListSetItem": (0, 2),
}.items():
    register_rule(_op_type, "control_flow", plan=linear_in(*_indices), doc="m = ∂out/∂in (moves tensors in and out of a list)")
