"""The result of an explanation: a small dataclass of numpy arrays (API.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Attributions:
    """The result of an explanation, numpy arrays in the model's output dtype.

    Parameters
    ----------
    values : ndarray or list of ndarray
        ``(n, *input_shape, n_outputs)`` per input (a list for several inputs);
        ``n_outputs`` is ``k`` with ``ranked_outputs=k``.
    base_values : ndarray
        ``(n_outputs,)``: the mean model output over the background; ``(n, n_outputs)``
        with per-sample references or ``ranked_outputs`` (each sample's own).
    outputs : ndarray
        ``(n, n_outputs)``: the explained function at the samples.
    additivity_error : float
        ``max |sum(values) + base_values - outputs|``.
    data : ndarray or list of ndarray, optional
        The samples explained.
    output_indices : ndarray, optional
        ``(n, k)``: which outputs each column explains, with ``ranked_outputs``.
    convergence_delta : ndarray, optional
        Expected and integrated gradients: ``(n, n_outputs)``,
        ``sum(values) − (outputs − base_values)`` per sample and output.
    """

    values: np.ndarray | list[np.ndarray]
    base_values: np.ndarray
    outputs: np.ndarray
    additivity_error: float
    data: np.ndarray | list[np.ndarray] | None = field(default=None, repr=False)
    output_indices: np.ndarray | None = field(default=None, repr=False)
    convergence_delta: np.ndarray | None = field(default=None, repr=False)

    def per_token(self) -> np.ndarray | list[np.ndarray]:
        """Attributions to an embedding layer summed over the embedding axis: ``(n, seq_len, n_outputs)``."""
        values = self.values if isinstance(self.values, list) else [self.values]
        for v in values:
            if v.ndim < 4:
                raise ValueError(
                    f"per_token() needs values of shape (n, seq_len, emb_dim, n_outputs), as from "
                    f"inputs='embedding'; got {v.shape}"
                )
        summed_ = [v.sum(axis=-2) for v in values]
        return summed_ if isinstance(self.values, list) else summed_[0]

    def to_shap(self):
        """A ``shap.Explanation`` (for shap's plots); needs shap installed. Several inputs give a list."""
        try:
            import shap
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Attributions.to_shap() needs shap: pip install shap") from exc
        values = self.values if isinstance(self.values, list) else [self.values]
        data = self.data if isinstance(self.data, list) else [self.data]
        base = np.asarray(self.base_values)
        if base.ndim == 1:  # one base value per output, the same for every sample
            base = np.broadcast_to(base, (len(self.outputs), base.shape[0]))
        explanations = [shap.Explanation(values=v, base_values=base, data=d) for v, d in zip(values, data)]
        return explanations if isinstance(self.values, list) else explanations[0]


def summed(values: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Sum of the attributions over every input dimension: ``(n, n_outputs)``."""
    values = values if isinstance(values, list) else [values]
    return sum(v.reshape(v.shape[0], -1, v.shape[-1]).sum(axis=1, dtype=np.float64) for v in values)
