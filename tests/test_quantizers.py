"""dvl_helpers.quantizers: the reference VQ used by later phases."""
import pytest
import torch
import torch.nn.functional as F

from dvl_helpers import quantizers as q
from grader.checks._common import OpRecorder


def brute_sq_dist(z, codebook):
    z, codebook = z.double(), codebook.double()
    return ((z[:, None] - codebook[None]) ** 2).sum(-1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------- distances

def test_pairwise_sq_distances_match_brute_force(gen):
    z = torch.randn(37, 5, generator=gen)
    codebook = torch.randn(11, 5, generator=gen) * 2
    d = q.pairwise_sq_distances(z, codebook)
    assert d.shape == (37, 11) and d.dtype == torch.float32
    torch.testing.assert_close(d.double(), brute_sq_dist(z, codebook), rtol=1e-5, atol=1e-5)


def test_pairwise_sq_distances_are_never_negative():
    z = torch.full((4, 3), 1000.0)
    d = q.pairwise_sq_distances(z, z[:1] + 1e-4)
    assert (d >= 0).all()


def test_pairwise_sq_distances_gradients():
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(q.pairwise_sq_distances, (z, codebook))


def test_pairwise_sq_distances_stay_float32_under_autocast(gen):
    z = torch.randn(8, 4, generator=gen)
    codebook = torch.randn(5, 4, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = q.pairwise_sq_distances(z, codebook)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d.double(), brute_sq_dist(z, codebook), rtol=1e-5, atol=1e-5)


def test_pairwise_sq_distances_never_build_n_k_d(gen):
    z = torch.randn(60, 32, generator=gen)
    codebook = torch.randn(50, 32, generator=gen)
    with OpRecorder() as rec:
        q.pairwise_sq_distances(z, codebook)
    assert rec.largest <= 60 * 50


@pytest.mark.parametrize("z_shape, cb_shape, message", [
    ((3, 4, 5), (2, 4), r"z must be a tensor \[N, D\], got shape \(3, 4, 5\)"),
    ((3, 4), (4,), r"codebook must be a tensor \[K, D\], got shape \(4,\)"),
    ((3, 4), (2, 5), r"must share D, got z \(3, 4\) and codebook \(2, 5\)"),
    ((3, 4), (0, 4), r"at least one code"),
])
def test_pairwise_sq_distances_reject_bad_shapes(z_shape, cb_shape, message):
    with pytest.raises(ValueError, match=message):
        q.pairwise_sq_distances(torch.zeros(z_shape), torch.zeros(cb_shape))


# ---------------------------------------------------------------- nearest code

def test_nearest_code_matches_brute_force(gen):
    z = torch.randn(200, 6, generator=gen)
    codebook = torch.randn(33, 6, generator=gen)
    idx = q.nearest_code(z, codebook)
    assert idx.dtype == torch.long and idx.shape == (200,)
    assert torch.equal(idx, brute_sq_dist(z, codebook).argmin(1))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 4096])
def test_nearest_code_chunks_agree(gen, chunk_size):
    z = torch.randn(100, 4, generator=gen)
    codebook = torch.randn(17, 4, generator=gen)
    expected = brute_sq_dist(z, codebook).argmin(1)
    assert torch.equal(q.nearest_code(z, codebook, chunk_size=chunk_size), expected)


def test_nearest_code_holds_one_chunk_of_distances_at_a_time(gen):
    z = torch.randn(256, 2, generator=gen)
    codebook = torch.randn(100, 2, generator=gen)
    with OpRecorder() as rec:
        q.nearest_code(z, codebook, chunk_size=16)
    assert rec.largest <= 16 * 100            # a [16, K] block at a time
    with OpRecorder() as rec:
        q.nearest_code(z, codebook, chunk_size=4096)
    assert rec.largest == 256 * 100


def test_nearest_code_autocast_bfloat16_agrees_with_float64(gen):
    # codes close together far from the origin: bfloat16 (8 bits of mantissa)
    # cannot tell them apart, float32 can
    base = torch.randn(1, 16, generator=gen)
    codebook = base + 0.03 * torch.randn(64, 16, generator=gen)
    z = base + 0.03 * torch.randn(500, 16, generator=gen)
    expected = brute_sq_dist(z, codebook).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = torch.addmm((codebook ** 2).sum(1), z, codebook.t(), alpha=-2).argmin(1)
        idx = q.nearest_code(z, codebook)
        z_q, indices = q.quantize(z.t().reshape(1, 16, 20, 25), codebook)
    assert not torch.equal(naive, expected), "the test needs inputs that bfloat16 gets wrong"
    assert torch.equal(idx, expected)
    assert torch.equal(indices.flatten(), expected)


