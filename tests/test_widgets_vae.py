"""The latent-interpolation widget, driven headless: every control changes what it shows."""
import ipywidgets
import numpy as np
import pytest
import torch
from torch import nn

from dvl_helpers.data import TensorImageDataset
from dvl_helpers.widgets import LatentInterpolation, latent_interpolation, slerp


class Toy(nn.Module):
    """A model whose codes and decodings can be read off by eye.

    ``encode``: the code of an image is its top-left ``D`` pixels, scaled to
    ``[-2, 2]``; ``decode``: logits whose ``d``-th row of pixels is ``z_d``.
    So ``sigmoid(decode(z))[0, d, :] == sigmoid(z_d)``.
    """

    def __init__(self, dim=2, side=4):
        super().__init__()
        self.dim, self.side = dim, side
        self.anchor = nn.Parameter(torch.zeros(()))   # a parameter: the widget finds the device

    def encode(self, x):
        mu = x[:, 0, 0, :self.dim] * 4 - 2
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        logits = torch.zeros(z.shape[0], 1, self.side, self.side)
        logits[:, 0, :self.dim, :] = z[:, :, None]
        return logits + self.anchor


def toy_images(n=12, side=4, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def code(images, i, dim=2):
    return images[i, 0, 0, :dim] * 4 - 2


@pytest.fixture
def images():
    return toy_images()


@pytest.fixture
def widget(images):
    labels = torch.arange(12) % 10
    return latent_interpolation(Toy(), TensorImageDataset(images, labels), index_a=2, index_b=5,
                                alpha=0.25, num_steps=5)


def test_is_a_vbox_holding_its_controls(widget):
    assert isinstance(widget, ipywidgets.VBox) and isinstance(widget, LatentInterpolation)

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    inside = list(walk(widget))
    for control in (widget.picker_a, widget.picker_b, widget.slider, widget.spherical,
                    widget.random_pair, widget.image):
        assert any(control is w for w in inside)
    assert widget.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(widget.figure.axes) == 5          # A, current, B, strip, latent plane
    assert (widget.picker_a.min, widget.picker_a.max) == (0, 11)


def test_initial_state_is_the_straight_line(widget, images):
    s = widget.state()
    assert (s["index_a"], s["index_b"], s["alpha"], s["spherical"]) == (2, 5, 0.25, False)
    assert (s["label_a"], s["label_b"]) == (2, 5)
    z_a, z_b = code(images, 2), code(images, 5)
    assert np.allclose(s["z_a"], z_a) and np.allclose(s["z_b"], z_b)
    assert np.allclose(s["z"], 0.75 * z_a + 0.25 * z_b, atol=1e-6)
    # the large picture is the decoding of z, the strip the path's ends and steps
    assert widget.decoded.shape == (6, 1, 4, 4)
    assert np.allclose(widget.decoded[-1, 0, :2, 0], torch.sigmoid(torch.tensor(s["z"])))
    assert np.allclose(widget.decoded[0, 0, :2, 0], torch.sigmoid(z_a))
    assert np.allclose(widget.decoded[4, 0, :2, 0], torch.sigmoid(z_b))
    assert np.allclose(widget._artists["current"].get_array(), widget.decoded[-1, 0])
    assert "label 2" in widget.figure.axes[0].get_title()


def test_the_slider_moves_along_the_path(widget, images):
    before = widget.image.value
    z_a, z_b = code(images, 2), code(images, 5)
    for alpha, frame in ((0.0, 0), (0.6, 2), (1.0, 4)):
        widget.slider.value = alpha
        s = widget.state()
        assert s["alpha"] == alpha
        assert np.allclose(s["z"], (1 - alpha) * z_a + alpha * z_b, atol=1e-6)
        assert np.allclose(widget._artists["current"].get_array(), widget.decoded[-1, 0])
        # the outline sits on the strip frame nearest alpha
        assert widget._artists["marker"].get_x() == frame * 4 - 0.5
        assert f"alpha = {alpha:.2f}" in widget.figure.axes[1].get_title()
        here = widget._artists["here"].get_data()
        assert np.allclose([here[0][0], here[1][0]], s["z"])
    assert widget.image.value != before


def test_the_pickers_choose_the_images(widget, images):
    widget.picker_a.value = 7
    s = widget.state()
    assert s["index_a"] == 7 and np.allclose(s["z_a"], code(images, 7))
    assert np.allclose(widget._artists["a"].get_array(), images[7, 0])
    assert "#7" in widget.figure.axes[0].get_title()
    widget.picker_b.value = 0
    s = widget.state()
    assert s["index_b"] == 0 and np.allclose(s["z_b"], code(images, 0))
    assert np.allclose(widget._artists["b"].get_array(), images[0, 0])
    assert np.allclose(widget.decoded[4, 0, :2, 0], torch.sigmoid(code(images, 0)))
    ends = widget._artists["ends"].get_data()
    assert np.allclose(ends[0], [s["z_a"][0], s["z_b"][0]])


def test_the_spherical_toggle_follows_the_great_circle(widget):
    widget.slider.value = 0.5
    straight = np.array(widget.state()["z"])
    widget.spherical.value = True
    s = widget.state()
    assert s["spherical"] and "spherical" in widget.figure.axes[1].get_title()
    z_a, z_b, z = (np.array(s[k]) for k in ("z_a", "z_b", "z"))
    assert not np.allclose(z, straight)
    # the norm is interpolated, the direction bisects the two codes' directions
    assert np.isclose(np.linalg.norm(z), (np.linalg.norm(z_a) + np.linalg.norm(z_b)) / 2, rtol=1e-5)
    half = z_a / np.linalg.norm(z_a) + z_b / np.linalg.norm(z_b)
    assert np.allclose(z / np.linalg.norm(z), half / np.linalg.norm(half), atol=1e-5)
    widget.spherical.value = False
    assert np.allclose(widget.state()["z"], straight)


def test_the_random_button_picks_two_images(widget):
    redraws = []
    original = widget.redraw
    widget.redraw = lambda: (redraws.append(1), original())
    seen = set()
    for clicks in range(1, 6):
        widget.random_pair.click()
        assert len(redraws) == clicks, "one click, one redraw"
        s = widget.state()
        assert 0 <= s["index_a"] <= 11 and 0 <= s["index_b"] <= 11 and s["index_a"] != s["index_b"]
        assert np.allclose(widget._artists["a"].get_array(), widget.images[s["index_a"], 0])
        assert np.allclose(widget._artists["b"].get_array(), widget.images[s["index_b"], 0])
        assert np.allclose(widget.decoded[0, 0, :2, 0], torch.sigmoid(torch.tensor(s["z_a"])))
        seen.add((s["index_a"], s["index_b"]))
    assert len(seen) >= 3


def test_no_latent_panel_beyond_two_dimensions(images):
    w = latent_interpolation(Toy(dim=3), images, num_steps=3)
    assert len(w.figure.axes) == 4 and w.latent_dim == 3
    assert w.state()["label_a"] is None and "label" not in w.figure.axes[0].get_title()
    w.slider.value = 1.0
    assert np.allclose(w.state()["z"], code(images, 1, dim=3))


def test_a_real_vae_and_rgb_images():
    from dvl_helpers.vae import VAE

    torch.manual_seed(0)
    model = VAE(in_channels=3, latent_dim=2, hidden=8, res_hidden=4, image_size=8)
    data = torch.rand(20, 3, 8, 8)
    w = latent_interpolation(model, data, index_a=3, index_b=4)
    assert w.decoded.shape == (10, 3, 8, 8)
    assert float(w.decoded.min()) >= 0 and float(w.decoded.max()) <= 1
    mu, _ = model.encode(data[3:4])
    assert np.allclose(w.state()["z_a"], mu[0].detach(), atol=1e-5)
    assert model.training                     # the widget restores the model's mode
    assert w.cloud.shape == (20, 2)


def test_slerp_properties():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert torch.isclose(mid.norm(), torch.tensor(2.0)) and torch.isclose(mid[0], mid[1])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)        # parallel: the straight line
    assert torch.allclose(slerp(torch.zeros(2), b, 0.5), b / 2)


def test_errors_say_what_was_expected(images):
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        latent_interpolation(Toy(), torch.rand(4, 4))
    with pytest.raises(ValueError, match="at least 2"):
        latent_interpolation(Toy(), images[:1])
    with pytest.raises(TypeError, match="encode"):
        latent_interpolation(nn.Linear(2, 2), images)
    with pytest.raises(ValueError, match="num_steps"):
        latent_interpolation(Toy(), images, num_steps=1)
    with pytest.raises(ValueError, match=r"index_b must lie in \[0, 11\]"):
        latent_interpolation(Toy(), images, index_b=12)
    with pytest.raises(ValueError, match=r"labels must be \[N\]"):
        latent_interpolation(Toy(), images, labels=torch.zeros(3))
