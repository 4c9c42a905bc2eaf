"""The reference VQ-VAE (``dvl_helpers.models``): shapes, decoding, training, evaluation."""
import numpy as np
import pytest
import torch
from torch import nn

from dvl_helpers import data, models, presets, quantizers
from dvl_helpers.models import VQVAE


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs run fastest on one thread, and parallel test workers then do not fight over the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(in_channels=3, num_codes=16, code_dim=8, downsample=4, quantizer=None, seed=0):
    torch.manual_seed(seed)
    quantizer = quantizer or quantizers.VectorQuantizer(num_codes, code_dim)
    return VQVAE(quantizer, in_channels=in_channels, hidden=16, res_hidden=8, num_res_blocks=1,
                 downsample=downsample, code_dim=code_dim)


class BareQuantizer(nn.Module):
    """A minimal quantizer with a codebook but no ``lookup``; records the mode it ran in."""

    def __init__(self, num_codes=8, code_dim=4):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.modes = []

    def forward(self, z_e):
        self.modes.append(self.training)
        z_q, indices = quantizers.quantize(z_e, self.codebook)
        return z_q, z_q.sum() * 0, {"indices": indices}


@pytest.mark.parametrize("in_channels,downsample", [(3, 4), (1, 4), (3, 8)])
def test_forward_shapes(in_channels, downsample):
    model = tiny(in_channels, downsample=downsample)
    x = torch.rand(2, in_channels, 32, 32)
    x_rec, vq_loss, info = model(x)
    side = 32 // downsample
    assert x_rec.shape == x.shape
    assert vq_loss.dim() == 0 and vq_loss.requires_grad
    assert info["indices"].shape == (2, side, side) and info["indices"].dtype == torch.long
    assert model.encode_latents(x).shape == (2, 8, side, side)


def test_input_is_centred_and_output_shifted_back():
    model = tiny()
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model.encode_latents(x), model.encoder(x - 0.5))
    z = torch.randn(2, 8, 4, 4)
    assert torch.allclose(model.decode(z), model.decoder(z) + 0.5)


def test_wrong_inputs_name_what_was_expected():
    model = tiny()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*got shape \(3, 32, 32\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="got shape"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"code_dim=8.*\(16, 4\)"):
        VQVAE(quantizers.VectorQuantizer(16, 4), code_dim=8)
    with pytest.raises(ValueError, match=r"\[0, 16\)|\[0, 15\]"):
        model.decode_indices(torch.full((1, 2, 2), 16))


def test_decode_indices_matches_forward_in_eval_mode():
    model = tiny().eval()
    x = torch.rand(3, 3, 32, 32)
    indices = model.encode(x)
    assert indices.shape == (3, 8, 8) and indices.dtype == torch.long
    with torch.no_grad():
        x_rec, _, info = model(x)
    assert torch.equal(indices, info["indices"])
    assert torch.allclose(model.decode_indices(indices), x_rec, atol=1e-5)


def test_lookup_returns_codebook_rows_with_or_without_quantizer_lookup():
    for quantizer in (quantizers.VectorQuantizer(8, 4), BareQuantizer(8, 4)):
        model = tiny(num_codes=8, code_dim=4, quantizer=quantizer)
        indices = torch.randint(0, 8, (2, 3, 5))
        z_q = model.lookup(indices)
        assert z_q.shape == (2, 4, 3, 5)
        assert torch.equal(z_q[1, :, 2, 4], quantizer.codebook[indices[1, 2, 4]])
        assert model.num_codes == 8


def test_encode_runs_the_quantizer_in_eval_mode_and_restores_the_mode():
    quantizer = BareQuantizer(8, 4)
    model = tiny(num_codes=8, code_dim=4, quantizer=quantizer).train()
    model.encode(torch.rand(1, 3, 16, 16))
    assert quantizer.modes == [False]
    assert quantizer.training and model.training


