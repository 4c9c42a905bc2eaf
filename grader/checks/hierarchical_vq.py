"""Hidden tests of ``04_hierarchical_vq``: residual, product and two-level VQ.

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_residual_quantize(fn)``  ``(z_q [N, D], indices [L, N], residual_norms [L])``:
  stage ``l`` picks the nearest code to the residual the earlier stages left,
  ``z_q`` is the sum of the picks (gradient to the codebooks only), the norms
  are the mean ``||r_l||`` after each stage; no ``[N, K, D]`` tensor
- ``check_product_quantize(fn)``   ``(z_q [N, D], indices [M, N])``: contiguous
  chunks, codebook ``m`` for chunk ``m``
- ``check_ResidualVQ(cls)``        the residual layer: straight-through, the loss
  ``sum_l codebook_l + beta * commitment_l`` and where its gradients go,
  ``num_stages``
- ``check_ProductVQ(cls)``         the product layer, likewise
- ``check_VQVAE2(cls)``            the two-level wiring: the check swaps the
  model's quantizers for its own and records what every block receives

The references live here, in float64 (they never import ``dvl_helpers``).
Nearest codes are checked stage by stage along the learner's own indices, so
float32 near-ties cannot fail a right answer. Every answer is also checked for
calling the course's reference implementation in ``dvl_helpers.hierarchical``
(the phase-1 and phase-2 pieces in ``dvl_helpers.quantizers`` are allowed).
"""
from __future__ import annotations

import torch

from ._common import (
    OpRecorder, _Module, _Parameter, assert_close, assert_own_implementation, assert_unchanged,
    call, check, expect_scalar, expect_tensor, generator, grads, is_zero_grad, kind, max_abs,
    max_excess, noncontiguous, randn, to_f64, to_long,
)

__all__ = [
    "check_residual_quantize", "check_product_quantize", "check_ResidualVQ", "check_ProductVQ",
    "check_VQVAE2",
]

_REFERENCE = ("dvl_helpers.hierarchical", None)

_isinstance = isinstance
_issubclass = issubclass
_type = type
_dict = dict
_f64 = torch.float64


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


# --------------------------------------------------------------------------
# References and inputs (float64)

def _sq_dist(z, codebook):
    z, codebook = to_f64(z), to_f64(codebook)
    return (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1)


def _slack(z, codebook):
    z, codebook = to_f64(z), to_f64(codebook)
    return 3e-5 * (z.pow(2).sum(1)[:, None] + codebook.pow(2).sum(1)[None, :]) + 1e-6


def _codebook(gen, k, d, scale=1.0):
    """Codes with different norms (so forgetting ||e||^2 changes the argmin)."""
    norms = torch.rand(k, 1, generator=gen) * 1.5 + 0.3
    return randn(gen, k, d, scale=scale) * norms


def _stage_codebooks(gen, n, k, d, base=1.0):
    """``n`` codebooks whose scale halves stage by stage, like trained residual codebooks."""
    return [_codebook(gen, k, d, base * 0.5 ** i) for i in range(n)]


def _expect_indices(indices, name, shape, dims, k):
    expect_tensor(indices, name, shape=shape, dims=dims, dtype=torch.long)
    flat = to_long(indices)
    if flat.numel():
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= k:
            raise AssertionError(f"{name} must lie in [0, K) = [0, {k}), got values from {lo} to {hi}")
    return flat


def _assert_nearest(idx, vectors, codebook, name, of):
    """``idx [N]`` holds a nearest code of ``codebook`` for every row of ``vectors`` (float32 slack)."""
    d = _sq_dist(vectors, codebook)
    best = d.min(dim=1).values
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    bad = (chosen - best > _slack(vectors, codebook).max(dim=1).values).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise AssertionError(
            f"{name} must be the nearest codes to {of}, but for {bad.numel()} of {d.shape[0]} "
            f"vectors it is not (e.g. vector {i}: code {int(idx[i])} is at squared distance "
            f"{float(d[i, int(idx[i])]):.4g}, code {int(d[i].argmin())} at {float(best[i]):.4g})")


def _residual_walk(z, codebooks, indices, name):
    """Follow the learner's indices ``[L, N]`` (called ``name``): check each stage, return picks and residuals (float64)."""
    residual = to_f64(z)
    picks, residuals = [], []
    for l, cb in enumerate(codebooks):
        of = "z itself" if l == 0 else \
            f"the residual r_{l} = z - (e_1 + ... + e_{l}) that the earlier stages left"
        _assert_nearest(indices[l], residual, cb, f"{name}[{l}] (stage {l + 1})", of)
        pick = to_f64(cb)[indices[l]]
        residual = residual - pick
        picks.append(pick)
        residuals.append(residual)
    return picks, residuals


