"""tfshap.plots.image and Attributions.to_shap() with shap's plots, rendered to PNG files."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from models._helpers import explain_bound

import tfshap

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return mpimg.imread(path)[..., :3]  # (height, width, RGB) in [0, 1]


def _cell(fig, ax, picture: np.ndarray) -> np.ndarray:
    """The pixels of ``picture`` (as saved from ``fig``) inside the axes ``ax``."""
    box = ax.get_window_extent()
    height = picture.shape[0]
    return picture[int(height - box.y1) + 2 : int(height - box.y0) - 2, int(box.x0) + 2 : int(box.x1) - 2]


@pytest.fixture
def signed_values(rng):
    """Two 6×6 grey images; output 0 positive everywhere, output 1 negative, output 2 zero."""
    pixels = rng.random((2, 6, 6, 1))
    values = np.stack([np.full((2, 6, 6, 1), 0.3), np.full((2, 6, 6, 1), -0.3), np.zeros((2, 6, 6, 1))], axis=-1)
    return values, pixels


def test_image_grid_size_and_colours(signed_values, tmp_path):
    values, pixels = signed_values
    path = tmp_path / "grid.png"

    fig = tfshap.plots.image(values, pixels, labels=["up", "down", "flat"], path=path, cell=1.5, dpi=80)

    picture = _read_png(path)
    assert picture.shape[:2] == (round((1.5 * 2 + 0.6) * 80), round(1.5 * 4 * 80))
    grid = fig.axes[:-1]  # the last axes is the colour bar
    assert len(fig.axes) == 2 * 4 + 1
    assert [ax.get_title() for ax in grid[1:4]] == ["up", "down", "flat"]
    assert picture.std() > 0.05  # not blank
    for row in range(2):
        up, down, flat = (_cell(fig, grid[4 * row + j], picture).reshape(-1, 3).mean(0) for j in (1, 2, 3))
        assert up[0] - up[2] > 0.3  # red: raises the output
        assert down[2] - down[0] > 0.3  # blue: lowers it
        assert abs(flat[0] - flat[2]) < 0.05  # no attribution: neither
        image = _cell(fig, grid[4 * row], picture)
        assert image.std() > 0.1  # the digit itself is drawn in the first column


def test_image_accepts_attributions_and_shap_list_layout(signed_values, tmp_path):
    values, pixels = signed_values
    indexes = np.array([[4, 1, 7], [2, 4, 0]])
    attributions = tfshap.Attributions(
        values=values, base_values=np.zeros((2, 3)), outputs=np.zeros((2, 3)), additivity_error=0.0,
        data=pixels, output_indices=indexes,
    )

    from_attributions = tfshap.plots.image(attributions, path=tmp_path / "a.png")
    from_list = tfshap.plots.image([values[..., j] for j in range(3)], pixels[..., 0], path=tmp_path / "b.png")
    from_array = tfshap.plots.image(values, pixels, path=tmp_path / "c.png")

    titles = [ax.get_title() for ax in from_attributions.axes[:-1]]
    assert titles[1:4] == ["output 4", "output 1", "output 7"] and titles[5:8] == ["output 2", "output 4", "output 0"]
    assert [ax.get_title() for ax in from_array.axes[1:4]] == ["output 0", "output 1", "output 2"]
    assert len(from_list.axes) == len(from_array.axes) == 9
    np.testing.assert_array_equal(_read_png(tmp_path / "b.png"), _read_png(tmp_path / "c.png"))


def test_image_of_rgb_pictures(rng, tmp_path):
    pixels = rng.random((1, 5, 5, 3)) * 255
    values = rng.normal(size=(1, 5, 5, 3, 2))
    fig = tfshap.plots.image(values, pixels, path=tmp_path / "rgb.png", dpi=60)
    picture = _read_png(tmp_path / "rgb.png")
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (5, 5, 3) and 0 <= shown.min() and shown.max() <= 1
    assert picture.shape[:2] == (round((1.5 + 0.6) * 60), round(1.5 * 3 * 60))


@pytest.mark.parametrize(
    "values, pixels, kwargs, message",
    [
        (
            np.zeros((2, 6, 6)), np.zeros((2, 6, 6)), {},
            r"values must have shape \(n, height, width\[, channels\], n_outputs\); got \(2, 6, 6\)",
        ),
        (np.zeros((2, 6, 6, 1, 3)), np.zeros((2, 5, 6, 1)), {}, r"pixels must have shape \(2, 6, 6, 1\)"),
        (np.zeros((2, 6, 6, 1, 3)), None, {}, r"pixels \(the images\) are needed"),
        (
            np.zeros((2, 6, 6, 1, 3)), np.zeros((2, 6, 6, 1)), dict(labels=["a", "b"]),
            r"labels must have shape \(3,\) or \(2, 3\)",
        ),
    ],
)
def test_image_bad_input_is_a_value_error(values, pixels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfshap.plots.image(values, pixels, **kwargs)


def test_image_refuses_several_inputs_at_once():
    attributions = tfshap.Attributions(
        values=[np.zeros((1, 4, 4, 2))] * 2, base_values=np.zeros(2), outputs=np.zeros((1, 2)),
        additivity_error=0.0, data=[np.zeros((1, 4, 4))] * 2,
    )
    with pytest.raises(ValueError, match=r"several inputs: plot one"):
        tfshap.plots.image(attributions)


def _spine_widths(ax) -> set:
    return {side.get_linewidth() for side in ax.spines.values()}


def test_image_frames_the_predicted_output_and_says_what_the_colours_mean(signed_values, tmp_path):
    values, pixels = signed_values
    values = values * np.array([1.0, 2.0, 0.0])  # largest |value|: 0.6, in output 1

    fig = tfshap.plots.image(
        values, pixels, predicted=[0, 1], row_labels=["label 0, pred 0", "label 1, pred 1"], title="digits",
        path=tmp_path / "framed.png", cell=1.0, dpi=50,
    )

    grid, bar = fig.axes[:-1], fig.axes[-1]
    assert tuple(fig.get_size_inches()) == (4.0, 2 * 1.0 + 0.6 + 0.3)  # a title adds 0.3 inches
    assert _read_png(tmp_path / "framed.png").shape[:2] == (round(2.9 * 50), 4 * 50)
    framed = [i for i, ax in enumerate(grid) if _spine_widths(ax) == {2.5}]
    assert framed == [1, 6]  # row 0: output 0 (axes 1); row 1: output 1 (axes 4 + 2)
    assert all(_spine_widths(ax) == {plt.rcParams["axes.linewidth"]} for i, ax in enumerate(grid) if i not in framed)
    for ax in grid:
        if ax.get_subplotspec().colspan.start > 0:  # heatmaps: the background image, then the values on ±0.6
            assert ax.get_images()[1].get_clim() == pytest.approx((-0.6, 0.6))
    assert bar.get_xlim() == pytest.approx((-0.6, 0.6))
    assert [t.get_text() for t in bar.get_xticklabels()] == ["-0.6", "0", "0.6"]
    assert bar.get_xlabel() == "attribution: red raises the output, blue lowers it"
    assert fig._suptitle.get_text() == "digits"
    assert [grid[0].get_title(), grid[4].get_title()] == ["label 0, pred 0", "label 1, pred 1"]


def test_image_with_many_outputs_shows_the_predicted_then_the_strongest(rng, tmp_path):
    pixels = rng.random((2, 4, 4))
    strength = np.array([[1, 5, 2, 9, 3, 4, 8, 7, 0.5, 6, 0.1, 0.2], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0.3, 0.1]])
    signs = np.sign(rng.normal(size=(2, 4, 4, 1, 1)))
    values = signs * strength[:, None, None, None, :] / 16  # Σ|value| over the 16 pixels = strength

    fig = tfshap.plots.image(values, pixels, predicted=[0, 11], max_columns=4, vmax=2.0)

    titles = [ax.get_title() for ax in fig.axes[:-1]]
    assert titles[1:5] == ["output 0", "output 3", "output 6", "output 7"]  # predicted, then by Σ|value|
    assert titles[6:10] == ["output 11", "output 0", "output 1", "output 2"]
    assert [ax for ax in fig.axes[:-1] if _spine_widths(ax) == {2.5}] == [fig.axes[1], fig.axes[6]]
    assert fig.axes[2].get_images()[1].get_clim() == (-2.0, 2.0)
    assert tuple(fig.get_size_inches()) == (1.5 * 5, 1.5 * 2 + 0.6)
    plt.close(fig)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predicted": [0, 3]}, r"one output column in \[0, 3\) per sample, shape \(2,\); got \[0, 3\]"),
        ({"predicted": [0]}, r"shape \(2,\)"),
        ({"max_columns": 0}, r"max_columns must be a positive integer or None; got 0"),
        ({"row_labels": ["a"]}, r"row_labels must hold one title per sample \(2\); got 1"),
    ],
)
def test_image_bad_options(signed_values, kwargs, message):
    values, pixels = signed_values
    with pytest.raises(ValueError, match=message):
        tfshap.plots.image(values, pixels, **kwargs)


# -- logo ------------------------------------------------------------------------------------------
CLASSIC = {"A": (0.0, 0.5, 0.0), "C": (0.0, 0.0, 1.0), "G": (1.0, 0.65, 0.0), "T": (1.0, 0.0, 0.0)}


def _glyphs(fig) -> list[tuple[float, float, float, tuple]]:
    """(centre position, bottom, top, RGB) of every letter drawn, from the patches' paths in data coordinates."""
    out = []
    for patch in fig.axes[0].patches:
        box = patch.get_path().get_extents()
        out.append((round((box.x0 + box.x1) / 2, 6), box.y0, box.y1, tuple(patch.get_facecolor()[:3])))
    return sorted(out)


