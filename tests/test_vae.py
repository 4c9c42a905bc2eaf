"""dvl_helpers.vae: the reference VAE pieces, the model, and the posterior-collapse measure."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

import dvl_helpers as dvl
from dvl_helpers.vae import (
    VAE, active_units, encode_dataset, gaussian_kl, negative_elbo, reparameterize, vae_step,
)


# ---------------------------------------------------------------- reparameterize

def test_reparameterize_is_reproducible_from_a_generator():
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    z1 = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    z2 = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    z3 = reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    assert z1.shape == mu.shape and torch.equal(z1, z2) and not torch.allclose(z1, z3)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z1, mu + torch.exp(logvar / 2) * eps)


def test_reparameterize_uses_the_global_generator_without_one():
    mu, logvar = torch.zeros(2, 5), torch.zeros(2, 5)
    torch.manual_seed(3)
    a = reparameterize(mu, logvar)
    torch.manual_seed(3)
    assert torch.equal(a, reparameterize(mu, logvar))


def test_reparameterize_samples_the_gaussian():
    n = 20000
    mu = torch.tensor([1.0, -2.0, 0.0]).expand(n, 3)
    logvar = torch.tensor([0.0, math.log(4.0), math.log(0.25)]).expand(n, 3)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0, 0.0]), atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0, 0.5]), rtol=0.03)


def test_reparameterize_gradients():
    mu = torch.randn(6, 4, requires_grad=True)
    logvar = torch.randn(6, 4, requires_grad=True)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    g_mu, g_lv = torch.autograd.grad(z.sum(), [mu, logvar])
    assert torch.allclose(g_mu, torch.ones_like(mu))
    assert torch.allclose(g_lv, (z - mu).detach() / 2, atol=1e-6)


def test_reparameterize_keeps_4d_latents_and_float64():
    mu = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    z = reparameterize(mu, mu.clone(), torch.Generator().manual_seed(0))
    assert z.shape == mu.shape and z.dtype == torch.float64


@pytest.mark.parametrize("mu, logvar, match", [
    (torch.zeros(2, 3), torch.zeros(2, 4), r"same shape \[B, D\].*\(2, 3\).*\(2, 4\)"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "mu must be a float tensor"),
    ([0.0, 1.0], torch.zeros(2), "mu must be a float tensor .*got list"),
])
def test_reparameterize_errors_name_what_was_expected(mu, logvar, match):
    with pytest.raises(ValueError, match=match):
        reparameterize(mu, logvar)


# ---------------------------------------------------------------- gaussian_kl

def test_gaussian_kl_by_hand_and_against_torch_distributions():
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))
    assert torch.allclose(gaussian_kl(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)), torch.tensor([2.5]))
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7) * 2
    expected = kl_divergence(Normal(mu, torch.exp(logvar / 2)), Normal(0.0, 1.0)).sum(1)
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (5,) and torch.allclose(kl, expected, rtol=1e-5, atol=1e-5)
    assert (kl >= 0).all()


def test_gaussian_kl_sums_every_non_batch_dimension():
    mu, logvar = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    flat = gaussian_kl(mu.flatten(1), logvar.flatten(1))
    assert torch.allclose(gaussian_kl(mu, logvar), flat)


# ---------------------------------------------------------------- negative_elbo

def test_negative_elbo_by_hand():
    x = torch.tensor([[[[1.0, 0.0]]]])
    loss, recon, kl = negative_elbo(x, torch.zeros(1, 1, 1, 2), torch.ones(1, 1), torch.zeros(1, 1), beta=2.0)
    assert recon.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert kl.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(2 * math.log(2) + 1.0, rel=1e-6)


def test_negative_elbo_sums_pixels_and_averages_the_batch():
    x = torch.rand(4, 1, 8, 8)
    logits = torch.randn(4, 1, 8, 8) * 3
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
    loss, recon, kl = negative_elbo(x, logits, mu, logvar, beta=0.5)
    assert recon.dim() == kl.dim() == loss.dim() == 0
    per_image = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 4
    assert torch.allclose(recon, per_image, rtol=1e-5)
    assert torch.allclose(kl, gaussian_kl(mu, logvar).mean())
    assert torch.allclose(loss, recon + 0.5 * kl)


def test_negative_elbo_is_stable_for_large_logits():
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    logits = torch.tensor([[-60.0, 60.0, 60.0, -60.0]], requires_grad=True)
    loss, recon, _ = negative_elbo(x, logits, torch.zeros(1, 2), torch.zeros(1, 2))
    assert recon.item() == pytest.approx(120.0, rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.allclose(logits.grad, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))


def test_negative_elbo_errors():
    with pytest.raises(ValueError, match=r"same shape \[B, C, H, W\]"):
        negative_elbo(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch dimension"):
        negative_elbo(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), torch.zeros(3, 3), torch.zeros(3, 3))


# ---------------------------------------------------------------- VAE

@pytest.fixture
def model():
    torch.manual_seed(0)
    return VAE(in_channels=1, latent_dim=3, hidden=16, res_hidden=4, num_res_blocks=1, image_size=16)


def test_vae_shapes(model, one_thread):
    x = torch.rand(5, 1, 16, 16)
    x_logits, mu, logvar = model(x)
    assert x_logits.shape == x.shape and mu.shape == logvar.shape == (5, 3)
    m, lv = model.encode(x)
    assert torch.allclose(m, mu) and torch.allclose(lv, logvar)
    assert model.decode(torch.randn(7, 3)).shape == (7, 1, 16, 16)


def test_vae_forward_decodes_a_reparameterized_sample(model, one_thread):
    x = torch.rand(2, 1, 16, 16)
    x_logits, mu, logvar = model(x, generator=torch.Generator().manual_seed(5))
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    assert torch.allclose(x_logits, model.decode(z), atol=1e-6)
    other, _, _ = model(x, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(other, x_logits)


def test_vae_defaults_and_rgb(one_thread):
    assert VAE()(torch.rand(2, 1, 32, 32))[0].shape == (2, 1, 32, 32)
    rgb = VAE(in_channels=3, latent_dim=4, hidden=8, res_hidden=4, image_size=8)
    assert rgb(torch.rand(1, 3, 8, 8))[0].shape == (1, 3, 8, 8)


def test_vae_errors(model):
    with pytest.raises(ValueError, match=r"x must be \[B, 1, 16, 16\] images, got shape \(2, 1, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"z must be \[B, 3\], got shape \(2, 2\)"):
        model.decode(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="multiple of 4"):
        VAE(image_size=30)
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(latent_dim=0)


@pytest.fixture
def one_thread():
    """Tiny convs: one thread avoids the pool's wake-ups, which dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_vae_learns_digits(one_thread):
    torch.manual_seed(0)
    data = dvl.data.load("digits", "train", max_images=256, image_size=16)
    model = VAE(latent_dim=2, hidden=16, res_hidden=4, num_res_blocks=1, image_size=16)
    history = dvl.train(model, dvl.data.loader(data, 32), vae_step, steps=30, lr=3e-3, progress=False)
    assert set(history.keys()) == {"loss", "recon", "kl"}
    first, last = history["loss"][:5].mean(), history["loss"][-5:].mean()
    assert last < 0.8 * first, (first, last)
    assert history["kl"][-1] > 0


