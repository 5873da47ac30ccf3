"""Exact Shapley values of small models, by enumerating every coalition of input features.

The game of one sample ``x`` against one reference row ``r`` is ``v(S) = f(x_S, r_rest)``: the
features in ``S`` take their value in ``x``, the others their value in ``r``. Its Shapley value

    φ_j = Σ_{S ∌ j} |S|! (d − |S| − 1)! / d! · [v(S ∪ {j}) − v(S)]

is linear in ``v``, so ``φ = Mᵀ v`` with ``M[S, j] = w(|S| − 1)`` where ``j ∈ S`` and ``−w(|S|)``
where not (``w(s) = s! (d − s − 1)! / d!``). With several reference rows, the per-reference
values are averaged (what DeepSHAP approximates); by linearity that is ``Mᵀ mean_r v_r``.

All ``2^d`` coalitions of every (sample, reference) pair go through the model in batches of
rows; ``d`` is the number of scalar features (``prod(input_shape)``), up to ``MAX_PLAYERS``.

    from tools.shapley import shapley_values   # or load this file by path, as the tests do
    phi = shapley_values(model, x, background)  # (n, *input_shape, n_outputs), tfshap's layout
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: 2^16 coalitions per pair; beyond that the enumeration is no longer "small".
MAX_PLAYERS = 16
#: Rows per call of the model.
DEFAULT_BATCH_ROWS = 1 << 16


def coalitions(d: int) -> np.ndarray:
    """Every coalition of ``d`` players as a boolean mask, ``(2^d, d)``; row ``s`` holds the bits of ``s``."""
    codes = np.arange(1 << d, dtype=np.int64)
    return ((codes[:, None] >> np.arange(d)) & 1).astype(bool)


def shapley_weights(d: int) -> np.ndarray:
    """``M`` of ``φ = Mᵀ v``, ``(2^d, d)``: ``w(|S| − 1)`` where ``j ∈ S``, ``−w(|S|)`` where not.

    ``w(s) = s! (d − s − 1)! / d!``, the weight of a coalition of size ``s`` that ``j`` joins.
    """
    w = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)] + [0.0])
    masks = coalitions(d)
    size = masks.sum(1)
    return np.where(masks, w[np.maximum(size - 1, 0)][:, None], -w[size][:, None])


def model_function(model) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy function ``(rows, *shape) -> (rows, n_outputs)`` from a Keras model (either Keras) or a callable.

    Parameters
    ----------
    model
        A single-input Keras model (``tf_keras`` or Keras 3), called with ``training=False``; or a
        callable taking a numpy array of rows and returning an array of one row per input row.

    Returns
    -------
    callable
        ``f(rows) -> (rows, n_outputs)`` float64; outputs of shape ``(rows, *s)`` are flattened and
        ``(rows,)`` becomes one output.

    Raises
    ------
    ValueError
        If ``model`` is neither callable nor a Keras model with exactly one input.
    """
    if hasattr(model, "layers") and callable(model):
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) > 1:
            raise ValueError(f"exact Shapley values take a model with one input; this one has {len(inputs)}")
        dtype = np.dtype(getattr(inputs[0].dtype, "name", inputs[0].dtype)) if inputs else None

        def call(rows: np.ndarray) -> np.ndarray:
            return np.asarray(model(rows if dtype is None else rows.astype(dtype), training=False))

    elif callable(model):
        call = model
    else:
        kind = type(model).__name__
        raise ValueError(f"expected a Keras model or a callable f(rows) -> (rows, n_outputs); got {kind}")

    def f(rows: np.ndarray) -> np.ndarray:
        out = np.asarray(call(rows), dtype=np.float64)
        if out.ndim == 0 or out.shape[0] != len(rows):
            raise ValueError(f"the model must return one row per input row: {len(rows)} rows in, shape {out.shape} out")
        return out.reshape(len(rows), -1)

    return f


def _as_rows(x, references) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``(n, *shape)`` and references ``(K, *shape)`` as float64; one reference row may drop its batch axis."""
    x = np.asarray(x, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"x must be (n, *input_shape) with n >= 1; got shape {x.shape}")
    if references.shape == x.shape[1:]:
        references = references[None]
    if references.shape[1:] != x.shape[1:] or len(references) == 0:
        raise ValueError(
            f"references must be (K, *input_shape) = (K, {', '.join(map(str, x.shape[1:]))}) with K >= 1, "
            f"or one row {x.shape[1:]}; got shape {references.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(references))):
        raise ValueError("x and references must be finite (no NaN or infinite values)")
    return x, references


def mean_coalition_values(f, x_row: np.ndarray, references: np.ndarray, masks: np.ndarray, batch_rows: int):
    """``mean_r v_r(S)`` for one sample: every coalition against every reference row, ``(2^d, n_outputs)``."""
    n_coalitions, d = masks.shape
    x_flat, r_flat = x_row.reshape(d), references.reshape(len(references), d)
    total = None
    per_call = max(1, batch_rows // n_coalitions)  # reference rows per call when all coalitions fit
    for start in range(0, len(r_flat), per_call):
        refs = r_flat[start : start + per_call]
        rows = np.where(masks[None], x_flat, refs[:, None, :]).reshape(-1, d)
        chunks = [rows[i : i + batch_rows].reshape(-1, *x_row.shape) for i in range(0, len(rows), batch_rows)]
        values = np.concatenate([f(chunk) for chunk in chunks])
        block = values.reshape(len(refs), n_coalitions, -1).sum(0)
        total = block if total is None else total + block
    return total / len(r_flat)


def shapley_values(model, x, references, *, batch_rows: int = DEFAULT_BATCH_ROWS, max_players: int = MAX_PLAYERS):
    """Exact Shapley values of ``f(x_S, r_rest)``, averaged over the reference rows.

    Parameters
    ----------
    model
        A single-input Keras model (either Keras) or a callable ``f(rows) -> (rows, n_outputs)``
        (see :func:`model_function`).
    x
        Samples, ``(n, *input_shape)``.
    references
        Reference rows, ``(K, *input_shape)``, or one row ``input_shape``.
    batch_rows
        Rows per call of the model.
    max_players
        The largest ``d = prod(input_shape)`` accepted (the work grows as ``2^d``).

    Returns
    -------
    np.ndarray
        ``(n, *input_shape, n_outputs)`` float64, tfshap's layout: for every sample,
        ``mean_r φ(x, r)``; they sum over the features to ``f(x) − mean_r f(r)``.

    Raises
    ------
    ValueError
        On shapes that do not match, non-finite values, ``d > max_players``, or a model
        that does not return one row per input row.
    """
    x, references = _as_rows(x, references)
    d = int(np.prod(x.shape[1:]))
    if not 1 <= d <= max_players:
        raise ValueError(f"exact enumeration takes 1 to {max_players} features (2^d coalitions); got d = {d}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1; got {batch_rows}")
    f = model_function(model)
    masks, weights = coalitions(d), shapley_weights(d)
    phi = np.stack([weights.T @ mean_coalition_values(f, row, references, masks, batch_rows) for row in x])
    return phi.reshape(*x.shape, phi.shape[-1])