def test_logo_of_a_sequence_draws_its_bases_as_tall_as_their_contributions(tmp_path):
    pytest.importorskip("logomaker")
    from tfshap.sequence import one_hot

    x = one_hot("GATTACA")
    values = np.array([0.5, -0.25, 1.0, 0.0, 2.0, -1.5, 0.75])[:, None] * np.ones((7, 4))

    fig = tfshap.plots.logo(values[..., None], x, start=100, title="one sequence", path=tmp_path / "logo.png", dpi=50)

    glyphs = _glyphs(fig)
    drawn = [g for g in glyphs if g[2] - g[1] > 0]
    assert [g[0] for g in drawn] == [100, 101, 102, 104, 105, 106]  # position 103 contributes 0
    for (_position, bottom, top, colour), letter, value in zip(drawn, "GATACA", [0.5, -0.25, 1.0, 2.0, -1.5, 0.75]):
        assert (bottom, top) == pytest.approx((min(value, 0), max(value, 0)))
        assert colour == pytest.approx(CLASSIC[letter])
    assert fig.axes[0].get_title() == "one sequence"
    assert tuple(fig.get_size_inches()) == (4.0, 2.0)  # max(4, 0.12 · 7) by 2 inches
    assert _read_png(tmp_path / "logo.png").shape[:2] == (100, 200)


