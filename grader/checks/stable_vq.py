"""Hidden tests of ``02_stable_vq``: keeping every code of a VQ codebook alive.

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_ema_update(fn)``             the EMA statistics and the Laplace-smoothed codebook
- ``check_kmeans_init(fn)``            a random start from rows of ``z``, Lloyd iterations
                                       to a fixed point, empty clusters re-seeded
- ``check_dead_codes(fn)``             ``cluster_size < threshold`` as a bool mask
- ``check_reset_dead_codes(fn)``       distinct random rows, restarted statistics,
                                       live codes untouched
- ``check_codebook_entropy_loss(fn)``  ``mean_n H(p_n) - H(mean_n p_n)``, its gradient, stability
- ``check_EMAVectorQuantizer(cls)``    buffers, updates in training mode only, the
                                       commitment-only loss, dead-code restarts

The references live here, in float64 (they never import ``dvl_helpers``).
Every function must leave its inputs unchanged (they are pure). Random
choices (k-means starts, restarts) are checked by their properties, never
against one particular draw: rows of ``z``, distinct, different for
different generators and the same for the same one.

Answers may use the phase-1 reference pieces of ``dvl_helpers.quantizers``
(``nearest_code``, ``quantize``, ``straight_through``, ``perplexity``, ...),
which is how later notebooks reuse earlier ones; calling this phase's own
reference implementations is caught (statically and while the answer runs).
"""
from __future__ import annotations

import math

import torch

from ._common import (
    _Module, _Parameter, all_finite, assert_close, assert_own_implementation, assert_unchanged, call,
    channels_last, check, expect_scalar, expect_tensor, generator, grads, is_zero_grad, kind,
    max_abs, max_excess, noncontiguous, randn, to_f64, to_long,
)

__all__ = [
    "check_ema_update", "check_kmeans_init", "check_dead_codes", "check_reset_dead_codes",
    "check_codebook_entropy_loss", "check_EMAVectorQuantizer",
]

#: What this phase adds to ``dvl_helpers.quantizers``: answers must not call it.
REFERENCE_NAMES = (
    "ema_update", "kmeans_init", "dead_codes", "reset_dead_codes", "codebook_entropy_loss",
    "EMAVectorQuantizer", "_kmeans_plus_plus", "_randperm", "_stat_dtype", "_check_statistics",
    "_check_flat_indices", "_check_number",
)
_REFERENCE = ("dvl_helpers.quantizers", REFERENCE_NAMES)

_issubclass = issubclass
_isinstance = isinstance
_type = type
_dict = dict
_f64 = torch.float64


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


def _keep(pairs, name):
    for before, after in pairs:
        assert_unchanged(before, after, name)


def _expect_triple(out, name):
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{name} must return a tuple of 3 tensors, got {kind(out)}")
    return out


def _fmt(values):
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# --------------------------------------------------------------------------
# References (float64, CPU)

def _ref_ema(cluster_size, embed_sum, z, indices, decay, eps):
    cluster_size, embed_sum, z = to_f64(cluster_size), to_f64(embed_sum), to_f64(z)
    indices = to_long(indices)
    k = cluster_size.shape[0]
    counts = torch.bincount(indices, minlength=k).to(_f64)
    sums = torch.zeros(k, z.shape[1], dtype=_f64).index_add_(0, indices, z)
    size = decay * cluster_size + (1 - decay) * counts
    total = size.sum()
    smoothed = (size + eps) / (total + k * eps) * total
    embed = decay * embed_sum + (1 - decay) * sums
    return size, embed, embed / smoothed[:, None]


def _ref_entropy_loss(distances, tau):
    d = to_f64(distances).requires_grad_(True)
    log_p = torch.log_softmax(-d / tau, dim=1)
    p = log_p.exp()
    sample = -(p * log_p).sum(1).mean()
    avg = p.mean(0)
    loss = sample + (avg * avg.clamp_min(1e-300).log()).sum()     # finite gradient at avg = 0
    return loss, torch.autograd.grad(loss, d)[0]


def _sq_dist(z, codebook):
    z, codebook = to_f64(z), to_f64(codebook)
    return (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1)


def _flat(z_e):
    z_e = to_f64(z_e)
    return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def _codebook(gen, k, d, scale=1.0):
    norms = torch.rand(k, 1, generator=gen) * 1.5 + 0.3
    return randn(gen, k, d, scale=scale) * norms


def _row_matches(codes, z, atol):
    """For each code, the index of a row of ``z`` equal to it (within atol), else -1."""
    d = (to_f64(codes)[:, None, :] - to_f64(z)[None, :, :]).abs().amax(-1)      # [K, N]
    best = d.min(dim=1)
    return torch.where(best.values <= atol, best.indices, torch.full_like(best.indices, -1))


# --------------------------------------------------------------------------
# ema_update

def _ema_case(gen, k, d, n, used, dtype=torch.float32):
    """Statistics with some nearly empty codes, and a batch that uses only ``used`` codes."""
    cluster_size = torch.rand(k, generator=gen, dtype=_f64) * 6 + 0.5
    low = torch.rand(k, generator=gen) < 0.3
    cluster_size[low] = torch.rand(int(low.sum()), generator=gen, dtype=_f64) * 1e-3
    embed_sum = torch.randn(k, d, generator=gen, dtype=_f64) * cluster_size[:, None]
    z = torch.randn(n, d, generator=gen, dtype=_f64) * 2
    indices = torch.randint(0, used, (n,), generator=gen)
    return cluster_size.to(dtype), embed_sum.to(dtype), z.to(dtype), indices


