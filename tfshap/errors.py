"""The exceptions of the public API. Each carries its facts as fields; its message is made from them.

Nothing in tfshap parses these messages: callers (the command line, the tools) read the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How to add a rule for an op type that has none (the end of every ``UnsupportedOpError``).
HOW_TO_REGISTER = (
    "To add an exact rule: tfshap.register_rule('<OpType>', family='<name>', "
    "gradient=fn) where fn(op, grad) returns multipliers for the paired batch "
    "(see tfshap.pair), or open an issue naming the op and the layer."
)

#: Starts the message of a mask check that fails at run time (an ``Assert`` op in the graph);
#: :func:`from_run_time_error` turns it into :class:`MaskMismatchError`.
MISMATCH_MARKER = "tfshap-mask-mismatch"


class CompileError(Exception):
    """The model cannot be compiled into an explainer."""


@dataclass(frozen=True)
class OpProblem:
    """Every op of one type on the explained path that has no exact treatment.

    Attributes
    ----------
    op_type : str
        The TensorFlow op type, e.g. ``"Bucketize"``.
    count : int
        How many ops of this type are on the path.
    example : str
        The name of the first such op in the traced graph.
    layer : str or None
        The Keras layer that op was created in, where known.
    reason : str
        Why it cannot be explained exactly: ``"no rule is registered"``, or a rule's refusal.
    """

    op_type: str
    count: int
    example: str
    layer: str | None
    reason: str

    def describe(self) -> str:
        where = f" in layer {self.layer!r}" if self.layer else ""
        count = f"{self.count} op" + ("s" if self.count != 1 else "")
        return f"{self.op_type}: {count}, e.g. {self.example!r}{where}: {self.reason}"


class UnsupportedOpError(CompileError):
    """Ops on the path from the explained inputs to the output have no exact rule.

    Attributes
    ----------
    problems : tuple of OpProblem
        One entry per op type, sorted by op type.
    """

    def __init__(self, problems):
        self.problems = tuple(sorted(problems, key=lambda p: p.op_type))
        lines = [
            f"tfshap has no exact rule for {len(self.problems)} op type(s) on the path from the explained "
            "inputs to the output (nothing was run, and nothing falls back to the plain gradient):",
            *(f"  - {p.describe()}" for p in self.problems),
            HOW_TO_REGISTER,
        ]
        super().__init__("\n".join(lines))

    @property
    def op_types(self) -> list[str]:
        """The refused op types, sorted."""
        return [p.op_type for p in self.problems]

    def __reduce__(self):
        return (type(self), (self.problems,))


class AdditivityError(AssertionError):
    """The attributions do not sum to ``f(x) - E[f(background)]`` within the tolerance.

    Attributes
    ----------
    miss : float
        ``max |sum(values) + base_values - outputs|``.
    tolerance : float
        The tolerance it was checked against.
    model_noise : float or None
        The explained function's own float rounding on these rows (see the README,
        "Additivity tolerance"), where it was measured.
    dtype : str
        The least precise float dtype the model computes in.
    rules : str
        The rules the explanation used.
    """

    def __init__(self, miss: float, tolerance: float, model_noise: float | None, dtype: str, rules: str):
        self.miss, self.tolerance, self.model_noise, self.dtype, self.rules = miss, tolerance, model_noise, dtype, rules
        noise = (
            "the model's own rounding on these rows was not measured"
            if model_noise is None
            else f"the model's own {dtype} rounding on these rows is {model_noise:.3g}"
        )
        super().__init__(
            f"the attributions miss f(x) - E[f(background)] by {miss:.3g}, more than the {dtype} tolerance "
            f"{tolerance:.3g} ({noise}); rules involved: {rules}"
        )

    def __reduce__(self):
        return (type(self), (self.miss, self.tolerance, self.model_noise, self.dtype, self.rules))


class MaskMismatchError(ValueError):
    """A mask differs between a sample and a background row where no exact treatment exists.

    A mask cast to a float (tf_keras ``Masking`` multiplies by one) must be the same for a
    sample and its reference, and a ``tf.where`` whose condition switches needs a branch
    that changed; tfshap stops rather than return attributions that would not add up.

    Attributes
    ----------
    op_name : str
        The op whose mask or condition differed.
    layer : str or None
        The Keras layer of that op, where known.
    """

    def __init__(self, op_name: str, layer: str | None = None):
        self.op_name, self.layer = op_name, layer
        where = f" in layer {layer!r}" if layer else ""
        super().__init__(
            f"the mask or condition used by {op_name!r}{where} differs between a sample and a background row "
            "in a way DeepSHAP cannot attribute (a mask cast to a float, or a switch of tf.where where neither "
            "branch changes), so nothing was returned. Expected background rows masked like the samples "
            "(e.g. the same padding positions), or per-sample references padded like each sample"
        )

    def __reduce__(self):
        return (type(self), (self.op_name, self.layer))


def from_run_time_error(error: Exception, layer_of) -> Exception:
    """The user-facing error for an ``InvalidArgumentError`` raised while explaining.

    A failed mask check (its message holds :data:`MISMATCH_MARKER` and the op's name)
    becomes :class:`MaskMismatchError`; anything else is returned unchanged.
    """
    marker = f"{MISMATCH_MARKER} "
    if marker not in error.message:
        return error
    op_name = error.message.split(marker, 1)[1].split()[0].rstrip("]'\"")
    return MaskMismatchError(op_name, layer_of(op_name))