def test_logo_of_hypothetical_contributions_stacks_all_four_bases():
    pytest.importorskip("logomaker")
    values = np.array([[0.5, -0.2, 0.3, -0.4], [0.1, 0.2, 0.3, 0.4]])

    fig = tfshap.plots.logo(values)

    glyphs = _glyphs(fig)
    for position in (0, 1):
        at = [g for g in glyphs if g[0] == position]
        assert max(g[2] for g in at) == pytest.approx(values[position][values[position] > 0].sum())
        assert min(g[1] for g in at) == pytest.approx(values[position][values[position] < 0].sum())
    plt.close(fig)


def test_logo_bad_input_and_missing_logomaker(monkeypatch):
    with pytest.raises(ValueError, match=r"one sequence's contributions, \(L, 4\) or \(L, 4, 1\).*got \(2, 5, 4\)"):
        tfshap.plots.logo(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"onehot must have the shape of values, \(5, 4\); got \(4, 4\)"):
        tfshap.plots.logo(np.zeros((5, 4)), np.eye(4))
    with_nan = np.zeros((3, 4))
    with_nan[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"values contains 1 NaN or infinite value\(s\)"):
        tfshap.plots.logo(with_nan)
    monkeypatch.setitem(sys.modules, "logomaker", None)
    with pytest.raises(ImportError, match=r"pip install tfshap\[sequence\]"):
        tfshap.plots.logo(np.zeros((5, 4)))


# -- Attributions.to_shap() with shap's own plots --------------------------------------------
@pytest.fixture(scope="module")
def shap_module():
    """shap, or a skip where it is not installed (a failure under ``TFSHAP_REQUIRE_SHAP=1``, as in CI)."""
    import os

    if os.environ.get("TFSHAP_REQUIRE_SHAP") == "1":
        import shap

        return shap
    return pytest.importorskip("shap")


