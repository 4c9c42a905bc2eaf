"""dvl_helpers.priors: sampling, MaskGIT decoding, training steps and sample quality."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from dvl_helpers import priors
from dvl_helpers.transformer import CodePrior, MaskedCodePrior


def test_causal_mask_is_the_lower_triangle_with_its_diagonal():
    assert priors.causal_mask(3).tolist() == [[True, False, False], [True, True, False],
                                               [True, True, True]]
    assert priors.causal_mask(0).shape == (0, 0)
    with pytest.raises(ValueError, match="non-negative int"):
        priors.causal_mask(-1)


def test_top_k_filter_keeps_the_largest_and_ties_at_the_boundary():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, -1.0, 5.0, 4.0]])
    out = priors.top_k_filter(logits, 2)
    inf = float("-inf")
    assert out.tolist() == [[inf, 3.0, 3.0, inf], [inf, inf, 5.0, 4.0]]
    assert torch.equal(priors.top_k_filter(logits, 9), logits)
    assert logits[0, 0] == 1.0
    with pytest.raises(ValueError, match="positive int"):
        priors.top_k_filter(logits, 0)
    with pytest.raises(ValueError, match=r"\[B, V\]"):
        priors.top_k_filter(torch.zeros(3), 1)


def test_sample_logits_follows_the_temperature_and_top_k():
    logits = torch.tensor([[0.0, math.log(3.0)]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    freq = priors.sample_logits(logits, generator=gen).float().mean().item()
    assert abs(freq - 0.75) < 0.02
    freq = priors.sample_logits(logits, temperature=0.5, generator=gen).float().mean().item()
    assert abs(freq - 0.9) < 0.02                                  # 9 : 1
    assert priors.sample_logits(logits[:5], top_k=1, generator=gen).tolist() == [1] * 5
    a = priors.sample_logits(logits[:50], generator=torch.Generator().manual_seed(3))
    b = priors.sample_logits(logits[:50], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.long
    with pytest.raises(ValueError, match="temperature"):
        priors.sample_logits(logits, temperature=0.0)


class _Chain(nn.Module):
    """logits[:, i] put all mass on (codes[:, i - 1] + 1) % 5; position 0 on code 2."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, codes):
        b, t = codes.shape
        logits = torch.full((b, t, 5), -50.0)
        logits[:, 0, 2] = 50.0
        if t > 1:
            logits[:, 1:].scatter_(2, ((codes[:, :-1] + 1) % 5)[..., None], 50.0)
        return logits


def test_sample_autoregressive_feeds_back_its_samples():
    codes = priors.sample_autoregressive(_Chain(), 3, 6, generator=torch.Generator().manual_seed(0))
    assert codes.tolist() == [[2, 3, 4, 0, 1, 2]] * 3


def test_maskgit_schedule_and_counts():
    assert priors.maskgit_schedule(0.0) == 1.0
    assert abs(priors.maskgit_schedule(1.0)) < 1e-12
    assert priors.maskgit_schedule(0.5, "linear") == 0.5
    assert priors.maskgit_schedule(0.5, "square") == 0.75
    r = torch.tensor([0.0, 0.5])
    assert torch.allclose(priors.maskgit_schedule(r), torch.tensor([1.0, math.cos(math.pi / 4)]))
    with pytest.raises(ValueError, match="cosine, linear, square"):
        priors.maskgit_schedule(0.5, "cos")
    counts, n = [], 16
    for s in range(1, 5):
        n = priors.maskgit_num_masked(16, s, 4, "cosine", previous=n)
        counts.append(n)
    assert counts == [14, 11, 6, 0]
    assert priors.maskgit_num_masked(4, 2, 16, previous=3) == 2    # at least one per step


def test_maskgit_decode_step_remasks_the_least_confident():
    logits = torch.full((1, 4, 6), -1e4)
    logits[0, 0, :1] = 0.0                                          # confidence 1
    logits[0, 1, :3] = 0.0                                          # 1/3
    logits[0, 2, :2] = 0.0                                          # 1/2
    tokens = torch.tensor([[6, 6, 6, 5]])
    masked = torch.tensor([[True, True, True, False]])
    new, still = priors.maskgit_decode_step(logits, tokens, masked, 1,
                                            generator=torch.Generator().manual_seed(0))
    assert still.tolist() == [[False, True, False, False]]
    assert new[0, 0] == 0 and new[0, 1] == 6 and new[0, 2] in (0, 1) and new[0, 3] == 5
    assert tokens.tolist() == [[6, 6, 6, 5]]
    with pytest.raises(ValueError, match="num_to_mask"):
        priors.maskgit_decode_step(logits, tokens, masked, 4)


