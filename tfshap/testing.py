"""Helpers for checking explanations against float64 ground truth, shared by the tests and the tools."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def floatx(K, dtype: str):
    """Build models in ``dtype`` within the block, in either Keras; restore floatx afterwards.

    Keras 3 caches its global dtype policy the first time it is read, after which
    ``set_floatx`` no longer changes the dtype of new layers: the policy is set too.
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
