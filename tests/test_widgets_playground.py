"""The quantizer playground, driven headless: its toy model and every control."""
import ipywidgets
import numpy as np
import pytest
import torch

from dvl_helpers import _playground as pg
from dvl_helpers.quantizers import ema_update
from dvl_helpers.widgets import QuantizerPlayground, quantizer_playground


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


@pytest.fixture
def collapsed():
    """A playground after 400 steps from the random start: the state most tests start from."""
    w = quantizer_playground()
    w.train_button.click()
    w.train_button.click()
    return w


# ---------------------------------------------------------------- the toy model

def test_mixture_avoids_the_origin_and_is_reproducible():
    x = pg.mixture_of_gaussians(2000, 8, np.random.default_rng(3))
    assert x.shape == (2000, 2)
    assert np.linalg.norm(x, axis=1).min() > 0.3          # no cluster on the random start
    assert np.array_equal(x, pg.mixture_of_gaussians(2000, 8, np.random.default_rng(3)))


def test_nearest_and_perplexity():
    codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    z = np.array([[0.1, 0.0], [0.9, 0.1], [0.2, 4.0], [0.5, 0.0]])
    assert pg.nearest(z, codebook).tolist() == [0, 1, 2, 0]          # a tie goes to the lower index
    assert pg.perplexity(np.array([5.0, 5.0, 0.0, 5.0])) == pytest.approx(3.0)
    assert pg.perplexity(np.array([7.0, 0.0])) == pytest.approx(1.0)


def test_kmeans_start_uses_every_code():
    toy = pg.ToyVQ(num_codes=40, init="k-means", seed=1)
    s = toy.summary()
    assert s["dead"] == 0 and s["perplexity"] > 0.75 * 40
    # Lloyd's fixed point: each code sits near the mean of its outputs
    idx = toy.assign()
    for k in range(0, 40, 7):
        assert np.linalg.norm(toy.codebook[k] - toy.z[idx == k].mean(0)) < 0.2


def test_random_start_collapses_and_dead_gradient_codes_never_move():
    toy = pg.ToyVQ(num_codes=32, seed=0)
    start = toy.codebook.copy()
    assert np.abs(start).max() <= 1 / 32                              # uniform in (-1/K, 1/K)
    toy.train(300)
    s = toy.summary()
    assert s["dead"] >= 16 and s["perplexity"] < 12
    dead = toy.usage() == 0
    never_used = dead & (toy._adam_t == 0)
    assert never_used.sum() >= 12
    assert np.array_equal(toy.codebook[never_used], start[never_used])   # no gradient, no move
    assert not np.allclose(toy.codebook[~dead], start[~dead])


def test_restarts_cure_the_collapse():
    toy = pg.ToyVQ(num_codes=32, seed=0)
    toy.train(300)
    assert toy.summary()["dead"] >= 16
    toy.dead_threshold = 1.0
    toy.train(300)
    s = toy.summary()
    assert s["dead"] <= 1 and s["perplexity"] > 20 and s["restarted"] >= 16


def test_ema_step_matches_the_reference_update():
    toy = pg.ToyVQ(num_codes=6, ema=True, decay=0.9, batch_size=64, num_points=300, init="k-means", seed=2)
    toy.train(5)
    size, total = toy.cluster_size.copy(), toy.embed_sum.copy()
    state = toy.rng.bit_generator.state
    rows = toy.rng.choice(len(toy.z), size=64, replace=False)          # the batch the next step draws
    toy.rng.bit_generator.state = state
    zb = torch.tensor(toy.z[rows])
    idx = torch.tensor(pg.nearest(toy.z[rows], toy.codebook))
    toy.train(1)
    ref_size, ref_sum, ref_codebook = ema_update(torch.tensor(size), torch.tensor(total), zb, idx, 0.9)
    assert np.allclose(toy.cluster_size, ref_size.numpy())
    assert np.allclose(toy.embed_sum, ref_sum.numpy())
    assert np.allclose(toy.codebook, ref_codebook.numpy())


def test_beta_pulls_outputs_onto_their_codes():
    drift = {}
    for beta in (0.0, 2.0):
        toy = pg.ToyVQ(num_codes=8, beta=beta, init="k-means", seed=4)
        toy.train(300)
        drift[beta] = toy.summary()
    assert drift[0.0]["drift"] < 1e-3                                    # beta 0: outputs stay on the data
    assert drift[2.0]["drift"] > 0.01
    assert drift[2.0]["distortion"] < drift[0.0]["distortion"]


def test_toy_rejects_bad_settings():
    with pytest.raises(ValueError, match="init must be one of"):
        pg.ToyVQ(init="zeros")
    with pytest.raises(ValueError, match="num_codes"):
        pg.ToyVQ(num_codes=0)


# ---------------------------------------------------------------- the widget

def test_is_a_vbox_holding_its_controls():
    w = quantizer_playground(num_codes=8, steps=50)
    assert isinstance(w, ipywidgets.VBox) and isinstance(w, QuantizerPlayground)
    inside = list(walk(w))
    for control in (w.num_codes, w.init, w.beta, w.ema, w.decay, w.dead_threshold, w.steps,
                    w.train_button, w.restart_button, w.data_button, w.image, w.status):
        assert any(control is c for c in inside)
    assert "dvl-quantizer-playground" in w._dom_classes
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert w.state()["step"] == 0 and "step 0" in w.status.value


