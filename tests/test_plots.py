"""tfshap.plots.image and Attributions.to_shap() with shap's plots, rendered to PNG files."""

from __future__ import annotations

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
        (np.zeros((2, 6, 6)), np.zeros((2, 6, 6)), {}, r"values must have shape \(n, height, width\[, channels\], n_outputs\); got \(2, 6, 6\)"),
        (np.zeros((2, 6, 6, 1, 3)), np.zeros((2, 5, 6, 1)), {}, r"pixels must have shape \(2, 6, 6, 1\)"),
        (np.zeros((2, 6, 6, 1, 3)), None, {}, r"pixels \(the images\) are needed"),
        (np.zeros((2, 6, 6, 1, 3)), np.zeros((2, 6, 6, 1)), dict(labels=["a", "b"]), r"labels must have shape \(3,\) or \(2, 3\)"),
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

    model = K.Sequential([K.Input((6, 6, 1)), K.layers.Conv2D(3, 3, activation="relu"), K.layers.Flatten(), K.layers.Dense(2)])
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
    total = sum(e.values.reshape(4, -1, 2).sum(axis=1, dtype=np.float64) for e in explanations) + explanations[0].base_values
    rows = [np.concatenate(pair) for pair in zip(background, x)]
    np.testing.assert_allclose(total, attributions.outputs, rtol=0, atol=explain_bound(model, rows, 8, attributions.values))
    shap_module.plots.bar(explanations[0][:, :, 0], show=False)  # shap's plots take one (of flat features)
    _saved_current_figure(tmp_path / "bar_first_input.png")


@pytest.mark.xfail(strict=True, raises=ValueError, reason="to_shap broadcasts ranked base values (n, k) to (n, n); core fix requested")
def test_to_shap_with_ranked_outputs_keeps_each_samples_base_values(shap_module, rng):
    import tf_keras as K

    model = K.Sequential([K.Input((5,)), K.layers.Dense(4)])
    background, x = rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(3, 5)).astype("float32")
    attributions = tfshap.compile(model, background).explain(x, ranked_outputs=2)

    explanation = attributions.to_shap()

    np.testing.assert_array_equal(explanation.base_values, attributions.base_values)  # (3, 2): per sample
