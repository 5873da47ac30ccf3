"""Plots of attributions (matplotlib, imported only when a plot is drawn).

``image(values, pixels)`` draws heatmaps over images like ``shap.image_plot``: one row per
sample, the image first, then one column per explained output. For shap's own plots, use
``Attributions.to_shap()``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .attributions import Attributions


def _pyplot():
    """``matplotlib.pyplot``, on the Agg backend when there is no display to draw on."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("tfshap.plots needs matplotlib: python -m pip install matplotlib") from exc
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image_inputs(values, pixels, labels):
    """``(values (n, h, w, c, k), pixels (n, h, w, c), labels (n, k) or None)`` from any accepted form."""
    if isinstance(values, Attributions):
        if isinstance(values.values, list):
            raise ValueError("the explained model has several inputs: plot one, e.g. plots.image(a.values[0], a.data[0])")
        if labels is None and values.output_indices is not None:
            labels = np.array([[f"output {j}" for j in row] for row in values.output_indices])
        pixels = values.data if pixels is None else pixels
        values = values.values
    elif isinstance(values, (list, tuple)):  # shap's layout: one (n, h, w[, c]) array per output
        values = np.stack([np.asarray(v) for v in values], axis=-1)
    values = np.asarray(values, np.float64)
    if values.ndim not in (4, 5):
        raise ValueError(f"values must have shape (n, height, width[, channels], n_outputs); got {values.shape}")
    if values.ndim == 4:
        values = values[..., None, :]
    if pixels is None:
        raise ValueError(f"pixels (the images) are needed: an array of shape {values.shape[:-1]}")
    pixels = np.asarray(pixels, np.float64)
    if pixels.shape != values.shape[:-1] and pixels.shape != values.shape[:-2]:
        raise ValueError(f"pixels must have shape {values.shape[:-1]} (the images of values); got {pixels.shape}")
    pixels = pixels.reshape(values.shape[:-1])
    n, k = values.shape[0], values.shape[-1]
    if labels is None:
        labels = np.array([[f"output {j}" for j in range(k)]] * n)
    labels = np.asarray(labels)
    if labels.shape == (k,):
        labels = np.tile(labels, (n, 1))
    if labels.shape != (n, k):
        raise ValueError(f"labels must have shape ({k},) or ({n}, {k}) (one per output column); got {labels.shape}")
    return values, pixels, labels


def _picture(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shown, gray)``: RGB scaled to [0, 1] for three channels, else the channel mean; the gray image."""
    gray = pixels.mean(axis=-1)
    if pixels.shape[-1] == 3:
        lo, hi = pixels.min(), pixels.max()
        return (pixels - lo) / ((hi - lo) or 1.0), gray
    return gray, gray


def image(values, pixels=None, labels=None, *, path=None, show=False, vmax=None, cell=1.5, dpi=100, cmap="bwr"):
    """Heatmaps of attributions over images; returns the matplotlib ``Figure``.

    ``values``: ``(n, height, width[, channels], n_outputs)`` (tfshap's layout), an
    ``Attributions`` (its ``data`` gives the images), or shap's list of one array per output.
    ``pixels``: the images, ``(n, height, width[, channels])``. ``labels``: the column titles,
    ``(n_outputs,)`` or one row per sample. One row per sample: the image, then one heatmap per
    output (summed over channels, over a faint copy of the image); red raises the output, blue
    lowers it, on one colour scale symmetric about zero (``±vmax``, by default the largest
    ``|value|``), shown by the colour bar at the bottom. The figure is ``cell · (n_outputs + 1)``
    by ``cell · n + 0.6`` inches; ``path`` writes it there (PNG at ``dpi``, that size exactly).
    """
    values, pixels, labels = _image_inputs(values, pixels, labels)
    n, k = values.shape[0], values.shape[-1]
    heat = values.sum(axis=-2)  # (n, h, w, k)
    limit = float(vmax) if vmax is not None else float(np.max(np.abs(heat))) or 1.0
    plt = _pyplot()
    fig, axes = plt.subplots(
        n, k + 1, figsize=(cell * (k + 1), cell * n + 0.6), dpi=dpi, squeeze=False, layout="constrained"
    )
    for row in range(n):
        shown, gray = _picture(pixels[row])
        axes[row, 0].imshow(shown, cmap="gray_r" if shown.ndim == 2 else None)
        for j in range(k):
            ax = axes[row, j + 1]
            ax.imshow(gray, cmap="gray_r", alpha=0.2)
            im = ax.imshow(heat[row, ..., j], cmap=cmap, vmin=-limit, vmax=limit, alpha=0.85)
            if row == 0 or labels.shape[0] > 1 and (labels[row] != labels[0]).any():
                ax.set_title(str(labels[row, j]), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, orientation="horizontal", fraction=0.6 / (cell * n + 0.6), label="attribution")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    if show:
        plt.show()
    elif path is not None:
        plt.close(fig)
    return fig