@check
def check_ema_update(ema_update):
    """Check ``ema_update(cluster_size, embed_sum, z, indices, decay, eps=1e-5)``."""
    fn = ema_update
    _own(fn, "ema_update")
    what = "ema_update(cluster_size, embed_sum, z, indices, decay, eps)"

    # by hand, eps = 0 (no smoothing): n = [1, 2], sums = [[7], [6]]
    cs = torch.tensor([1.0, 3.0])
    es = torch.tensor([[2.0], [3.0]])
    z = torch.tensor([[1.0], [5.0], [7.0]])
    idx = torch.tensor([1, 1, 0])
    label = ("ema_update for cluster_size=[1, 3], embed_sum=[[2], [3]], z=[[1], [5], [7]], "
             "indices=[1, 1, 0], decay=0.5, eps=0")
    out = _expect_triple(_call(fn, cs, es, z, idx, 0.5, eps=0.0, what=label), "ema_update")
    expected = ([1.0, 2.5], [4.5, 4.5], [4.5, 1.8])
    for value, name, shape, dims, want in zip(out, ("cluster_size", "embed_sum", "codebook"),
                                              ((2,), (2, 1), (2, 1)), ("[K]", "[K, D]", "[K, D]"),
                                              expected):
        expect_tensor(value, f"the new {name}", shape=shape, dims=dims, floating=True)
        got = to_f64(value).reshape(-1)
        if max_excess(got, torch.tensor(want, dtype=_f64), 1e-5) > 0:
            raise AssertionError(f"{label}: the new {name} must be {_fmt(want)}, "
                                 f"got {_fmt(got.tolist())}")

    gen = generator(2001)
    cases = [  # K, D, N, codes used, decay, eps, dtype, layout
        (8, 3, 40, 8, 0.99, 1e-5, torch.float32, None),
        (5, 2, 7, 3, 0.9, 1e-3, torch.float32, None),
        (16, 4, 100, 12, 0.0, 1e-5, torch.float32, None),
        (3, 5, 12, 3, 0.5, 0.1, torch.float64, None),
        (1, 2, 5, 1, 0.99, 1e-5, torch.float32, None),
        (64, 8, 30, 64, 0.99, 1e-5, torch.float32, "noncontiguous"),
        (6, 3, 20, 4, 0.8, 1.0, torch.float32, None),
    ]
    for k, d, n, used, decay, eps, dtype, layout in cases:
        cs, es, z, idx = _ema_case(gen, k, d, n, used, dtype)
        if layout:
            z = noncontiguous(z)
        before = [t.clone() for t in (cs, es, z, idx)]
        label = f"{what} for K={k}, D={d}, N={n}, decay={decay}, eps={eps}"
        out = _expect_triple(_call(fn, cs, es, z, idx, decay, eps=eps, what=label), "ema_update")
        new_cs, new_es, new_cb = out
        expect_tensor(new_cs, "the new cluster_size", shape=(k,), dims="[K]", floating=True)
        expect_tensor(new_es, "the new embed_sum", shape=(k, d), dims="[K, D]", floating=True)
        expect_tensor(new_cb, "the new codebook", shape=(k, d), dims="[K, D]", floating=True)
        _keep(zip(before, (cs, es, z, idx)), "ema_update")
        ref_cs, ref_es, ref_cb = _ref_ema(cs, es, z, idx, decay, eps)

        if not _close(new_cs, ref_cs):
            swapped = (1 - decay) * to_f64(cs) + decay * torch.bincount(
                to_long(idx), minlength=k).to(_f64)
            hint = (" (decay must weigh the old counts and 1 - decay the new ones)"
                    if decay not in (0.5,) and _close(new_cs, swapped) else
                    " (N <- decay * N + (1 - decay) * n, with n the number of rows of z "
                    "assigned to each code)")
            raise AssertionError(f"the new cluster_size of {label} is wrong{hint}")
        if not _close(new_es, ref_es):
            raise AssertionError(
                f"the new embed_sum of {label} is wrong (M <- decay * M + (1 - decay) * the sum, "
                "not the mean, of the rows of z assigned to each code)")
        if not _close(new_cb, ref_cb, rtol=1e-4):
            unsmoothed = ref_es / ref_cs.clamp_min(1e-300)[:, None]
            hint = (" (use the Laplace-smoothed counts (N + eps) / (sum N + K eps) * sum N, "
                    "not N itself)" if eps > 0 and _close(new_cb, unsmoothed, rtol=1e-4) else
                    " (codebook = embed_sum / the Laplace-smoothed new counts)")
            raise AssertionError(f"the new codebook of {label} is wrong{hint}")


def _close(actual, expected, rtol=1e-5, atol=1e-6):
    """Quiet version of assert_close: True when within tolerance and finite."""
    with torch.no_grad():
        expected = to_f64(expected)
        if tuple(actual.shape) != tuple(expected.shape):
            return False
        tol = expected.abs() * rtol + atol
        return bool(to_f64(actual).isfinite().all()) and max_excess(actual, expected, tol) <= 0


