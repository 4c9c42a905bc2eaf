"""dvl_helpers.vqgan: the reference GAN losses, adaptive weight, perceptual distance,
PatchGAN, feature network, Fréchet distance and the VQGAN training loop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dvl_helpers import vqgan
from dvl_helpers.models import VQVAE
from dvl_helpers.quantizers import EMAVectorQuantizer


def test_gan_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    assert vqgan.hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert vqgan.hinge_g_loss(fake).item() == pytest.approx(1 / 3)
    zero = torch.zeros(4)
    assert vqgan.non_saturating_d_loss(zero, zero).item() == pytest.approx(np.log(2))
    assert vqgan.non_saturating_g_loss(zero).item() == pytest.approx(np.log(2))
    # a perfect discriminator costs nothing beyond the margins
    assert vqgan.hinge_d_loss(torch.full((2, 1, 3, 3), 5.0), torch.full((2, 1, 3, 3), -5.0)).item() == 0


def test_non_saturating_losses_are_finite_for_huge_logits():
    big = torch.tensor([500.0, -500.0], requires_grad=True)
    loss = vqgan.non_saturating_d_loss(big, -big) + vqgan.non_saturating_g_loss(big)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
    bce = 0.5 * (F.binary_cross_entropy_with_logits(big, torch.ones(2))
                 + F.binary_cross_entropy_with_logits(-big, torch.zeros(2)))
    assert vqgan.non_saturating_d_loss(big, -big).item() == pytest.approx(bce.item())


def test_gan_losses_reject_bad_input():
    with pytest.raises(ValueError, match="logits_fake must be a non-empty floating-point"):
        vqgan.hinge_d_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="logits_real"):
        vqgan.non_saturating_d_loss([1.0], torch.zeros(3))


def _graph(g_scale=1.0):
    torch.manual_seed(0)
    w = torch.randn(3, 2, 4, 4, requires_grad=True)
    h = torch.randn(2, 3, 4, 4)
    out = F.conv_transpose2d(h, w, stride=2, padding=1)
    rec = (out - torch.rand_like(out)).abs().mean()
    g = -(out * torch.randn_like(out)).mean() * g_scale
    return rec, g, w


def test_adaptive_weight_is_the_ratio_of_gradient_norms_detached():
    rec, g, w = _graph()
    gr, = torch.autograd.grad(rec, w, retain_graph=True)
    gg, = torch.autograd.grad(g, w, retain_graph=True)
    lam = vqgan.adaptive_weight(rec, g, w)
    assert lam.shape == () and not lam.requires_grad
    assert lam.item() == pytest.approx((gr.norm() / (gg.norm() + 1e-4)).item(), rel=1e-6)
    assert w.grad is None
    (rec + lam * g).backward()          # the graph is still there
    assert vqgan.adaptive_weight(*_graph(), max_weight=1e-3).item() == pytest.approx(1e-3)
    rec, g, w = _graph(g_scale=0.0)
    assert vqgan.adaptive_weight(rec, g, w, max_weight=1e30).item() == pytest.approx(
        torch.autograd.grad(rec, w, retain_graph=True)[0].norm().item() / 1e-4, rel=1e-5)


def test_adaptive_weight_rejects_bad_input():
    rec, g, w = _graph()
    with pytest.raises(ValueError, match="g_loss must be a scalar tensor"):
        vqgan.adaptive_weight(rec, torch.zeros(3), w)
    with pytest.raises(ValueError, match="last_layer_weight must be a tensor that requires grad"):
        vqgan.adaptive_weight(rec, g, w.detach())


def test_perceptual_distance_by_hand_and_properties():
    fx = [torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])]
    fy = [torch.tensor([[[[4.0, 0.0]], [[3.0, 2.0]]]])]
    assert vqgan.perceptual_distance(fx, fy).tolist() == pytest.approx([1.04])
    torch.manual_seed(0)
    a = [torch.rand(3, 4, 8, 8), torch.rand(3, 8, 4, 4)]
    b = [torch.rand(3, 4, 8, 8), torch.rand(3, 8, 4, 4)]
    d = vqgan.perceptual_distance(a, b)
    assert d.shape == (3,) and (d > 0).all()
    assert vqgan.perceptual_distance(a, a).abs().max() < 1e-6
    # scale per position does not matter (channel normalisation); layers add up
    scaled = [f * torch.rand(3, 1, *f.shape[2:]).add(0.1) for f in a]
    assert torch.allclose(vqgan.perceptual_distance(scaled, b), d, atol=1e-5)
    parts = vqgan.perceptual_distance(a[:1], b[:1]) + vqgan.perceptual_distance(a[1:], b[1:])
    assert torch.allclose(parts, d)
    zero = [torch.zeros(1, 4, 2, 2)]
    assert torch.isfinite(vqgan.perceptual_distance(zero, zero)).all()


def test_perceptual_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="equally long"):
        vqgan.perceptual_distance([torch.zeros(1, 2, 2, 2)], [])
    with pytest.raises(ValueError, match="same shape"):
        vqgan.perceptual_distance([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2)])


def test_disc_weight_switches_on_at_disc_start():
    assert [vqgan.disc_weight(s, 3) for s in range(6)] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert vqgan.disc_weight(0, 0) == 1.0


def test_receptive_field_formula_and_errors():
    assert vqgan.patchgan_receptive_field([4] * 5, [2, 2, 2, 1, 1]) == 70
    assert vqgan.patchgan_receptive_field([3, 3], [1, 2]) == 5
    assert vqgan.patchgan_receptive_field([3, 3], [2, 1]) == 7
    with pytest.raises(ValueError, match="one entry per layer"):
        vqgan.patchgan_receptive_field([3, 3], [1])


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_patch_discriminator_shape_and_measured_receptive_field(num_layers):
    torch.manual_seed(0)
    disc = vqgan.PatchDiscriminator(3, hidden=8, num_layers=num_layers).eval()
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    logits = disc(x)
    side = 96 // 2 ** num_layers - 2
    assert logits.shape == (1, 1, side, side)
    # the pixels that reach one central logit span at most the computed field
    logits[0, 0, side // 2, side // 2].backward()
    rows = (x.grad.abs().sum((0, 1, 3)) > 0).nonzero()
    span = int(rows.max() - rows.min() + 1)
    assert span <= disc.receptive_field and span >= disc.receptive_field - 2 ** num_layers
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        disc(torch.rand(2, 1, 32, 32))


def test_feature_net_random_is_fixed_by_its_seed_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = vqgan.FeatureNet()
    assert net.kind == "random" and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 32, 32)
    feats = net(x)
    assert [f.shape[1] for f in feats] == net.channels
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    again = vqgan.FeatureNet(seed=0)(x)
    other = vqgan.FeatureNet(seed=1)(x)
    assert all(torch.equal(a, b) for a, b in zip(feats, again))
    assert not torch.allclose(feats[-1], other[-1])
    net.train()
    assert not net.training
    with pytest.raises(FileNotFoundError, match="VGG16 weights not found"):
        vqgan.FeatureNet("vgg16")
    with pytest.raises(ValueError, match="kind must be"):
        vqgan.FeatureNet("resnet")


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert vqgan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([1.0, 2.0, 0.0])
    assert vqgan.frechet_distance(a, shifted) == pytest.approx(5.0, rel=1e-6)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    x, y = rng.normal(0, 1, size=(20000, 1)), rng.normal(0, 3, size=(20000, 1))
    assert vqgan.frechet_distance(x, y) == pytest.approx(4.0, rel=0.05)
    with pytest.raises(ValueError, match=r"\[N, F\] and \[M, F\]"):
        vqgan.frechet_distance(a, a[:, :2])


def test_frechet_feature_distance_prefers_the_right_images():
    torch.manual_seed(0)
    net = vqgan.FeatureNet("random")
    real = torch.rand(64, 3, 16, 16)
    close = (real + 0.02 * torch.randn_like(real)).clamp(0, 1)
    far = torch.zeros_like(real) + 0.5
    assert vqgan.pooled_features(net, real, batch_size=16).shape == (64, net.channels[-1])
    assert vqgan.frechet_feature_distance(net, real, close) < vqgan.frechet_feature_distance(net, real, far)


def _tiny():
    torch.manual_seed(0)
    model = VQVAE(EMAVectorQuantizer(16, 4), 3, hidden=8, res_hidden=4, num_res_blocks=1, code_dim=4)
    return model, vqgan.PatchDiscriminator(3, hidden=8, num_layers=2)


def test_train_vqgan_warm_up_losses_and_checkpoint(tmp_path):
    model, disc = _tiny()
    images = torch.rand(8, 3, 16, 16)
    calls = []

    def g_loss_fn(logits_fake):
        calls.append(logits_fake.shape)
        return -logits_fake.mean()

    disc_before = [p.detach().clone() for p in disc.parameters()]
    ckpt = tmp_path / "vqgan.pt"
    history = vqgan.train_vqgan(model, disc, [images], steps=4, feature_net=vqgan.FeatureNet("random"),
                                disc_start=3, g_loss_fn=g_loss_fn, progress=False, ckpt_path=ckpt,
                                device="cpu")
    assert list(history.steps("loss")) == [1, 2, 3, 4]
    assert list(history["disc_factor"]) == [0.0, 0.0, 1.0, 1.0]
    assert list(history.steps("d_loss")) == [3, 4] and list(history.steps("adaptive_weight")) == [3, 4]
    assert len(calls) == 2 and calls[0] == (8, 1, 2, 2)
    assert "perceptual" in history and np.isfinite(history["loss"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, disc.parameters()))
    # a second call loads the checkpoint instead of training
    model2, disc2 = _tiny()
    again = vqgan.train_vqgan(model2, disc2, [images], steps=4, progress=False, ckpt_path=ckpt, device="cpu")
    assert list(again["loss"]) == list(history["loss"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_train_vqgan_before_disc_start_never_runs_the_discriminator():
    model, disc = _tiny()
    before = [p.detach().clone() for p in disc.parameters()]
    history = vqgan.train_vqgan(model, disc, [torch.rand(4, 3, 16, 16)], steps=2, disc_start=10,
                                progress=False, device="cpu")
    assert "d_loss" not in history and "perceptual" not in history
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        vqgan.train_vqgan(model, disc, [torch.rand(4, 3, 16, 16)], steps=-1)
