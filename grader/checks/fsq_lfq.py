"""Hidden tests of ``06_fsq_lfq``: codebook-free quantization (FSQ and LFQ).

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_fsq_bound(fn)``             ``tanh(z + shift) * h - offset``; rounding yields
                                      exactly ``L`` values; ``z = 0`` stays at 0
- ``check_round_ste(fn)``             round forward, identity gradient
- ``check_fsq_quantize(fn)``          codes ``round(bound) / (L // 2)``, straight-through
- ``check_fsq_codes_to_indices(fn)``  mixed radix, first dimension least significant, a
                                      bijection over the whole grid, exact in bfloat16
- ``check_fsq_indices_to_codes(fn)``  its inverse
- ``check_lfq_quantize(fn)``          ``+1`` where ``z > 0``, ``-1`` elsewhere (0 included),
                                      straight-through
- ``check_lfq_codes_to_indices(fn)``  binary, first dimension most significant
- ``check_lfq_indices_to_codes(fn)``  its inverse
- ``check_lfq_entropy_loss(fn)``      ``mean_n H(p_n) - gamma H(mean_n p_n)`` against a
                                      brute-force softmax over all ``2^d`` codes; gradient;
                                      finite for confident (one-hot) probabilities
- ``check_FSQ(cls)`` / ``check_LFQ(cls)`` the layers: codes, indices, perplexity, loss and
                                      gradients

The references live here, in float64 (they never import ``dvl_helpers``).
Test points are kept away from FSQ's rounding boundaries, so a float32 answer
and the float64 reference round the same way. Answers may use the phase-1
reference pieces of ``dvl_helpers.quantizers`` (``perplexity``, ``code_usage``);
calling the reference of this phase, ``dvl_helpers.fsq``, is caught.
"""
from __future__ import annotations

import itertools
import math

import torch

from ._common import (
    _Module, assert_close, assert_own_implementation, assert_unchanged, call, channels_last,
    check, expect_scalar, expect_tensor, generator, grads, is_zero_grad, kind, max_excess,
    noncontiguous, randn, to_f64, to_long,
)

__all__ = [
    "check_fsq_bound", "check_round_ste", "check_fsq_quantize", "check_fsq_codes_to_indices",
    "check_fsq_indices_to_codes", "check_lfq_quantize", "check_lfq_codes_to_indices",
    "check_lfq_indices_to_codes", "check_lfq_entropy_loss", "check_FSQ", "check_LFQ",
]

#: This phase's reference implementation: answers must not call any of it.
_REFERENCE = ("dvl_helpers.fsq", None)

_isinstance = isinstance
_issubclass = issubclass
_type = type
_dict = dict
_f64 = torch.float64
_EPS = 1e-3

#: Level lists the checks use: odd, even, mixed, L = 2.
_LEVELS = ([5, 5, 5], [8, 6, 4], [8, 5, 5, 5], [7, 4, 3, 6], [2, 3], [4, 9])


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


# --------------------------------------------------------------------------
# References (float64, CPU)

def _levels_t(levels):
    return torch.tensor(levels, dtype=_f64)


def _ref_bound(z, levels, eps=_EPS, shift_fn=torch.atanh):
    z, lv = to_f64(z), _levels_t(levels)
    half = (lv - 1) * (1 + eps) / 2
    offset = torch.where(torch.remainder(lv, 2) == 0, 0.5, 0.0).to(_f64)
    return torch.tanh(z + shift_fn(offset / half)) * half - offset


def _ref_bound_grad(z, levels):
    z, lv = to_f64(z), _levels_t(levels)
    half = (lv - 1) * (1 + _EPS) / 2
    offset = torch.where(torch.remainder(lv, 2) == 0, 0.5, 0.0).to(_f64)
    t = torch.tanh(z + torch.atanh(offset / half))
    return half * (1 - t * t)


def _half_width(levels):
    return torch.tensor([n // 2 for n in levels], dtype=_f64)


def _ref_codes(z, levels):
    return torch.round(_ref_bound(z, levels)) / _half_width(levels)


def _basis(levels):
    return torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], dtype=torch.long)