# --------------------------------------------------------------------------
# kmeans_init

def _blobs(gen):
    """Six tight, well separated clusters of different sizes in D=3, rows shuffled."""
    centres = torch.tensor([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0],
                            [0.0, 0.0, 8.0], [8.0, 8.0, 8.0], [-8.0, 4.0, -4.0]])
    sizes = (10, 15, 20, 25, 30, 20)
    z = torch.cat([c + 0.1 * torch.randn(s, 3, generator=gen) for c, s in zip(centres, sizes)])
    return z[torch.randperm(z.shape[0], generator=gen)]


def _expect_codebook(out, label, k, d):
    expect_tensor(out, label, shape=(k, d), dims="[K, D]", floating=True)
    if not bool(to_f64(out).isfinite().all()):
        raise AssertionError(
            f"{label} contains NaN or inf (the mean of an empty cluster is 0/0: re-seed empty "
            "clusters with a random row of z instead)")
    return to_f64(out)


@check
def check_kmeans_init(kmeans_init):
    """Check ``kmeans_init(z, num_codes, iters=10, generator=None) -> codebook [K, D]``."""
    fn = kmeans_init
    _own(fn, "kmeans_init")
    gen = generator(2002)
    z = _blobs(gen)
    z0 = z.clone()

    # the start alone: rows of z, random, reproducible
    starts = []
    for seed in range(4):
        label = f"kmeans_init(z, 6, iters=0, generator=torch.Generator().manual_seed({seed}))"
        out = _expect_codebook(_call(fn, z, 6, iters=0, generator=generator(seed), what=label),
                               label, 6, 3)
        if bool((_row_matches(out, z, 1e-6) < 0).any()):
            raise AssertionError(
                f"{label} must return the start alone, and every code of the start must be a "
                "row of z (a random sample or k-means++); iters is the number of Lloyd "
                "iterations")
        starts.append(out)
    if all(max_abs(s - starts[0]) == 0 for s in starts[1:]):
        raise AssertionError(
            "kmeans_init must draw its start at random from generator: four different "
            "generators gave the same start")
    again = _call(fn, z, 6, iters=0, generator=generator(0), what="kmeans_init(z, 6, iters=0)")
    if max_abs(to_f64(again) - starts[0]) > 0:
        raise AssertionError(
            "kmeans_init must draw from the generator it is given: the same seed gave two "
            "different results (is the global random generator used instead?)")

    # Lloyd iterations: a fixed point (every code the mean of the rows nearest to it)
    for seed in (10, 11, 12):
        label = f"kmeans_init(z, 6, iters=20, generator=torch.Generator().manual_seed({seed}))"
        out = _expect_codebook(_call(fn, z, 6, iters=20, generator=generator(seed), what=label),
                               label, 6, 3)
        assign = _sq_dist(z, out).argmin(1)
        for j in range(6):
            members = to_f64(z)[assign == j]
            if members.shape[0] == 0:
                raise AssertionError(
                    f"after {label} on 6 separated clusters, code {j} is nearest to no row of z "
                    "(re-seed empty clusters with a random row of z)")
            gap = float((members.mean(0) - out[j]).abs().max())
            if gap > 1e-3:
                rows = bool((_row_matches(out, z, 1e-6) >= 0).all())
                hint = (" (every code is still a row of z: run the Lloyd iterations)" if rows
                        else "")
                raise AssertionError(
                    f"after {label} on 6 separated clusters, code {j} must be the mean of the "
                    f"rows of z nearest to it (Lloyd's fixed point); it is {gap:.3g} away{hint}")
    _keep([(z0, z)], "kmeans_init")

    # duplicated rows: empty clusters appear and must be re-seeded
    points = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    dup = points.repeat(8, 1)[torch.randperm(32, generator=gen)]
    for seed in range(5):
        label = (f"kmeans_init(z, 4, iters=20, generator=torch.Generator().manual_seed({seed})) "
                 "for z holding 4 distinct points 8 times each")
        out = _expect_codebook(_call(fn, dup, 4, iters=20, generator=generator(seed), what=label),
                               label, 4, 2)
        found = _row_matches(points, out, 1e-5)
        if bool((found < 0).any()):
            raise AssertionError(
                f"{label} must put one code on each point; got {out.tolist()} (two codes that "
                "start on the same point leave one cluster empty: re-seed it with a random row "
                "of z)")

    # every row its own code; the global generator when none is given
    few = _codebook(gen, 5, 4)
    label = "kmeans_init(z, 5) for z with 5 rows"
    out = _expect_codebook(_call(fn, few, 5, what=label), label, 5, 4)
    if bool((_row_matches(few, out, 1e-5) < 0).any()):
        raise AssertionError(f"{label} (no generator given) must make every row of z a code")


# --------------------------------------------------------------------------
# dead_codes

