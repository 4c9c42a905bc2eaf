"""Hidden tests of ``01_vqvae``: vector quantization.

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_pairwise_sq_distances(fn)``  values, shape, gradients, and the
  memory rule: no ``[N, K, D]`` tensor and no Python loop (see below)
- ``check_nearest_code(fn)``           ``[N]`` long indices of a nearest code
- ``check_quantize(fn)``               ``(z_q [B, D, H, W], indices [B, H, W])``
- ``check_vq_losses(fn)``              values and where each term sends gradient
- ``check_straight_through(fn)``       value of ``z_q``, gradient to ``z_e`` unchanged
- ``check_code_usage(fn)``             float counts ``[K]`` for any index shape
- ``check_perplexity(fn)``             ``exp(entropy)``, finite with unused codes
- ``check_VectorQuantizer(cls)``       the assembled layer, its parameter, loss and gradients

The references live here, in float64, by brute force (they never import
``dvl_helpers``). Comparisons allow float32 round-off of any correct
formulation (``torch.cdist`` included): distances to ``3e-5 (|z|^2 + |e|^2)``,
"nearest" up to that same slack, values of losses and perplexities to a
relative ``1e-5``.

The memory rule of ``pairwise_sq_distances`` is checked by recording the ops
of a call with a ``TorchDispatchMode`` (``_common.OpRecorder``): the call for
``N=60, K=50, D=32`` must not allocate any tensor of ``N*K*D/4`` elements or
more (the broadcast ``z[:, None] - e[None]`` allocates ``N*K*D``, the
expansion at most ``N*K``), and its op count must not grow with ``N`` and
``K`` (a Python loop over rows runs a few ops per row). This is exact,
cheap and independent of the machine's memory, unlike watching peak memory.

Every answer is also checked for calling the course's reference
implementation in ``dvl_helpers.quantizers`` (statically and while it runs).
"""
from __future__ import annotations

import torch

from ._common import (
    OpRecorder, _Module, _Parameter, assert_close, assert_own_implementation,
    assert_unchanged, call, channels_last, check, expect_pair, expect_scalar,
    expect_tensor, generator, grads, is_zero_grad, kind, max_abs, max_excess,
    noncontiguous, randn, to_f64, to_long,
)

__all__ = [
    "check_pairwise_sq_distances", "check_nearest_code", "check_quantize",
    "check_vq_losses", "check_straight_through", "check_code_usage",
    "check_perplexity", "check_VectorQuantizer",
]

_REFERENCE = ("dvl_helpers.quantizers", None)

_issubclass = issubclass
_isinstance = isinstance
_type = type
_dict = dict
_f64 = torch.float64


def _call(fn, *args, what):
    return call(fn, *args, what=what, forbid=_REFERENCE)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


# --------------------------------------------------------------------------
# References (float64, brute force, CPU)

def _ref_sq_dist(z, codebook):
    """[N, D], [K, D] -> [N, K] exact squared distances (the [N, K, D] way is fine here)."""
    z, codebook = to_f64(z), to_f64(codebook)
    return (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1)


def _dist_slack(z, codebook):
    """[N, K] float64 tolerance for float32 distances: round-off grows with the norms."""
    z, codebook = to_f64(z), to_f64(codebook)
    return 3e-5 * (z.pow(2).sum(1)[:, None] + codebook.pow(2).sum(1)[None, :]) + 1e-6


def _flat(z_e):
    """[B, D, H, W] -> [N, D] with channels last (float64)."""
    z_e = to_f64(z_e)
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def _ref_perplexity(counts):
    counts = to_f64(counts)
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def _mse(a, b):
    return (to_f64(a) - to_f64(b)).pow(2).mean()


# --------------------------------------------------------------------------
# Inputs

def _codebook(gen, k, d, scale=1.0):
    """Codes with different norms (so forgetting ||e||^2 changes the argmin)."""
    norms = torch.rand(k, 1, generator=gen, dtype=torch.float32) * 1.5 + 0.3
    return randn(gen, k, d, scale=scale) * norms


