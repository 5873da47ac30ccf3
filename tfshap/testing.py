"""Helpers for checking explanations against float64 ground truth, shared by the tests and the tools."""


from __future__ import annotations

import contextlib


@contextlib.contextmanager
def floatx(K, dtype: str):
    """Build models in ``dtype`` within the block, in either Keras; restore floatx afterwards.

    Keras 3 caches its global dtype policy the first time it is read, after which
    ``set_floatx`` no longer changes the dtype of new layers: the policy is set too.

    Parameters
    ----------
    K : module
        ``tf_keras`` or ``keras``.
    dtype : str
        ``"float64"``, ``"float32"``, ...
    """
    before = K.backend.floatx()
    policy = K.config.dtype_policy() if hasattr(K, "config") and hasattr(K.config, "set_dtype_policy") else None
    K.backend.set_floatx(dtype)
    if policy is not None:
        K.config.set_dtype_policy(dtype)
    try:
        yield K
    finally:
        K.backend.set_floatx(before)
        if policy is not None:
            K.config.set_dtype_policy(policy)


#: op type -> the gradient function that replaces its rule inside :func:`replaced_rule`.
_REPLACEMENTS: dict = {}


def _replacement(op, *grads):
    """The gradient registered (once per op type) for replaced rules: dispatches to the current replacement."""
    return _REPLACEMENTS[op.type](op, *grads)


@contextlib.contextmanager
def replaced_rule(op_type: str, gradient):
    """Within the block, ``op_type`` takes the rule ``gradient`` (e.g. a deliberately wrong one); restored after.

    Rules are installed when compiling, so an explainer compiled inside the block keeps the
    replacement. One gradient per op type is registered with TensorFlow, once, whatever the
    number of replacements.

    Parameters
    ----------
    op_type : str
        The op type whose rule is replaced.
    gradient : callable
        ``gradient(op, *grads) -> list``, as :func:`tfshap.register_rule` takes it.
    """
    from . import registry

    previous = registry.unregister_rule(op_type)
    _REPLACEMENTS[op_type] = gradient
    registry.register_rule(op_type, "testing", _replacement, doc=gradient.__doc__ or "a replaced rule")
    try:
        yield
    finally:
        registry.unregister_rule(op_type)
        _REPLACEMENTS.pop(op_type, None)
        if previous is not None:
            registry.restore_rule(previous)


__all__ = ["floatx", "replaced_rule"]
