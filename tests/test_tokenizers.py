"""dvl_helpers.tokenizers: patches, the TiTok encoder and decoder, the tokenizers, VQ on frozen features."""
import pytest
import torch
from torch import nn

from dvl_helpers import tokenizers as T
from dvl_helpers.fsq import FSQ
from dvl_helpers.models import make_vqvae_step
from dvl_helpers.quantizers import EMAVectorQuantizer


# ----------------------------------------------------------------------------- patches

def test_patchify_layout_is_raster_order_and_channel_row_column():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tokens = T.patchify(x, 2)
    assert tokens.shape == (2, 6, 12)
    for k in range(6):
        i, j = divmod(k, 3)
        assert torch.equal(tokens[:, k], x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(2, -1))
    # rectangular patches: (ph, pw)
    tokens = T.patchify(x, (4, 2))
    assert tokens.shape == (2, 3, 24)
    assert torch.equal(tokens[1, 2], x[1, :, :, 4:6].reshape(-1))


@pytest.mark.parametrize("shape, patch", [((2, 3, 8, 8), 4), ((1, 1, 6, 9), 3), ((2, 2, 8, 4), (4, 2)),
                                          ((3, 1, 5, 5), 1)])
def test_unpatchify_inverts_patchify_exactly(shape, patch):
    x = torch.rand(*shape)
    assert torch.equal(T.unpatchify(T.patchify(x, patch), patch, *shape[2:]), x)
    assert torch.equal(T.unpatchify(T.patchify(x.contiguous(memory_format=torch.channels_last), patch),
                                    patch, *shape[2:]), x)