def _layout(t, how):
    if how == "noncontiguous":
        return noncontiguous(t)
    if how == "channels_last":
        return channels_last(t)
    if how == "transposed":        # [K, D] stored as [D, K]
        return t.detach().t().contiguous().t().requires_grad_(t.requires_grad)
    return t


# --------------------------------------------------------------------------
# Shared assertions

def _expect_indices(indices, name, shape, dims, k):
    expect_tensor(indices, name, shape=shape, dims=dims, dtype=torch.long)
    flat = to_long(indices).reshape(-1)
    if flat.numel():
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= k:
            raise AssertionError(
                f"{name} must lie in [0, K) = [0, {k}), got values from {lo} to {hi}")
    return flat


def _assert_nearest(flat_idx, z, codebook, name):
    """Every chosen code is a nearest one, up to float32 round-off."""
    d = _ref_sq_dist(z, codebook)
    best = d.min(dim=1).values
    chosen = d.gather(1, flat_idx[:, None]).squeeze(1)
    slack = _dist_slack(z, codebook).max(dim=1).values
    bad = (chosen - best > slack).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        j = int(flat_idx[i])
        jbest = int(d[i].argmin())
        raise AssertionError(
            f"{name} is not the nearest code for {bad.numel()} of {d.shape[0]} vectors "
            f"(e.g. vector {i}: code {j} is at squared distance {float(d[i, j]):.4g}, "
            f"but code {jbest} is at {float(d[i, jbest]):.4g})")


def _assert_rows_of_codebook(z_q, flat_idx, codebook, name, atol):
    """z_q[b, :, h, w] == codebook[indices[b, h, w]]."""
    rows = to_f64(codebook)[flat_idx]                         # [N, D]
    got = _flat(z_q)
    if max_excess(got, rows, atol) > 0:
        raise AssertionError(
            f"{name}[b, :, h, w] must be the codebook row indices[b, h, w]; "
            f"it differs by up to {max_abs(got - rows):.3g}")


def _assert_inputs_kept(pairs, name):
    for before, after in pairs:
        assert_unchanged(before, after, name)


# --------------------------------------------------------------------------
# Checks

