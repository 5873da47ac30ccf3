"""The rule families, one module each. Importing this package registers every rule, once."""

from . import bilinear, binary, control_flow, elementwise, linear, mask, normalization, pooling, softmax  # noqa: F401