def test_gradients_reach_encoder_decoder_and_codebook():
    model = tiny()
    metrics = models.vqvae_step(model, (torch.rand(4, 3, 16, 16), torch.zeros(4)))
    metrics["loss"].backward()
    for name in ("encoder", "decoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_vqvae_step_metrics():
    model = tiny()
    x = torch.rand(4, 3, 16, 16)
    plain = models.vqvae_step(model, x)
    assert set(plain) == {"loss", "rec", "vq_loss", "perplexity", "usage"}
    assert torch.allclose(plain["loss"], plain["rec"] + plain["vq_loss"])
    assert not plain["rec"].requires_grad and plain["loss"].requires_grad
    assert plain["usage"].shape == (16,) and plain["usage"].sum() == 4 * 4 * 4
    assert 1 <= plain["perplexity"] <= 16
    scaled = models.vqvae_step(model, x, data_variance=0.5)
    assert torch.allclose(scaled["rec"], 2 * plain["rec"])


def test_vqvae_step_counts_indices_when_the_quantizer_reports_no_usage():
    model = tiny(num_codes=8, code_dim=4, quantizer=BareQuantizer(8, 4))
    metrics = models.vqvae_step(model, torch.rand(2, 3, 16, 16))
    assert metrics["usage"].shape == (8,) and metrics["usage"].sum() == 2 * 4 * 4
    assert 1 <= metrics["perplexity"] <= 8


def test_make_vqvae_step_sums_usage_over_windows():
    model = tiny()
    step = models.make_vqvae_step(usage_every=3)
    batches = [torch.rand(2, 3, 16, 16) for _ in range(6)]
    outs = [step(model, b) for b in batches]
    assert ["usage" in o for o in outs] == [False, False, True] * 2
    model.eval()
    expected = sum(models.vqvae_step(model, b)["usage"] for b in batches[3:])
    assert torch.equal(outs[5]["usage"], expected)
    with pytest.raises(ValueError, match="usage_every"):
        models.make_vqvae_step(0)


@pytest.mark.parametrize("name", ["digits", "photos"])
def test_a_few_training_steps_lower_the_reconstruction_loss(name):
    dataset = data.load(name, "train", max_images=16)
    model = tiny(in_channels=dataset.image_shape[0])
    x = dataset.images
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        metrics = models.vqvae_step(model, x)
        optimizer.zero_grad()
        metrics["loss"].backward()
        optimizer.step()
        losses.append(metrics["rec"].item())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_train_with_dvl_train_logs_usage_windows(tmp_path):
    from dvl_helpers.training import train

    dataset = data.load("digits", "train", max_images=32)
    model = tiny(in_channels=1)
    history = train(model, data.loader(dataset, 8), models.make_vqvae_step(usage_every=2),
                    steps=6, progress=False, ckpt_path=tmp_path / "vqvae.pt")
    assert list(history.steps("usage")) == [2, 4, 6]
    assert history["usage"].shape == (3, 16)
    assert np.allclose(history["usage"].sum(1), 2 * 8 * 8 * 8)
    assert len(history["loss"]) == 6


def test_reconstruct_is_clamped_and_keeps_the_mode():
    model = tiny().train()
    x = torch.rand(2, 3, 16, 16)
    x_rec = models.reconstruct(model, x)
    assert x_rec.shape == x.shape and not x_rec.requires_grad
    assert x_rec.min() >= 0 and x_rec.max() <= 1
    assert model.training
    model.eval()
    with torch.no_grad():
        assert torch.allclose(x_rec, model(x)[0].clamp(0, 1))


def test_evaluate_vqvae():
    model = tiny()
    x = torch.rand(10, 3, 16, 16)
    batches = [(x[:6], None), (x[6:], None)]
    out = models.evaluate_vqvae(model, batches, data_variance=0.25)
    assert set(out) == {"mse", "nmse", "psnr", "ssim", "perplexity", "codes_used", "usage"}
    model.eval()
    with torch.no_grad():
        x_rec = model(x)[0].clamp(0, 1)
    assert out["mse"] == pytest.approx(((x_rec - x) ** 2).mean().item(), rel=1e-5)
    assert out["nmse"] == pytest.approx(out["mse"] / 0.25)
    assert out["psnr"] == pytest.approx(-10 * torch.log10(((x_rec - x) ** 2).flatten(1).mean(1)).mean().item(),
                                        rel=1e-5)
    indices = model.encode(x)
    assert np.array_equal(out["usage"], np.bincount(indices.flatten().numpy(), minlength=16))
    assert out["codes_used"] == pytest.approx(len(indices.unique()) / 16)
    first_only = models.evaluate_vqvae(model, batches, max_batches=1)
    assert first_only["usage"].sum() == 6 * 4 * 4
    assert first_only["nmse"] == pytest.approx(first_only["mse"] / x[:6].var().item(), rel=1e-4)


def test_code_images_decode_constant_maps():
    model = tiny()
    images = models.code_images(model, side=2)
    assert images.shape == (16, 3, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    model.eval()
    with torch.no_grad():
        expected = model.decode_indices(torch.full((1, 2, 2), 5)).clamp(0, 1)
    assert torch.allclose(images[5:6], expected, atol=1e-6)
    assert models.code_images(model, codes=[3, 1]).shape == (2, 3, 4, 4)


def test_from_preset_uses_the_preset_sizes():
    cfg = presets.get_preset("smoke", device="cpu")
    model = models.from_preset(cfg, quantizers.VectorQuantizer(cfg.num_codes, cfg.code_dim))
    assert model.code_dim == cfg.code_dim and model.num_codes == cfg.num_codes
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == cfg.code_dim
    assert sum(isinstance(m, models.nn.Module) and type(m).__name__ == "ResBlock"
               for m in model.encoder.modules()) == cfg.num_res_blocks


def test_pixel_variance_is_the_variance_of_every_value():
    x = torch.rand(12, 3, 4, 4)
    batches = [(x[:5], None), (x[5:], None)]
    assert models.pixel_variance(batches) == pytest.approx(x.double().var().item())
    assert models.pixel_variance(batches, max_batches=1) == pytest.approx(x[:5].double().var().item())