def test_nearest_code_rejects_bad_chunk_size(gen):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        q.nearest_code(torch.zeros(3, 2), torch.zeros(4, 2), chunk_size=0)


def test_nearest_code_with_a_single_code():
    idx = q.nearest_code(torch.randn(5, 3), torch.randn(1, 3))
    assert torch.equal(idx, torch.zeros(5, dtype=torch.long))


# ---------------------------------------------------------------- quantize

def test_quantize_shapes_rows_and_gradients(gen):
    z_e = torch.randn(2, 3, 4, 5, generator=gen, requires_grad=True)
    codebook = torch.randn(7, 3, generator=gen, requires_grad=True)
    z_q, indices = q.quantize(z_e, codebook)
    assert z_q.shape == (2, 3, 4, 5) and indices.shape == (2, 4, 5)
    assert indices.dtype == torch.long
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(indices.flatten(), brute_sq_dist(flat, codebook.detach()).argmin(1))
    assert torch.equal(z_q.permute(0, 2, 3, 1).reshape(-1, 3), codebook.detach()[indices.flatten()])
    z_q.sum().backward()
    assert z_e.grad is None
    counts = torch.bincount(indices.flatten(), minlength=7).float()
    torch.testing.assert_close(codebook.grad, counts[:, None].expand(7, 3))


def test_quantize_accepts_channels_last(gen):
    z_e = torch.randn(2, 4, 3, 3, generator=gen)
    codebook = torch.randn(6, 4, generator=gen)
    z_q, indices = q.quantize(z_e.contiguous(memory_format=torch.channels_last), codebook)
    z_q2, indices2 = q.quantize(z_e, codebook)
    assert torch.equal(indices, indices2) and torch.equal(z_q, z_q2)


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 4), r"z_e must be a tensor \[B, D, H, W\], got shape \(2, 3, 4\)"),
    ((2, 5, 4, 4), r"z_e \[B, D, H, W\] has D=5 channels but the codebook \[K, D\] has D=3"),
])
def test_quantize_rejects_bad_latents(shape, message):
    with pytest.raises(ValueError, match=message):
        q.quantize(torch.zeros(shape), torch.zeros(4, 3))


def test_embed_codes_inverts_quantize(gen):
    z_e = torch.randn(2, 3, 4, 4, generator=gen)
    codebook = torch.randn(9, 3, generator=gen)
    z_q, indices = q.quantize(z_e, codebook)
    assert torch.equal(q.embed_codes(indices, codebook), z_q)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 9\), got values in \[9, 9\]"):
        q.embed_codes(torch.full((1, 2, 2), 9), codebook)
    with pytest.raises(ValueError, match="indices must be torch.long"):
        q.embed_codes(indices.int(), codebook)


# ---------------------------------------------------------------- losses and straight-through

def test_vq_losses_values_and_gradient_routes(gen):
    z_e = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    z_q = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    codebook_loss, commitment_loss = q.vq_losses(z_e, z_q)
    expected = F.mse_loss(z_e, z_q).item()
    assert codebook_loss.item() == pytest.approx(expected)
    assert commitment_loss.item() == pytest.approx(expected)
    ge, gq = torch.autograd.grad(codebook_loss, [z_e, z_q], allow_unused=True)
    assert ge is None and gq is not None
    ge, gq = torch.autograd.grad(commitment_loss, [z_e, z_q], allow_unused=True)
    assert gq is None and ge is not None
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3, 4, 4\) and \(2, 3\)"):
        q.vq_losses(z_e, torch.zeros(2, 3))


def test_straight_through_value_and_gradient(gen):
    z_e = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    z_q = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    out = q.straight_through(z_e, z_q)
    torch.testing.assert_close(out, z_q)
    g = torch.randn(2, 3, 4, 4, generator=gen)
    ge, gq = torch.autograd.grad((out * g).sum(), [z_e, z_q], allow_unused=True)
    assert torch.equal(ge, g) and gq is None


# ---------------------------------------------------------------- usage and perplexity