@check
def check_dead_codes(dead_codes):
    """Check ``dead_codes(cluster_size, threshold) -> bool [K]``."""
    fn = dead_codes
    _own(fn, "dead_codes")

    cs = torch.tensor([0.5, 2.0, 1.0, 0.0])
    label = "dead_codes(cluster_size=[0.5, 2, 1, 0], threshold=1.0)"
    out = _call(fn, cs, 1.0, what=label)
    expect_tensor(out, label, shape=(4,), dims="[K]", dtype=torch.bool)
    if to_long(out).tolist() != [1, 0, 0, 1]:
        raise AssertionError(
            f"{label} must be [True, False, False, True] (dead means cluster_size < threshold; "
            f"a code used exactly threshold times is alive), got {to_long(out).bool().tolist()}")

    gen = generator(2003)
    cases = [  # K, threshold, dtype, layout
        (50, 0.3, torch.float32, None),
        (7, 2, torch.float64, None),
        (1, 1.0, torch.float32, None),
        (33, 1e-3, torch.float32, "noncontiguous"),
    ]
    for k, threshold, dtype, layout in cases:
        cs = (torch.rand(k, generator=gen, dtype=_f64) * 2 * threshold).to(dtype)
        cs[0] = threshold
        if layout:
            cs = noncontiguous(cs)
        cs0 = cs.clone()
        label = f"dead_codes(cluster_size, {threshold}) for K={k}"
        out = _call(fn, cs, threshold, what=label)
        expect_tensor(out, label, shape=(k,), dims="[K]", dtype=torch.bool)
        if not torch.equal(to_long(out), (to_f64(cs0) < threshold).long()):
            raise AssertionError(f"{label} is wrong: True exactly where cluster_size < threshold")
        _keep([(cs0, cs)], "dead_codes")


# --------------------------------------------------------------------------
# reset_dead_codes

def _reset_case(gen, k, d, n, dead_list):
    codebook = _codebook(gen, k, d)
    cluster_size = torch.rand(k, generator=gen) * 5 + 2
    dead = torch.zeros(k, dtype=torch.bool)
    dead[list(dead_list)] = True
    cluster_size[dead] = torch.rand(int(dead.sum()), generator=gen) * 0.5
    embed_sum = codebook * cluster_size[:, None] + 0.01 * randn(gen, k, d)   # a bit stale
    z = randn(gen, n, d) + 10.0                     # distinct rows, far from the codes
    return codebook, cluster_size, embed_sum, dead, z


def _check_reset(fn, case, seed, what):
    codebook, cluster_size, embed_sum, dead, z = case
    inputs = (codebook, cluster_size, embed_sum, dead, z)
    before = [t.clone() for t in inputs]
    gen = generator(seed) if seed is not None else None
    out = _expect_triple(_call(fn, *inputs, generator=gen, what=what), "reset_dead_codes")
    k, d = codebook.shape
    new_cb, new_cs, new_es = out
    expect_tensor(new_cb, "the new codebook", shape=(k, d), dims="[K, D]", floating=True)
    expect_tensor(new_cs, "the new cluster_size", shape=(k,), dims="[K]", floating=True)
    expect_tensor(new_es, "the new embed_sum", shape=(k, d), dims="[K, D]", floating=True)
    _keep(zip(before, inputs), "reset_dead_codes")

    cb, cs, es = to_f64(new_cb), to_f64(new_cs), to_f64(new_es)
    old_cb, old_cs, old_es = to_f64(codebook), to_f64(cluster_size), to_f64(embed_sum)
    changed = ((cb - old_cb).abs().amax(1) > 1e-6) | ((cs - old_cs).abs() > 1e-6) | \
        ((es - old_es).abs().amax(1) > 1e-6)
    live = ~dead
    if bool((changed & live).any()):
        j = int((changed & live).nonzero()[0])
        raise AssertionError(f"{what}: code {j} is alive (dead[{j}] is False) but its codebook "
                             "row or statistics changed; live codes must stay as they are")
    n_dead, n = int(dead.sum()), z.shape[0]
    moved = changed & dead
    expected = min(n_dead, n)
    if int(moved.sum()) != expected:
        more = (f" (there are more dead codes than rows of z: reset {n} of them, one per row)"
                if n_dead > n else "")
        raise AssertionError(f"{what}: {expected} dead codes must be restarted, "
                             f"{int(moved.sum())} were{more}")
    if expected == 0:
        return None
    which = moved.nonzero().flatten()
    rows = _row_matches(cb[which], z, 1e-6)
    if bool((rows < 0).any()):
        raise AssertionError(f"{what}: every restarted code must be a row of z")
    if len(set(rows.tolist())) != rows.numel():
        raise AssertionError(
            f"{what}: two dead codes took the same row of z; draw the rows without replacement "
            "(each dead code a different row)")
    if max_excess(cs[which], torch.ones(which.numel(), dtype=_f64), 1e-6) > 0 or \
            max_excess(torch.ones(which.numel(), dtype=_f64), cs[which], 1e-6) > 0:
        raise AssertionError(
            f"{what}: the cluster_size of a restarted code must become 1 (with its stale count "
            "the next EMA step drags it back to its old mean)")
    if max_excess(es[which], cb[which], 1e-6) > 0 or max_excess(cb[which], es[which], 1e-6) > 0:
        raise AssertionError(
            f"{what}: the embed_sum of a restarted code must become its new vector (count 1, "
            "sum = the vector), so that the next EMA step keeps it there")
    return tuple(sorted(rows.tolist()))


