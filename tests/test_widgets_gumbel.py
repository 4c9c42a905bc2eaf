"""The Gumbel-softmax explorer, driven headless: the temperature and the noise change what it shows."""
import ipywidgets
import numpy as np
import pytest
import torch

from dvl_helpers.widgets import GumbelExplorer, gumbel_explorer

LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, 0.3]


@pytest.fixture
def explorer():
    return gumbel_explorer(LOGITS, tau=1.0, num_samples=2000, seed=0)


def test_is_a_vbox_with_its_controls(explorer):
    assert isinstance(explorer, ipywidgets.VBox) and isinstance(explorer, GumbelExplorer)
    assert any(c is explorer.tau for c in explorer.children[0].children)
    assert any(c is explorer.resample for c in explorer.children[0].children)
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dvl-gumbel-explorer" in explorer._dom_classes
    assert explorer.noise.shape == (2000, 6)


def test_samples_are_the_gumbel_softmax_of_the_logits(explorer):
    s = explorer.state()
    perturbed = np.array(LOGITS) + explorer.noise
    assert np.allclose(s["soft"].sum(1), 1)
    assert np.array_equal(s["hard"], perturbed.argmax(1))
    e = np.exp(perturbed - perturbed.max(1, keepdims=True))
    assert np.allclose(s["soft"], e / e.sum(1, keepdims=True))          # tau = 1
    assert np.allclose(s["probs"], np.exp(LOGITS) / np.exp(LOGITS).sum())


def test_hard_samples_follow_softmax_of_the_logits_at_every_tau(explorer):
    s = explorer.state()
    sigma = np.sqrt(s["probs"] * (1 - s["probs"]) / 2000)
    assert np.all(np.abs(s["hard_freq"] - s["probs"]) < 4.5 * sigma + 1e-9)   # Gumbel-max trick
    explorer.tau.value = 20.0
    assert np.array_equal(explorer.state()["hard_freq"], s["hard_freq"])


def test_low_tau_gives_one_hot_samples_high_tau_uniform_ones(explorer):
    explorer.tau.value = 0.01
    cold = explorer.state()
    assert cold["max"] > 0.97
    one_hot = np.eye(6)[cold["hard"]]
    assert np.abs(cold["soft"] - one_hot).max(1).mean() < 0.05
    assert np.allclose(cold["mean"], cold["hard_freq"], atol=0.03)       # mean of one-hots ~ pi
    explorer.tau.value = 100.0
    hot = explorer.state()
    assert hot["max"] < 1 / 6 + 0.02 and hot["std"].max() < 0.01
    assert hot["entropy"] == pytest.approx(np.log(6), abs=0.01)


def test_moving_tau_redraws_and_entropy_falls_with_tau(explorer):
    images, entropies = set(), []
    for tau in (10.0, 3.0, 1.0, 0.3, 0.1, 0.03):
        explorer.tau.value = tau
        s = explorer.state()
        images.add(explorer.image.value)
        entropies.append(s["entropy"])
        a = explorer._artists
        assert np.allclose(a["rows"].get_array(), s["soft"][:explorer.num_shown])
        assert [bar.get_height() for bar in a["mean"]] == pytest.approx(s["mean"].tolist())
        assert a["hist"].get_data().values.sum() == 2000
        assert f"τ = {tau:.3f}" in explorer.status.value
    assert len(images) == 6
    assert entropies == sorted(entropies, reverse=True) and entropies[0] > entropies[-1] + 1


def test_resample_draws_new_noise_at_the_same_tau(explorer):
    explorer.tau.value = 0.5
    noise, hard, image = explorer.noise.copy(), explorer.state()["hard"], explorer.image.value
    explorer.resample.click()
    assert explorer.tau.value == 0.5
    assert not np.allclose(explorer.noise, noise)
    assert not np.array_equal(explorer.state()["hard"], hard)
    assert explorer.image.value != image


def test_accepts_tensors_and_rejects_bad_logits():
    w = gumbel_explorer(torch.tensor([0.0, 1.0, 2.0], requires_grad=True), num_samples=50)
    assert w.logits.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"\[K\] with K >= 2"):
        gumbel_explorer([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"\[K\] with K >= 2"):
        gumbel_explorer([1.0])
    with pytest.raises(ValueError, match="finite"):
        gumbel_explorer([0.0, float("nan")])
    with pytest.raises(ValueError, match="tau"):
        gumbel_explorer([0.0, 1.0], tau=0)
    with pytest.raises(ValueError, match="num_shown"):
        gumbel_explorer([0.0, 1.0], num_samples=5, num_shown=6)
