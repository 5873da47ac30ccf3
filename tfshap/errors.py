"""The exceptions of the public API (see API.md, "Errors")."""


class CompileError(Exception):
    """The model cannot be compiled into an explainer."""


class UnsupportedOpError(CompileError):
    """Ops on the path from the explained inputs to the output have no exact rule."""


class AdditivityError(AssertionError):
    """The attributions do not sum to f(x) - E[f(background)] within the dtype's tolerance."""


class MaskMismatchError(ValueError):
    """A mask differs between a sample and a background row where no exact treatment exists.

    A mask cast to a float (tf_keras ``Masking`` multiplies by one) must be the same for a
    sample and its reference, and a ``tf.where`` whose condition switches needs a branch
    that changed; tfshap stops rather than return attributions that would not add up.
    """