def _inputs_kept(pairs, name):
    for before, after in pairs:
        assert_unchanged(before, after, name)


def _flat(z_e):
    z_e = to_f64(z_e)
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def _get(info, key, name):
    if not _isinstance(info, _dict):
        raise AssertionError(f"info of {name} must be a dict, got {kind(info)}")
    if key not in _dict.keys(info):
        raise AssertionError(f"info of {name} must have the key {key!r}")
    return _dict.__getitem__(info, key)


def _triple(out, label, names="(z_q, loss, info)"):
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{label} must return {names}, got {kind(out)}")
    return out


# --------------------------------------------------------------------------
# residual_quantize

@check
def check_residual_quantize(residual_quantize):
    """Check ``residual_quantize(z [N, D], codebooks) -> (z_q, indices [L, N], residual_norms [L])``."""
    fn = residual_quantize
    _own(fn, "residual_quantize")
    what = "residual_quantize(z, codebooks)"

    # by hand: stage 1 picks 2, -2 and 0, leaving 0.9, 0.8 and 0; stage 2 picks 1, 1 and 0
    # (quantizing z again would pick 2.5, -1 and 0)
    z = torch.tensor([[2.9], [-1.2], [0.0]])
    cbs = [torch.tensor([[0.0], [2.0], [-2.0]]), torch.tensor([[0.0], [1.0], [2.5], [-1.0]])]
    out = _call(fn, z, cbs, what=what)
    z_q, idx, norms = _triple(out, what, "(z_q, indices, residual_norms)")
    if _type(idx) is torch.Tensor and tuple(idx.shape) == (3, 2):
        raise AssertionError("indices must have shape [L, N] = (2, 3) (one row per stage) for "
                             "N = 3 vectors and L = 2 codebooks, got (3, 2)")
    expect_tensor(idx, "indices", shape=(2, 3), dims="[L, N]", dtype=torch.long)
    got = to_long(idx).tolist()
    hint = (" (the second stage must quantize the residual z - e_1, not z)"
            if got[1][:2] == [2, 3] else "")
    if got != [[1, 2, 0], [1, 1, 0]]:
        raise AssertionError(
            "for z = [[2.9], [-1.2], [0]] and the codebooks [[0], [2], [-2]] then "
            f"[[0], [1], [2.5], [-1]], indices must be [[1, 2, 0], [1, 1, 0]], got {got}{hint}")
    expect_tensor(z_q, "z_q", shape=(3, 1), dims="[N, D]", floating=True)
    assert_close(z_q, torch.tensor([[3.0], [-1.0], [0.0]], dtype=_f64), "z_q", atol=1e-6, rtol=0,
                 hint=" for that example: z_q must be the sum of the stages' codes, [[3], [-1], [0]]")
    expect_tensor(norms, "residual_norms", shape=(2,), dims="[L]", floating=True)
    ref = torch.tensor([(0.9 + 0.8) / 3, (0.1 + 0.2) / 3], dtype=_f64)
    before = torch.tensor([(2.9 + 1.2) / 3, (0.9 + 0.8) / 3], dtype=_f64)
    squared = torch.tensor([(0.81 + 0.64) / 3, (0.01 + 0.04) / 3], dtype=_f64)
    if max_excess(norms, ref, 1e-5) > 0:
        extra = ""
        if max_excess(norms, before, 1e-5) <= 0:
            extra = " (they look like the norms before each stage; take them after)"
        elif max_excess(norms, squared, 1e-5) <= 0:
            extra = " (they look squared: take the norm ||r||, not ||r||^2)"
        raise AssertionError(
            "residual_norms for that example must be [0.5667, 0.1]: the mean over rows of "
            f"||r_l|| after stage l, with r_1 = [0.9, 0.8, 0] and r_2 = [-0.1, -0.2, 0]{extra}")

    gen = generator(4001)
    cases = [  # N, D, K, L, z layout, codebooks that require grad
        (7, 3, 5, 3, None, True),
        (1, 2, 4, 2, None, False),
        (6, 4, 1, 2, None, True),
        (9, 1, 6, 4, None, False),
        (12, 5, 8, 1, "noncontiguous", True),
        (30, 8, 16, 5, None, True),
        (20, 6, 7, 3, "noncontiguous", True),
    ]
    for n, d, k, l, layout, req in cases:
        z = randn(gen, n, d, scale=2.0)
        if layout:
            z = noncontiguous(z)
        cbs = [c.requires_grad_(req) for c in _stage_codebooks(gen, l, k, d)]
        z0, cb0 = z.clone(), [c.detach().clone() for c in cbs]
        label = f"{what} for N={n}, D={d}, L={l} codebooks of K={k}"
        z_q, idx, norms = _triple(_call(fn, z, cbs, what=label), label,
                                  "(z_q, indices, residual_norms)")
        if _type(idx) is torch.Tensor and tuple(idx.shape) == (n, l) and n != l:
            raise AssertionError(f"indices must have shape [L, N] = {(l, n)} (one row per "
                                 f"stage), got {(n, l)}")
        _inputs_kept([(z0, z)] + list(zip(cb0, cbs)), "residual_quantize")
        flat = _expect_indices(idx, "indices", (l, n), "[L, N]", k)
        picks, residuals = _residual_walk(z0, cb0, flat, "indices")
        expect_tensor(z_q, "z_q", shape=(n, d), dims="[N, D]", floating=True)
        tol = 1e-5 * (max_abs(z) + 1.0)
        total = sum(picks)
        if max_excess(z_q, total, tol) > 0:
            msg = "the sum of the codes picked by all stages"
            if max_excess(z_q, picks[-1], tol) <= 0 and l > 1:
                msg += " (it holds the last stage's codes only)"
            elif max_excess(z_q, residuals[-1], tol) <= 0:
                msg += " (it holds the last residual)"
            raise AssertionError(f"z_q ({label}) must be {msg}")
        expect_tensor(norms, "residual_norms", shape=(l,), dims="[L]", floating=True)
        ref = torch.stack([r.norm(dim=1).mean() for r in residuals])
        if max_excess(norms, ref, 1e-5 * (float(ref.max()) + 1)) > 0:
            sq = torch.stack([r.pow(2).sum(1).mean() for r in residuals])
            hint = ""
            if max_excess(norms, sq, 1e-4 * (float(sq.max()) + 1)) <= 0:
                hint = " (they look squared: take the norm ||r||, not ||r||^2)"
            raise AssertionError(
                f"residual_norms ({label}) must be the mean over rows of ||r_l|| after each "
                f"stage l{hint}")

        if req:
            g = randn(gen, n, d)
            gz, *gcs = grads((z_q * g).sum(), [z, *cbs])
            for i, (gc, cb) in enumerate(zip(gcs, cbs)):
                ref_g = torch.zeros(k, d, dtype=_f64).index_add_(0, flat[i], to_f64(g))
                if gc is None or (is_zero_grad(gc) and max_abs(ref_g) > 0):
                    raise AssertionError(
                        f"z_q must be differentiable with respect to every codebook (it is "
                        f"the sum of their rows); codebooks[{i}] gets no gradient")
                assert_close(gc, ref_g, f"the gradient of z_q with respect to codebooks[{i}]",
                             atol=1e-5, rtol=1e-5)

    # gradients never reach z through z_q (a sum of codes); z may require grad
    z = randn(gen, 5, 3).requires_grad_()
    cbs = _stage_codebooks(gen, 2, 4, 3)
    z_q, _, _ = _triple(_call(fn, z, cbs, what=what), what, "(z_q, indices, residual_norms)")
    if _type(z_q) is torch.Tensor:
        gz = grads((z_q * randn(gen, 5, 3)).sum(), [z])[0]
        if not is_zero_grad(gz):
            raise AssertionError("z_q must be made of codebook rows only: it must not pass "
                                 "gradient to z (straight-through is the layer's job)")

    # memory: no [N, K, D] tensor
    n, k, d = 60, 50, 32
    z = randn(gen, n, d)
    cbs = _stage_codebooks(gen, 2, k, d)
    with OpRecorder() as rec:
        _call(fn, z, cbs, what=f"{what} for N={n}, K={k}, D={d}")
    if rec.largest >= n * k * d // 4:
        raise AssertionError(
            f"residual_quantize must not build an [N, K, D] tensor: for N={n}, K={k}, D={d} it "
            f"allocated a tensor of shape {rec.largest_shape} (in {rec.largest_op}); find the "
            "nearest codes with ||z||^2 - 2 z e^T + ||e||^2")