@check
def check_pairwise_sq_distances(pairwise_sq_distances):
    """Check ``pairwise_sq_distances(z [N, D], codebook [K, D]) -> [N, K]``."""
    fn = pairwise_sq_distances
    _own(fn, "pairwise_sq_distances")
    what = "pairwise_sq_distances(z, codebook)"

    # a case to do by hand
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    d = _call(fn, z, e, what=what)
    expect_tensor(d, what, shape=(2, 3), dims="[N, K]", floating=True)
    assert_close(d, torch.tensor([[1.0, 4.0, 2.0], [1.0, 2.0, 0.0]], dtype=_f64), what,
                 atol=1e-5, rtol=0,
                 hint=" for z = [[0, 0], [1, 1]] and codebook = [[1, 0], [0, 2], [1, 1]]: "
                      "expected [[1, 4, 2], [1, 2, 0]]")

    gen = generator(1001)
    cases = [  # N, K, D, scale, z layout, codebook layout
        (7, 5, 3, 1.0, None, None),
        (1, 4, 2, 1.0, None, None),
        (6, 1, 3, 1.0, None, None),
        (5, 3, 1, 1.0, None, None),
        (4, 4, 4, 1.0, None, None),
        (9, 6, 16, 1.0, "noncontiguous", "transposed"),
        (33, 40, 16, 3.0, None, None),
        (8, 7, 5, 10.0, "noncontiguous", None),
    ]
    for n, k, dim, scale, zl, el in cases:
        z = _layout(randn(gen, n, dim, scale=scale), zl)
        e = _layout(_codebook(gen, k, dim, scale), el)
        z0, e0 = z.clone(), e.clone()
        label = f"{what} for N={n}, K={k}, D={dim}" + (" (non-contiguous z)" if zl else "")
        d = _call(fn, z, e, what=label)
        expect_tensor(d, label, shape=(n, k), dims="[N, K]", floating=True)
        assert_close(d, _ref_sq_dist(z, e), label, atol=_dist_slack(z, e), rtol=0)
        _assert_inputs_kept([(z0, z), (e0, e)], "pairwise_sq_distances")

    # gradients: the distances are an ordinary differentiable function
    z = randn(gen, 7, 3).requires_grad_()
    e = _codebook(gen, 5, 3).requires_grad_()
    d = _call(fn, z, e, what=what)
    g = randn(gen, 7, 5)
    if _type(d) is not torch.Tensor or not d.requires_grad:
        raise AssertionError(
            "pairwise_sq_distances must be differentiable with respect to z and codebook "
            "(keep the computation in torch, without detach or no_grad)")
    gz, ge = grads((d * g).sum(), [z, e])
    zf, ef, gf = to_f64(z), to_f64(e), to_f64(g)
    ref_gz = 2 * (zf * gf.sum(1, keepdim=True) - gf @ ef)
    ref_ge = 2 * (ef * gf.sum(0)[:, None] - gf.t() @ zf)
    for got, ref, name in ((gz, ref_gz, "z"), (ge, ref_ge, "codebook")):
        if got is None:
            raise AssertionError(
                f"pairwise_sq_distances must be differentiable with respect to {name}")
        assert_close(got, ref, f"the gradient of pairwise_sq_distances with respect to {name}",
                     atol=1e-4, rtol=1e-4)

    # memory: no [N, K, D] tensor; no loop over rows or codes
    counts = []
    for n, k, dim in ((6, 5, 32), (60, 50, 32)):
        z = randn(gen, n, dim)
        e = _codebook(gen, k, dim)
        label = f"{what} for N={n}, K={k}, D={dim}"
        with OpRecorder() as rec:
            d = _call(fn, z, e, what=label)
        expect_tensor(d, label, shape=(n, k), dims="[N, K]", floating=True)
        assert_close(d, _ref_sq_dist(z, e), label, atol=_dist_slack(z, e), rtol=0)
        if rec.largest >= n * k * dim // 4:
            raise AssertionError(
                f"pairwise_sq_distances must not build an [N, K, D] tensor: for N={n}, "
                f"K={k}, D={dim} it allocated a tensor of shape {rec.largest_shape} "
                f"(in {rec.largest_op}); expand the square so that the largest tensor "
                "is [N, K]")
        counts.append(rec.count)
    if counts[1] > counts[0] + 20:
        raise AssertionError(
            "pairwise_sq_distances must not loop over vectors or codes in Python: it ran "
            f"{counts[0]} tensor operations for N=6, K=5 but {counts[1]} for N=60, K=50; "
            "compute all distances at once with a matrix product")


@check
def check_nearest_code(nearest_code):
    """Check ``nearest_code(z [N, D], codebook [K, D]) -> LongTensor [N]``."""
    fn = nearest_code
    _own(fn, "nearest_code")
    what = "nearest_code(z, codebook)"

    z = torch.tensor([[0.9, 0.1], [-1.0, -1.0], [0.0, 2.2]])
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [5.0, 5.0]])
    idx = _call(fn, z, e, what=what)
    flat = _expect_indices(idx, what, (3,), "[N]", 4)
    if flat.tolist() != [0, 2, 1]:
        raise AssertionError(
            f"{what} for z = [[0.9, 0.1], [-1, -1], [0, 2.2]] and codebook = "
            f"[[1, 0], [0, 2], [-1, -1], [5, 5]] must be [0, 2, 1], got {flat.tolist()}")

    gen = generator(1002)
    cases = [  # N, K, D, scale, z layout, codebook layout, codebook is a Parameter
        (7, 5, 3, 1.0, None, None, False),
        (1, 4, 2, 1.0, None, None, False),
        (6, 1, 3, 1.0, None, None, False),
        (9, 3, 1, 1.0, None, None, False),
        (5, 5, 5, 1.0, None, None, False),
        (20, 9, 4, 1.0, "noncontiguous", "transposed", False),
        (50, 64, 8, 3.0, None, None, True),
    ]
    for n, k, dim, scale, zl, el, param in cases:
        z = _layout(randn(gen, n, dim, scale=scale), zl)
        e = _layout(_codebook(gen, k, dim, scale), el)
        if param:
            e = _Parameter(e)
        z0, e0 = z.clone(), e.detach().clone()
        label = f"{what} for N={n}, K={k}, D={dim}" + (" (non-contiguous z)" if zl else "")
        idx = _call(fn, z, e, what=label + (" (codebook an nn.Parameter)" if param else ""))
        flat = _expect_indices(idx, label, (n,), "[N]", k)
        _assert_nearest(flat, z, e, label)
        _assert_inputs_kept([(z0, z), (e0, e)], "nearest_code")


