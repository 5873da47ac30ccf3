"""The rule families, one module each. Importing this package registers every rule."""

from . import linear, elementwise, binary, pooling, softmax, control_flow, mask, bilinear, normalization  # noqa: F401

FAMILY_MODULES = ("linear", "elementwise", "binary", "pooling", "softmax", "control_flow", "mask", "bilinear", "normalization")