def test_patch_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="multiples of the patch size"):
        T.patchify(torch.rand(1, 3, 6, 8), 4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        T.patchify(torch.rand(3, 8, 8), 4)
    with pytest.raises(ValueError, match="positive int"):
        T.patchify(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"tokens must be \[B, \(H/ph\)\(W/pw\) = 4"):
        T.unpatchify(torch.rand(1, 5, 12), 2, 4, 4)


# ----------------------------------------------------------------------------- TiTok encoder and decoder

def _encoder(t=5, **kw):
    torch.manual_seed(0)
    return T.LatentTokenEncoder(image_size=8, patch=2, dim=16, num_latent_tokens=t, depth=1, heads=2, **kw)


def test_latent_token_encoder_returns_the_latent_tokens_outputs():
    enc = _encoder()
    with torch.no_grad():
        enc.latent_tokens.normal_()
        enc.pos_embed.normal_()
    x = torch.rand(3, 3, 8, 8)
    out = enc(x)
    assert out.shape == (3, 5, 16)
    seq = torch.cat([enc.patch_embed(T.patchify(x, 2)) + enc.pos_embed, enc.latent_tokens.expand(3, -1, -1)], 1)
    full = enc.transformer(seq)
    assert torch.allclose(out, full[:, 16:], atol=1e-6)
    assert not torch.allclose(out, full[:, :5], atol=1e-3)
    assert torch.allclose(enc(x[1:2]), out[1:2], atol=1e-6)            # rows independent
    out.sum().backward()
    assert enc.latent_tokens.grad.abs().sum() > 0 and enc.pos_embed.grad.abs().sum() > 0


def test_latent_token_decoder_knows_where_each_patch_goes():
    torch.manual_seed(0)
    dec = T.LatentTokenDecoder(image_size=8, patch=2, dim=16, num_latent_tokens=5, depth=1, heads=2,
                               in_channels=1)
    with torch.no_grad():
        dec.pos_embed.normal_()
        dec.to_pixels.weight.normal_()
    z = torch.randn(2, 5, 16, requires_grad=True)
    img = dec(z)
    assert img.shape == (2, 1, 8, 8)
    patches = T.patchify(img, 2)[0]
    assert (patches - patches[0]).abs().amax() > 1e-3, "positions make the patches differ"
    with torch.no_grad():
        dec.pos_embed.zero_()
        flat = T.patchify(dec(z), 2)[0]
    assert torch.allclose(flat, flat[:1].expand_as(flat), atol=1e-5), "no positions: every patch the same"
    img.sum().backward()
    assert z.grad.abs().sum() > 0 and dec.mask_token.grad.abs().sum() > 0


def test_encoder_checks_the_image_size():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        T.LatentTokenEncoder(image_size=10, patch=4, dim=8)


# ----------------------------------------------------------------------------- tokenizers

def _titok(quantizer=None, code_dim=4, t=6):
    torch.manual_seed(0)
    quantizer = quantizer or EMAVectorQuantizer(12, code_dim, decay=0.9)
    return T.TiTokTokenizer(T.LatentTokenEncoder(8, 2, 16, t, 1, 2, in_channels=1), quantizer,
                            T.LatentTokenDecoder(8, 2, 16, t, 1, 2, in_channels=1), code_dim=code_dim)


def test_quantize_tokens_round_trip_through_a_channel_first_quantizer():
    vq = EMAVectorQuantizer(10, 4).eval()
    z = torch.randn(3, 7, 4)
    z_q, loss, info = T.quantize_tokens(vq, z)
    assert z_q.shape == (3, 7, 4) and info["indices"].shape == (3, 7) and loss.dim() == 0
    assert torch.allclose(T.lookup_tokens(vq, info["indices"]), z_q)
    assert torch.allclose(z_q[1, 2], vq.codebook[info["indices"][1, 2]])
    fsq = FSQ([5, 5, 3], dim=4)
    z_q, _, info = T.quantize_tokens(fsq, z)
    assert info["indices"].shape == (3, 7)
    assert torch.allclose(T.lookup_tokens(fsq, info["indices"]), z_q, atol=1e-6)


def test_titok_round_trip_and_encode_without_codebook_updates():
    model = _titok()
    x = torch.rand(4, 1, 8, 8)
    x_rec, loss, info = model(x)
    assert x_rec.shape == x.shape and loss.dim() == 0 and info["indices"].shape == (4, 6)
    assert model.num_codes == 12 and model.num_tokens == 6
    codebook = model.quantizer.codebook.clone()
    indices = model.encode(x)
    assert indices.dtype == torch.long and indices.shape == (4, 6)
    assert torch.equal(model.quantizer.codebook, codebook) and model.quantizer.training
    model.eval()
    assert torch.allclose(model.decode_indices(indices), model(x)[0], atol=1e-5)


def test_titok_with_fsq_trains_with_the_vqvae_step():
    model = _titok(FSQ([5, 5, 5, 5]), code_dim=4)
    x = torch.rand(8, 1, 1, 1, generator=torch.Generator().manual_seed(0)).expand(8, 1, 8, 8)  # flat images
    step = make_vqvae_step()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        out = step(model, x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["rec"].item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_grid_tokenizer_merges_patches_into_a_grid_of_tokens():
    torch.manual_seed(0)
    model = T.GridTokenizer(EMAVectorQuantizer(12, 4), image_size=8, patch=2, grid=(2, 4), dim=16,
                            code_dim=4, depth=1, heads=2, in_channels=3)
    assert model.merge == (2, 1) and model.num_tokens == 8
    x = torch.rand(3, 3, 8, 8)
    z_e = model.encode_latents(x)
    assert z_e.shape == (3, 4, 2, 4)
    x_rec, _, info = model(x)
    assert x_rec.shape == x.shape and info["indices"].shape == (3, 2, 4)
    model.eval()
    assert torch.allclose(model.decode_indices(model.encode(x)), model(x)[0], atol=1e-5)
    # token (0, 1) is made of patch outputs (0, 1) and (1, 1) of the 4 x 4 patch grid only
    tokens = model.encoder(x - 0.5)                                         # [B, 16, dim]
    group = torch.cat([tokens[:, 1], tokens[:, 5]], dim=-1)
    assert torch.allclose(z_e[:, :, 0, 1], model.pre_quant(group), atol=1e-5)
    with pytest.raises(ValueError, match="must divide the patch grid"):
        T.GridTokenizer(EMAVectorQuantizer(12, 4), image_size=8, patch=2, grid=(3, 4), dim=16, code_dim=4)


# ----------------------------------------------------------------------------- VQ on frozen features

class _ConvEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 2, stride=2)
        self.norm = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.norm(self.conv(x)))


def test_frozen_encoder_vq_never_trains_the_encoder():
    torch.manual_seed(0)
    encoder = _ConvEncoder()
    model = T.FrozenEncoderVQ(encoder, EMAVectorQuantizer(9, 6, decay=0.9),
                              T.ViTDecoder((4, 4), 6, image_size=8, dim=16, depth=1, heads=2, out_channels=1))
    assert model.train() is model
    assert model.quantizer.training and model.decoder.training
    assert not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    stats = encoder.norm.running_mean.clone()
    x = torch.rand(5, 1, 8, 8)
    x_rec, loss, info = model(x)
    assert x_rec.shape == x.shape and info["indices"].shape == (5, 4, 4)
    (torch.nn.functional.mse_loss(x_rec, x) + loss).backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert torch.equal(encoder.norm.running_mean, stats)
    codebook = model.quantizer.codebook.clone()
    indices = model.encode_to_indices(x)
    assert torch.equal(model.quantizer.codebook, codebook) and model.quantizer.training
    model.eval()
    assert torch.allclose(model.decode_from_indices(indices), model(x)[0], atol=1e-5)
    assert model.num_codes == 9


