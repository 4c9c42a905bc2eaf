"""dvl_helpers.quantizers, phase 2: EMA codebook, k-means, dead-code restarts, entropy, the EMA layer."""
import math

import pytest
import torch
import torch.nn.functional as F

import dvl_helpers as dvl
from dvl_helpers import quantizers as q
from dvl_helpers.models import from_preset, vqvae_step


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def brute_ema(cluster_size, embed_sum, z, indices, decay, eps):
    """Float64, one code at a time, straight from the formulas."""
    k = cluster_size.shape[0]
    size = cluster_size.double().clone()
    total_sum = embed_sum.double().clone()
    for j in range(k):
        mine = z.double()[indices == j]
        size[j] = decay * cluster_size[j].double() + (1 - decay) * mine.shape[0]
        total_sum[j] = decay * embed_sum[j].double() + (1 - decay) * mine.sum(0)
    n = size.sum()
    smoothed = (size + eps) / (n + k * eps) * n
    return size, total_sum, total_sum / smoothed[:, None]


def rows_of(codes, z, atol=1e-6):
    """Index of the row of z equal to each code (-1 if none)."""
    d = (codes[:, None, :].double() - z[None, :, :].double()).abs().amax(-1)
    best = d.min(1)
    return torch.where(best.values <= atol, best.indices, torch.full_like(best.indices, -1))


# ---------------------------------------------------------------- ema_update