def test_code_usage_counts_any_shape():
    indices = torch.tensor([[[0, 2], [2, 2]]])
    counts = q.code_usage(indices, 5)
    assert counts.dtype == torch.float32
    assert counts.tolist() == [1.0, 0.0, 3.0, 0.0, 0.0]
    assert q.code_usage(torch.tensor([4]), 5).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("indices, num_codes, message", [
    (torch.tensor([0, 5]), 5, r"indices must lie in \[0, 5\), got values in \[0, 5\]"),
    (torch.tensor([0.0, 1.0]), 5, r"integer tensor \(torch.long\), got torch.float32"),
    (torch.tensor([0, 1]), 0, "num_codes must be a positive integer, got 0"),
])
def test_code_usage_rejects_bad_input(indices, num_codes, message):
    with pytest.raises(ValueError, match=message):
        q.code_usage(indices, num_codes)


@pytest.mark.parametrize("counts, expected", [
    ([3.0, 3.0, 3.0, 3.0], 4.0),
    ([0.0, 5.0, 0.0], 1.0),
    ([1.0, 1.0, 0.0, 2.0], 2.0 ** 1.5),
    ([0.0, 0.0], 1.0),
])
def test_perplexity(counts, expected):
    value = q.perplexity(torch.tensor(counts))
    assert value.dim() == 0 and torch.isfinite(value)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_perplexity_of_integer_counts_and_bad_shape():
    assert q.perplexity(torch.tensor([2, 2])).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"counts must be a tensor \[K\], got shape \(2, 2\)"):
        q.perplexity(torch.ones(2, 2))


# ---------------------------------------------------------------- the layer

def test_vector_quantizer_init_and_parameters():
    torch.manual_seed(0)
    vq = q.VectorQuantizer(64, 8, beta=0.5)
    assert isinstance(vq.codebook, torch.nn.Parameter) and vq.codebook.shape == (64, 8)
    assert vq.codebook.abs().max() <= 1 / 64
    assert [name for name, _ in vq.named_parameters()] == ["codebook"]
    assert "num_codes=64, code_dim=8, beta=0.5" in repr(vq)
    with pytest.raises(ValueError, match="num_codes must be a positive integer, got 0"):
        q.VectorQuantizer(0, 8)


def test_vector_quantizer_forward(gen):
    vq = q.VectorQuantizer(16, 4, beta=0.3)
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(16, 4, generator=gen))
    z_e = torch.randn(2, 4, 3, 5, generator=gen, requires_grad=True)
    z_q, loss, info = vq(z_e)
    assert z_q.shape == z_e.shape and loss.dim() == 0
    assert set(info) >= {"indices", "perplexity", "usage", "codebook_loss", "commitment_loss"}
    assert info["indices"].shape == (2, 3, 5) and info["usage"].shape == (16,)
    assert info["usage"].sum().item() == 30
    assert torch.equal(vq.lookup(info["indices"]), vq.embed_codes(info["indices"]))
    torch.testing.assert_close(z_q, vq.lookup(info["indices"]))
    mse = F.mse_loss(z_e, vq.lookup(info["indices"])).item()
    assert loss.item() == pytest.approx(1.3 * mse, rel=1e-5)
    assert info["perplexity"].item() == pytest.approx(q.perplexity(info["usage"]).item())
    g = torch.randn(2, 4, 3, 5, generator=gen)
    ge, gc = torch.autograd.grad((z_q * g).sum(), [z_e, vq.codebook], allow_unused=True)
    assert torch.equal(ge, g) and gc is None
    ge, gc = torch.autograd.grad(loss, [z_e, vq.codebook])
    diff = (z_e - vq.lookup(info["indices"])).detach()
    torch.testing.assert_close(ge, 0.3 * 2 * diff / diff.numel())


def test_vector_quantizer_under_autocast(gen):
    vq = q.VectorQuantizer(32, 8)
    z_e = torch.randn(2, 8, 4, 4, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, loss, info = vq(z_e)
    assert torch.isfinite(loss) and info["indices"].dtype == torch.long
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 8)
    expected = brute_sq_dist(flat, vq.codebook.detach()).argmin(1)
    assert torch.equal(info["indices"].flatten(), expected)


def test_vector_quantizer_chunking_does_not_change_results(gen):
    torch.manual_seed(1)
    a = q.VectorQuantizer(20, 3, chunk_size=5)
    b = q.VectorQuantizer(20, 3)
    b.load_state_dict(a.state_dict())
    z_e = torch.randn(2, 3, 4, 4, generator=gen)
    assert torch.equal(a(z_e)[2]["indices"], b(z_e)[2]["indices"])


def test_vector_quantizer_rejects_wrong_channels():
    vq = q.VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="has D=3 channels but the codebook"):
        vq(torch.zeros(1, 3, 2, 2))