@check
def check_reset_dead_codes(reset_dead_codes):
    """Check ``reset_dead_codes(codebook, cluster_size, embed_sum, dead, z, generator=None)``."""
    fn = reset_dead_codes
    _own(fn, "reset_dead_codes")
    what = "reset_dead_codes(codebook, cluster_size, embed_sum, dead, z, generator)"
    gen = generator(2004)

    _check_reset(fn, _reset_case(gen, 10, 3, 12, [1, 4, 5, 9]), 0, f"{what} with 4 dead codes")
    _check_reset(fn, _reset_case(gen, 6, 2, 5, []), 0, f"{what} with no dead code")
    _check_reset(fn, _reset_case(gen, 10, 3, 4, [0, 2, 3, 5, 6, 8, 9]), 1,
                 f"{what} with 7 dead codes and 4 rows of z")
    for seed in range(3):
        _check_reset(fn, _reset_case(gen, 8, 2, 6, [0, 1, 3, 4, 5, 7]), seed,
                     f"{what} with 6 dead codes and 6 rows of z")
    _check_reset(fn, _reset_case(gen, 5, 4, 9, [2]), None, f"{what} with generator=None")

    # random and reproducible: the same seed, the same rows; other seeds, other rows
    case = _reset_case(gen, 12, 3, 20, [0, 5, 7])
    picks = [_check_reset(fn, case, seed, f"{what} with 3 dead codes and 20 rows")
             for seed in (0, 1, 2, 3, 4, 0)]
    if picks[0] != picks[-1]:
        raise AssertionError(
            "reset_dead_codes must draw from the generator it is given: the same seed gave "
            "different rows (is the global random generator used instead?)")
    if len(set(picks)) == 1:
        raise AssertionError(
            "reset_dead_codes must pick the rows of z at random: five generators picked the "
            "same rows")


# --------------------------------------------------------------------------
# codebook_entropy_loss

def _entropy_value(out, label, scale):
    if _type(out) is torch.Tensor and out.dim() == 0 and out.is_floating_point() and \
            not bool(to_f64(out).isfinite()):
        raise AssertionError(
            f"{label} is not finite for distances up to {scale:g}: p log p with p = 0 gives "
            "0 * -inf = NaN (use log_softmax, or count 0 log 0 as 0)")
    return expect_scalar(out, label)


@check
def check_codebook_entropy_loss(codebook_entropy_loss):
    """Check ``codebook_entropy_loss(distances [N, K], tau=1.0) -> scalar``."""
    fn = codebook_entropy_loss
    _own(fn, "codebook_entropy_loss")
    what = "codebook_entropy_loss(distances, tau)"

    hand = [
        (torch.zeros(6, 4), 1.0, 0.0,
         "every distance equal: each p_n uniform, H(p_n) = H(mean p) = log 4"),
        (1e3 * (1 - torch.eye(4)), 1.0, -math.log(4),
         "each vector clearly nearest to a different code: mean H(p_n) = 0, H(mean p) = log 4"),
        (torch.cat([torch.zeros(5, 1), torch.full((5, 2), 1e3)], 1), 1.0, 0.0,
         "every vector clearly nearest to code 0: both entropies 0"),
    ]
    for d, tau, expected, why in hand:
        label = f"{what} ({why})"
        d = d.requires_grad_()
        out = _call(fn, d, tau, what=label)
        got = _entropy_value(out, label, float(d.max()))
        if abs(got - expected) > 1e-4:
            hint = (" (the signs are swapped: minimise mean_n H(p_n) and maximise "
                    "H(mean_n p_n))" if expected and abs(got + expected) <= 1e-4 else "")
            raise AssertionError(f"{label} must be {expected:.4g}, got {got:.4g}{hint}")
        _assert_entropy_grad(out, d, _ref_entropy_loss(d, tau)[1], label)

    gen = generator(2005)
    cases = [  # N, K, scale, tau (None: default), dtype
        (20, 8, 2.0, 1.0, torch.float32),
        (5, 3, 1.0, 0.5, torch.float32),
        (50, 16, 5.0, 2.0, torch.float32),
        (7, 1, 1.0, 1.0, torch.float32),
        (30, 10, 3.0, None, torch.float32),
        (12, 6, 1.0, 0.1, torch.float64),
        (16, 8, 1e3, 1.0, torch.float32),
    ]
    for n, k, scale, tau, dtype in cases:
        d = (torch.rand(n, k, generator=gen, dtype=_f64) * scale).to(dtype).requires_grad_()
        d0 = d.detach().clone()
        args = (d,) if tau is None else (d, tau)
        label = f"{what} for N={n}, K={k}, tau={'default' if tau is None else tau}"
        out = _call(fn, *args, what=label)
        got = _entropy_value(out, label, scale)
        ref, ref_grad = _ref_entropy_loss(d0, 1.0 if tau is None else tau)
        if abs(got - float(ref)) > 1e-5 + 1e-4 * abs(float(ref)):
            hint = ""
            if abs(got + float(ref)) <= 1e-5 + 1e-4 * abs(float(ref)):
                hint = (" (the signs are swapped: minimise mean_n H(p_n) and maximise "
                        "H(mean_n p_n))")
            raise AssertionError(f"{label} is wrong: expected {float(ref):.6g}, got {got:.6g}"
                                 f"{hint}")
        _keep([(d0, d)], "codebook_entropy_loss")
        _assert_entropy_grad(out, d, ref_grad, label)