@pytest.mark.parametrize("decay, eps", [(0.99, 1e-5), (0.5, 0.1), (0.0, 1e-5), (0.9, 0.0)])
def test_ema_update_matches_the_formulas(gen, decay, eps):
    k, d = 9, 4
    cluster_size = torch.rand(k, generator=gen) * 5
    cluster_size[2] = 0.0
    embed_sum = torch.randn(k, d, generator=gen) * cluster_size[:, None]
    z = torch.randn(50, d, generator=gen)
    indices = torch.randint(0, k - 2, (50,), generator=gen)     # the last codes go unused
    out = q.ema_update(cluster_size, embed_sum, z, indices, decay, eps)
    for got, want in zip(out, brute_ema(cluster_size, embed_sum, z, indices, decay, eps)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_ema_update_leaves_its_inputs_and_has_no_graph(gen):
    cluster_size, embed_sum = torch.ones(5), torch.randn(5, 3, generator=gen)
    z = torch.randn(20, 3, generator=gen, requires_grad=True)
    indices = torch.randint(0, 5, (20,), generator=gen)
    before = [t.detach().clone() for t in (cluster_size, embed_sum, z, indices)]
    out = q.ema_update(cluster_size, embed_sum, z, indices, 0.9)
    for a, b in zip(before, (cluster_size, embed_sum, z, indices)):
        assert torch.equal(a, b.detach())
    assert not any(t.requires_grad for t in out)


def test_ema_update_laplace_smoothing_keeps_empty_codes_finite():
    cluster_size = torch.tensor([0.0, 4.0])
    embed_sum = torch.tensor([[1e-3, 0.0], [8.0, 4.0]])           # a code whose count decayed to 0
    z, indices = torch.tensor([[2.0, 1.0]]), torch.tensor([1])
    out = q.ema_update(cluster_size, embed_sum, z, indices, 0.99, eps=1e-5)
    assert torch.isfinite(out[2]).all()
    for got, want in zip(out, brute_ema(cluster_size, embed_sum, z, indices, 0.99, 1e-5)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # for a code in use the smoothed count is the count: eps barely moves it
    torch.testing.assert_close(out[2][1], out[1][1] / out[0][1], rtol=1e-4, atol=0)


def test_ema_update_decay_zero_gives_the_batch_means(gen):
    z = torch.randn(400, 3, generator=gen)
    indices = torch.randint(0, 4, (400,), generator=gen)
    _, _, codebook = q.ema_update(torch.ones(4), torch.zeros(4, 3), z, indices, 0.0, eps=0.0)
    means = torch.stack([z[indices == j].mean(0) for j in range(4)])
    torch.testing.assert_close(codebook, means, rtol=1e-5, atol=1e-5)


def test_ema_update_is_float32_under_autocast(gen):
    z = torch.randn(16, 4, generator=gen).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q.ema_update(torch.ones(3), torch.zeros(3, 4), z, torch.zeros(16, dtype=torch.long), 0.5)
    assert all(t.dtype == torch.float32 for t in out)


def test_ema_update_keeps_float64(gen):
    out = q.ema_update(torch.ones(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64),
                       torch.randn(6, 2, generator=gen), torch.zeros(6, dtype=torch.long), 0.5)
    assert all(t.dtype == torch.float64 for t in out)


@pytest.mark.parametrize("args, message", [
    ((torch.ones(3, 1), torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 0.9),
     r"cluster_size must be a tensor \[K\], got shape \(3, 1\)"),
    ((torch.ones(3), torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 0.9),
     r"embed_sum must be a tensor \[K, D\] with K=3"),
    ((torch.ones(3), torch.zeros(3, 2), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), 0.9),
     r"z \[N, D\] and embed_sum \[K, D\] must share D"),
    ((torch.ones(3), torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(5, dtype=torch.long), 0.9),
     r"indices must be a tensor \[N\] with N=4"),
    ((torch.ones(3), torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(4), 0.9),
     r"indices must be torch.long, got torch.float32"),
    ((torch.ones(3), torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 1.5),
     r"decay must be in \[0.0, 1.0\], got 1.5"),
    ((torch.ones(3), torch.zeros(3, 2), torch.zeros(4, 2), torch.full((4,), 3), 0.9),
     r"indices must lie in \[0, K\) = \[0, 3\)"),
])
def test_ema_update_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        q.ema_update(*args)


# ---------------------------------------------------------------- kmeans_init

def blobs(gen, centres, per=40, std=0.05):
    centres = torch.as_tensor(centres, dtype=torch.float32)
    z = centres.repeat_interleave(per, 0) + std * torch.randn(len(centres) * per, centres.shape[1],
                                                               generator=gen)
    return z[torch.randperm(z.shape[0], generator=gen)], centres


def test_kmeans_init_finds_separated_clusters(gen):
    z, centres = blobs(gen, torch.randn(12, 5, generator=gen) * 10)
    codebook = q.kmeans_init(z, 12, generator=torch.Generator().manual_seed(3))
    assert codebook.shape == (12, 5) and codebook.dtype == torch.float32
    d = torch.cdist(centres, codebook)
    assert (d.min(1).values < 0.1).all(), "k-means++ and Lloyd must put one code on each cluster"
    assert len(set(d.argmin(1).tolist())) == 12


def test_kmeans_init_is_a_lloyd_fixed_point(gen):
    z = torch.randn(300, 3, generator=gen)
    codebook = q.kmeans_init(z, 8, iters=100, generator=gen)
    assign = q.nearest_code(z, codebook)
    means = torch.stack([z[assign == j].mean(0) for j in range(8)])
    torch.testing.assert_close(codebook, means, rtol=1e-4, atol=1e-4)


def test_kmeans_init_start_alone_and_reproducible(gen):
    z = torch.randn(100, 2, generator=gen)
    start = q.kmeans_init(z, 10, iters=0, generator=torch.Generator().manual_seed(1))
    assert (rows_of(start, z) >= 0).all() and len(set(rows_of(start, z).tolist())) == 10
    again = q.kmeans_init(z, 10, iters=0, generator=torch.Generator().manual_seed(1))
    other = q.kmeans_init(z, 10, iters=0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(start, again) and not torch.equal(start, other)
    assert torch.equal(q.kmeans_init(z, 10, generator=torch.Generator().manual_seed(5)),
                       q.kmeans_init(z, 10, generator=torch.Generator().manual_seed(5)))


def test_kmeans_init_with_fewer_distinct_rows_than_codes(gen):
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    z = points.repeat(10, 1)
    codebook = q.kmeans_init(z, 5, generator=gen)
    assert torch.isfinite(codebook).all()
    assert (rows_of(points, codebook) >= 0).all(), "every distinct point must get a code"
    assert (rows_of(codebook, z) >= 0).all(), "the extra codes repeat rows of z"


def test_kmeans_init_with_fewer_rows_than_codes(gen):
    z = torch.randn(5, 3, generator=gen)
    codebook = q.kmeans_init(z, 8, generator=gen)
    assert codebook.shape == (8, 3) and torch.isfinite(codebook).all()
    assert (rows_of(z, codebook) >= 0).all()


def test_kmeans_init_leaves_z_and_the_global_rng(gen):
    z = torch.randn(64, 4, generator=gen)
    z0 = z.clone()
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    q.kmeans_init(z, 6, generator=gen)
    assert torch.equal(z, z0) and torch.equal(torch.rand(2), expected)


def test_kmeans_init_chunks_and_dtypes(gen):
    z = torch.randn(90, 3, generator=gen)
    a = q.kmeans_init(z, 7, generator=torch.Generator().manual_seed(0))
    b = q.kmeans_init(z, 7, generator=torch.Generator().manual_seed(0), chunk_size=8)
    torch.testing.assert_close(a, b)
    assert q.kmeans_init(z.double(), 7, generator=gen).dtype == torch.float64
    assert q.kmeans_init(z.bfloat16(), 7, generator=gen).dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"z": torch.zeros(4), "num_codes": 2}, r"z must be a non-empty tensor \[N, D\], got shape \(4,\)"),
    ({"z": torch.zeros(0, 3), "num_codes": 2}, r"non-empty"),
    ({"z": torch.zeros(4, 3), "num_codes": 0}, r"num_codes must be a positive integer, got 0"),
    ({"z": torch.zeros(4, 3), "num_codes": 2, "iters": -1}, r"iters must be a non-negative integer"),
])
def test_kmeans_init_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q.kmeans_init(**kwargs)