# --------------------------------------------------------------------------
# product_quantize

@check
def check_product_quantize(product_quantize):
    """Check ``product_quantize(z [N, D], codebooks) -> (z_q [N, D], indices [M, N])``."""
    fn = product_quantize
    _own(fn, "product_quantize")
    what = "product_quantize(z, codebooks)"

    # by hand: z = (1, 2, 10, 20) in two chunks (1, 2) and (10, 20)
    z = torch.tensor([[1.0, 2.0, 10.0, 20.0]])
    cbs = [torch.tensor([[0.0, 0.0], [1.0, 2.0], [10.0, 20.0]]),
           torch.tensor([[10.0, 20.0], [1.0, 2.0], [0.0, 0.0]])]
    out = _call(fn, z, cbs, what=what)
    if _type(out) not in (tuple, list) or len(out) != 2:
        raise AssertionError(f"{what} must return (z_q, indices), got {kind(out)}")
    z_q, idx = out
    if _type(idx) is torch.Tensor and tuple(idx.shape) == (1, 2):
        raise AssertionError("indices must have shape [M, N] = (2, 1) (one row per chunk) for "
                             "N = 1 vector and M = 2 codebooks, got (1, 2)")
    expect_tensor(idx, "indices", shape=(2, 1), dims="[M, N]", dtype=torch.long)
    got = to_long(idx).flatten().tolist()
    if got != [1, 0]:
        hint = ""
        if got == [1, 2]:
            hint = " (chunk m must use codebooks[m])"
        elif got == [0, 2]:
            hint = " (chunks are contiguous: z[:, :D/M], z[:, D/M:2D/M], ...)"
        raise AssertionError(
            "for z = [[1, 2, 10, 20]] and M = 2 codebooks [[0, 0], [1, 2], [10, 20]] and "
            f"[[10, 20], [1, 2], [0, 0]], indices must be [[1], [0]], got {to_long(idx).tolist()}"
            f"{hint}")
    expect_tensor(z_q, "z_q", shape=(1, 4), dims="[N, D]", floating=True)
    assert_close(z_q, to_f64(z), "z_q", atol=1e-6, rtol=0,
                 hint=" for that example (every chunk is a code: z_q = z); chunk m is the "
                      "contiguous block z[:, m*D/M:(m+1)*D/M] and its code goes back there")

    gen = generator(4002)
    cases = [  # N, D, M, K, layout, requires grad
        (7, 6, 2, 5, None, True),
        (1, 4, 4, 3, None, False),
        (9, 6, 3, 1, None, True),
        (11, 8, 2, 6, "noncontiguous", True),
        (25, 12, 4, 9, None, True),
        (6, 5, 1, 7, None, False),
    ]
    for n, d, m, k, layout, req in cases:
        w = d // m
        z = randn(gen, n, d, scale=2.0)
        # chunks of different scales: a codebook used on the wrong chunk is far off
        z = z * torch.arange(1, m + 1, dtype=torch.float32).repeat_interleave(w)
        if layout:
            z = noncontiguous(z)
        cbs = [_codebook(gen, k, w, float(i + 1)).requires_grad_(req) for i in range(m)]
        z0, cb0 = z.clone(), [c.detach().clone() for c in cbs]
        label = f"{what} for N={n}, D={d}, M={m} codebooks of K={k}"
        out = _call(fn, z, cbs, what=label)
        if _type(out) not in (tuple, list) or len(out) != 2:
            raise AssertionError(f"{label} must return (z_q, indices), got {kind(out)}")
        z_q, idx = out
        if _type(idx) is torch.Tensor and tuple(idx.shape) == (n, m) and n != m:
            raise AssertionError(f"indices must have shape [M, N] = {(m, n)} (one row per "
                                 f"chunk), got {(n, m)}")
        _inputs_kept([(z0, z)] + list(zip(cb0, cbs)), "product_quantize")
        flat = _expect_indices(idx, "indices", (m, n), "[M, N]", k)
        zf = to_f64(z0)
        for i in range(m):
            _assert_nearest(flat[i], zf[:, i * w:(i + 1) * w], cbs[i], f"indices[{i}]",
                            f"chunk {i}, the contiguous columns z[:, {i * w}:{(i + 1) * w}], "
                            f"in codebooks[{i}]")
        expect_tensor(z_q, "z_q", shape=(n, d), dims="[N, D]", floating=True)
        ref = torch.cat([to_f64(cb)[flat[i]] for i, cb in enumerate(cbs)], dim=1)
        if max_excess(z_q, ref, 1e-5 * (max_abs(z) + 1)) > 0:
            raise AssertionError(
                f"z_q ({label}) must hold, in chunk m, the row indices[m] of codebooks[m], "
                "the chunks side by side in their original order")
        if req:
            g = randn(gen, n, d)
            found = grads((z_q * g).sum(), cbs)
            for i, gc in enumerate(found):
                ref_g = torch.zeros(k, w, dtype=_f64).index_add_(0, flat[i], to_f64(g)[:, i * w:(i + 1) * w])
                if gc is None:
                    raise AssertionError(f"z_q must be differentiable with respect to "
                                         f"codebooks[{i}]")
                assert_close(gc, ref_g, f"the gradient of z_q with respect to codebooks[{i}]",
                             atol=1e-5, rtol=1e-5)

    n, k, d = 60, 50, 32
    z = randn(gen, n, d)
    cbs = [_codebook(gen, k, d // 2) for _ in range(2)]
    with OpRecorder() as rec:
        _call(fn, z, cbs, what=f"{what} for N={n}, K={k}, D={d}")
    if rec.largest >= n * k * d // 8:
        raise AssertionError(
            f"product_quantize must not build an [N, K, D/M] tensor: for N={n}, K={k}, "
            f"D/M={d // 2} it allocated a tensor of shape {rec.largest_shape}")


# --------------------------------------------------------------------------
# the layers

def _layer(cls, name, kwargs, shape):
    """Build the learner's layer, check its ``codebooks`` parameter, return (module, codebooks)."""
    args = ", ".join(f"{key}={value}" for key, value in kwargs.items())
    label = f"{name}({args})"
    module = call(cls, what=label, forbid=_REFERENCE, **kwargs)
    if not _isinstance(module, _Module):
        raise AssertionError(f"{label} must be an nn.Module, got {kind(module)}")
    try:
        codebooks = getattr(module, "codebooks")
    except Exception:
        codebooks = None
    if not _isinstance(codebooks, _Parameter) or not any(p is codebooks for p in module.parameters()):
        raise AssertionError(f"{label}.codebooks must be an nn.Parameter registered on the "
                             f"module (so the optimizer trains it), got {kind(codebooks)}")
    if tuple(codebooks.shape) != shape:
        raise AssertionError(f"{label}.codebooks must have shape {shape}, got "
                             f"{tuple(codebooks.shape)}")
    return module, codebooks, label


def _check_straight_through(z_q, z_e, codebooks, gen, label):
    g = randn(gen, *z_q.shape)
    ge, gc = grads((z_q * g).sum(), [z_e, codebooks])
    if is_zero_grad(ge):
        raise AssertionError(f"z_q of {label} must pass the decoder's gradient straight "
                             "through to z_e")
    assert_close(ge, g, f"the gradient that z_q of {label} passes to z_e", atol=1e-6, rtol=1e-5,
                 hint=" (it must be the incoming gradient, unchanged)")
    if not is_zero_grad(gc):
        raise AssertionError(f"z_q of {label} must not send gradient to the codebooks (only "
                             "the codebook losses train them)")


def _check_loss(loss, z_e, codebooks, ref_value, ref_ge, ref_gc, label):
    value = expect_scalar(loss, f"loss of {label}")
    if abs(value - ref_value) > 1e-5 * abs(ref_value) + 1e-8:
        raise AssertionError(
            f"loss of {label} has the wrong value (expected {ref_value:.6g}, got {value:.6g}): "
            "it must be the sum over stages (chunks) of codebook loss + beta * commitment loss, "
            "each a mean over its elements")
    ge, gc = grads(loss, [z_e, codebooks])
    if is_zero_grad(gc):
        raise AssertionError(f"loss of {label} must send gradient to the codebooks (the "
                             "codebook losses)")
    assert_close(gc, ref_gc, f"the gradient of loss of {label} with respect to the codebooks",
                 atol=1e-7, rtol=1e-4,
                 hint=" (only the codebook losses train the codes: the commitment terms must "
                      "see the codes through a stop-gradient, and so must the residuals)")
    if is_zero_grad(ge):
        raise AssertionError(f"loss of {label} must send gradient to z_e (the commitment "
                             "losses)")
    assert_close(ge, ref_ge, f"the gradient of loss of {label} with respect to z_e",
                 atol=1e-7, rtol=1e-4,
                 hint=" (it comes from the commitment terms only, weighted by beta)")


@check
def check_ResidualVQ(ResidualVQ):
    """Check ``ResidualVQ(num_quantizers, num_codes, code_dim, beta)`` and its ``forward(z_e, num_stages=None)``."""
    cls = ResidualVQ
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"ResidualVQ must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, "ResidualVQ")
    gen = generator(4003)
    cases = [  # B, D, H, W, K, L, beta, num_stages
        (2, 3, 2, 3, 6, 3, 0.25, None),
        (1, 2, 3, 1, 4, 2, 1.5, None),
        (2, 4, 2, 2, 8, 4, 0.4, 2),
        (1, 3, 2, 2, 5, 3, 0.3, 1),
    ]
    for b, d, h, w, k, l, beta, stages in cases:
        kwargs = {"num_quantizers": l, "num_codes": k, "code_dim": d, "beta": beta}
        module, codebooks, name = _layer(cls, "ResidualVQ", kwargs, (l, k, d))
        cbs = torch.stack(_stage_codebooks(gen, l, k, d))
        with torch.no_grad():
            codebooks.copy_(cbs)
        z_e = randn(gen, b, d, h, w, scale=2.0).requires_grad_()
        z0 = z_e.detach().clone()
        label = f"{name}(z_e" + ("" if stages is None else f", num_stages={stages}") + \
            f") for z_e of shape {(b, d, h, w)}"
        extra = {} if stages is None else {"num_stages": stages}
        z_q, loss, info = _triple(_call(module, z_e, what=label, **extra), label)
        n_used = l if stages is None else stages
        expect_tensor(z_q, f"z_q of {label}", shape=(b, d, h, w), dims="[B, D, H, W]", floating=True)
        idx = _get(info, "indices", label)
        if _type(idx) is torch.Tensor and tuple(idx.shape) == (b, h, w, n_used) != (n_used, b, h, w):
            raise AssertionError(f"info['indices'] must have the stage axis first: "
                                 f"[L, B, H, W] = {(n_used, b, h, w)}, got {(b, h, w, n_used)}")
        if stages is not None and _type(idx) is torch.Tensor and tuple(idx.shape)[:1] == (l,):
            raise AssertionError(f"{label} must use only the first num_stages={stages} stages "
                                 f"(info['indices'] of shape {(stages, b, h, w)})")
        flat = _expect_indices(idx, "info['indices']", (n_used, b, h, w), "[L, B, H, W]", k)
        flat = flat.reshape(n_used, -1)
        _inputs_kept([(z0, z_e)], name)
        zf = _flat(z0)
        picks, residuals = _residual_walk(zf, list(cbs[:n_used]), flat, "info['indices']")
        total = sum(picks)
        got = _flat(z_q)
        if max_excess(got, total, 1e-5 * (max_abs(z_e) + 1)) > 0:
            raise AssertionError(
                f"z_q of {label} must have the value of the sum of the stages' codes "
                "(arranged as [B, D, H, W])")

        # the loss: codebook terms to the codes, commitment terms to z_e
        numel = zf.numel()
        ref_value = 0.0
        ref_ge = torch.zeros_like(zf)
        ref_gc = torch.zeros(l, k, d, dtype=_f64)
        residual = zf
        partial = torch.zeros_like(zf)
        for i, pick in enumerate(picks):
            partial = partial + pick
            ref_value += float((pick - residual).pow(2).mean() + beta * (zf - partial).pow(2).mean())
            ref_gc[i].index_add_(0, flat[i], 2 * (pick - residual) / numel)
            ref_ge += 2 * beta * (zf - partial) / numel
            residual = residual - pick
        ref_ge = ref_ge.reshape(b, h, w, d).permute(0, 3, 1, 2)
        _check_loss(loss, z_e, codebooks, ref_value, ref_ge, ref_gc, name)
        _check_straight_through(z_q, z_e, codebooks, gen, name)


@check
def check_ProductVQ(ProductVQ):
    """Check ``ProductVQ(num_chunks, num_codes, code_dim, beta)`` and its ``forward(z_e)``."""
    cls = ProductVQ
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"ProductVQ must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, "ProductVQ")
    gen = generator(4004)
    cases = [  # B, D, H, W, K, M, beta
        (2, 4, 2, 3, 6, 2, 0.25),
        (1, 6, 3, 1, 5, 3, 1.5),
        (2, 4, 2, 2, 7, 1, 0.4),
        (1, 8, 2, 2, 4, 4, 0.3),
    ]
    for b, d, h, w, k, m, beta in cases:
        width = d // m
        kwargs = {"num_chunks": m, "num_codes": k, "code_dim": d, "beta": beta}
        module, codebooks, name = _layer(cls, "ProductVQ", kwargs, (m, k, width))
        cbs = torch.stack([_codebook(gen, k, width, float(i + 1)) for i in range(m)])
        with torch.no_grad():
            codebooks.copy_(cbs)
        scale = torch.arange(1, m + 1, dtype=torch.float32).repeat_interleave(width)
        z_e = (randn(gen, b, d, h, w, scale=2.0) * scale[None, :, None, None]).requires_grad_()
        z0 = z_e.detach().clone()
        label = f"{name}(z_e) for z_e of shape {(b, d, h, w)}"
        z_q, loss, info = _triple(_call(module, z_e, what=label), label)
        expect_tensor(z_q, f"z_q of {label}", shape=(b, d, h, w), dims="[B, D, H, W]", floating=True)
        idx = _get(info, "indices", label)
        if _type(idx) is torch.Tensor and tuple(idx.shape) == (b, h, w, m) != (m, b, h, w):
            raise AssertionError(f"info['indices'] must have the chunk axis first: "
                                 f"[M, B, H, W] = {(m, b, h, w)}, got {(b, h, w, m)}")
        flat = _expect_indices(idx, "info['indices']", (m, b, h, w), "[M, B, H, W]", k).reshape(m, -1)
        _inputs_kept([(z0, z_e)], name)
        zf = _flat(z0)
        for i in range(m):
            _assert_nearest(flat[i], zf[:, i * width:(i + 1) * width], cbs[i],
                            f"info['indices'][{i}] of {label}",
                            f"chunk {i} of every latent vector (channels {i * width} to "
                            f"{(i + 1) * width - 1}) in codebooks[{i}]")
        ref = torch.cat([to_f64(cbs[i])[flat[i]] for i in range(m)], dim=1)
        if max_excess(_flat(z_q), ref, 1e-5 * (max_abs(z_e) + 1)) > 0:
            raise AssertionError(f"z_q of {label} must have the value of the chosen codes, "
                                 "chunk by chunk (arranged as [B, D, H, W])")

        per_chunk = zf.shape[0] * width
        diff = ref - zf                                                     # [N, D]
        ref_value = float((1 + beta) * diff.pow(2).sum() / per_chunk)
        ref_gc = torch.zeros(m, k, width, dtype=_f64)
        for i in range(m):
            ref_gc[i].index_add_(0, flat[i], 2 * diff[:, i * width:(i + 1) * width] / per_chunk)
        ref_ge = (-2 * beta * diff / per_chunk).reshape(b, h, w, d).permute(0, 3, 1, 2)
        _check_loss(loss, z_e, codebooks, ref_value, ref_ge, ref_gc, name)
        _check_straight_through(z_q, z_e, codebooks, gen, name)


# --------------------------------------------------------------------------
# VQVAE2: the wiring

_BLOCKS = ("enc_b", "enc_t", "quant_t", "dec_t", "pre_b", "quant_b", "upsample_t", "dec")


class _Recorder(_Module):
    """Wraps a block: records the input of its first call (detached) and runs it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.inputs = []

    def forward(self, x, *args, **kwargs):
        self.inputs.append(x.detach().clone() if _type(x) is torch.Tensor else x)
        return self.inner(x, *args, **kwargs)


class _StubVQ(_Module):
    """A quantizer the check controls: a fixed affine map of its input (so every wire shows
    in ``x_rec``, and its output differs from its input), the nearest codes of a fixed
    codebook as indices, loss = weight * mean z^2."""

    def __init__(self, codebook, weight):
        super().__init__()
        self.codebook = codebook
        self.weight = weight

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d)
        idx = (flat[:, None, :] - self.codebook[None]).pow(2).sum(-1).argmin(dim=1)
        loss = self.weight * z_e.pow(2).mean()
        shift = torch.linspace(-0.3, 0.3, d).reshape(1, d, 1, 1)
        return 0.5 * z_e + shift, loss, {"indices": idx.reshape(b, h, w), "perplexity": torch.ones(())}


def _same(a, b, tol=1e-5):
    if _type(a) is not torch.Tensor or _type(b) is not torch.Tensor or a.shape != b.shape:
        return False
    return max_excess(a, b, tol * (max_abs(b) + 1)) <= 0


@check
def check_VQVAE2(VQVAE2):
    """Check ``VQVAE2.forward``: the two-level wiring, the loss and the indices it reports."""
    cls = VQVAE2
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"VQVAE2 must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, "VQVAE2")
    gen = generator(4005)
    kwargs = {"in_channels": 3, "hidden": 8, "res_hidden": 4, "num_res_blocks": 1,
              "num_codes": 6, "code_dim": 4}
    name = "VQVAE2(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4005)
        model = call(cls, what=name, forbid=_REFERENCE, **kwargs)
    missing = [b for b in _BLOCKS if not _isinstance(getattr(model, b, None), _Module)]
    if missing:
        raise AssertionError(f"{name} must keep the blocks the template creates in __init__; "
                             f"missing: {', '.join(missing)}")
    # the check's own quantizers (different loss weights, so the sum is visible)
    model.quant_t = _StubVQ(randn(gen, 6, 4, scale=0.5), 1.0)
    model.quant_b = _StubVQ(randn(gen, 6, 4, scale=0.5), 10.0)
    blocks = {b: getattr(model, b) for b in _BLOCKS}
    for b in _BLOCKS:
        setattr(model, b, _Recorder(blocks[b]))

    for shape in ((2, 3, 16, 16), (1, 3, 8, 24)):
        x = torch.rand(*shape, generator=gen)
        x0 = x.clone()
        # the reference wiring, with the model's own blocks
        with torch.no_grad():
            ref = {}
            ref["enc_b"] = x - 0.5
            h_b = blocks["enc_b"](ref["enc_b"])
            ref["enc_t"] = h_b
            ref["quant_t"] = blocks["enc_t"](h_b)
            z_t, loss_t, info_t = blocks["quant_t"](ref["quant_t"])
            ref["dec_t"] = z_t
            ref["pre_b"] = torch.cat([h_b, blocks["dec_t"](z_t)], dim=1)
            ref["quant_b"] = blocks["pre_b"](ref["pre_b"])
            z_b, loss_b, info_b = blocks["quant_b"](ref["quant_b"])
            ref["upsample_t"] = z_t
            ref["dec"] = torch.cat([blocks["upsample_t"](z_t), z_b], dim=1)
            x_ref = blocks["dec"](ref["dec"]) + 0.5
        for b in _BLOCKS:
            getattr(model, b).inputs = []
        label = f"{name}(x) for x of shape {shape}"
        out = _triple(_call(model, x, what=label), label, "(x_rec, loss, info)")
        x_rec, loss, info = out
        _inputs_kept([(x0, x)], "VQVAE2.forward")
        expect_tensor(x_rec, f"x_rec of {label}", shape=shape, dims="[B, C, H, W]", floating=True)
        if not _same(x_rec, x_ref):
            _diagnose(model, ref, x_rec, x_ref, label)
        value = expect_scalar(loss, f"loss of {label}")
        ref_loss = float(to_f64(loss_t) + to_f64(loss_b))
        if abs(value - ref_loss) > 1e-5 * abs(ref_loss) + 1e-7:
            raise AssertionError(f"loss of {label} must be the sum of the top and the bottom "
                                 "quantizers' losses")
        for key, want, where in (("indices_top", info_t["indices"], "top"),
                                 ("indices_bottom", info_b["indices"], "bottom")):
            got = _get(info, key, label)
            expect_tensor(got, f"info[{key!r}]", shape=tuple(want.shape), dtype=torch.long)
            if to_long(got).tolist() != to_long(want).tolist():
                raise AssertionError(f"info[{key!r}] must be the indices of the {where} "
                                     "quantizer")

    # gradient reaches the bottom encoder through both levels
    x = torch.rand(2, 3, 16, 16, generator=gen)
    x_rec, loss, _ = _call(model, x, what=name + "(x)")
    params = list(blocks["enc_b"].parameters())
    found = grads(((x_rec - x) ** 2).mean(), params)
    if all(is_zero_grad(g) for g in found):
        raise AssertionError(f"the reconstruction loss of {name} must send gradient to the "
                             "bottom encoder enc_b (do not detach the latents)")


def _diagnose(model, ref, x_rec, x_ref, label):
    """Name the first block that received something other than the reference wiring's input."""
    what = {
        "enc_b": "the images shifted to x - 0.5",
        "enc_t": "the bottom encoder's output h_b",
        "quant_t": "the top encoder's output enc_t(h_b)",
        "dec_t": "the quantized top latents z_t (the top quantizer's first output)",
        "pre_b": "torch.cat([h_b, dec_t(z_t)], dim=1): the bottom features, then the top "
                 "decoder's output",
        "quant_b": "pre_b's output (the bottom features conditioned on the top codes)",
        "upsample_t": "the quantized top latents z_t",
        "dec": "torch.cat([upsample_t(z_t), z_b], dim=1): both quantized levels, top first",
    }
    for b in _BLOCKS:
        inputs = getattr(model, b).inputs
        if not inputs:
            raise AssertionError(f"{label}: self.{b} is never called; it must receive {what[b]}")
        got = inputs[0]
        if not _same(got, ref[b]):
            hint = ""
            if b == "enc_b" and _same(got, ref["enc_b"] + 0.5):
                hint = " (the model must see x - 0.5, and add 0.5 back to the decoder's output)"
            elif b == "pre_b" and _type(got) is torch.Tensor and got.shape == ref[b].shape:
                c = ref["enc_t"].shape[1]
                swapped = torch.cat([ref[b][:, c:], ref[b][:, :c]], dim=1)
                if _same(got, swapped):
                    hint = " (the two parts are concatenated in the wrong order)"
            elif b == "dec_t" and _same(got, ref["quant_t"]):
                hint = " (it got the top latents before quantization)"
            raise AssertionError(f"{label}: self.{b} must receive {what[b]}, but it received "
                                 f"something else{hint}")
    if _same(x_rec, x_ref - 0.5):
        raise AssertionError(f"{label}: x_rec must be the decoder's output + 0.5 (the model "
                             "works on x - 0.5)")
    raise AssertionError(f"{label}: x_rec must be dec(cat[upsample_t(z_t), z_b]) + 0.5")