def _assert_entropy_grad(out, d, ref_grad, label):
    g, = grads(out, [d])
    if is_zero_grad(g) and max_abs(ref_grad) > 1e-8:
        raise AssertionError(f"{label} must be differentiable with respect to distances "
                             "(it is a loss)")
    if g is not None and not all_finite(g):
        raise AssertionError(
            f"the gradient of {label} contains NaN or inf (for 0 log 0, "
            "torch.special.xlogy(p, p) has a NaN gradient at p = 0: clamp inside the log, "
            "p * p.clamp_min(1e-12).log())")
    if g is not None:
        assert_close(g, ref_grad, f"the gradient of {label}", atol=1e-6, rtol=1e-3)


# --------------------------------------------------------------------------
# EMAVectorQuantizer

def _buffer(module, name, shape, dims, cls_name):
    try:
        value = getattr(module, name)
    except Exception:   # a missing attribute or a property that raises
        value = None
    if _isinstance(value, _Parameter):
        raise AssertionError(
            f"{cls_name}.{name} must be a buffer, not an nn.Parameter: the EMA updates it, "
            "not the optimizer (register_buffer)")
    if _type(value) is not torch.Tensor:
        raise AssertionError(f"{cls_name}.{name} must be a tensor buffer {dims}, got "
                             f"{kind(value)}")
    if not any(b is value for b in module.buffers()):
        raise AssertionError(
            f"{cls_name}.{name} must be registered with register_buffer (so it is saved with "
            "the model and moves with .to(device))")
    if tuple(value.shape) != shape:
        raise AssertionError(f"{cls_name}.{name} must have shape {dims} = {shape}, "
                             f"got {tuple(value.shape)}")
    return value


def _state(module, cls_name, k, d):
    return {
        "codebook": _buffer(module, "codebook", (k, d), "[K, D]", cls_name),
        "cluster_size": _buffer(module, "cluster_size", (k,), "[K]", cls_name),
        "embed_sum": _buffer(module, "embed_sum", (k, d), "[K, D]", cls_name),
    }


def _set_state(module, cls_name, codebook, cluster_size, embed_sum):
    k, d = codebook.shape
    state = _state(module, cls_name, k, d)
    with torch.no_grad():
        state["codebook"].copy_(codebook)
        state["cluster_size"].copy_(cluster_size)
        state["embed_sum"].copy_(embed_sum)


def _snapshot(module, cls_name, k, d):
    state = _state(module, cls_name, k, d)
    for name, value in state.items():
        if value.requires_grad or value.grad_fn is not None:
            raise AssertionError(
                f"{cls_name}.{name} carries an autograd graph after a forward pass: update the "
                "statistics without gradient (torch.no_grad() or z_e.detach())")
    return {name: to_f64(value) for name, value in state.items()}


def _run(module, z_e, label, k):
    out = call(module, z_e, what=label, forbid=_REFERENCE)
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{label} must return (z_q, loss, info), got {kind(out)}")
    z_q, loss, info = out
    b, d, h, w = z_e.shape
    expect_tensor(z_q, "z_q", shape=(b, d, h, w), dims="[B, D, H, W]", floating=True)
    expect_scalar(loss, "loss")
    if not _isinstance(info, _dict):
        raise AssertionError(f"info must be a dict, got {kind(info)}")
    for key in ("indices", "perplexity", "usage"):
        if key not in _dict.keys(info):
            raise AssertionError(f"info must have the key {key!r}")
    idx = _dict.__getitem__(info, "indices")
    expect_tensor(idx, "info['indices']", shape=(b, h, w), dims="[B, H, W]", dtype=torch.long)
    flat = to_long(idx).reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= k):
        raise AssertionError(f"info['indices'] must lie in [0, K) = [0, {k})")
    return z_q, loss, info, flat