# ---------------------------------------------------------------- dead codes and restarts

def test_dead_codes_is_a_strict_threshold():
    dead = q.dead_codes(torch.tensor([0.5, 2.0, 1.0, 0.0]), 1.0)
    assert dead.dtype == torch.bool and dead.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match=r"cluster_size must be a tensor \[K\]"):
        q.dead_codes(torch.ones(2, 2), 1.0)
    with pytest.raises(ValueError, match=r"threshold must be a number"):
        q.dead_codes(torch.ones(2), "one")


def reset_case(gen, k=10, n=12, dead=(1, 4, 5, 9)):
    codebook = torch.randn(k, 3, generator=gen)
    cluster_size = torch.rand(k, generator=gen) + 2
    mask = torch.zeros(k, dtype=torch.bool)
    mask[list(dead)] = True
    cluster_size[mask] = 0.1
    embed_sum = codebook * cluster_size[:, None]
    z = torch.randn(n, 3, generator=gen) + 10
    return codebook, cluster_size, embed_sum, mask, z


def test_reset_dead_codes_restarts_on_distinct_rows_with_fresh_statistics(gen):
    codebook, cluster_size, embed_sum, dead, z = case = reset_case(gen)
    before = [t.clone() for t in case]
    new_cb, new_cs, new_es = q.reset_dead_codes(*case, generator=gen)
    for a, b in zip(before, case):
        assert torch.equal(a, b)
    assert torch.equal(new_cb[~dead], codebook[~dead])
    assert torch.equal(new_cs[~dead], cluster_size[~dead])
    assert torch.equal(new_es[~dead], embed_sum[~dead])
    rows = rows_of(new_cb[dead], z)
    assert (rows >= 0).all() and len(set(rows.tolist())) == int(dead.sum())
    assert torch.equal(new_cs[dead], torch.ones(4)) and torch.equal(new_es[dead], new_cb[dead])


def test_reset_dead_codes_with_more_dead_codes_than_rows(gen):
    case = reset_case(gen, k=10, n=3, dead=(0, 2, 3, 5, 6, 8))
    new_cb, _, _ = q.reset_dead_codes(*case, generator=gen)
    moved = (new_cb != case[0]).any(1)
    assert int(moved.sum()) == 3 and (moved <= case[3]).all()
    assert sorted(rows_of(new_cb[moved], case[4]).tolist()) == [0, 1, 2]


def test_reset_dead_codes_is_random_and_reproducible(gen):
    case = reset_case(gen, k=12, n=40, dead=(0, 5, 7))
    picks = [q.reset_dead_codes(*case, generator=torch.Generator().manual_seed(s))[0] for s in (0, 0, 1)]
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


def test_reset_dead_codes_without_dead_codes_copies(gen):
    codebook, cluster_size, embed_sum, _, z = reset_case(gen)
    out = q.reset_dead_codes(codebook, cluster_size, embed_sum, torch.zeros(10, dtype=torch.bool), z)
    assert all(torch.equal(a, b) and a is not b for a, b in zip(out, (codebook, cluster_size, embed_sum)))


def test_reset_dead_codes_rejects_bad_input(gen):
    codebook, cluster_size, embed_sum, dead, z = reset_case(gen)
    with pytest.raises(ValueError, match=r"dead must be a torch.bool tensor \[K\] with K=10"):
        q.reset_dead_codes(codebook, cluster_size, embed_sum, dead.float(), z)
    with pytest.raises(ValueError, match=r"must agree"):
        q.reset_dead_codes(codebook, cluster_size[:5], embed_sum[:5], dead, z)
    with pytest.raises(ValueError, match=r"must share D"):
        q.reset_dead_codes(codebook, cluster_size, embed_sum, dead, z[:, :2])