@check
def check_quantize(quantize):
    """Check ``quantize(z_e [B, D, H, W], codebook [K, D]) -> (z_q, indices)``."""
    fn = quantize
    _own(fn, "quantize")
    what = "quantize(z_e, codebook)"

    # by hand: two vectors (0.9, 0.1) and (-1, -1) side by side in a 1x2 grid
    z_e = torch.tensor([[[[0.9, -1.0]], [[0.1, -1.0]]]])            # [1, 2, 1, 2]
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    z_q, idx = expect_pair(_call(fn, z_e, e, what=what), what)
    flat = _expect_indices(idx, "indices", (1, 1, 2), "[B, H, W]", 3)
    expect_tensor(z_q, "z_q", shape=(1, 2, 1, 2), dims="[B, D, H, W]", floating=True)
    if flat.tolist() != [0, 2]:
        raise AssertionError(
            "for z_e of shape [1, 2, 1, 2] holding the vectors (0.9, 0.1) and (-1, -1) and "
            "codebook = [[1, 0], [0, 2], [-1, -1]], indices must be [[[0, 2]]], got "
            f"{to_long(idx).tolist()} (vectors run along the channel dimension D)")
    _assert_rows_of_codebook(z_q, flat, e, "z_q", 1e-6)

    gen = generator(1003)
    cases = [  # B, D, H, W, K, z_e layout, codebook layout
        (2, 3, 4, 5, 7, None, None),
        (1, 1, 1, 1, 1, None, None),
        (1, 4, 1, 1, 6, None, None),
        (3, 2, 2, 3, 1, None, None),
        (2, 1, 3, 3, 4, None, None),
        (2, 8, 4, 4, 16, "channels_last", "transposed"),
        (2, 3, 5, 2, 5, "noncontiguous", None),
    ]
    for b, dim, h, w, k, zl, el in cases:
        z_e = _layout(randn(gen, b, dim, h, w).requires_grad_(), zl)
        codebook = _layout(_codebook(gen, k, dim).requires_grad_(), el)
        z0, e0 = z_e.detach().clone(), codebook.detach().clone()
        label = f"{what} for z_e of shape {(b, dim, h, w)} and K={k}" + \
            (f" ({zl.replace('_', '-')} z_e)" if zl else "")
        z_q, idx = expect_pair(_call(fn, z_e, codebook, what=label), label)
        expect_tensor(z_q, "z_q", shape=(b, dim, h, w), dims="[B, D, H, W]", floating=True)
        flat = _expect_indices(idx, "indices", (b, h, w), "[B, H, W]", k)
        _assert_nearest(flat, _flat(z_e), codebook, f"indices ({label})")
        _assert_rows_of_codebook(z_q, flat, codebook, "z_q",
                                 1e-6 * max_abs(codebook) + 1e-7)
        _assert_inputs_kept([(z0, z_e), (e0, codebook)], "quantize")

        g = randn(gen, b, dim, h, w)
        gz, ge = grads((z_q * g).sum(), [z_e, codebook]) if _type(z_q) is torch.Tensor \
            else (None, None)
        if not is_zero_grad(gz):
            raise AssertionError(
                "z_q from quantize must not pass gradient to z_e: it is made of codebook "
                "rows (the straight-through estimator is a separate step)")
        if ge is None or is_zero_grad(ge):
            raise AssertionError(
                "z_q from quantize must be differentiable with respect to the codebook "
                "(the codebook loss trains the codes through it)")
        ref = torch.zeros(k, dim, dtype=_f64).index_add_(0, flat, _flat(g))
        assert_close(ge, ref, "the gradient of z_q with respect to the codebook",
                     atol=1e-5, rtol=1e-5)


