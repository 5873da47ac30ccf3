"""Plots of attributions (matplotlib, imported only when a plot is drawn).

``image(values, pixels)`` draws heatmaps over images like ``shap.image_plot``: one row per
sample, the image first, then one column per explained output. ``logo(values, onehot)`` draws
a sequence logo of one DNA sequence's contributions (needs logomaker: ``pip install
tfshap[sequence]``). For shap's own plots, use ``Attributions.to_shap()``.
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
            raise ValueError(
                "the explained model has several inputs: plot one, e.g. plots.image(a.values[0], a.data[0])"
            )
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
    """``(shown, gray)``: RGB scaled to [0, 1] for 3 or 4 (RGBA) channels, else the channel mean; the gray image."""
    if pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3]
        lo, hi = rgb.min(), rgb.max()
        return (rgb - lo) / ((hi - lo) or 1.0), rgb.mean(axis=-1)
    gray = pixels.mean(axis=-1)
    return gray, gray


def _columns(heat: np.ndarray, predicted, max_columns) -> np.ndarray:
    """``(n, c)`` output columns per row: all ``k``, or the predicted then the largest ``Σ|value|``
    (``c = max_columns``)."""
    n, k = heat.shape[0], heat.shape[-1]
    integer = isinstance(max_columns, (int, np.integer)) and not isinstance(max_columns, bool)
    if max_columns is not None and (not integer or max_columns < 1):
        raise ValueError(f"max_columns must be a positive integer or None; got {max_columns!r}")
    if max_columns is None or k <= max_columns:
        return np.tile(np.arange(k), (n, 1))
    strength = np.abs(heat).reshape(n, -1, k).sum(axis=1)
    if predicted is not None:
        strength[np.arange(n), predicted] = np.inf
    return np.argsort(-strength, axis=1, kind="stable")[:, :max_columns]


def _predicted(predicted, n: int, k: int) -> np.ndarray | None:
    """``predicted`` as ``(n,)`` output columns in ``[0, k)``, or None."""
    if predicted is None:
        return None
    array = np.asarray(predicted)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer) or (array < 0).any() or (array >= k).any():
        raise ValueError(
            f"predicted must hold one output column in [0, {k}) per sample, shape ({n},); got {array.tolist()!r}"
        )
    return array


def _frame(ax, width: float = 2.5) -> None:
    """Draw a thick black frame around ``ax`` (the predicted output)."""
    for side in ax.spines.values():
        side.set_edgecolor("black")
        side.set_linewidth(width)


#: The colour bar's label: what the colours mean.
COLORBAR_LABEL = "attribution: red raises the output, blue lowers it"


def image(
    values, pixels=None, labels=None, *, predicted=None, max_columns=None, row_labels=None, title=None,
    path=None, show=False, vmax=None, cell=1.5, dpi=100, cmap="bwr",
):
    """Heatmaps of attributions over images, readable on their own; returns the matplotlib ``Figure``.

    One row per sample: the image, then one heatmap per output (summed over channels, over a
    faint copy of the image). Red raises the output, blue lowers it, on one colour scale
    symmetric about zero, ``±vmax``; the colour bar at the bottom says so and shows the scale.

    Parameters
    ----------
    values : array_like, Attributions or list of arrays
        ``(n, height, width[, channels], n_outputs)`` (tfshap's layout), an ``Attributions``
        (its ``data`` gives the images, its ``output_indices`` the column titles), or shap's
        list of one ``(n, height, width[, channels])`` array per output.
    pixels : array_like, optional
        The images, ``(n, height, width[, channels])``; three channels are drawn in colour.
    labels : array_like of str, optional
        Column titles, ``(n_outputs,)`` or ``(n, n_outputs)``; by default ``"output j"``.
    predicted : array_like of int, optional
        ``(n,)``: the column of ``values``' output axis each sample predicts. That heatmap gets a
        thick black frame and, with ``max_columns``, is always shown, first.
    max_columns : int, optional
        With more outputs than this, each row shows ``max_columns`` of them: the predicted
        one, then the largest by ``Σ|value|``; column titles then appear on every row.
    row_labels : array_like of str, optional
        ``(n,)`` titles over the images (e.g. ``"label 3, pred 3"``).
    title : str, optional
        The figure's title.
    path : str or os.PathLike, optional
        Writes the figure there (PNG at ``dpi``, its size exactly) and closes it unless ``show``.
    show : bool
        Show the figure (``plt.show()``).
    vmax : float, optional
        The colour scale's limit; by default the largest ``|value|`` shown.
    cell : float
        Inches per image. The figure is ``cell · (columns + 1)`` by ``cell · n + 0.6`` inches,
        plus 0.3 for a title.
    dpi : int
        Pixels per inch of the written PNG.
    cmap : str
        A diverging matplotlib colour map (``"bwr"``: blue, white at zero, red).

    Returns
    -------
    matplotlib.figure.Figure
        Axes in row order (the image, then the heatmaps), then the colour bar's.

    Raises
    ------
    ValueError
        If a shape does not match (the message gives the expected one), the model has several
        inputs, ``predicted`` is out of range, or ``max_columns`` is not a positive integer.
    ImportError
        If matplotlib is not installed.
    """
    values, pixels, labels = _image_inputs(values, pixels, labels)
    n, k = values.shape[0], values.shape[-1]
    heat = values.sum(axis=-2)  # (n, h, w, k)
    predicted = _predicted(predicted, n, k)
    columns = _columns(heat, predicted, max_columns)
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"row_labels must hold one title per sample ({n}); got {len(row_labels)}")
    shown = np.take_along_axis(heat, columns[:, None, None, :], axis=-1)
    limit = float(vmax) if vmax is not None else float(np.max(np.abs(shown))) or 1.0
    column_titles = np.take_along_axis(labels, columns, axis=1)
    titles_every_row = (column_titles != column_titles[:1]).any()
    plt = _pyplot()
    width = columns.shape[1] + 1
    height = cell * n + 0.6 + (0.3 if title else 0.0)
    fig, axes = plt.subplots(n, width, figsize=(cell * width, height), dpi=dpi, squeeze=False, layout="constrained")
    for row in range(n):
        picture, gray = _picture(pixels[row])
        axes[row, 0].imshow(picture, cmap="gray_r" if picture.ndim == 2 else None)
        if row_labels is not None:
            axes[row, 0].set_title(str(row_labels[row]), fontsize=8)
        for c, j in enumerate(columns[row]):
            ax = axes[row, c + 1]
            ax.imshow(gray, cmap="gray_r", alpha=0.2)
            im = ax.imshow(heat[row, ..., j], cmap=cmap, vmin=-limit, vmax=limit, alpha=0.85)
            if row == 0 or titles_every_row:
                ax.set_title(str(column_titles[row, c]), fontsize=8)
            if predicted is not None and j == predicted[row]:
                _frame(ax)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(
        im, ax=axes, orientation="horizontal", fraction=0.25 / height, shrink=0.7, ticks=[-limit, 0.0, limit]
    )
    bar.ax.set_xticklabels([f"{-limit:.3g}", "0", f"{limit:.3g}"], fontsize=7)
    bar.set_label(COLORBAR_LABEL if cell * width >= 4 else COLORBAR_LABEL.replace(", ", ",\n"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    if show:
        plt.show()
    elif path is not None:
        plt.close(fig)
    return fig


def _logo_heights(values, onehot) -> np.ndarray:
    """``(L, 4)`` letter heights: ``values`` (hypothetical) or ``values · onehot`` (the present bases only)."""
    array = np.asarray(values, np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:  # tfshap's layout for one output
        array = array[..., 0]
    if array.ndim != 2 or array.shape[-1] != 4:
        raise ValueError(
            f"values must be one sequence's contributions, (L, 4) or (L, 4, 1) (bases A, C, G, T); got {array.shape}. "
            "For sample i of output j of an explanation, pass values[i, ..., j]"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"values contains {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    if onehot is None:
        return array
    mask = np.asarray(onehot)
    if mask.shape != array.shape:
        raise ValueError(f"onehot must have the shape of values, {array.shape}; got {mask.shape}")
    return array * mask


def logo(
    values, onehot=None, *, start=0, title=None, ax=None, path=None, show=False, inches_per_base=0.12, height=2.0,
    dpi=100,
):
    """A sequence logo of one sequence's contributions (logomaker); returns the matplotlib ``Figure``.

    Each position shows letters as tall as their contributions: above the axis when they raise
    the output, below (upside down) when they lower it. With ``onehot``, only the base present at
    each position is drawn (``values · onehot``, the contributions the sequence actually has);
    without it, all four (hypothetical contributions, as TF-MoDISco reads them). Colours are
    logomaker's classic ones: A green, C blue, G orange, T red.

    Parameters
    ----------
    values : array_like
        ``(L, 4)`` or ``(L, 4, 1)`` contributions of one sequence to one output, e.g.
        ``attributions.values[i, ..., j]``.
    onehot : array_like, optional
        ``(L, 4)``: the sequence, to draw only its bases.
    start : int
        The position of the first base, for the x axis.
    title : str, optional
        The axes' title.
    ax : matplotlib Axes, optional
        Draw there instead of in a new figure.
    path : str or os.PathLike, optional
        Writes the figure there (PNG at ``dpi``) and closes it unless ``show``.
    show : bool
        Show the figure (``plt.show()``).
    inches_per_base, height : float
        A new figure is ``max(4, inches_per_base · L)`` by ``height`` inches.
    dpi : int
        Pixels per inch.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``values`` is not ``(L, 4)`` or ``(L, 4, 1)``, has non-finite values, or ``onehot``'s shape differs.
    ImportError
        If logomaker (or matplotlib) is not installed: ``pip install tfshap[sequence]``.
    """
    heights = _logo_heights(values, onehot)
    try:
        import logomaker
        import pandas as pd
    except ImportError as exc:
        raise ImportError("tfshap.plots.logo needs logomaker: pip install tfshap[sequence]") from exc
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, inches_per_base * len(heights)), height), dpi=dpi, layout="constrained")
    frame = pd.DataFrame(heights, columns=list("ACGT"), index=np.arange(start, start + len(heights)))
    logomaker.Logo(frame, ax=ax, color_scheme="classic")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("position", fontsize=8)
    ax.set_ylabel("contribution", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig = ax.figure
    if path is not None:
        fig.savefig(path, dpi=dpi)
    if show:
        plt.show()
    elif path is not None:
        plt.close(fig)
    return fig


__all__ = ["image", "logo"]