def _grid(levels):
    """``[K, d]`` every FSQ code, in index order (first dimension fastest)."""
    axes = [[(q - n // 2) / (n // 2) for q in range(n)] for n in levels]
    rows = [tuple(reversed(c)) for c in itertools.product(*reversed(axes))]
    return torch.tensor(rows, dtype=_f64)


def _ref_fsq_indices(codes, levels):
    digits = torch.round(to_f64(codes) * _half_width(levels) + _half_width(levels)).long()
    return (digits * _basis(levels)).sum(-1)


def _lfq_codes(d):
    """``[2^d, d]`` every LFQ code, in index order (first dimension most significant)."""
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=_f64)


def _ref_entropy(z, tau, gamma):
    """Brute force over all ``2^d`` codes (float64, log-softmax: stable)."""
    codes = _lfq_codes(z.shape[1])
    logits = -(z[:, None, :] - codes[None]).pow(2).sum(-1) / tau
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    sample = -(p * log_p).sum(1).mean()
    avg = p.mean(0)
    codebook = -(avg * avg.clamp_min(1e-300).log()).sum()
    return sample - gamma * codebook


def _ref_entropy_grad(z, tau, gamma):
    z = to_f64(z).requires_grad_(True)
    value = _ref_entropy(z, tau, gamma)
    return value.detach(), torch.autograd.grad(value, z)[0]


def _per_bit_entropy(z, tau, gamma):
    """A wrong variant for hints: the codebook entropy as a sum of per-bit entropies."""
    z = to_f64(z)
    p1 = torch.sigmoid(4 * z / tau)
    h = -(p1 * p1.clamp_min(1e-300).log() + (1 - p1) * (1 - p1).clamp_min(1e-300).log())
    m = p1.mean(0)
    hm = -(m * m.clamp_min(1e-300).log() + (1 - m) * (1 - m).clamp_min(1e-300).log())
    return float(h.sum(1).mean() - gamma * hm.sum())


def _away_from_boundaries(z, levels):
    """``z`` nudged until every bounded value is at least 1e-3 from a rounding boundary."""
    z = to_f64(z).clone()
    for _ in range(20):
        b = _ref_bound(z, levels)
        near = (b - torch.floor(b) - 0.5).abs() < 1e-3
        if not bool(near.any()):
            break
        z = torch.where(near, z + 0.013, z)
    return z.float()


def _points(gen, shape, levels, scale=1.5):
    return _away_from_boundaries(randn(gen, *shape, scale=scale), levels)


def _values_per_dim(out, levels):
    """Sorted distinct rounded values in each dimension of ``out`` ``[N, d]``."""
    q = torch.round(to_f64(out))
    return [sorted(set(torch.unique(q[:, i]).tolist())) for i in range(len(levels))]


# --------------------------------------------------------------------------
# FSQ

@check
def check_fsq_bound(fsq_bound):
    """Check ``fsq_bound(z, levels)``."""
    _own(fsq_bound, "fsq_bound")
    gen = generator(6001)

    # z = 0 stays at level 0 in every dimension
    levels = [3, 4, 5, 8]
    zero = torch.zeros(3, len(levels))
    out = _call(fsq_bound, zero, levels, what=f"fsq_bound(zeros(3, 4), {levels})")
    expect_tensor(out, f"fsq_bound(z, {levels})", shape=(3, len(levels)), dims="[N, d]",
                  floating=True)
    if max_excess(out, torch.zeros(3, len(levels), dtype=_f64), 1e-3) > 0:
        raise AssertionError(
            f"fsq_bound(0, {levels}) must be 0 in every dimension: for even L the bound is "
            "moved down by the offset 1/2, so z must be shifted by atanh(offset / h) first")

    # rounding yields exactly the L levels -(L // 2) .. L - L // 2 - 1
    z = torch.linspace(-12.0, 12.0, 4001)[:, None]
    for n in range(2, 10):
        out = _call(fsq_bound, z, [n], what=f"fsq_bound(z, [{n}])")
        expect_tensor(out, f"fsq_bound(z, [{n}])", shape=(4001, 1), dims="[N, 1]", floating=True)
        got = _values_per_dim(out, [n])[0]
        want = [float(v) for v in range(-(n // 2), n - n // 2)]
        if got != want:
            parity = "even" if n % 2 == 0 else "odd"
            raise AssertionError(
                f"rounding fsq_bound(z, [{n}]) over z in [-12, 12] must yield exactly the {n} "
                f"integers {int(want[0])} .. {int(want[-1])}, got {len(got)} values "
                f"{[int(v) for v in got]} (L = {n} is {parity}: offset = "
                f"{'1/2' if n % 2 == 0 else '0'})")

    # values and gradient on random points, odd, even and mixed levels
    for i, levels in enumerate(_LEVELS):
        shape = [(17, len(levels)), (2, 5, len(levels)), (9, len(levels))][i % 3]
        z = _points(gen, shape, levels).requires_grad_()
        if i % 3 == 2:
            z = noncontiguous(z)
        if i == 4:
            z = z.detach().double().requires_grad_()
        z0 = z.detach().clone()
        label = f"fsq_bound(z, {levels}) for z of shape {tuple(shape)}"
        out = _call(fsq_bound, z, levels, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        ref = _ref_bound(z0, levels)
        tol = 2e-6 * max(levels)
        if max_excess(out, ref, tol) > 0:
            hint = ""
            if max_excess(out, _ref_bound(z0, levels, eps=-_EPS), tol) <= 0 or \
                    max_excess(out, _ref_bound(z0, levels, eps=-_EPS, shift_fn=torch.tan), tol) <= 0:
                hint = " (h = (L - 1)(1 + 1e-3) / 2: the factor is 1 + 1e-3)"
            elif max_excess(out, _ref_bound(z0, levels, eps=0.0), tol) <= 0:
                hint = " (h = (L - 1)(1 + 1e-3) / 2: the factor 1 + 1e-3 is missing)"
            elif max_excess(out, _ref_bound(z0, levels, shift_fn=torch.tan), tol) <= 0:
                hint = " (the shift is atanh(offset / h), so that tanh(shift) * h = offset)"
            raise AssertionError(f"{label} is wrong (largest error "
                                 f"{float((to_f64(out) - ref).abs().max()):.3g}){hint}")
        assert_unchanged(z0, z, "fsq_bound")
        g = randn(gen, *shape)
        gz, = grads((out * g).sum(), [z])
        if is_zero_grad(gz):
            raise AssertionError(f"{label} must be differentiable in z (tanh has a gradient)")
        assert_close(gz, g.to(_f64) * _ref_bound_grad(z0, levels), f"the gradient of {label}",
                     atol=1e-5, rtol=1e-4)


@check
def check_round_ste(round_ste):
    """Check ``round_ste(z)``."""
    _own(round_ste, "round_ste")
    gen = generator(6002)
    z = torch.tensor([0.2, 1.7, -2.6, 3.4, -0.3, 0.0])
    out = _call(round_ste, z, what="round_ste(z)")
    expect_tensor(out, "round_ste(z)", shape=(6,), floating=True)
    if max_excess(out, torch.tensor([0.0, 2.0, -3.0, 3.0, 0.0, 0.0]), 1e-6) > 0:
        raise AssertionError(
            f"round_ste(z) must round to the nearest integer: round_ste({z.tolist()}) = "
            f"[0, 2, -3, 3, 0, 0], got {[round(v, 3) for v in to_f64(out).tolist()]}")
    for shape, dtype in (((4, 5), torch.float32), ((2, 3, 4), torch.float64), ((7,), torch.float32)):
        base = randn(gen, *shape, scale=3.0, dtype=dtype)
        frac = base - torch.floor(base)
        base = torch.where((frac - 0.5).abs() < 1e-2, base + 0.1, base)   # no ties
        z = base.clone().requires_grad_()
        if len(shape) == 2:
            z = noncontiguous(z)
        label = f"round_ste(z) for z of shape {shape} ({str(dtype).replace('torch.', '')})"
        out = _call(round_ste, z, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        if out.dtype != dtype:
            raise AssertionError(f"{label} must keep z's dtype {dtype}, got {out.dtype}")
        assert_close(out, torch.round(to_f64(base)), label, atol=1e-6, rtol=0)
        assert_unchanged(base, z, "round_ste")
        g = randn(gen, *shape, dtype=dtype)
        gz, = grads((out * g).sum(), [z])
        if is_zero_grad(gz):
            raise AssertionError(
                f"{label} has no gradient: torch.round has zero gradient almost everywhere; "
                "the straight-through estimator passes the incoming gradient to z unchanged")
        assert_close(gz, g, f"the gradient of {label}", atol=1e-6, rtol=1e-6,
                     hint=" (straight-through: the incoming gradient, unchanged)")


@check
def check_fsq_quantize(fsq_quantize):
    """Check ``fsq_quantize(z, levels)``."""
    _own(fsq_quantize, "fsq_quantize")
    gen = generator(6003)
    z = torch.linspace(-8.0, 8.0, 2001)[:, None].repeat(1, 2)
    out = _call(fsq_quantize, z, [5, 4], what="fsq_quantize(z, [5, 4])")
    expect_tensor(out, "fsq_quantize(z, [5, 4])", shape=(2001, 2), dims="[N, d]", floating=True)
    q = to_f64(out)
    for i, (n, want) in enumerate(((5, [-1.0, -0.5, 0.0, 0.5, 1.0]), (4, [-1.0, -0.5, 0.0, 0.5]))):
        got = sorted(set(torch.unique(q[:, i]).tolist()))
        if len(got) != len(want) or any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            raise AssertionError(
                f"over z in [-8, 8], the codes of a dimension with L = {n} must be exactly {want} "
                f"(round the bound, then divide by L // 2 = {n // 2}), got "
                f"{[round(v, 4) for v in got][:12]}")

    for i, levels in enumerate(_LEVELS):
        shape = [(19, len(levels)), (3, 4, len(levels))][i % 2]
        z = _points(gen, shape, levels).requires_grad_()
        if i == 3:
            z = noncontiguous(z)
        z0 = z.detach().clone()
        label = f"fsq_quantize(z, {levels}) for z of shape {tuple(shape)}"
        out = _call(fsq_quantize, z, levels, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        assert_close(out, _ref_codes(z0, levels), label, atol=1e-6, rtol=0,
                     hint=" (codes are round(fsq_bound(z)) / (L // 2))")
        assert_unchanged(z0, z, "fsq_quantize")
        g = randn(gen, *shape)
        gz, = grads((out * g).sum(), [z])
        if is_zero_grad(gz):
            raise AssertionError(
                f"{label} passes no gradient to z: round with the straight-through estimator "
                "(round_ste), not torch.round")
        assert_close(gz, g.to(_f64) * _ref_bound_grad(z0, levels) / _half_width(levels),
                     f"the gradient of {label}", atol=1e-5, rtol=1e-4,
                     hint=" (the gradient of fsq_bound, passed straight through the rounding, "
                          "divided by L // 2)")


def _fsq_index_cases(gen):
    for i, levels in enumerate(_LEVELS):
        k = math.prod(levels)
        perm = torch.randperm(k, generator=gen)
        yield levels, perm, _grid(levels)[perm], i


@check
def check_fsq_codes_to_indices(fsq_codes_to_indices):
    """Check ``fsq_codes_to_indices(codes, levels)``."""
    _own(fsq_codes_to_indices, "fsq_codes_to_indices")
    gen = generator(6004)
    levels = [4, 3, 5]
    codes = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -1.0, -1.0], [-1.0, 0.0, -1.0]])
    out = _call(fsq_codes_to_indices, codes, levels,
                what=f"fsq_codes_to_indices(codes, {levels})")
    expect_tensor(out, "the indices", shape=(3,), dims="[N]", dtype=torch.long)
    got = to_long(out).tolist()
    if got != [0, 1, 4]:
        raise AssertionError(
            f"with levels {levels}, the codes {codes.tolist()} have digits [0, 0, 0], [1, 0, 0] "
            f"and [0, 1, 0] and indices [0, 1, 4] (index = sum q_i * prod_(j<i) L_j: the first "
            f"dimension is the least significant), got {got}")
    for levels, perm, grid, i in _fsq_index_cases(gen):
        k = math.prod(levels)
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            codes = grid.to(dtype)
            shape = (k,)
            if i % 2 and k % 2 == 0 and dtype != torch.float64:
                codes, shape = codes.reshape(2, k // 2, len(levels)), (2, k // 2)
            c0 = codes.clone()
            label = (f"fsq_codes_to_indices(codes, {levels}) on all {k} codes "
                     f"({str(dtype).replace('torch.', '')})")
            out = _call(fsq_codes_to_indices, codes, levels, what=label)
            expect_tensor(out, "the indices", shape=shape, dims="[...]", dtype=torch.long)
            assert_unchanged(c0, codes, "fsq_codes_to_indices")
            got = to_long(out).reshape(-1)
            if not bool((got == perm).all()):
                distinct = int(torch.unique(got).numel())
                if distinct == k and int(got.min()) == 0 and int(got.max()) == k - 1:
                    raise AssertionError(
                        f"{label} numbers the grid in the wrong order: digit q_i = code_i * "
                        "(L_i // 2) + L_i // 2, index = sum q_i * prod_(j<i) L_j (the first "
                        "dimension is the least significant)")
                raise AssertionError(
                    f"{label} must be a bijection onto 0 .. {k - 1}, got {distinct} distinct "
                    f"indices in [{int(got.min())}, {int(got.max())}]"
                    + (" (bfloat16 codes such as 1/3 are not exact: round the digits, do not "
                       "truncate them)" if dtype == torch.bfloat16 else ""))


@check
def check_fsq_indices_to_codes(fsq_indices_to_codes):
    """Check ``fsq_indices_to_codes(indices, levels)``."""
    _own(fsq_indices_to_codes, "fsq_indices_to_codes")
    gen = generator(6005)
    for levels, perm, grid, i in _fsq_index_cases(gen):
        k, d = math.prod(levels), len(levels)
        indices, shape = perm.clone(), (k, d)
        if i % 2 and k % 2 == 0:
            indices, shape = indices.reshape(k // 2, 2), (k // 2, 2, d)
        i0 = indices.clone()
        label = f"fsq_indices_to_codes(indices, {levels}) on all {k} indices"
        out = _call(fsq_indices_to_codes, indices, levels, what=label)
        expect_tensor(out, label, shape=shape, dims="[..., d]", floating=True)
        assert_unchanged(i0, indices, "fsq_indices_to_codes")
        if max_excess(out.reshape(k, d), grid, 1e-6) > 0:
            got = to_f64(out).reshape(k, d)
            if bool(torch.isfinite(got).all()) and \
                    int(_ref_fsq_indices(got, levels).unique().numel()) == k and \
                    float(got.abs().max()) <= 1 + 1e-6:
                raise AssertionError(
                    f"{label} reaches every code but in the wrong order: digit q_i = "
                    "(index // prod_(j<i) L_j) % L_i, the first dimension the least significant")
            raise AssertionError(f"{label} is wrong: code_i = (q_i - L_i // 2) / (L_i // 2) "
                                 "with digits q_i in 0 .. L_i - 1")


# --------------------------------------------------------------------------
# LFQ

@check
def check_lfq_quantize(lfq_quantize):
    """Check ``lfq_quantize(z)``."""
    _own(lfq_quantize, "lfq_quantize")
    gen = generator(6006)
    z = torch.tensor([[0.3, 0.0, -0.2, -0.0, 1e-8, -1e-8]])
    out = _call(lfq_quantize, z, what="lfq_quantize(z)")
    expect_tensor(out, "lfq_quantize(z)", shape=(1, 6), floating=True)
    want = torch.tensor([[1.0, -1.0, -1.0, -1.0, 1.0, -1.0]])
    if max_excess(out, want, 1e-6) > 0:
        got = to_f64(out)[0].tolist()
        hint = (" (z = 0 must map to -1: torch.sign(0) = 0 is not a code)"
                if abs(got[1]) < 0.5 and abs(got[2] + 1) < 0.5 else "")
        raise AssertionError(f"lfq_quantize({z.tolist()[0]}) must be {want.tolist()[0]}, got "
                             f"{[round(v, 3) for v in got]}{hint}")
    for shape, dtype in (((5, 4), torch.float32), ((2, 3, 6), torch.float64)):
        base = randn(gen, *shape, dtype=dtype)
        base[0, 0] = 0.0
        z = base.clone().requires_grad_()
        if len(shape) == 2:
            z = noncontiguous(z)
        label = f"lfq_quantize(z) for z of shape {shape}"
        out = _call(lfq_quantize, z, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        if out.dtype != dtype:
            raise AssertionError(f"{label} must keep z's dtype {dtype}, got {out.dtype}")
        ref = torch.where(to_f64(base) > 0, 1.0, -1.0).to(_f64)
        assert_close(out, ref, label, atol=1e-6, rtol=0,
                     hint=" (+1 where z > 0, -1 elsewhere)")
        assert_unchanged(base, z, "lfq_quantize")
        g = randn(gen, *shape, dtype=dtype)
        gz, = grads((out * g).sum(), [z])
        if is_zero_grad(gz):
            raise AssertionError(f"{label} passes no gradient to z: the sign has zero gradient; "
                                 "pass the incoming gradient straight through")
        assert_close(gz, g, f"the gradient of {label}", atol=1e-6, rtol=1e-6,
                     hint=" (straight-through: the incoming gradient, unchanged)")


@check
def check_lfq_codes_to_indices(lfq_codes_to_indices):
    """Check ``lfq_codes_to_indices(codes)``."""
    _own(lfq_codes_to_indices, "lfq_codes_to_indices")
    gen = generator(6007)
    codes = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    out = _call(lfq_codes_to_indices, codes, what="lfq_codes_to_indices(codes)")
    expect_tensor(out, "the indices", shape=(3,), dims="[N]", dtype=torch.long)
    got = to_long(out).tolist()
    if got != [4, 1, 6]:
        raise AssertionError(
            f"lfq_codes_to_indices({codes.tolist()}) must be [4, 1, 6] (bit i is [c_i > 0] "
            f"with weight 2^(d - 1 - i): the first dimension is the most significant), got {got}")
    for d, dtype in ((1, torch.float32), (4, torch.float32), (6, torch.bfloat16), (5, torch.float64)):
        k = 2 ** d
        perm = torch.randperm(k, generator=gen)
        codes = _lfq_codes(d)[perm].to(dtype)
        shape = (k,)
        if d == 4:
            codes, shape = codes.reshape(4, 4, d), (4, 4)
        c0 = codes.clone()
        label = f"lfq_codes_to_indices(codes) on all {k} codes of d = {d}"
        out = _call(lfq_codes_to_indices, codes, what=label)
        expect_tensor(out, "the indices", shape=shape, dims="[...]", dtype=torch.long)
        assert_unchanged(c0, codes, "lfq_codes_to_indices")
        if not bool((to_long(out).reshape(-1) == perm).all()):
            raise AssertionError(f"{label} is wrong: index = sum_i 2^(d - 1 - i) [c_i > 0]")


@check
def check_lfq_indices_to_codes(lfq_indices_to_codes):
    """Check ``lfq_indices_to_codes(indices, dim)``."""
    _own(lfq_indices_to_codes, "lfq_indices_to_codes")
    gen = generator(6008)
    out = _call(lfq_indices_to_codes, torch.tensor([4, 1, 6]), 3,
                what="lfq_indices_to_codes(tensor([4, 1, 6]), 3)")
    expect_tensor(out, "the codes", shape=(3, 3), dims="[N, dim]", floating=True)
    want = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    if max_excess(out, want, 1e-6) > 0:
        raise AssertionError(
            f"lfq_indices_to_codes([4, 1, 6], 3) must be {want.tolist()} (the first dimension "
            f"is the most significant bit; bits 0/1 become -1/+1), got "
            f"{[[round(v, 3) for v in r] for r in to_f64(out).tolist()]}")
    for d in (1, 5, 7):
        k = 2 ** d
        perm = torch.randperm(k, generator=gen)
        indices, shape = perm.clone(), (k, d)
        if d == 5:
            indices, shape = indices.reshape(8, 4), (8, 4, d)
        label = f"lfq_indices_to_codes(indices, {d}) on all {k} indices"
        out = _call(lfq_indices_to_codes, indices, d, what=label)
        expect_tensor(out, label, shape=shape, dims="[..., dim]", floating=True)
        assert_unchanged(perm.reshape(indices.shape), indices, "lfq_indices_to_codes")
        assert_close(out.reshape(k, d), _lfq_codes(d)[perm], label, atol=1e-6, rtol=0,
                     hint=" (bit i of the index, weight 2^(d - 1 - i), as -1 or +1)")


@check
def check_lfq_entropy_loss(lfq_entropy_loss):
    """Check ``lfq_entropy_loss(z, tau=0.01, gamma=1.0)``."""
    _own(lfq_entropy_loss, "lfq_entropy_loss")
    gen = generator(6009)
    cases = [  # N, d, scale, tau, gamma (None: the default)
        (16, 2, 0.6, 0.5, 0.5),
        (24, 3, 0.05, None, None),
        (30, 4, 0.5, 0.7, 1.0),
        (40, 5, 0.4, 0.3, 2.0),
        (12, 1, 0.3, 0.4, 1.0),
        (20, 6, 0.03, None, 0.8),
    ]
    for n, d, scale, tau, gamma in cases:
        z = randn(gen, n, d, scale=scale).requires_grad_()
        if d == 4:
            z = noncontiguous(z)
        z0 = z.detach().clone()
        kwargs = {}
        if tau is not None:
            kwargs["tau"] = tau
        if gamma is not None:
            kwargs["gamma"] = gamma
        args = "".join(f", {k}={v}" for k, v in kwargs.items())
        label = f"lfq_entropy_loss(z{args}) for z of shape {(n, d)}"
        out = _call(lfq_entropy_loss, z, what=label, **kwargs)
        _assert_not_nan(out, label)
        value = expect_scalar(out, label)
        t, g = 0.01 if tau is None else tau, 1.0 if gamma is None else gamma
        ref, ref_grad = _ref_entropy_grad(z0, t, g)
        ref = float(ref)
        if abs(value - ref) > 1e-4 * (1 + abs(ref)):
            hint = ""
            sample, codebook = [float(v) for v in _terms(z0, t)]
            if abs(value - (g * codebook - sample)) <= 1e-4 * (1 + abs(ref)):
                hint = (" (the signs are swapped: the per-vector entropy is minimised, the "
                        "entropy of the average is maximised)")
            elif abs(value - _per_bit_entropy(z0, t, g)) <= 1e-4 * (1 + abs(ref)):
                hint = (" (H(mean_n p_n) is the entropy of the average distribution over all "
                        "2^d codes, not a sum of per-bit entropies)")
            elif abs(value - (sample - codebook)) <= 1e-4 * (1 + abs(ref)) and g != 1.0:
                hint = " (gamma weighs the codebook entropy)"
            elif g != 1.0 and abs(value - ((1 - g) * sample)) <= 1e-4 * (1 + abs(ref)):
                hint = (" (the second term is the entropy of the average p, averaged over the "
                        "batch first, not the average of the entropies)")
            raise AssertionError(f"{label} is wrong (expected {ref:.5g}, got {value:.5g}){hint}")
        assert_unchanged(z0, z, "lfq_entropy_loss")
        gz, = grads(out, [z])
        if is_zero_grad(gz):
            raise AssertionError(f"{label} must be differentiable in z (it is a loss)")
        assert_close(gz, ref_grad, f"the gradient of {label}",
                     atol=2e-4 * float(ref_grad.abs().max()) + 1e-6, rtol=1e-3)

    # confident vectors (tau = 0.01, |z| ~ 1): p_n is one-hot to float32 precision
    z = randn(gen, 32, 4, scale=2.0).requires_grad_()
    label = "lfq_entropy_loss(z) for confident z (|z| ~ 1, tau = 0.01)"
    out = _call(lfq_entropy_loss, z, what=label)
    _assert_not_nan(out, label)
    value = expect_scalar(out, label)
    ref, ref_grad = _ref_entropy_grad(z.detach(), 0.01, 1.0)
    if abs(value - float(ref)) > 1e-4 * (1 + abs(float(ref))):
        raise AssertionError(f"{label} is wrong (expected {float(ref):.5g}, got {value:.5g})")
    gz, = grads(out, [z])
    if gz is not None and not bool(torch.isfinite(to_f64(gz)).all()):
        raise AssertionError(
            f"the gradient of {label} contains NaN: 0 * log 0 has a NaN gradient; use "
            "log_softmax for log p, or clamp p inside the log")


def _assert_not_nan(out, label):
    if _type(out) is torch.Tensor and out.dim() == 0 and not bool(torch.isfinite(to_f64(out))):
        raise AssertionError(
            f"{label} is NaN: probabilities that underflow to 0 give 0 * log 0; use "
            "log_softmax for log p, or clamp p inside the log")


def _terms(z, tau):
    codes = _lfq_codes(z.shape[1])
    log_p = torch.log_softmax(-(z[:, None, :] - codes[None]).pow(2).sum(-1) / tau, dim=1)
    p = log_p.exp()
    avg = p.mean(0)
    return -(p * log_p).sum(1).mean(), -(avg * avg.clamp_min(1e-300).log()).sum()


# --------------------------------------------------------------------------
# Layers

def _expect_layer_class(cls, name):
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"{name} must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, name)


def _layer_forward(module, z_e, label, k):
    out = _call(module, z_e, what=label)
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{label} must return (z_q, loss, info), got {kind(out)}")
    z_q, loss, info = out
    b, d, h, w = z_e.shape
    expect_tensor(z_q, "z_q", shape=(b, d, h, w), dims="[B, d, H, W]", floating=True)
    if not _isinstance(info, _dict):
        raise AssertionError(f"info must be a dict, got {kind(info)}")
    for key in ("indices", "perplexity"):
        if key not in _dict.keys(info):
            raise AssertionError(f"info must have the key {key!r}")
    idx = _dict.__getitem__(info, "indices")
    expect_tensor(idx, "info['indices']", shape=(b, h, w), dims="[B, H, W]", dtype=torch.long)
    flat = to_long(idx).reshape(-1)
    counts = torch.bincount(flat.clamp(0, k - 1), minlength=k).to(_f64)
    p = counts / counts.sum()
    ref_ppl = float(torch.exp(-torch.special.xlogy(p, p).sum()))
    ppl = expect_scalar(_dict.__getitem__(info, "perplexity"), "info['perplexity']",
                        allow_number=True)
    if abs(ppl - ref_ppl) > 1e-4 * ref_ppl:
        raise AssertionError(f"info['perplexity'] is wrong (expected {ref_ppl:.4g} for these "
                             f"indices, got {ppl:.4g})")
    if "usage" in _dict.keys(info):
        usage = _dict.__getitem__(info, "usage")
        expect_tensor(usage, "info['usage']", shape=(k,), dims="[K]")
        if max_excess(usage, counts, 1e-6) > 0 or max_excess(counts, usage, 1e-6) > 0:
            raise AssertionError("info['usage'] must count how often each code was chosen")
    return z_q, loss, idx


def _to_last(t):
    return to_f64(t).permute(0, 2, 3, 1)


@check
def check_FSQ(FSQ):
    """Check the ``FSQ(levels)`` layer."""
    _expect_layer_class(FSQ, "FSQ")
    gen = generator(6010)
    for levels, (b, h, w), layout in (([8, 5, 5, 5], (2, 3, 4), None), ([7, 4, 3], (3, 2, 2), None),
                                      ([4, 4], (2, 4, 3), "channels_last"), ([2, 9, 6], (1, 5, 5), None)):
        d, k = len(levels), math.prod(levels)
        name = f"FSQ({levels})"
        module = _call(FSQ, list(levels), what=name)
        if not _isinstance(module, _Module):
            raise AssertionError(f"{name} must be an nn.Module, got {kind(module)}")
        if any(p.requires_grad for p in module.parameters()):
            raise AssertionError(f"{name} must have no trainable parameters: the codebook is "
                                 "the implicit grid, nothing is learned")
        num_codes = getattr(module, "num_codes", None)
        if _type(num_codes) is not int or num_codes != k:
            raise AssertionError(f"{name}.num_codes must be the int prod(levels) = {k}, "
                                 f"got {num_codes!r}")
        last = _points(gen, (b, h, w, d), levels)
        z_e = last.permute(0, 3, 1, 2).contiguous().requires_grad_()
        if layout:
            z_e = channels_last(z_e)
        z0 = z_e.detach().clone()
        label = f"{name}(z_e) for z_e of shape {(b, d, h, w)}"
        z_q, loss, idx = _layer_forward(module, z_e, label, k)
        codes = _ref_codes(last, levels)
        assert_close(_to_last(z_q), codes, f"z_q of {label}", atol=1e-6, rtol=0,
                     hint=" (z_q[b, :, h, w] = fsq_quantize(z_e[b, :, h, w]): quantize along "
                          "the channel dimension)")
        if not bool((to_long(idx).reshape(-1) == _ref_fsq_indices(codes, levels).reshape(-1)).all()):
            raise AssertionError(f"info['indices'] of {label} must be fsq_codes_to_indices of "
                                 "the codes, [B, H, W]")
        value = expect_scalar(loss, "loss", allow_number=True)
        if value != 0.0:
            raise AssertionError(f"the loss of {label} must be 0: FSQ has no codebook and no "
                                 f"commitment loss, got {value:.4g}")
        assert_unchanged(z0, z_e, name)
        g = randn(gen, b, d, h, w)
        gz, = grads((z_q * g).sum(), [z_e])
        if is_zero_grad(gz):
            raise AssertionError(f"z_q of {label} must pass gradient to z_e (straight-through "
                                 "rounding)")
        ref = g.to(_f64).permute(0, 2, 3, 1) * _ref_bound_grad(last, levels) / _half_width(levels)
        assert_close(gz, ref.permute(0, 3, 1, 2), f"the gradient of z_q of {label}",
                     atol=1e-5, rtol=1e-4)


@check
def check_LFQ(LFQ):
    """Check the ``LFQ(bits, entropy_weight=0.1, commitment_weight=0.25, tau=0.01, gamma=1.0)`` layer."""
    _expect_layer_class(LFQ, "LFQ")
    gen = generator(6011)
    cases = [  # bits, B, H, W, scale, kwargs, layout
        (4, 2, 3, 3, 0.05, {}, None),
        (5, 2, 2, 3, 0.5, {"entropy_weight": 0.3, "commitment_weight": 0.5, "tau": 0.5,
                           "gamma": 0.7}, None),
        (3, 3, 2, 2, 0.6, {"entropy_weight": 1.0, "commitment_weight": 0.0, "tau": 0.8,
                           "gamma": 1.5}, "channels_last"),
        (6, 1, 4, 4, 0.8, {"entropy_weight": 0.0, "commitment_weight": 2.0}, None),
    ]
    for bits, b, h, w, scale, kwargs, layout in cases:
        k = 2 ** bits
        args = "".join(f", {key}={v}" for key, v in kwargs.items())
        name = f"LFQ({bits}{args})"
        module = _call(LFQ, bits, what=name, **kwargs)
        if not _isinstance(module, _Module):
            raise AssertionError(f"{name} must be an nn.Module, got {kind(module)}")
        num_codes = getattr(module, "num_codes", None)
        if _type(num_codes) is not int or num_codes != k:
            raise AssertionError(f"{name}.num_codes must be the int 2 ** bits = {k}, "
                                 f"got {num_codes!r}")
        last = randn(gen, b, h, w, bits, scale=scale)
        last[0, 0, 0, 0] = 0.0
        z_e = last.permute(0, 3, 1, 2).contiguous().requires_grad_()
        if layout:
            z_e = channels_last(z_e)
        z0 = z_e.detach().clone()
        label = f"{name}(z_e) for z_e of shape {(b, bits, h, w)}"
        z_q, loss, idx = _layer_forward(module, z_e, label, k)
        codes = torch.where(to_f64(last) > 0, 1.0, -1.0).to(_f64)
        assert_close(_to_last(z_q), codes, f"z_q of {label}", atol=1e-6, rtol=0,
                     hint=" (z_q = lfq_quantize(z_e): +1 where z > 0, -1 elsewhere)")
        weights = torch.tensor([2 ** (bits - 1 - i) for i in range(bits)], dtype=torch.long)
        ref_idx = ((codes > 0).long() * weights).sum(-1).reshape(-1)
        if not bool((to_long(idx).reshape(-1) == ref_idx).all()):
            raise AssertionError(f"info['indices'] of {label} must be lfq_codes_to_indices of "
                                 "the codes, [B, H, W]")
        ew = kwargs.get("entropy_weight", 0.1)
        cw = kwargs.get("commitment_weight", 0.25)
        tau, gamma = kwargs.get("tau", 0.01), kwargs.get("gamma", 1.0)
        zl = to_f64(last).reshape(-1, bits).requires_grad_(True)
        ref = ew * _ref_entropy(zl, tau, gamma) + cw * (zl - codes.reshape(-1, bits)).pow(2).mean()
        ref_grad, = torch.autograd.grad(ref, zl)
        value = expect_scalar(loss, "loss")
        if abs(value - float(ref)) > 1e-4 * (1 + abs(float(ref))):
            raise AssertionError(
                f"the loss of {label} is wrong (expected {float(ref):.5g}, got {value:.5g}): "
                "entropy_weight * lfq_entropy_loss(z, tau, gamma) + commitment_weight * "
                "mean (z - sg(z_q))^2, with z the [B*H*W, bits] rows of z_e")
        assert_unchanged(z0, z_e, name)
        g = randn(gen, b, bits, h, w)
        gz, = grads((z_q * g).sum(), [z_e])
        if is_zero_grad(gz):
            raise AssertionError(f"z_q of {label} must pass the gradient straight through to z_e")
        assert_close(gz, g, f"the gradient of z_q of {label}", atol=1e-6, rtol=1e-5,
                     hint=" (straight-through: the incoming gradient, unchanged)")
        gz, = grads(loss, [z_e])
        if float(ref_grad.abs().max()) > 0:
            if is_zero_grad(gz):
                raise AssertionError(f"the loss of {label} must be differentiable in z_e")
            want = ref_grad.reshape(b, h, w, bits).permute(0, 3, 1, 2)
            assert_close(gz, want, f"the gradient of the loss of {label}", atol=1e-6, rtol=1e-3,
                         hint=" (the commitment term stops the gradient at z_q: sg(z_q))")
