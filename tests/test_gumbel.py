"""The reference Gumbel-softmax pieces and dVAE layer of dvl_helpers.gumbel."""
import math

import pytest
import torch

import dvl_helpers as dvl
from dvl_helpers.gumbel import (GumbelQuantizer, dvae_step, gumbel_softmax, kl_to_uniform,
                                make_dvae_step, sample_gumbel, temperature_schedule)
from dvl_helpers.models import VQVAE, evaluate_vqvae


def test_sample_gumbel_moments_and_generator():
    g = sample_gumbel((200_000,), torch.Generator().manual_seed(0))
    assert g.shape == (200_000,) and g.dtype == torch.float32 and g.isfinite().all()
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)              # Euler's constant
    assert g.var().item() == pytest.approx(math.pi ** 2 / 6, abs=0.02)
    a = sample_gumbel((3, 4), torch.Generator().manual_seed(1))
    b = sample_gumbel(torch.Size([3, 4]), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert sample_gumbel((2,), dtype=torch.float64).dtype == torch.float64


def test_gumbel_softmax_soft_sample_by_hand():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    gen = torch.Generator().manual_seed(3)
    noise = sample_gumbel(logits.shape, torch.Generator().manual_seed(3))
    y = gumbel_softmax(logits, tau=0.5, generator=gen)
    assert torch.allclose(y, torch.softmax((logits + noise) / 0.5, -1))
    assert y.sum().item() == pytest.approx(1.0)


def test_gumbel_max_frequencies_follow_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0]).repeat(40_000, 1)
    y = gumbel_softmax(logits, tau=1.0, hard=True, generator=torch.Generator().manual_seed(0))
    freq = y.mean(0)
    assert torch.allclose(freq, torch.softmax(logits[0], 0), atol=0.01)


def test_hard_samples_are_one_hot_with_the_soft_gradient():
    logits = torch.randn(2, 5, 3, 3, requires_grad=True)
    hard = gumbel_softmax(logits, 0.7, hard=True, dim=1, generator=torch.Generator().manual_seed(5))
    soft = gumbel_softmax(logits, 0.7, hard=False, dim=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(hard.detach().sum(1), torch.ones(2, 3, 3))
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.detach().argmax(1), soft.detach().argmax(1))
    w = torch.randn_like(soft)
    g_hard, = torch.autograd.grad((hard * w).sum(), logits)
    g_soft, = torch.autograd.grad((soft * w).sum(), logits)
    assert torch.allclose(g_hard, g_soft, atol=1e-6)


def test_lower_temperature_is_sharper():
    logits = torch.zeros(1000, 8)
    peaks = [gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(0)).max(1).values.mean()
             for tau in (5.0, 1.0, 0.05)]
    assert peaks[0] < peaks[1] < peaks[2] and peaks[2] > 0.95


def test_gumbel_softmax_rejects_bad_input():
    with pytest.raises(ValueError, match="tau must be a positive"):
        gumbel_softmax(torch.zeros(2, 3), tau=0.0)
    with pytest.raises(TypeError, match="floating-point"):
        gumbel_softmax(torch.zeros(2, 3, dtype=torch.long))


def test_temperature_schedule_values():
    assert temperature_schedule(0, 1.0, 1 / 16, 100) == 1.0
    assert temperature_schedule(50, 1.0, 1 / 16, 100) == pytest.approx(0.25)       # geometric mean
    assert temperature_schedule(50, 1.0, 0.5, 100, kind="linear") == pytest.approx(0.75)
    assert temperature_schedule(10_000, 1.0, 1 / 16, 100) == pytest.approx(1 / 16)
    assert isinstance(temperature_schedule(3, 2.0, 1.0, 7), float)
    with pytest.raises(ValueError, match="kind must be"):
        temperature_schedule(0, 1.0, 0.5, 10, kind="cosine")
    with pytest.raises(ValueError, match="anneal_steps"):
        temperature_schedule(0, 1.0, 0.5, 0)


