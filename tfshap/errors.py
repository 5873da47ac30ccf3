"""The exceptions of the public API (see API.md, "Errors")."""


class CompileError(Exception):
    """The model cannot be compiled into an explainer."""


class UnsupportedOpError(CompileError):
    """Ops on the path from the explained inputs to the output have no exact rule."""


class AdditivityError(AssertionError):
    """The attributions do not sum to f(x) - E[f(background)] within the dtype's tolerance."""


class MaskMismatchError(ValueError):
    """A mask (padding, ``Masking``, ``mask_zero``) differs between a sample and a background row.

    DeepSHAP through a mask is exact only when a sample and its reference share it; tfshap
    stops rather than return attributions that would not add up.
    """
