"""The token explorer, driven headless: every control changes what it shows."""
import ipywidgets
import numpy as np
import pytest
import torch
from torch import nn

from dvl_helpers.widgets import TokenExplorer, token_explorer


class Grid2D(nn.Module):
    """A 2x2 grid of tokens over 1x4x4 images: token (i, j) is its quadrant's mean, rounded to K - 1 levels.

    ``decode_indices`` fills quadrant (i, j) with ``code / (K - 1)``: a local tokenizer.
    """

    num_codes = 5

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        means = x[:, 0].reshape(-1, 2, 2, 2, 2).mean(dim=(2, 4))               # [B, 2, 2]
        return (means * (self.num_codes - 1)).round().long()

    def decode_indices(self, indices):
        q = indices.float() / (self.num_codes - 1) + self.anchor
        return q.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]      # [B, 1, 4, 4]


class Latent1D(nn.Module):
    """Four 1-D tokens: token t is row t's mean, rounded; every pixel decodes to sum_t (t + 1) code_t / 40.

    A global tokenizer, with the API of the notebook's FrozenEncoderVQ and no ``num_codes``
    of its own (its quantizer has one).
    """

    def __init__(self):
        super().__init__()
        self.quantizer = nn.Module()
        self.quantizer.num_codes = 4
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode_to_indices(self, x):
        return (x[:, 0].mean(dim=2) * 3).round().long()                         # [B, 4]

    def decode_from_indices(self, indices):
        value = (indices.float() * torch.arange(1, 5)).sum(1) / 40 + self.anchor  # [B]
        return value[:, None, None, None].expand(-1, 1, 4, 4)


def images(n=6, seed=0):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def explorer():
    return token_explorer({"grid": Grid2D(), "latent": Latent1D()}, images(), index=2, token=1)


def test_is_a_vbox_holding_its_controls(explorer):
    assert isinstance(explorer, ipywidgets.VBox) and isinstance(explorer, TokenExplorer)

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    inside = list(walk(explorer))
    for control in (explorer.model, explorer.picker, explorer.token, explorer.code,
                    explorer.random_code, explorer.image):
        assert any(control is w for w in inside)
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(explorer.figure.axes) == 5
    assert explorer.model.options == ("grid", "latent") and explorer.model.layout.display is None
    assert (explorer.token.max, explorer.code.max, explorer.picker.max) == (3, 4, 5)


def test_initial_state_replaces_one_grid_token(explorer):
    x = images()
    model = explorer.models["grid"]
    codes = model.encode(x[2:3])[0]
    s = explorer.state()
    assert (s["model"], s["index"], s["token"], s["layout"]) == ("grid", 2, 1, [2, 2])
    assert s["original_code"] == int(codes[0, 1]) and s["codes"] == codes.tolist()
    assert s["code"] == (s["original_code"] + 1) % 5            # the default: the next code
    assert explorer.decoded.shape == (2, 1, 4, 4)
    assert torch.allclose(explorer.decoded[0], model.decode_indices(codes[None])[0].clamp(0, 1))
    diff = (explorer.decoded[1] - explorer.decoded[0]).abs()[0]
    # token 1 is quadrant (0, 1): rows 0-1, columns 2-3 change, nothing else
    assert diff[:2, 2:].min() > 0 and diff.sum() == diff[:2, 2:].sum()
    assert np.isclose(s["change"], diff.mean().item())
    region = explorer._artists["region"]
    assert region.get_visible() and (region.get_x(), region.get_y()) == (1.5, -0.5)
    assert (region.get_width(), region.get_height()) == (2, 2)
    assert explorer._artists["marker"].get_xy() == (0.5, -0.5)
    assert np.allclose(explorer._artists["difference"].get_array(), diff)
    assert "token 1" in explorer.figure.axes[2].get_title()


def test_the_token_and_code_sliders_choose_the_replacement(explorer):
    before = explorer.image.value
    explorer.token.value = 2                                     # quadrant (1, 0)
    explorer.code.value = 0
    s = explorer.state()
    assert (s["token"], s["code"]) == (2, 0)
    diff = (explorer.decoded[1] - explorer.decoded[0]).abs()[0]
    assert diff.sum() == diff[2:, :2].sum()
    expected = torch.zeros(2, 2)
    assert torch.allclose(explorer.decoded[1, 0, 2:, :2], expected)   # code 0 decodes to black
    assert explorer._artists["marker"].get_xy() == (-0.5, 0.5)
    assert explorer.image.value != before
    explorer.code.value = s["original_code"]                     # the same code: no change
    assert explorer.state()["change"] == 0.0


