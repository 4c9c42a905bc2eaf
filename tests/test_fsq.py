"""The reference FSQ and LFQ of dvl_helpers.fsq: hand-computed values, bijections, the
entropy against brute force, the modules as VQ-VAE bottlenecks, vector-quantize-pytorch parity."""
import itertools
import math

import pytest
import torch

from dvl_helpers import fsq as R
from dvl_helpers.models import VQVAE

LEVEL_LISTS = [[5, 5, 5], [8, 6, 4], [8, 5, 5, 5], [7, 4, 3, 6], [2, 3], [4, 4]]


def _grid(levels):
    """Every code of the implicit codebook, in index order (first dimension fastest)."""
    axes = [torch.arange(-(n // 2), n - n // 2, dtype=torch.float64) / (n // 2) for n in levels]
    mesh = torch.meshgrid(*reversed(axes), indexing="ij")           # last dimension slowest
    return torch.stack([m.reshape(-1) for m in reversed(mesh)], dim=1)


def test_bound_matches_the_formula_by_hand():
    z = torch.tensor([[0.3, -0.7, 1.2]], dtype=torch.float64)
    levels = [5, 4, 2]
    out = R.fsq_bound(z, levels)
    expected = []
    for v, n in zip(z[0].tolist(), levels):
        h = (n - 1) * 1.001 / 2
        off = 0.5 if n % 2 == 0 else 0.0
        expected.append(math.tanh(v + math.atanh(off / h)) * h - off)
    assert out.dtype == torch.float64
    assert torch.allclose(out[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert R.fsq_bound(torch.zeros(1, 3), levels).abs().max() < 1e-6          # 0 stays at 0


@pytest.mark.parametrize("level", range(2, 12))
def test_rounding_gives_exactly_l_values(level):
    z = torch.linspace(-15, 15, 20001)[:, None]
    q = torch.round(R.fsq_bound(z, [level]))
    expected = torch.arange(-(level // 2), level - level // 2, dtype=q.dtype)
    assert torch.equal(torch.unique(q), expected)
    codes = torch.unique(R.fsq_quantize(z, [level]))
    assert torch.allclose(codes, expected / (level // 2))
    assert codes.min() == -1 and codes.max() <= 1


def test_quantize_values_named_in_the_notebook():
    z = torch.linspace(-6, 6, 1001)[:, None].repeat(1, 2)
    codes = R.fsq_quantize(z, [5, 4])
    assert torch.unique(codes[:, 0]).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert torch.unique(codes[:, 1]).tolist() == [-1.0, -0.5, 0.0, 0.5]


def test_round_ste_and_quantize_pass_the_gradient_straight_through():
    z = torch.tensor([0.2, 1.7, -2.5, 3.49], requires_grad=True)
    out = R.round_ste(z)
    assert out.tolist() == [0.0, 2.0, -2.0, 3.0]
    g = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (out * g).sum().backward()
    assert torch.equal(z.grad, g)
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    R.fsq_quantize(z, [5, 4, 3]).sum().backward()
    bound = torch.func.grad(lambda x: R.fsq_bound(x, [5, 4, 3]).sum())(z.detach())
    assert torch.allclose(z.grad, bound / torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("levels", LEVEL_LISTS, ids=str)
def test_index_maps_are_a_bijection_over_the_whole_codebook(levels):
    k = math.prod(levels)
    grid = _grid(levels).float()
    idx = torch.arange(k)
    assert torch.equal(R.fsq_indices_to_codes(idx, levels), grid)
    assert torch.equal(R.fsq_codes_to_indices(grid, levels), idx)
    assert torch.equal(R.fsq_codes_to_indices(grid.bfloat16(), levels), idx)   # exact in bfloat16
    assert torch.equal(R.fsq_codes_to_indices(grid.double(), levels), idx)
    assert R.fsq_indices_to_codes(idx, levels).dtype == torch.float32


def test_first_dimension_is_least_significant():
    levels = [4, 3, 5]
    assert R.fsq_basis(levels).tolist() == [1, 4, 12]
    codes = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -1.0, -1.0], [-1.0, 0.0, -1.0],
                          [0.5, 1.0, 1.0]])
    assert R.fsq_codes_to_indices(codes, levels).tolist() == [0, 1, 4, 59]


@pytest.mark.parametrize("levels", [[5, 5, 5], [8, 6, 4], [8, 5, 5, 5], [7, 4, 3, 6], [4, 4]],
                         ids=str)
def test_fsq_agrees_with_vector_quantize_pytorch(levels):
    from vector_quantize_pytorch import FSQ as TheirFSQ

    theirs = TheirFSQ(levels)
    z = torch.randn(2000, len(levels), generator=torch.Generator().manual_seed(1)) * 2
    codes = R.fsq_quantize(z, levels)
    assert torch.equal(codes, theirs.bound(z))
    assert torch.equal(R.fsq_codes_to_indices(codes, levels), theirs.codes_to_indices(codes).long())
    idx = torch.arange(math.prod(levels))
    assert torch.allclose(R.fsq_indices_to_codes(idx, levels), theirs.indices_to_codes(idx))


def test_lfq_quantize_signs_with_zero_to_minus_one_and_straight_through():
    z = torch.tensor([[0.3, 0.0, -0.2, -0.0]], requires_grad=True)
    out = R.lfq_quantize(z)
    assert out.tolist() == [[1.0, -1.0, -1.0, -1.0]]
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (out * g).sum().backward()
    assert torch.equal(z.grad, g)


def test_lfq_index_maps():
    codes = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    assert R.lfq_codes_to_indices(codes).tolist() == [4, 1, 7]             # first bit most significant
    for d in (1, 3, 6):
        idx = torch.arange(2 ** d)
        codes = R.lfq_indices_to_codes(idx, d)
        assert codes.shape == (2 ** d, d) and set(codes.unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(R.lfq_codes_to_indices(codes), idx)
        assert torch.equal(R.lfq_codes_to_indices(codes.bfloat16()), idx)


def test_lfq_agrees_with_vector_quantize_pytorch():
    from vector_quantize_pytorch import LFQ as TheirLFQ

    z = torch.randn(1, 300, 6, generator=torch.Generator().manual_seed(3))
    _, indices, _ = TheirLFQ(dim=6, codebook_size=64)(z)
    assert torch.equal(R.lfq_codes_to_indices(R.lfq_quantize(z)), indices)


def _brute_entropy(z, tau, gamma):
    d = z.shape[1]
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=z.dtype)
    p = torch.softmax(-((z[:, None, :] - codes[None]) ** 2).sum(-1) / tau, dim=1)

    def entropy(p):
        return -(p * p.clamp_min(1e-300).log()).sum(-1)
    return entropy(p).mean() - gamma * entropy(p.mean(0))


@pytest.mark.parametrize("d,tau,gamma", [(1, 0.5, 1.0), (2, 0.3, 0.5), (3, 1.0, 1.0),
                                         (5, 0.2, 2.0), (8, 0.7, 1.0)])
def test_entropy_loss_equals_brute_force_value_and_gradient(d, tau, gamma):
    gen = torch.Generator().manual_seed(d)
    z = (torch.randn(40, d, generator=gen, dtype=torch.float64) * 0.4).requires_grad_()
    ours = R.lfq_entropy_loss(z, tau, gamma)
    ref = _brute_entropy(z, tau, gamma)
    assert torch.allclose(ours, ref, atol=1e-12)
    g1, = torch.autograd.grad(ours, z)
    g2, = torch.autograd.grad(ref, z)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_entropy_loss_limits_and_stability():
    d = 4
    codes = R.lfq_indices_to_codes(torch.arange(2 ** d), d)
    # confident and uniform over all codes: the minimum -d log 2
    loss = R.lfq_entropy_loss(codes * 3, tau=0.01)
    assert abs(loss.item() + d * math.log(2)) < 1e-5
    # every vector on one code: per-sample 0, codebook entropy 0
    assert abs(R.lfq_entropy_loss(codes[:1].repeat(8, 1) * 3).item()) < 1e-6
    z = torch.randn(64, 10, requires_grad=True) * 50
    loss = R.lfq_entropy_loss(z, tau=0.01)
    (g,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_entropy_loss_memory_is_far_below_n_times_codebook():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.largest = max(Largest.largest, t.numel())
            return out

    z = torch.randn(4096, 12, requires_grad=True)
    with Largest():
        R.lfq_entropy_loss(z).backward()
    assert Largest.largest <= 4096 * 64                                  # N * 2^(d/2), not N * 2^d


@pytest.mark.parametrize("bad,match", [
    (lambda: R.fsq_bound(torch.zeros(3, 2), [5, 5, 5]), "last dimension"),
    (lambda: R.fsq_bound(torch.zeros(3, 1), [1]), "ints >= 2"),
    (lambda: R.fsq_quantize(torch.zeros(3, 2, dtype=torch.long), [5, 5]), "floating-point"),
    (lambda: R.fsq_codes_to_indices(torch.zeros(3, 2), [5, 2.5]), "ints >= 2"),
    (lambda: R.fsq_indices_to_codes(torch.zeros(3), [5, 5]), "integer tensor"),
    (lambda: R.lfq_indices_to_codes(torch.zeros(3, dtype=torch.long), 0), "dim must be"),
    (lambda: R.lfq_entropy_loss(torch.zeros(2, 3, 4)), r"\[N, d\]"),
    (lambda: R.lfq_entropy_loss(torch.zeros(2, 3), tau=0), "tau"),
    (lambda: R.FSQ([5, 5])(torch.zeros(2, 3, 4, 4)), r"\[B, 2, \.\.\.\]"),
    (lambda: R.LFQ(0), "bits"),
])
def test_errors_name_what_was_expected(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def _check_module_output(module, z_e, k):
    z_q, loss, info = module(z_e)
    assert z_q.shape == z_e.shape and loss.dim() == 0
    b, _, h, w = z_e.shape
    assert info["indices"].shape == (b, h, w) and info["indices"].dtype == torch.long
    assert 0 <= info["indices"].min() and info["indices"].max() < k
    counts = torch.bincount(info["indices"].flatten(), minlength=k).float()
    assert torch.equal(info["usage"], counts)
    p = counts / counts.sum()
    assert torch.isclose(info["perplexity"], torch.exp(-torch.special.xlogy(p, p).sum()))
    return z_q, loss, info


def test_fsq_module_without_projection():
    fsq = R.FSQ([8, 5, 5, 5])
    assert fsq.num_codes == 1000 and list(fsq.parameters()) == []
    z_e = torch.randn(2, 4, 3, 5, requires_grad=True)
    z_q, loss, info = _check_module_output(fsq, z_e, 1000)
    codes = R.fsq_quantize(z_e.detach().movedim(1, -1), [8, 5, 5, 5])
    assert torch.equal(z_q.movedim(1, -1), codes) and loss.item() == 0.0
    assert torch.equal(info["indices"], R.fsq_codes_to_indices(codes, [8, 5, 5, 5]))
    assert torch.equal(fsq.lookup(info["indices"]), z_q)
    assert torch.equal(fsq.implicit_codebook, R.fsq_indices_to_codes(torch.arange(1000), [8, 5, 5, 5]))
    z_q.sum().backward()
    assert z_e.grad.abs().sum() > 0


def test_lfq_module_loss_and_projection():
    lfq = R.LFQ(6, entropy_weight=0.1, commitment_weight=0.25)
    z_e = torch.randn(2, 6, 4, 4, requires_grad=True)
    z_q, loss, info = _check_module_output(lfq, z_e, 64)
    z = z_e.detach().movedim(1, -1)
    codes = torch.where(z > 0, 1.0, -1.0)
    assert torch.equal(z_q.detach().movedim(1, -1), codes)
    expected = 0.1 * R.lfq_entropy_loss(z.reshape(-1, 6)) + 0.25 * ((z - codes) ** 2).mean()
    assert torch.isclose(loss, expected)
    assert torch.equal(lfq.lookup(info["indices"]), z_q.detach())
    projected = R.LFQ(6, dim=16)
    _check_module_output(projected, torch.randn(2, 16, 4, 4), 64)


def test_modules_are_drop_in_vqvae_bottlenecks():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    for quantizer, k in ((R.FSQ([8, 5, 5, 5], dim=16), 1000), (R.FSQ([5, 3]), 15),
                         (R.LFQ(8, dim=16), 256)):
        model = VQVAE(quantizer, hidden=16, res_hidden=4, num_res_blocks=1,
                      code_dim=quantizer.dim)
        assert model.num_codes == k
        x_rec, loss, info = model(x)
        assert x_rec.shape == x.shape and info["indices"].shape == (2, 4, 4)
        (x_rec.square().mean() + loss).backward()
        model.eval()
        assert torch.allclose(model.decode_indices(model.encode(x)), model(x)[0], atol=1e-5)


def test_fsq_module_under_bfloat16_autocast_keeps_float32_codes():
    fsq = R.FSQ([7, 5, 5, 5, 5], dim=8)
    z = torch.randn(4, 8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, info = fsq(z)
    assert info["codes"].dtype == torch.float32
    assert torch.equal(info["indices"], fsq.codes_to_indices(info["codes"]))


@pytest.mark.parametrize("levels", LEVEL_LISTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fsq_module_fast_path_equals_the_functions_values_and_gradients(levels, dtype):
    """FSQ.forward fuses the rounding and reads indices from digits: same numbers as the functions."""
    torch.manual_seed(1)
    d = len(levels)
    z_e = (3 * torch.randn(3, d, 5, 4, dtype=dtype)).requires_grad_(True)
    z_q, _, info = R.FSQ(levels)(z_e)
    z_ref = z_e.detach().clone().requires_grad_(True)
    codes = R.fsq_quantize(z_ref.movedim(1, -1), levels)
    assert z_q.dtype == dtype and torch.equal(z_q.movedim(1, -1), codes)
    assert torch.equal(info["indices"], R.fsq_codes_to_indices(codes, levels))
    weights = torch.randn_like(z_q)
    (z_q * weights).sum().backward()
    (codes * weights.movedim(1, -1)).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-12       # constants rounded to float32 once vs per call
    assert torch.allclose(z_e.grad, z_ref.grad, rtol=tol, atol=tol * z_ref.grad.abs().max())


def test_fsq_module_indices_stay_exact_beyond_float32_integers():
    levels = [8] * 9                                          # 2^27 codes: above float32's 2^24
    fsq = R.FSQ(levels)
    codes = R.fsq_indices_to_codes(torch.tensor([0, 2 ** 27 - 1, 2 ** 24 + 1, 123456789]), levels)
    z = torch.atanh((codes * 4 + 0.5) / (3.5 * 1.001)) - torch.atanh(torch.tensor(0.5 / 3.5035))
    _, _, info = fsq(z.T.unsqueeze(0))
    assert info["indices"].tolist() == [[0, 2 ** 27 - 1, 2 ** 24 + 1, 123456789]]


def test_standardized_fsq_visits_every_level_of_small_latents():
    # a fresh encoder's outputs are of order 0.01: plain FSQ sends them to one level per channel
    torch.manual_seed(0)
    levels = [8, 5, 5, 5]
    z_e = 0.01 * torch.randn(16, 4, 8, 8) + 0.1
    plain = R.FSQ(levels)(z_e)[2]["codes"]
    std = R.Standardized(R.FSQ(levels), 4)
    codes = std(z_e)[2]["codes"]
    for i, n in enumerate(levels):
        assert plain[..., i].unique().numel() == 1
        assert codes[..., i].unique().numel() == n, f"channel {i}: every one of its {n} levels"
    assert std.num_codes == 1000


def test_standardized_normalises_each_channel_and_passes_gradients():
    std = R.Standardized(R.FSQ([5, 5, 5]), 3)
    z_e = (torch.randn(8, 3, 4, 4) * torch.tensor([0.1, 1.0, 50.0]).view(1, 3, 1, 1)
           + torch.tensor([3.0, -2.0, 0.5]).view(1, 3, 1, 1)).requires_grad_()
    seen = {}
    std.quantizer.register_forward_hook(lambda m, args, out: seen.update(z=args[0]))
    z_q, loss, info = std(z_e)
    assert z_q.shape == z_e.shape and info["indices"].shape == (8, 4, 4)
    z = seen["z"].detach()
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=5e-3, rtol=0)  # BatchNorm eps 1e-5
    z_q.sum().backward()
    assert z_e.grad is not None and z_e.grad.abs().sum() > 0
    assert list(std.parameters()) == [], "no scale and shift: nothing to learn"


def test_standardized_eval_uses_running_statistics_and_keeps_lookup():
    std = R.Standardized(R.FSQ([8, 5, 5, 5]), 4)
    for _ in range(50):
        std(torch.randn(32, 4, 4, 4) * 3 + 1)
    std.eval()
    z_e = torch.randn(6, 4, 4, 4) * 3 + 1
    alone = torch.cat([std(z_e[i:i + 1])[0] for i in range(6)])
    torch.testing.assert_close(std(z_e)[0], alone)  # one image's codes do not depend on the batch
    indices = std(z_e)[2]["indices"]
    torch.testing.assert_close(std.lookup(indices), std(z_e)[0])
    flat = R.Standardized(R.LFQ(6), 6).eval()
    assert flat(torch.randn(10, 6))[0].shape == (10, 6), "[N, D] vectors too"


def test_standardized_scale_sets_the_standard_deviation():
    std = R.Standardized(R.FSQ([5, 5, 5]), 3, scale=1.5)
    seen = {}
    std.quantizer.register_forward_hook(lambda m, args, out: seen.update(z=args[0]))
    std(torch.randn(64, 3, 4, 4) * 0.2 + 4.0)
    torch.testing.assert_close(seen["z"].std(dim=(0, 2, 3), unbiased=False), torch.full((3,), 1.5),
                               atol=5e-3, rtol=0)
    assert "scale=1.5" in repr(std)


def test_standardized_rejects_the_wrong_channels_and_scale():
    with pytest.raises(ValueError, match=r"\[B, 4, \.\.\.\].*\(2, 3, 8, 8\)"):
        R.Standardized(R.FSQ([8, 5, 5, 5]), 4)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="scale must be > 0, got 0"):
        R.Standardized(R.FSQ([8, 5, 5, 5]), 4, scale=0)