# ---------------------------------------------------------------- entropy regulariser

def brute_entropy_loss(d, tau):
    p = torch.softmax(-d.double() / tau, dim=1)
    h = lambda x: -(x * torch.log(x.clamp_min(1e-300))).sum(-1)    # noqa: E731
    return h(p).mean() - h(p.mean(0))


def test_codebook_entropy_loss_values(gen):
    assert abs(q.codebook_entropy_loss(torch.zeros(6, 4)).item()) < 1e-6
    spread = 1e4 * (1 - torch.eye(5))
    assert abs(q.codebook_entropy_loss(spread).item() + math.log(5)) < 1e-5
    d = torch.rand(30, 7, generator=gen) * 4
    for tau in (0.3, 1.0, 5.0):
        got = q.codebook_entropy_loss(d, tau)
        assert abs(got.item() - brute_entropy_loss(d, tau).item()) < 1e-5
        assert -math.log(7) - 1e-6 <= got.item() <= math.log(7) + 1e-6


def test_codebook_entropy_loss_gradient_is_finite_and_right(gen):
    d = (torch.rand(8, 5, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: q.codebook_entropy_loss(x, 0.7), (d,))
    far = torch.cat([torch.zeros(4, 1), torch.full((4, 3), 1e4)], 1).requires_grad_()
    q.codebook_entropy_loss(far).backward()
    assert torch.isfinite(far.grad).all()


def test_codebook_entropy_loss_under_autocast_and_validation(gen):
    d = torch.rand(6, 4, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q.codebook_entropy_loss(d.bfloat16())
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"distances must be a non-empty tensor \[N, K\]"):
        q.codebook_entropy_loss(torch.zeros(3))
    with pytest.raises(ValueError, match=r"tau must be > 0"):
        q.codebook_entropy_loss(d, 0.0)


# ---------------------------------------------------------------- the EMA layer

def test_ema_quantizer_buffers_and_no_parameters():
    vq = q.EMAVectorQuantizer(16, 4)
    assert list(vq.parameters()) == []
    assert {"codebook", "cluster_size", "embed_sum", "initialized"} <= set(vq.state_dict())
    assert torch.equal(vq.cluster_size, torch.ones(16)) and torch.equal(vq.embed_sum, vq.codebook)
    assert "dead_threshold=None" in repr(vq)


def test_ema_quantizer_updates_in_training_mode_only(gen):
    vq = q.EMAVectorQuantizer(8, 3, decay=0.9, eps=1e-3)
    z_e = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()
    z_q, loss, info = vq(z_e)
    assert all(torch.equal(state[k], v) for k, v in vq.state_dict().items())
    assert info["restarted"].item() == 0
    vq.train()
    z_q, loss, info = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    expected = q.ema_update(state["cluster_size"], state["embed_sum"], flat, info["indices"].flatten(), 0.9, 1e-3)
    for got, want in zip((vq.cluster_size, vq.embed_sum, vq.codebook), expected):
        torch.testing.assert_close(got, want)
    # z_q was quantized with the codebook as it was before the update
    torch.testing.assert_close(z_q, state["codebook"][info["indices"]].permute(0, 3, 1, 2))


def test_ema_quantizer_loss_and_gradients(gen):
    vq = q.EMAVectorQuantizer(6, 3, beta=0.4)
    z_e = torch.randn(2, 3, 3, 3, generator=gen, requires_grad=True)
    z_q, loss, info = vq(z_e)
    torch.testing.assert_close(loss, 0.4 * F.mse_loss(z_e, z_q))
    torch.testing.assert_close(info["commitment_loss"], F.mse_loss(z_e, z_q).detach())
    g = torch.randn(z_q.shape, generator=gen)
    grad, = torch.autograd.grad((z_q * g).sum(), z_e)
    torch.testing.assert_close(grad, g)
    assert not vq.codebook.requires_grad and vq.codebook.grad_fn is None
    assert info["usage"].sum() == 18 and 1 <= info["perplexity"] <= 6


def test_ema_quantizer_restarts_dead_codes(gen):
    vq = q.EMAVectorQuantizer(8, 3, dead_threshold=0.5)
    with torch.no_grad():
        vq.codebook[4:] += 100.0
        vq.embed_sum.copy_(vq.codebook)
        vq.cluster_size[4:] = 0.1
    z_e = torch.randn(2, 3, 3, 3, generator=gen)
    _, _, info = vq.train()(z_e)
    assert info["restarted"].item() == 4
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    rows = rows_of(vq.codebook[4:], flat)
    assert (rows >= 0).all() and len(set(rows.tolist())) == 4
    assert torch.equal(vq.cluster_size[4:], torch.ones(4))


def test_ema_quantizer_restarts_revive_a_badly_initialised_codebook(gen):
    """Codes far from the data die under EMA alone and come back with restarts."""
    used = {}
    for threshold in (None, 1.0):
        torch.manual_seed(0)
        vq = q.EMAVectorQuantizer(32, 2, decay=0.9, dead_threshold=threshold)
        vq.init_codebook(torch.randn(32, 2) * 0.1)
        for _ in range(60):
            vq(torch.randn(4, 2, 8, 8, generator=gen) + 5.0)
        _, _, info = vq.eval()(torch.randn(16, 2, 8, 8, generator=gen) + 5.0)
        used[threshold] = int((info["usage"] > 0).sum())
    assert used[None] < 8 and used[1.0] >= 30, used


def test_ema_quantizer_kmeans_init_runs_once_and_survives_a_checkpoint(gen):
    vq = q.EMAVectorQuantizer(16, 2, kmeans_init=True)
    assert not bool(vq.initialized)
    z_e = torch.randn(4, 2, 8, 8, generator=gen) * 0.1 + 3.0
    vq.eval()(z_e)
    assert not bool(vq.initialized), "eval mode must not fit the codebook"
    vq.train()(z_e)
    assert bool(vq.initialized)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.cdist(vq.codebook, flat).min(1).values.max() < 0.5, "codes start on the data"
    saved = {k: v.clone() for k, v in vq.state_dict().items()}
    clone = q.EMAVectorQuantizer(16, 2, kmeans_init=True)
    clone.load_state_dict(saved)
    before = clone.codebook.clone()
    clone.train()(torch.randn(4, 2, 8, 8, generator=gen) - 10.0)
    moved = torch.cdist(clone.codebook, before).diagonal() > 1e-3
    assert int(moved.sum()) <= 1, "a restored model is not re-fitted (only the code nearest the batch moves)"


def test_ema_quantizer_in_a_vqvae_trains_and_decodes(gen):
    torch.manual_seed(0)
    cfg = dvl.get_preset("smoke").replace(num_codes=16, code_dim=8, hidden=16, res_hidden=4)
    model = from_preset(cfg, q.EMAVectorQuantizer(16, 8, dead_threshold=1.0))
    x = torch.rand(8, 3, 16, 16, generator=gen)
    history = dvl.train(model, [x], vqvae_step, steps=3, lr=1e-3, progress=False, device="cpu")
    assert len(history["loss"]) == 3 and torch.isfinite(torch.tensor(history["loss"])).all()
    model.eval()
    indices = model.encode(x)
    torch.testing.assert_close(model.decode_indices(indices), model(x)[0])


def test_ema_quantizer_under_autocast(gen):
    vq = q.EMAVectorQuantizer(8, 4)
    z_e = torch.randn(2, 4, 3, 3, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, loss, info = vq(z_e.bfloat16())
    assert z_q.dtype == torch.float32 and loss.dtype == torch.float32
    assert info["indices"].dtype == torch.long


@pytest.mark.parametrize("kwargs, message", [
    ({"num_codes": 0, "code_dim": 2}, r"num_codes must be a positive integer, got 0"),
    ({"num_codes": 4, "code_dim": 2.5}, r"code_dim must be a positive integer, got 2.5"),
    ({"num_codes": 4, "code_dim": 2, "decay": 2.0}, r"decay must be in \[0.0, 1.0\], got 2.0"),
    ({"num_codes": 4, "code_dim": 2, "dead_threshold": -1}, r"dead_threshold must be >= 0.0, got -1"),
])
def test_ema_quantizer_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q.EMAVectorQuantizer(**kwargs)


def test_ema_quantizer_rejects_bad_latents():
    vq = q.EMAVectorQuantizer(4, 3)
    with pytest.raises(ValueError, match=r"z_e \[B, D, H, W\] has D=2 channels"):
        vq(torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"codebook must be a tensor \[K, D\] = \(4, 3\)"):
        vq.init_codebook(torch.zeros(3, 3))