def _assert_forward(module, z_e, before, beta, label, k):
    """z_q, loss, info and gradients of one forward pass; returns the flat indices."""
    z0 = z_e.detach().clone()
    z_q, loss, info, flat = _run(module, z_e, label, k)
    zf = _flat(z0)
    cb = before["codebook"]
    d = _sq_dist(zf, cb)
    chosen = d.gather(1, flat[:, None]).squeeze(1)
    slack = 3e-5 * (zf.pow(2).sum(1) + cb.pow(2).sum(1).max()) + 1e-6
    if bool((chosen - d.min(1).values > slack).any()):
        raise AssertionError(f"info['indices'] of {label} must be the nearest codes of the "
                             "codebook as it was when the forward pass began")
    usage = _dict.__getitem__(info, "usage")
    expect_tensor(usage, "info['usage']", shape=(k,), dims="[K]", floating=True)
    counts = torch.bincount(flat, minlength=k).to(_f64)
    if max_excess(usage, counts, 1e-6) > 0 or max_excess(counts, usage, 1e-6) > 0:
        raise AssertionError("info['usage'] must count how often each code was chosen")
    p = counts / counts.sum()
    ref_ppl = float(torch.exp(-torch.special.xlogy(p, p).sum()))
    ppl = expect_scalar(_dict.__getitem__(info, "perplexity"), "info['perplexity']",
                        allow_number=True)
    if abs(ppl - ref_ppl) > 1e-4 * ref_ppl:
        raise AssertionError(f"info['perplexity'] is wrong (expected {ref_ppl:.4g}, "
                             f"got {ppl:.4g})")

    rows = _flat(z_q)
    tol = 1e-5 * (1 + float(zf.abs().max()) + float(cb.abs().max()))
    if max_excess(rows, cb[flat], tol) > 0:
        after = to_f64(getattr(module, "codebook"))
        if max_excess(rows, after[flat], tol) > 0:
            raise AssertionError(f"z_q of {label} must be made of codebook rows: "
                                 "z_q[b, :, h, w] = codebook[indices[b, h, w]]")
    n = rows.numel()
    expected = beta * float((zf - rows).pow(2).mean())
    value = expect_scalar(loss, "loss")
    if abs(value - expected) > 1e-5 * abs(expected) + 1e-8:
        codebook_term = (1 + beta) * float((zf - rows).pow(2).mean())
        hint = (" (it includes the codebook loss: with EMA updates the codebook has no loss "
                "term)" if abs(value - codebook_term) <= 1e-5 * codebook_term + 1e-8 else "")
        raise AssertionError(f"loss of {label} must be beta * commitment_loss with "
                             f"beta={beta}{hint}")
    _keep([(z0, z_e)], label.split("(")[0])

    g = torch.randn(z_e.shape, generator=generator(7), dtype=z_e.dtype)
    ge, = grads((z_q * g).sum(), [z_e])
    if is_zero_grad(ge):
        raise AssertionError(f"z_q of {label} must pass the decoder's gradient straight through "
                             "to z_e")
    assert_close(ge, g, "the gradient that z_q passes to z_e", atol=1e-6, rtol=1e-5,
                 hint=" (it must be the incoming gradient, unchanged)")
    ge, = grads(loss, [z_e])
    ref_ge = (2 * beta * (zf - rows) / n).reshape(z_e.shape[0], z_e.shape[2], z_e.shape[3], -1)
    assert_close(ge, ref_ge.permute(0, 3, 1, 2), f"the gradient of loss of {label} with "
                 "respect to z_e", atol=1e-7, rtol=1e-4,
                 hint=" (it comes from beta * the commitment loss only)")
    return zf, flat


def _assert_state(module, cls_name, expected, label):
    k, d = expected[2].shape
    got = _snapshot(module, cls_name, k, d)
    for name, want in zip(("cluster_size", "embed_sum", "codebook"), expected):
        if not _close(got[name], want, rtol=1e-4, atol=1e-5):
            raise AssertionError(
                f"{cls_name}.{name} after {label} is wrong: in training mode the forward pass "
                "must apply one ema_update with the batch (decay, eps of the constructor) to "
                "the statistics and the codebook")


def _module(cls, cls_name, args, kwargs):
    text = ", ".join([*map(str, args), *(f"{k}={v}" for k, v in kwargs.items())])
    name = f"{cls_name}({text})"
    module = call(cls, *args, what=name, forbid=_REFERENCE, **kwargs)
    if not _isinstance(module, _Module):
        raise AssertionError(f"{name} must be an nn.Module, got {kind(module)}")
    for p in module.parameters():
        if p.requires_grad and tuple(p.shape) == tuple(args[:2]):
            raise AssertionError(
                f"{name} has a trainable [K, D] parameter: the EMA codebook must be a buffer "
                "that no gradient reaches")
    return module, name