def test_masked_image_model_learns_from_the_masked_patches_only():
    torch.manual_seed(0)
    mim = T.MaskedImageModel(image_size=8, patch=2, dim=16, depth=1, heads=2, in_channels=1, mask_ratio=0.25)
    mask = mim.random_mask(6, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert mask.shape == (6, 16) and (mask.sum(1) == 4).all()
    x = torch.rand(6, 1, 8, 8)
    loss, pred = mim(x, torch.Generator().manual_seed(0))
    target = T.patchify(x - 0.5, 2)
    assert torch.isclose(loss, ((pred - target) ** 2)[mask].mean())
    opt = torch.optim.Adam(mim.parameters(), 3e-3)
    first = None
    for _ in range(30):
        out = T.mim_step(mim, (x, None))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert out["loss"].item() < first
    feats = mim.features()
    assert feats(x).shape == (6, 16, 4, 4)
    assert feats.encoder is mim.encoder                                    # the same weights
    with pytest.raises(ValueError, match="mask_ratio"):
        T.MaskedImageModel(mask_ratio=1.0)


class _FakeDino(nn.Module):
    """What torch.hub's DINOv2 returns from forward_features: normalised patch tokens."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 14 * 14, 12)

    def forward_features(self, x):
        assert x.shape[1:] == (3, 28, 28)
        return {"x_norm_patchtokens": self.proj(T.patchify(x, 14))}


def test_hub_features_and_the_offline_fallback(monkeypatch):
    feats = T.HubPatchFeatures(_FakeDino(), size=28)
    assert feats(torch.rand(2, 1, 32, 32)).shape == (2, 12, 2, 2)       # gray images become RGB

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load", offline)
    assert T.pretrained_encoder() is None
    monkeypatch.setattr(torch.hub, "load", lambda repo, name, **kw: _FakeDino())
    found = T.pretrained_encoder(size=28)
    assert isinstance(found, T.HubPatchFeatures) and not found.model.training
    with pytest.raises(ValueError, match="multiple of the patch size"):
        T.HubPatchFeatures(_FakeDino(), size=30)


# ----------------------------------------------------------------------------- what a token encodes

class _Quadrants(nn.Module):
    """A 2x2 grid tokenizer whose token (i, j) paints quadrant (i, j) with code / (K - 1)."""

    num_codes = 5

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return (x[:, 0].reshape(-1, 2, 2, 2, 2).mean(dim=(2, 4)) * 4).round().long()

    def decode_indices(self, indices):
        q = indices.float() / 4 + self.anchor
        return q.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]


def test_replace_token_writes_one_position():
    indices = torch.arange(12).reshape(2, 2, 3)
    out = T.replace_token(indices, 4, torch.tensor([7, 8]))
    assert out[0, 1, 1] == 7 and out[1, 1, 1] == 8 and indices[0, 1, 1] == 4
    assert (out != indices).sum() == 2
    with pytest.raises(ValueError, match=r"position must lie in \[0, 5\]"):
        T.replace_token(indices, 6, 0)


def test_token_influence_of_a_grid_token_is_its_region():
    maps = T.token_influence(_Quadrants(), torch.rand(10, 1, 4, 4), torch.Generator().manual_seed(0))
    assert maps.shape == (4, 4, 4)
    for token, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        inside = maps[token, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
        assert inside.min() > 0 and maps[token].sum() == pytest.approx(inside.sum().item())


def test_token_influence_of_a_titok_token_covers_the_image():
    model = _titok()
    maps = T.token_influence(model, torch.rand(6, 1, 8, 8), torch.Generator().manual_seed(0))
    assert maps.shape == (6, 8, 8) and (maps >= 0).all()
    assert model.training                                                 # the mode is restored
    assert (maps > 0).float().mean() > 0.5                                # a latent token acts everywhere


def test_evaluate_tokenizer_reports_the_discrete_round_trip():
    model = _titok()
    x = torch.rand(10, 1, 8, 8)
    report = T.evaluate_tokenizer(model, x, batch_size=4)
    assert report["tokens"] == 6 and report["indices"].shape == (10, 6)
    assert report["reconstructions"].shape == x.shape
    assert report["counts"].sum() == 60 and report["used"] == int((report["counts"] > 0).sum())
    assert 1 <= report["perplexity"] <= report["used"] + 1e-4
    model.eval()
    expected = model.decode_indices(model.encode(x)).clamp(0, 1)
    assert torch.allclose(report["reconstructions"], expected, atol=1e-5)
    mse = ((expected - x) ** 2).flatten(1).mean(1)
    assert report["psnr"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), rel=1e-4)
    assert -1 <= report["ssim"] <= 1