def test_the_picker_encodes_another_image(explorer):
    explorer.picker.value = 4
    s = explorer.state()
    assert s["index"] == 4 and s["codes"] == Grid2D().encode(images()[4:5])[0].tolist()
    assert np.allclose(explorer._artists["original"].get_array(), images()[4, 0])


def test_a_latent_token_acts_on_the_whole_image(explorer):
    redraws = []
    original = explorer.redraw
    explorer.redraw = lambda: (redraws.append(1), original())
    explorer.model.value = "latent"
    assert len(redraws) == 1, "switching the tokenizer redraws once"
    s = explorer.state()
    assert s["layout"] == [4] and s["num_tokens"] == 4 and s["num_codes"] == 4
    assert (explorer.token.max, explorer.code.max) == (3, 3)
    explorer.token.value = 3
    original_code = explorer.state()["original_code"]
    explorer.code.value = (original_code + 2) % 4
    diff = (explorer.decoded[1] - explorer.decoded[0]).abs()[0]
    # every pixel moves by 2 * (3 + 1) / 40 (one code step of token 3 weighs 4 / 40)
    assert torch.allclose(diff, torch.full((4, 4), abs(((original_code + 2) % 4 - original_code) * 4 / 40)))
    assert not explorer._artists["region"].get_visible()
    assert explorer._artists["marker"].get_xy() == (2.5, -0.5)
    assert explorer.models["latent"].training                    # the mode is restored


def test_the_random_button_draws_another_code(explorer):
    seen = set()
    for _ in range(12):
        explorer.random_code.click()
        s = explorer.state()
        assert s["code"] != s["original_code"] and 0 <= s["code"] <= 4
        assert s["change"] > 0
        seen.add(s["code"])
    assert len(seen) >= 3


def test_a_single_tokenizer_hides_the_dropdown():
    w = token_explorer(Latent1D(), images(), token=3, code=0)
    assert w.model.layout.display == "none" and w.state()["model"] == "Latent1D"
    assert w.state()["code"] == 0


def test_real_tokenizers_of_the_course():
    from dvl_helpers.quantizers import EMAVectorQuantizer
    from dvl_helpers.tokenizers import (GridTokenizer, LatentTokenDecoder, LatentTokenEncoder,
                                        TiTokTokenizer)

    torch.manual_seed(0)
    titok = TiTokTokenizer(LatentTokenEncoder(8, 2, 16, 6, 1, 2, in_channels=3), EMAVectorQuantizer(10, 4),
                           LatentTokenDecoder(8, 2, 16, 6, 1, 2, in_channels=3), code_dim=4)
    grid = GridTokenizer(EMAVectorQuantizer(10, 4), image_size=8, patch=2, grid=(2, 4), dim=16, code_dim=4,
                         depth=1, heads=2)
    data = torch.rand(5, 3, 8, 8)
    w = token_explorer({"TiTok": titok, "grid": grid}, data, token=5)
    assert w.state()["layout"] == [6] and w.decoded.shape == (2, 3, 8, 8)
    w.model.value = "grid"
    assert w.state()["layout"] == [2, 4] and w.token.value == 5
    region = w._artists["region"]
    assert region.get_visible() and (region.get_width(), region.get_height()) == (2, 4)
    assert (region.get_x(), region.get_y()) == (1.5, 3.5)         # token 5 = row 1, column 1
    assert float(w.decoded.min()) >= 0 and float(w.decoded.max()) <= 1
    assert titok.training and grid.training


def test_errors_say_what_was_expected():
    with pytest.raises(TypeError, match="encode"):
        token_explorer(nn.Linear(2, 2), images())
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        token_explorer(Grid2D(), torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"index must lie in \[0, 5\]"):
        token_explorer(Grid2D(), images(), index=6)
    with pytest.raises(ValueError, match=r"token must lie in \[0, 3\]"):
        token_explorer(Grid2D(), images(), token=4)
    with pytest.raises(ValueError, match="at least one"):
        token_explorer({}, images())

    class NoSize(Grid2D):
        num_codes = None

    with pytest.raises(TypeError, match="num_codes"):
        token_explorer(NoSize(), images())