@check
def check_vq_losses(vq_losses):
    """Check ``vq_losses(z_e, z_q) -> (codebook_loss, commitment_loss)``."""
    fn = vq_losses
    _own(fn, "vq_losses")
    what = "vq_losses(z_e, z_q)"

    z_e = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    z_q = torch.tensor([[1.0, 0.0], [3.0, 6.0]])
    cb_loss, commit = expect_pair(_call(fn, z_e, z_q, what=what), what)
    for value, name in ((cb_loss, "codebook_loss"), (commit, "commitment_loss")):
        got = expect_scalar(value, name)
        if abs(got - 2.0) > 1e-5:
            raise AssertionError(
                f"{name} for z_e = [[1, 2], [3, 4]] and z_q = [[1, 0], [3, 6]] must be 2.0 "
                f"(the mean squared difference over all elements), got {got:.6g}")

    gen = generator(1004)
    cases = [  # shape, layout
        ((2, 3, 4, 5), None),
        ((1, 1, 1, 1), None),
        ((7, 3), None),
        ((2, 4, 3, 3), "noncontiguous"),
        ((3, 2, 2, 2), "channels_last"),
    ]
    for shape, layout in cases:
        z_e = _layout(randn(gen, *shape).requires_grad_(), layout)
        z_q = _layout((randn(gen, *shape) * 0.5 + z_e.detach() * 0.7).requires_grad_(), layout)
        z0, q0 = z_e.detach().clone(), z_q.detach().clone()
        label = f"{what} for shape {shape}"
        cb_loss, commit = expect_pair(_call(fn, z_e, z_q, what=label), label)
        ref = float(_mse(z_e, z_q))
        n = z_e.numel()
        for value, name in ((cb_loss, "codebook_loss"), (commit, "commitment_loss")):
            got = expect_scalar(value, f"{name} ({label})")
            if abs(got - ref) > 1e-5 * abs(ref) + 1e-7:
                raise AssertionError(
                    f"{name} has the wrong value for inputs of shape {shape}: expected a "
                    f"mean over all {n} elements")
        _assert_inputs_kept([(z0, z_e), (q0, z_q)], "vq_losses")

        ref_gq = 2 * (to_f64(z_q) - to_f64(z_e)) / n
        ge, gq = grads(cb_loss, [z_e, z_q])
        if not is_zero_grad(ge):
            raise AssertionError(
                "the codebook loss must not send gradient to z_e (stop-gradient missing?)")
        if is_zero_grad(gq):
            raise AssertionError(
                "the codebook loss must send gradient to z_q (that is what trains the codebook)")
        assert_close(gq, ref_gq, "the gradient of the codebook loss with respect to z_q",
                     atol=1e-7, rtol=1e-4)
        ge, gq = grads(commit, [z_e, z_q])
        if not is_zero_grad(gq):
            raise AssertionError(
                "the commitment loss must not send gradient to z_q (stop-gradient missing?)")
        if is_zero_grad(ge):
            raise AssertionError(
                "the commitment loss must send gradient to z_e (it keeps the encoder "
                "committed to its codes)")
        assert_close(ge, -ref_gq, "the gradient of the commitment loss with respect to z_e",
                     atol=1e-7, rtol=1e-4)