def test_choice_noise_randomises_which_codes_are_kept_first():
    # position 0 is always the most confident: without noise it is kept in every row
    logits = torch.zeros(2000, 4, 3)
    logits[:, 0, 0] = 20.0
    tokens = torch.full((2000, 4), 3)
    masked = torch.ones(2000, 4, dtype=torch.bool)
    _, plain = priors.maskgit_decode_step(logits, tokens, masked, 3, generator=torch.Generator().manual_seed(0))
    assert (~plain[:, 0]).all()
    new, noisy = priors.maskgit_decode_step(logits, tokens, masked, 3, generator=torch.Generator().manual_seed(0),
                                            choice_noise=4.5)
    kept = (~noisy).float().mean(0)                                 # share of rows keeping each position
    assert noisy.sum(1).eq(3).all() and kept[0] < 0.5 and (kept > 0.15).all()
    assert torch.equal(new[noisy], tokens[noisy]), "re-masked positions keep their old entries"


def test_maskgit_generate_with_choice_temperature_is_complete_and_reproducible():
    torch.manual_seed(0)
    model = MaskedCodePrior(8, 6, dim=16, depth=1, heads=2)
    run = [priors.maskgit_generate(model, 4, 6, steps=3, generator=torch.Generator().manual_seed(1),
                                   choice_temperature=4.5) for _ in range(2)]
    assert torch.equal(run[0], run[1]) and int(run[0].max()) < 8 and int(run[0].min()) >= 0
    same = priors.maskgit_generate(model, 4, 6, steps=3, generator=torch.Generator().manual_seed(1))
    again = priors.maskgit_generate(model, 4, 6, steps=3, generator=torch.Generator().manual_seed(1),
                                    choice_temperature=0.0)
    assert torch.equal(same, again), "choice_temperature 0 is the plain sampler"


def test_maskgit_generate_leaves_no_mask_and_reference_step_functions_train():
    torch.manual_seed(0)
    model = MaskedCodePrior(8, 6, dim=16, depth=1, heads=2)
    codes = priors.maskgit_generate(model, 3, 6, steps=3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (3, 6) and codes.dtype == torch.long
    assert int(codes.max()) < 8 and int(codes.min()) >= 0
    data = torch.randint(0, 8, (16, 6))
    out = priors.make_maskgit_step("linear", torch.Generator().manual_seed(0))(model, data)
    assert out["loss"].requires_grad and 0 < out["masked_fraction"] <= 1
    out["loss"].backward()
    ar = CodePrior(8, 6, dim=16, depth=1, heads=2)
    step = priors.ar_step(ar, (data,))
    assert abs(step["bits_per_code"].item() - step["loss"].item() / math.log(2)) < 1e-6
    bits = priors.bits_per_code(ar, data, batch_size=5)
    assert abs(bits - step["bits_per_code"].item()) < 1e-4
    assert abs(bits - 3.0) < 0.2                     # an untrained prior is about uniform: log2 8


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2.0 + 1.0
    assert priors.frechet_distance(a, a) < 1e-8
    # |mu|^2 = 3, trace terms: 3 * (1 + 4 - 2 * 2) = 3
    assert abs(priors.frechet_distance(a, b) - 6.0) < 0.3
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        priors.frechet_distance(a, b[:, :2])


def test_classifier_features_and_codes_round_trip():
    from dvl_helpers.models import VQVAE
    from dvl_helpers.quantizers import EMAVectorQuantizer

    torch.manual_seed(0)
    clf = priors.DigitClassifier()
    images = torch.rand(5, 1, 32, 32)
    feats, probs = priors.classifier_features(clf, images)
    assert feats.shape == (5, 64) and probs.shape == (5, 10)
    assert np.allclose(probs.sum(1), 1.0)
    out = priors.classifier_step(clf, (images, torch.arange(5)))
    assert out["loss"].requires_grad and 0 <= out["accuracy"] <= 1
    vqvae = VQVAE(EMAVectorQuantizer(16, 4), in_channels=1, hidden=8, res_hidden=4,
                  num_res_blocks=1, downsample=8, code_dim=4)
    codes = priors.encode_codes(vqvae, images)
    assert codes.shape == (5, 16) and codes.dtype == torch.long
    decoded = priors.decode_codes(vqvae, codes, (4, 4))
    assert decoded.shape == (5, 1, 32, 32) and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(ValueError, match=r"\[N, h \* w\]"):
        priors.decode_codes(vqvae, codes, (3, 3))