def test_train_button_trains_and_redraws():
    w = quantizer_playground(steps=100)
    before_image, before_codes = w.image.value, w.toy.codebook.copy()
    w.train_button.click()
    s = w.state()
    assert s["step"] == 100 and "step 100" in w.status.value
    assert w.image.value != before_image
    assert not np.allclose(w.toy.codebook, before_codes)
    a = w._artists
    assert np.allclose(a["outputs"].get_offsets(), w.toy.z)
    assert a["ppl"].get_xdata()[-1] == 100 and len(a["ppl"].get_xdata()) == 11   # every 10 steps
    shown = a["bars"].get_data().values
    assert np.array_equal(shown, np.sort(s["usage"])[::-1])


def test_the_picture_shows_collapse_and_its_cure(collapsed):
    w = collapsed
    s = w.state()
    assert s["step"] == 400 and s["dead"] >= 16 and s["perplexity"] < 12
    a = w._artists
    assert len(a["dead"].get_offsets()) == s["dead"]                     # one red cross per dead code
    assert len(a["codes"].get_offsets()) == s["used"]
    assert a["dead_span"].get_width() == s["dead"]
    cells = a["cells"].get_array()
    grey = np.all(cells == cells[..., :1], axis=-1) & (cells[..., 0] > 200)
    assert grey.any()                                                      # cells of dead codes

    w.dead_threshold.value = 1.0                                           # a setting: no training yet
    assert w.state()["step"] == 400 and "restart if uses/batch &lt; 1.0" in w.status.value
    w.train_button.click()
    cured = w.state()
    assert cured["dead"] <= 1 and cured["perplexity"] > 20 and cured["restarted"] >= 16
    assert a["dead_curve"].get_ydata()[-1] <= 1 and a["dead_curve"].get_ydata()[39] >= 16


def test_kmeans_init_restarts_with_every_code_in_use():
    w = quantizer_playground(num_codes=24)
    w.train_button.click()
    w.init.value = "k-means"
    s = w.state()
    assert s["init"] == "k-means" and s["step"] == 0 and s["dead"] == 0
    assert len(w._artists["dead"].get_offsets()) == 0
    w.train_button.click()
    assert w.state()["dead"] == 0


def test_num_codes_restarts_with_k_codes():
    w = quantizer_playground(num_codes=32)
    w.train_button.click()
    before = w.image.value
    w.num_codes.value = 9
    s = w.state()
    assert w.toy.codebook.shape == (9, 2) and s["num_codes"] == 9 and s["step"] == 0
    assert len(s["usage"]) == 9 and len(w._artists["bars"].get_data().values) == 9
    assert w._artists["k_line"].get_ydata()[0] == 9
    assert "of 9" in w.status.value and w.image.value != before


def test_beta_ema_decay_settings_reach_the_model():
    w = quantizer_playground(init="k-means", num_codes=8)
    w.beta.value = 1.5
    w.ema.value = True
    w.decay.value = 0.9
    s = w.state()
    assert (s["beta"], s["ema"], s["decay"]) == (1.5, True, 0.9)
    assert "EMA codebook (decay 0.900)" in w.status.value and "β 1.50" in w.status.value
    w.train_button.click()
    toy = w.toy
    total = toy.cluster_size.sum()
    smoothed = (toy.cluster_size + toy.eps) / (total + 8 * toy.eps) * total
    assert np.allclose(toy.codebook, toy.embed_sum / smoothed[:, None])   # the EMA codebook rule
    assert w.state()["drift"] > 0.01                                       # beta 1.5 moved the outputs
    w.ema.value = False
    assert "gradient codebook" in w.status.value


def test_decay_changes_the_ema_codebook():
    codebooks = []
    for decay in (0.8, 0.999):
        w = quantizer_playground(num_codes=16, ema=True, steps=50)
        w.decay.value = decay
        w.train_button.click()
        codebooks.append(w.toy.codebook.copy())
    assert not np.allclose(*codebooks)


def test_steps_restart_and_new_data():
    w = quantizer_playground(num_codes=8)
    w.steps.value = 50
    assert w.train_button.description == "train 50 steps"
    w.train_button.click()
    w.train_button.click()
    assert w.state()["step"] == 100
    w.restart_button.click()
    assert w.state()["step"] == 0 and len(w.toy.log) == 1
    x, seed, extent = w.toy.x.copy(), w.state()["seed"], w._artists["cells"].get_extent()
    w.data_button.click()
    assert w.state()["seed"] == seed + 1 and not np.allclose(w.toy.x, x)
    assert w._artists["cells"].get_extent() != extent
    assert np.allclose(w._artists["data"].get_offsets(), w.toy.x)


def test_bad_arguments_name_the_range():
    with pytest.raises(ValueError, match=r"num_codes must be in \[2, 64\]"):
        quantizer_playground(num_codes=100)
    with pytest.raises(ValueError, match="steps must be one of"):
        quantizer_playground(steps=7)
    with pytest.raises(ValueError, match=r"decay must be in"):
        quantizer_playground(decay=1.5)
    with pytest.raises(ValueError, match="init must be one of"):
        quantizer_playground(init="zeros")
