"""The exceptions of the public API (see API.md, "Errors")."""


class CompileError(Exception):
    """The model cannot be compiled into an explainer."""


class UnsupportedOpError(CompileError):
    """Ops on the path from the explained inputs to the output have no exact rule."""


class AdditivityError(AssertionError):
    """The attributions do not sum to f(x) - E[f(background)] within the dtype's tolerance."""
