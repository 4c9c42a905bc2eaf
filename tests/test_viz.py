"""Figures: image grids, reconstructions, training curves, codebook usage."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dvl_helpers import viz  # noqa: E402
from dvl_helpers.training import History  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


def _images(b, c, h=6, w=5, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _history():
    h = History()
    for step in range(1, 11):
        h.log(step, loss=1.0 / step, rec=torch.tensor(0.5 / step), usage=torch.arange(4.0) * step)
    return h


# --- make_grid ---------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("b, nrow, rows", [(16, 8, 2), (5, 8, 1), (9, 4, 3), (1, 3, 1), (7, 1, 7)])
def test_make_grid_shape(c, b, nrow, rows):
    h, w, pad = 6, 5, 2
    grid = viz.make_grid(_images(b, c, h, w), nrow=nrow, pad=pad)
    assert isinstance(grid, np.ndarray)
    assert grid.shape == (rows * (h + pad), nrow * (w + pad), c)


def test_make_grid_places_images_row_major_with_padding():
    x = _images(5, 3, 4, 4)
    grid = viz.make_grid(x, nrow=3, pad=1, pad_value=0.25)
    assert grid.shape == (2 * 5, 3 * 5, 3)
    for i in range(5):
        r, col = divmod(i, 3)
        tile = grid[r * 5:r * 5 + 4, col * 5:col * 5 + 4]
        np.testing.assert_allclose(tile, x[i].permute(1, 2, 0).numpy())
    # padding lines and the empty sixth slot hold pad_value
    assert (grid[4, :] == 0.25).all() and (grid[:, 4] == 0.25).all()
    assert (grid[5:9, 10:14] == 0.25).all()


def test_make_grid_without_padding_and_clamping():
    x = torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1, 1)
    grid = viz.make_grid(x, nrow=3, pad=0)
    assert grid.shape == (1, 3, 1)
    np.testing.assert_allclose(grid[0, :, 0], [0.0, 0.5, 1.0])


def test_make_grid_detaches_gradients():
    x = _images(2, 1).requires_grad_()
    assert viz.make_grid(x).shape[-1] == 1


@pytest.mark.parametrize("shape, match", [
    ((3, 8, 8), r"\[B, C, H, W\].*\(3, 8, 8\)"),
    ((2, 2, 8, 8), "1 or 3 channels, got 2"),
    ((0, 3, 8, 8), r"at least one image.*\(0, 3, 8, 8\)"),
])
def test_make_grid_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        viz.make_grid(torch.rand(shape))


def test_make_grid_bad_nrow():
    with pytest.raises(ValueError, match="nrow must be >= 1.*nrow=0"):
        viz.make_grid(_images(2, 3), nrow=0)


def test_make_grid_rejects_arrays():
    with pytest.raises(TypeError, match="torch.Tensor.*ndarray"):
        viz.make_grid(np.zeros((2, 3, 4, 4)))


# --- show_images / show_reconstructions ----------------------------------------------------


@pytest.mark.parametrize("c", [1, 3])
def test_show_images_returns_one_axes_figure(c):
    fig = viz.show_images(_images(10, c), nrow=4, title="digits")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "digits"
    (image,) = ax.images
    assert image.get_array().shape[:2] == (3 * 7, 4 * 6)
    if c == 1:  # a colour map only matters for one channel; RGB is drawn as is
        assert image.get_cmap().name == "gray"
    else:
        assert image.get_array().shape[2] == 3


def test_show_images_draws_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert viz.show_images(_images(2, 3), ax=axes[1]) is fig
    assert len(axes[1].images) == 1 and len(axes[0].images) == 0


def test_show_reconstructions_two_rows():
    x, x_rec = _images(12, 3), _images(12, 3, seed=1)
    fig = viz.show_reconstructions(x, x_rec, n=5, title="epoch 1")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["original", "reconstruction"]
    top, bottom = (ax.images[0].get_array() for ax in fig.axes)
    assert top.shape[:2] == bottom.shape[:2] == (7, 5 * 6)  # n images in one row
    np.testing.assert_allclose(top, viz.make_grid(x[:5], nrow=5))
    np.testing.assert_allclose(bottom, viz.make_grid(x_rec[:5], nrow=5))
    assert fig._suptitle.get_text() == "epoch 1"


def test_show_reconstructions_fewer_images_than_n():
    fig = viz.show_reconstructions(_images(3, 1), _images(3, 1, seed=1), n=8)
    assert fig.axes[0].images[0].get_array().shape[:2] == (7, 3 * 6)


def test_show_reconstructions_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3, 6, 5\).*\(4, 1, 6, 5\)"):
        viz.show_reconstructions(_images(4, 3), _images(4, 1))


# --- plot_history ---------------------------------------------------------------------


def test_plot_history_default_plots_scalar_metrics():
    fig = viz.plot_history(_history())
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "rec"]  # not the [T, K] usage


def test_plot_history_names_smooth_and_log():
    h = _history()
    fig = viz.plot_history(h, ["rec"], smooth=3, logy=["rec"])
    (ax,) = fig.axes
    raw, smoothed = ax.lines
    np.testing.assert_allclose(raw.get_xdata(), np.arange(1, 11))
    np.testing.assert_allclose(raw.get_ydata(), h["rec"])
    assert len(smoothed.get_xdata()) == 8
    assert smoothed.get_ydata()[0] == pytest.approx(np.mean(h["rec"][:3]))
    assert ax.get_yscale() == "log"


def test_plot_history_accepts_a_single_name():
    fig = viz.plot_history(_history(), "loss", logy="loss")
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    assert fig.axes[0].get_yscale() == "log"


def test_plot_history_unknown_name():
    with pytest.raises(KeyError, match="'los'.*loss, rec, usage"):
        viz.plot_history(_history(), ["los"])
    assert plt.get_fignums() == []


def test_plot_history_array_metric_is_an_error():
    with pytest.raises(ValueError, match=r"'usage' is not a scalar metric.*\(4,\)"):
        viz.plot_history(_history(), ["loss", "usage"])
    assert plt.get_fignums() == []  # no empty figure left behind


def test_plot_history_empty():
    with pytest.raises(ValueError, match="nothing to plot"):
        viz.plot_history(History())


# --- plot_usage --------------------------------------------------------------------------


def test_plot_usage_colours_dead_codes():
    counts = torch.tensor([5, 0, 3, 0, 1])
    fig = viz.plot_usage(counts)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    bars = ax.patches
    assert [b.get_height() for b in bars] == [5, 3, 1, 0, 0]  # sorted, most used first
    live, dead = {b.get_facecolor() for b in bars[:3]}, {b.get_facecolor() for b in bars[3:]}
    assert len(live) == 1 and len(dead) == 1 and live != dead
    assert dead == {to_rgba("C3")}
    assert ax.get_title() == "3 of 5 codes used"


def test_plot_usage_numpy_log_title_and_axes():
    fig, axes = plt.subplots(1, 2)
    out = viz.plot_usage(np.array([2.0, 8.0]), log=True, title="usage", ax=axes[0])
    assert out is fig
    assert axes[0].get_title() == "usage" and axes[0].get_yscale() == "symlog"
    assert len(axes[0].patches) == 2 and len(axes[1].patches) == 0


def test_plot_usage_bad_shape():
    with pytest.raises(ValueError, match=r"\[K\].*\(2, 3\)"):
        viz.plot_usage(torch.ones(2, 3))