def test_vae_step_with_beta(model):
    x = torch.rand(3, 1, 16, 16)
    torch.manual_seed(0)
    out = vae_step(model, (x, torch.zeros(3)), beta=4.0)
    assert torch.allclose(out["loss"], out["recon"] + 4.0 * out["kl"])
    assert out["loss"].requires_grad and not out["kl"].requires_grad


# ---------------------------------------------------------------- collapse

def test_encode_dataset_batches_and_restores_mode(model):
    images = torch.rand(11, 1, 16, 16)
    mu, logvar = encode_dataset(model, images, batch_size=4)
    assert mu.shape == logvar.shape == (11, 3) and model.training
    with torch.no_grad():
        expected = model.encode(images)
    assert torch.allclose(mu, expected[0], atol=1e-5) and torch.allclose(logvar, expected[1], atol=1e-5)
    assert not mu.requires_grad
    with pytest.raises(ValueError, match="batch_size"):
        encode_dataset(model, images, batch_size=0)


def test_active_units_follow_the_variance_of_the_means():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0])      # variances 1, .25, .04, .0025, 0
    mu = torch.randn(5000, 5, generator=gen) * scales + 3.0
    assert active_units(mu).tolist() == [True, True, True, False, False]
    assert active_units(mu, threshold=0.1).sum().item() == 2
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        active_units(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        active_units(torch.zeros(1, 4))