def _saved_current_figure(path) -> np.ndarray:
    fig = plt.gcf()
    width, height = fig.get_size_inches() * fig.dpi
    fig.savefig(path)
    plt.close("all")
    picture = _read_png(path)
    assert picture.shape[:2] == (round(height), round(width))
    assert picture.std() > 0.05
    return picture


def test_to_shap_waterfall_and_bar_on_a_tabular_model(shap_module, rng, tmp_path):
    import tf_keras as K

    model = K.Sequential([K.Input((5,)), K.layers.Dense(8, activation="relu"), K.layers.Dense(3)])
    background, x = rng.normal(size=(20, 5)).astype("float32"), rng.normal(size=(4, 5)).astype("float32")
    attributions = tfshap.compile(model, background).explain(x)

    explanation = attributions.to_shap()

    assert explanation.values.shape == (4, 5, 3)
    total = explanation.values.sum(axis=1, dtype=np.float64) + explanation.base_values
    bound = explain_bound(model, np.concatenate([background, x]), len(background), attributions.values)
    np.testing.assert_allclose(total, attributions.outputs, rtol=0, atol=bound)
    shap_module.plots.waterfall(explanation[0, :, 1], show=False)
    _saved_current_figure(tmp_path / "waterfall.png")
    shap_module.plots.bar(explanation[:, :, 2], show=False)
    _saved_current_figure(tmp_path / "bar.png")


def test_to_shap_image_plot_on_gradient_attributions(shap_module, rng, tmp_path):
    import tf_keras as K

    model = K.Sequential(
        [K.Input((6, 6, 1)), K.layers.Conv2D(3, 3, activation="relu"), K.layers.Flatten(), K.layers.Dense(2)]
    )
    background, x = rng.random((10, 6, 6, 1)).astype("float32"), rng.random((2, 6, 6, 1)).astype("float32")
    attributions = tfshap.compile(model, background[:1], method="integrated_gradients", steps=8).explain(x)

    explanation = attributions.to_shap()
    shap_module.image_plot(explanation, show=False)
    picture = _saved_current_figure(tmp_path / "image_plot.png")

    assert explanation.values.shape == (2, 6, 6, 1, 2)
    np.testing.assert_array_equal(explanation.data, x)
    assert picture.shape[2] == 3


def test_to_shap_with_several_inputs_gives_one_explanation_per_input(shap_module, rng, tmp_path):
    import tf_keras as K

    a, b = K.Input((3,)), K.Input((2, 2))
    joined = K.layers.Concatenate()([a, K.layers.Flatten()(b)])
    model = K.Model([a, b], K.layers.Dense(2)(K.layers.Dense(4, activation="tanh")(joined)))
    background = [rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2, 2)).astype("float32")]
    x = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 2, 2)).astype("float32")]
    attributions = tfshap.compile(model, background).explain(x)

    explanations = attributions.to_shap()

    assert isinstance(explanations, list) and len(explanations) == 2
    for explanation, values, data in zip(explanations, attributions.values, x):
        assert isinstance(explanation, shap_module.Explanation)
        np.testing.assert_array_equal(explanation.values, values)
        np.testing.assert_array_equal(explanation.data, data)
        np.testing.assert_array_equal(explanation.base_values, np.tile(attributions.base_values, (4, 1)))
    # the inputs' values together, not each alone, sum to the outputs
    total = (
        sum(e.values.reshape(4, -1, 2).sum(axis=1, dtype=np.float64) for e in explanations)
        + explanations[0].base_values
    )
    rows = [np.concatenate(pair) for pair in zip(background, x)]
    np.testing.assert_allclose(
        total, attributions.outputs, rtol=0, atol=explain_bound(model, rows, 8, attributions.values)
    )
    shap_module.plots.bar(explanations[0][:, :, 0], show=False)  # shap's plots take one (of flat features)
    _saved_current_figure(tmp_path / "bar_first_input.png")


def test_to_shap_with_ranked_outputs_keeps_each_samples_base_values(shap_module, rng):
    import tf_keras as K

    model = K.Sequential([K.Input((5,)), K.layers.Dense(4)])
    background, x = rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")
    attributions = tfshap.compile(model, background).explain(x, ranked_outputs=2)

    explanation = attributions.to_shap()

    np.testing.assert_array_equal(explanation.base_values, attributions.base_values)  # (3, 2): per sample