@check
def check_EMAVectorQuantizer(EMAVectorQuantizer):
    """Check the ``EMAVectorQuantizer(num_codes, code_dim, beta, decay, eps, dead_threshold)``."""
    cls = EMAVectorQuantizer
    cls_name = "EMAVectorQuantizer"
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"{cls_name} must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, cls_name)
    gen = generator(2006)

    # a fresh module: buffers, initialisation, one step with the defaults
    k, d = 7, 4
    module, name = _module(cls, cls_name, (k, d), {})
    state = _snapshot(module, name, k, d)
    init = state["codebook"]
    if not bool(init.isfinite().all()):
        raise AssertionError(f"{name}.codebook must be initialised with finite values")
    if float(torch.pdist(init).min()) == 0.0:
        raise AssertionError(f"the rows of {name}.codebook must start different from each other")
    names = set(_dict(module.state_dict()).keys())
    for key in ("codebook", "cluster_size", "embed_sum"):
        if key not in names:
            raise AssertionError(f"{name}.{key} must be in state_dict() (a persistent buffer)")
    module.train()
    # a batch near codes 0 and 1 only: codes 2..K-1 are not used by it
    near = init[torch.randint(0, 2, (2 * 3 * 3,), generator=gen)]
    z_e = (near + 0.01 * torch.randn(near.shape, generator=gen, dtype=_f64)).float()
    z_e = z_e.reshape(2, 3, 3, d).permute(0, 3, 1, 2).contiguous().requires_grad_()
    label = f"{name}(z_e) in training mode"
    zf, flat = _assert_forward(module, z_e, state, 0.25, label, k)
    after = _snapshot(module, name, k, d)["codebook"]
    unused = torch.ones(k, dtype=torch.bool)
    unused[flat] = False
    if bool(unused.any()):
        moved = float(((after - init)[unused]).abs().max() / (init[unused].abs().max() + 1e-8))
        if moved > 1e-3 and bool((_row_matches(after[unused], zf, 1e-5) >= 0).any()):
            raise AssertionError(
                f"{label} restarted codes, but dead_threshold is None by default: without a "
                "threshold no code is restarted")
        if moved > 1e-3:
            raise AssertionError(
                f"codes that the first batch does not use must stay where they were, but they "
                f"moved (relative change {moved:.3g}): initialise cluster_size and embed_sum so "
                "that embed_sum / cluster_size is the codebook (e.g. ones and a copy of it)")
    _assert_state(module, name, _ref_ema(state["cluster_size"], state["embed_sum"], zf, flat,
                                         0.99, 1e-5), label + " (default decay=0.99, eps=1e-5)")

    # chosen statistics, two training steps, then eval mode
    k, d, beta, decay, eps = 9, 3, 0.6, 0.9, 1e-3
    module, name = _module(cls, cls_name, (k, d), {"beta": beta, "decay": decay, "eps": eps})
    codebook = _codebook(gen, k, d)
    codebook[7:] += 50.0                                  # never chosen
    cluster_size = torch.rand(k, generator=gen) * 3 + 0.5
    cluster_size[7:] = 1e-3                                # would be dead under any threshold
    _set_state(module, name, codebook, cluster_size, codebook * cluster_size[:, None])
    module.train()
    for step, layout in enumerate((None, "channels_last")):
        state = _snapshot(module, name, k, d)
        z_e = randn(gen, 2, d, 4, 3, scale=1.2).requires_grad_()
        if layout:
            z_e = channels_last(z_e)
        label = f"{name}(z_e), training step {step + 1}"
        zf, flat = _assert_forward(module, z_e, state, beta, label, k)
        _assert_state(module, name, _ref_ema(state["cluster_size"], state["embed_sum"], zf, flat,
                                             decay, eps),
                      label + " (with dead_threshold=None no code is restarted)")
    module.eval()
    state = _snapshot(module, name, k, d)
    z_e = randn(gen, 3, d, 2, 2).requires_grad_()
    label = f"{name}(z_e) in eval mode"
    _assert_forward(module, z_e, state, beta, label, k)
    now = _snapshot(module, name, k, d)
    for key in ("codebook", "cluster_size", "embed_sum"):
        if max_excess(now[key], state[key], 0.0) > 0 or max_excess(state[key], now[key], 0.0) > 0:
            raise AssertionError(f"{label} changed {name}.{key}: the codebook and its statistics "
                                 "may only be updated in training mode (self.training)")

    # dead-code restarts after the EMA step
    k, d, threshold = 8, 3, 0.5
    module, name = _module(cls, cls_name, (k, d), {"dead_threshold": threshold})
    codebook = _codebook(gen, k, d)
    codebook[4:] += 50.0                                  # never chosen
    cluster_size = torch.tensor([5.0, 5.0, 5.0, 5.0, 0.1, 0.2, 0.05, 3.0])
    _set_state(module, name, codebook, cluster_size, codebook * cluster_size[:, None])
    module.train()
    state = _snapshot(module, name, k, d)
    z_e = randn(gen, 2, d, 3, 3).requires_grad_()
    label = f"{name}(z_e) in training mode"
    zf, flat = _assert_forward(module, z_e, state, 0.25, label, k)
    ref_cs, ref_es, ref_cb = _ref_ema(state["cluster_size"], state["embed_sum"], zf, flat,
                                      0.99, 1e-5)
    dead = ref_cs < threshold                             # codes 4, 5, 6
    now = _snapshot(module, name, k, d)
    live = ~dead
    for key, want in (("cluster_size", ref_cs), ("embed_sum", ref_es), ("codebook", ref_cb)):
        if not _close(now[key][live], want[live], rtol=1e-4, atol=1e-5):
            raise AssertionError(f"{name}.{key} of live codes after {label} is wrong: apply "
                                 "ema_update first, then restart only the dead codes")
    rows = _row_matches(now["codebook"][dead], zf, 1e-5)
    if bool((rows < 0).any()):
        raise AssertionError(
            f"after {label}, codes whose EMA count fell below dead_threshold={threshold} must be "
            "restarted on vectors of the batch (rows of the flattened z_e), after the EMA step "
            "(a code restarted before it is moved again by it)")
    if len(set(rows.tolist())) != rows.numel():
        raise AssertionError(f"after {label}, two restarted codes took the same vector")
    if max_excess(now["cluster_size"][dead], torch.ones(int(dead.sum()), dtype=_f64), 1e-5) > 0 \
            or max_excess(torch.ones(int(dead.sum()), dtype=_f64), now["cluster_size"][dead],
                          1e-5) > 0 \
            or max_excess(now["embed_sum"][dead], now["codebook"][dead], 1e-5) > 0 \
            or max_excess(now["codebook"][dead], now["embed_sum"][dead], 1e-5) > 0:
        raise AssertionError(
            f"after {label}, a restarted code must have cluster_size 1 and embed_sum equal to "
            "its new vector (restart after the EMA step, so the next step keeps it)")