@check
def check_straight_through(straight_through):
    """Check ``straight_through(z_e, z_q)``: value of z_q, gradient to z_e unchanged."""
    fn = straight_through
    _own(fn, "straight_through")
    what = "straight_through(z_e, z_q)"

    gen = generator(1005)
    cases = [  # shape, layout, z_q requires grad
        ((2, 3, 4, 5), None, True),
        ((6, 4), None, True),
        ((1, 1, 1, 1), None, True),
        ((2, 4, 3, 3), "channels_last", False),
        ((3, 5, 2, 2), "noncontiguous", True),
    ]
    for shape, layout, q_grad in cases:
        z_e = _layout((randn(gen, *shape) * 2).requires_grad_(), layout)
        z_q = _layout(randn(gen, *shape).requires_grad_(q_grad), layout)
        z0, q0 = z_e.detach().clone(), z_q.detach().clone()
        label = f"{what} for shape {shape}"
        out = _call(fn, z_e, z_q, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        tol = 1e-6 * (to_f64(z_e).abs() + to_f64(z_q).abs()) + 1e-7
        if max_excess(out, z_q, tol) > 0:
            hint = " (it has the value of z_e)" if max_excess(out, z_e, tol) <= 0 else ""
            raise AssertionError(
                f"{what} must have the value of z_q (the decoder sees the quantized "
                f"latents){hint}")
        _assert_inputs_kept([(z0, z_e), (q0, z_q)], "straight_through")

        g = randn(gen, *shape)
        ge, gq = grads((out * g).sum(), [z_e, z_q])
        if is_zero_grad(ge):
            where = "it went to z_q instead" if not is_zero_grad(gq) else "no gradient arrived"
            raise AssertionError(f"the gradient of {what} must reach z_e ({where})")
        assert_close(ge, g, f"the gradient that {what} passes to z_e",
                     atol=1e-7, rtol=1e-6, hint=" (it must be the incoming gradient, unchanged)")
        if q_grad and not is_zero_grad(gq):
            raise AssertionError(f"the gradient of {what} must not reach z_q")


@check
def check_code_usage(code_usage):
    """Check ``code_usage(indices, num_codes) -> float counts [K]``."""
    fn = code_usage
    _own(fn, "code_usage")

    idx = torch.tensor([[0, 2], [2, 2]])
    counts = _call(fn, idx, 5, what="code_usage(indices, 5)")
    expect_tensor(counts, "code_usage(indices, num_codes)", shape=(5,), dims="[K]",
                  floating=True)
    if to_f64(counts).tolist() != [1.0, 0.0, 3.0, 0.0, 0.0]:
        raise AssertionError(
            "code_usage(indices, 5) for indices = [[0, 2], [2, 2]] must be "
            f"[1, 0, 3, 0, 0], got {to_f64(counts).tolist()}")

    gen = generator(1006)
    cases = [  # shape, K, highest index used + 1, layout
        ((2, 3, 4), 10, 7, None),
        ((13,), 7, 7, None),
        ((1, 1, 1), 1, 1, None),
        ((3, 4, 5), 6, 4, "noncontiguous"),
        ((4, 9), 512, 300, None),
        ((2, 8, 8), 3, 3, None),
    ]
    for shape, k, top, layout in cases:
        idx = _layout(torch.randint(0, top, shape, generator=gen), layout)
        idx0 = idx.clone()
        label = f"code_usage(indices, {k}) for indices of shape {shape}"
        counts = _call(fn, idx, k, what=label)
        expect_tensor(counts, label, shape=(k,), dims="[K]", floating=True)
        ref = torch.bincount(to_long(idx).reshape(-1), minlength=k).to(_f64)
        if max_excess(counts, ref, 1e-6) > 0 or max_excess(ref, counts, 1e-6) > 0:
            total = float(to_f64(counts).sum())
            hint = (f" (they sum to {total:g}, but there are {idx.numel()} indices)"
                    if abs(total - idx.numel()) > 1e-6 else "")
            raise AssertionError(f"{label} has wrong counts{hint}")
        _assert_inputs_kept([(idx0, idx)], "code_usage")


@check
def check_perplexity(perplexity):
    """Check ``perplexity(counts [K]) -> scalar exp(-sum p log p)``."""
    fn = perplexity
    _own(fn, "perplexity")
    what = "perplexity(counts)"

    hand = [
        ([3.0, 3.0, 3.0, 3.0], 4.0, "all 4 codes used equally"),
        ([0.0, 5.0, 0.0], 1.0, "a single code used"),
        ([1.0, 1.0, 0.0, 2.0], 2.0 ** 1.5, "p = (1/4, 1/4, 0, 1/2)"),
        ([7.0], 1.0, "one code"),
    ]
    for values, expected, why in hand:
        counts = torch.tensor(values)
        label = f"{what} for counts = {values}"
        out = _call(fn, counts, what=label)
        got = _perplexity_value(out, label)
        if abs(got - expected) > 1e-5 * expected:
            raise AssertionError(f"{label} ({why}) must be {expected:.6g}, got {got:.6g}")

    gen = generator(1007)
    cases = [  # K, fraction of unused codes, scale, dtype
        (16, 0.0, 10.0, torch.float32),
        (16, 0.5, 10.0, torch.float32),
        (100, 0.3, 1e4, torch.float32),
        (9, 0.2, 3.0, torch.float64),
        (512, 0.9, 1e6, torch.float32),
    ]
    for k, unused, scale, dtype in cases:
        counts = (torch.rand(k, generator=gen, dtype=torch.float64) * scale).round()
        counts[torch.rand(k, generator=gen) < unused] = 0.0
        counts[0] = max(float(counts[0]), 1.0)
        counts = counts.to(dtype)
        counts0 = counts.clone()
        label = f"{what} for K={k} counts"
        got = _perplexity_value(_call(fn, counts, what=label), label)
        ref = float(_ref_perplexity(counts))
        if abs(got - ref) > 1e-5 * ref:
            raise AssertionError(f"{label} has the wrong value (expected about {ref:.4g}, "
                                 f"got {got:.4g})")
        _assert_inputs_kept([(counts0, counts)], "perplexity")


def _perplexity_value(out, label):
    if _type(out) is torch.Tensor and out.dim() == 0 and out.is_floating_point() \
            and not bool(to_f64(out).isfinite()):
        raise AssertionError(
            f"{label} must be finite even when some codes are unused (0 log 0 counts as 0), "
            f"got {float(to_f64(out))}")
    return expect_scalar(out, label)


@check
def check_VectorQuantizer(VectorQuantizer):
    """Check the ``VectorQuantizer(num_codes, code_dim, beta=0.25)`` module."""
    cls = VectorQuantizer
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"VectorQuantizer must be a subclass of torch.nn.Module, "
                             f"got {kind(cls)}")
    _own(cls, "VectorQuantizer")

    gen = generator(1008)
    cases = [  # B, D, H, W, K, beta (None: the default), layout
        (2, 4, 3, 5, 7, None, None),
        (1, 3, 1, 1, 1, 1.5, None),
        (2, 1, 4, 4, 5, 0.6, None),
        (3, 6, 2, 3, 16, 0.25, "channels_last"),
    ]
    for b, dim, h, w, k, beta, layout in cases:
        args = f"{k}, {dim}" + ("" if beta is None else f", beta={beta}")
        name = f"VectorQuantizer({args})"
        kwargs = {} if beta is None else {"beta": beta}
        module = call(cls, k, dim, what=name, forbid=_REFERENCE, **kwargs)
        if not _isinstance(module, _Module):
            raise AssertionError(f"{name} must be an nn.Module, got {kind(module)}")
        try:
            codebook = getattr(module, "codebook")
        except Exception:   # a missing attribute or a property that raises
            codebook = None
        if not _isinstance(codebook, _Parameter) or \
                not any(p is codebook for p in module.parameters()):
            raise AssertionError(
                f"{name}.codebook must be an nn.Parameter registered on the module (so the "
                f"optimizer trains it), got {kind(codebook)}")
        if tuple(codebook.shape) != (k, dim):
            raise AssertionError(f"{name}.codebook must have shape [K, D] = {(k, dim)}, "
                                 f"got {tuple(codebook.shape)}")
        if not codebook.requires_grad:
            raise AssertionError(f"{name}.codebook must require grad")
        init = to_f64(codebook)
        if not bool(init.isfinite().all()):
            raise AssertionError(f"{name}.codebook must be initialised with finite values")
        if k > 1 and float(torch.pdist(init).min()) == 0.0:
            raise AssertionError(
                f"the rows of {name}.codebook must start different from each other "
                "(initialise it randomly)")

        cb = _codebook(gen, k, dim)
        with torch.no_grad():
            codebook.copy_(cb)
        z_e = _layout(randn(gen, b, dim, h, w).requires_grad_(), layout)
        z0 = z_e.detach().clone()
        label = f"{name}(z_e) for z_e of shape {(b, dim, h, w)}"
        out = call(module, z_e, what=label, forbid=_REFERENCE)
        if _type(out) not in (tuple, list) or len(out) != 3:
            raise AssertionError(f"{label} must return (z_q, loss, info), got {kind(out)}")
        z_q, loss, info = out
        expect_tensor(z_q, "z_q", shape=(b, dim, h, w), dims="[B, D, H, W]", floating=True)
        loss_value = expect_scalar(loss, "loss")
        if not _isinstance(info, _dict):
            raise AssertionError(f"info must be a dict, got {kind(info)}")
        for key in ("indices", "perplexity"):
            if key not in _dict.keys(info):
                raise AssertionError(f"info must have the key {key!r}")
        idx = _dict.__getitem__(info, "indices")
        flat = _expect_indices(idx, "info['indices']", (b, h, w), "[B, H, W]", k)
        _assert_nearest(flat, _flat(z_e), cb, f"info['indices'] ({label})")
        zf = to_f64(z_e)
        tol = 1e-6 * (zf.abs().max() + to_f64(cb).abs().max()) + 1e-7
        _assert_rows_of_codebook(z_q, flat, cb, "z_q", float(tol))
        _assert_inputs_kept([(z0, z_e)], name)

        weight = 0.25 if beta is None else beta
        rows = to_f64(cb)[flat]                                           # [N, D]
        mse = float((_flat(z_e) - rows).pow(2).mean())
        expected = (1 + weight) * mse
        if abs(loss_value - expected) > 1e-5 * abs(expected) + 1e-8:
            raise AssertionError(
                f"loss of {name} has the wrong value: it must be codebook_loss + "
                f"beta * commitment_loss with beta={weight}")

        ref_ppl = float(_ref_perplexity(torch.bincount(flat, minlength=k)))
        ppl = expect_scalar(_dict.__getitem__(info, "perplexity"), "info['perplexity']",
                            allow_number=True)
        if abs(ppl - ref_ppl) > 1e-5 * ref_ppl:
            raise AssertionError(f"info['perplexity'] is wrong (expected {ref_ppl:.4g} for "
                                 f"these indices, got {ppl:.4g})")

        # gradients: z_q straight through to z_e; loss to the codebook and (beta) to z_e
        g = randn(gen, b, dim, h, w)
        ge, gc = grads((z_q * g).sum(), [z_e, codebook])
        if is_zero_grad(ge):
            raise AssertionError(
                f"z_q of {name} must pass the decoder's gradient straight through to z_e")
        assert_close(ge, g, "the gradient that z_q passes to z_e", atol=1e-6, rtol=1e-5,
                     hint=" (it must be the incoming gradient, unchanged)")
        if not is_zero_grad(gc):
            raise AssertionError(
                f"z_q of {name} must not send gradient to the codebook (only the codebook "
                "loss trains it)")

        n = z_e.numel()
        diff = _flat(z_e) - rows                                          # z_e - z_q, [N, D]
        ref_gc = torch.zeros(k, dim, dtype=_f64).index_add_(0, flat, -2 * diff / n)
        ref_ge = (2 * weight * diff / n).reshape(b, h, w, dim).permute(0, 3, 1, 2)
        ge, gc = grads(loss, [z_e, codebook])
        if is_zero_grad(gc):
            raise AssertionError(f"loss of {name} must send gradient to the codebook "
                                 "(through the codebook loss)")
        assert_close(gc, ref_gc, f"the gradient of loss of {name} with respect to the "
                     "codebook", atol=1e-7, rtol=1e-4,
                     hint=" (the codebook loss trains the codes; is beta on the right term?)")
        if is_zero_grad(ge):
            raise AssertionError(f"loss of {name} must send gradient to z_e (through the "
                                 "commitment loss)")
        assert_close(ge, ref_ge, f"the gradient of loss of {name} with respect to z_e",
                     atol=1e-7, rtol=1e-4,
                     hint=" (it comes from the commitment loss only, weighted by beta)")