def test_kl_to_uniform_by_hand():
    assert torch.allclose(kl_to_uniform(torch.zeros(2, 4, 3, 3)), torch.zeros(2))
    sure = torch.tensor([1e4, 0.0, 0.0, 0.0])[None, :, None, None].repeat(1, 1, 2, 3)
    assert kl_to_uniform(sure).item() == pytest.approx(6 * math.log(4))            # 6 positions
    logits = torch.tensor([1.0, 2.0])[None, :, None, None]
    q = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    assert kl_to_uniform(logits).item() == pytest.approx((q * torch.log(2 * q)).sum().item(), abs=1e-6)
    extreme = (torch.randn(2, 5, 2, 2) * 1e4).requires_grad_()
    kl_to_uniform(extreme).sum().backward()
    assert extreme.grad.isfinite().all()
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        kl_to_uniform(torch.zeros(3, 4))


def test_quantizer_training_and_eval_modes():
    torch.manual_seed(0)
    q = GumbelQuantizer(num_codes=6, code_dim=3, in_channels=4)
    z = torch.randn(2, 4, 5, 5)
    z_q, kl, info = q(z)
    assert z_q.shape == (2, 3, 5, 5) and kl.dim() == 0 and kl.item() >= 0
    assert info["indices"].shape == (2, 5, 5) and info["indices"].dtype == torch.long
    assert info["logits"].shape == (2, 6, 5, 5)
    assert torch.allclose(kl, kl_to_uniform(info["logits"]).mean())
    assert 1 <= info["perplexity"].item() <= 6
    z_q.sum().backward()
    assert q.codebook.grad is not None and q.proj.weight.grad.abs().sum() > 0
    q.eval()
    z_q, _, info = q(z)
    assert torch.equal(info["indices"], info["logits"].argmax(1))
    assert torch.allclose(z_q, q.lookup(info["indices"]))
    with pytest.raises(ValueError, match=r"z must be \[B, 4, H, W\]"):
        q(torch.randn(2, 3, 5, 5))


def test_quantizer_hard_mode_gives_codebook_rows():
    torch.manual_seed(0)
    q = GumbelQuantizer(8, 4, 4)
    q.hard, q.tau = True, 0.5
    z_q, _, info = q(torch.randn(3, 4, 2, 2))
    assert torch.allclose(z_q, q.lookup(info["indices"]), atol=1e-6)


def test_dvae_step_inside_a_vqvae_anneals_tau():
    torch.manual_seed(0)
    model = VQVAE(GumbelQuantizer(16, 8, 8), in_channels=1, hidden=16, res_hidden=4,
                  num_res_blocks=1, code_dim=8)
    x = torch.rand(4, 1, 16, 16)
    out = dvae_step(model, (x, torch.zeros(4)), kl_weight=0.5)
    assert set(out) == {"loss", "rec", "kl", "perplexity", "usage"}
    assert out["loss"].item() == pytest.approx(out["rec"].item() + 0.5 * out["kl"].item() / 256, rel=1e-5)
    step = make_dvae_step(lambda s: 1.0 / (1 + s), usage_every=2)
    taus = []
    for _ in range(3):
        metrics = step(model, x)
        taus.append(metrics["tau"].item())
        assert model.quantizer.tau == pytest.approx(taus[-1])
    assert taus == pytest.approx([1.0, 0.5, 1 / 3])
    assert "usage" in step(model, x)                                     # the 4th call closes a window
    history = dvl.train(model, [x], make_dvae_step(anneal_steps=3, tau_end=0.25), steps=4,
                        lr=1e-3, progress=False)
    assert history["tau"][-1] == pytest.approx(0.25)
    scores = evaluate_vqvae(model, [x])
    assert 0 < scores["codes_used"] <= 1 and scores["usage"].sum() == 4 * 4 * 4
