"""Hidden tests of ``03_gumbel_dvae``: Gumbel-softmax relaxations and the dVAE bottleneck.

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_sample_gumbel(fn)``         shape, the generator, finite values, and a
                                      Kolmogorov-Smirnov test against Gumbel(0, 1)
- ``check_gumbel_softmax(fn)``        soft samples on the simplex along ``dim``, their
                                      gradient, lower ``tau`` sharper, the argmax following
                                      ``softmax(logits)`` (chi-square), the noise on the
                                      right scale (a logistic KS test), hard samples one-hot
                                      with the soft sample's gradient
- ``check_temperature_schedule(fn)``  ``exp`` and ``linear`` annealing, clamped at ``tau_end``
- ``check_kl_to_uniform(fn)``         values ``[B]``, gradients, extreme logits
- ``check_GumbelQuantizer(cls)``      the codebook, ``z_q = sum_k y_k e_k``, the sample, the
                                      KL, indices, perplexity, gradients, eval mode

Statistical tests use fixed generators (or a fixed global seed for the layer), so a
verdict is reproducible; every correct way of drawing the noise gives some other
sample, so their thresholds are p-values of ``1e-6`` (a correct answer fails one in
a million draws per test) while the wrong answers they target give p-values many
orders of magnitude below it on these sample sizes (20,000 draws, or 2,560 positions
of the layer); tests/test_checks_gumbel.py runs correct answers on many other draws.

The two exact facts behind them: ``argmax(logits + g)`` is distributed as
``softmax(logits)`` (the Gumbel-max trick), and for a soft sample
``y = softmax((logits + g) / tau)``,
``tau * (log y_i - log y_j) - (logits_i - logits_j) = g_i - g_j`` is a difference of
two independent Gumbel(0, 1) draws: a standard logistic variable, whatever ``tau``.

The references live here, in float64 (they never import ``dvl_helpers``); calling
the course's reference implementation ``dvl_helpers.gumbel`` is caught.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._common import (
    _Module, _Parameter, all_finite, assert_close, assert_own_implementation, assert_unchanged,
    call, channels_last, check, expect_scalar, expect_tensor, generator, grads, is_zero_grad,
    kind, max_abs, noncontiguous, randn, to_f64, to_long,
)

__all__ = [
    "check_sample_gumbel", "check_gumbel_softmax", "check_temperature_schedule",
    "check_kl_to_uniform", "check_GumbelQuantizer",
]

_REFERENCE = ("dvl_helpers.gumbel", None)

#: a correct answer fails a statistical test with this probability
P_MIN = 1e-6

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
# Statistics (float64)

def ks_pvalue(samples, cdf):
    """p-value of the one-sample Kolmogorov-Smirnov test of ``samples`` [n] against ``cdf``.

    Uses Stephens' finite-sample correction of the asymptotic Kolmogorov distribution
    (accurate to a few percent for n >= 100, far better than the thresholds need).
    """
    x = to_f64(samples).reshape(-1).sort().values
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=_f64)
    d = float(torch.maximum((i / n - f).max(), (f - (i - 1) / n).max()))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    j = torch.arange(1, 101, dtype=_f64)
    p = 2 * float(((-1) ** (j - 1) * torch.exp(-2 * j * j * lam * lam)).sum())
    return min(max(p, 0.0), 1.0)


def chi2_pvalue(counts, probs):
    """p-value of Pearson's chi-square test of ``counts`` [K] against probabilities ``probs`` [K]."""
    counts, probs = to_f64(counts), to_f64(probs)
    n = float(counts.sum())
    expected = probs * n
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=_f64),
                                         torch.tensor(stat / 2, dtype=_f64)))


def _gumbel_cdf(x):
    return torch.exp(-torch.exp(-x))


def _logistic_cdf(x):
    return torch.sigmoid(x)


def _fmt_p(p):
    return f"{p:.1e}"


# --------------------------------------------------------------------------
# sample_gumbel

@check
def check_sample_gumbel(sample_gumbel):
    """Check ``sample_gumbel(shape, generator=None, eps=1e-10)``."""
    fn = sample_gumbel
    _own(fn, "sample_gumbel")
    for shape in ((3, 4), torch.Size([2, 3, 5]), (7,)):
        label = f"sample_gumbel({tuple(shape)}, generator=g)"
        out = _call(fn, shape, generator=generator(3000), what=label)
        expect_tensor(out, label, shape=tuple(shape), floating=True)

    label = "sample_gumbel((1000,), generator=torch.Generator().manual_seed(1))"
    a = _call(fn, (1000,), generator=generator(1), what=label)
    b = _call(fn, (1000,), generator=generator(1), what=label)
    c = _call(fn, (1000,), generator=generator(2), what=label)
    for t in (a, b, c):
        expect_tensor(t, label, shape=(1000,), floating=True)
    if max_abs(to_f64(a) - to_f64(b)) > 0:
        raise AssertionError(
            "sample_gumbel must draw its uniform numbers from generator: the same seed gave "
            "two different samples (is the global random generator used instead?)")
    if max_abs(to_f64(a) - to_f64(c)) == 0:
        raise AssertionError("sample_gumbel gave the same sample for two different generators")

    for seed, shape, eps in ((3001, (20000,), 1e-10), (3002, (100, 200), 1e-10),
                             (3003, (20000,), 1e-6)):
        label = f"sample_gumbel({shape}, generator=g, eps={eps:g})"
        out = _call(fn, shape, generator=generator(seed), eps=eps, what=label)
        expect_tensor(out, label, shape=shape, floating=True)
        if not all_finite(out):
            raise AssertionError(f"{label} contains NaN or inf (keep both logarithms finite "
                                 "with eps)")
        p = ks_pvalue(out, _gumbel_cdf)
        if p < P_MIN:
            x = to_f64(out)
            raise AssertionError(
                f"{label} is not distributed as Gumbel(0, 1) (Kolmogorov-Smirnov test p = "
                f"{_fmt_p(p)}; its mean is {float(x.mean()):.3f} and variance "
                f"{float(x.var()):.3f}, Gumbel(0, 1) has 0.577 and 1.645): g = -log(-log u) "
                "with u uniform in (0, 1)")


# --------------------------------------------------------------------------
# gumbel_softmax

_LOGITS = (1.0, 0.0, -0.5, 2.0, -2.0)


def _probs(logits):
    return torch.softmax(to_f64(logits), dim=-1)


def _soft_grad(y, w, tau, dim):
    """d/dlogits of sum(w * y) for y = softmax((logits + g) / tau) along dim, from y itself."""
    y, w = to_f64(y), to_f64(w)
    return y * (w - (w * y).sum(dim, keepdim=True)) / tau


def _gs_call(fn, logits, tau, hard, dim, seed, label):
    out = _call(fn, logits, tau=tau, hard=hard, dim=dim, generator=generator(seed), what=label)
    expect_tensor(out, label, shape=tuple(logits.shape), floating=True)
    if not all_finite(out):
        raise AssertionError(f"{label} contains NaN or inf")
    return out


def _assert_simplex(y, dim, label):
    y64 = to_f64(y)
    if float(y64.min()) < -1e-6:
        raise AssertionError(f"{label} has negative entries: a sample must be a probability vector")
    err = float((y64.sum(dim) - 1).abs().max())
    if err > 1e-4:
        raise AssertionError(
            f"{label} must sum to 1 along dim={dim} (the categories), but the sums are off by "
            f"up to {err:.3g} (is the softmax taken over the right dim?)")


def _assert_one_hot(y, dim, label):
    y64 = to_f64(y)
    near = torch.minimum(y64.abs(), (y64 - 1).abs())
    if float(near.max()) > 1e-5 or float((y64.sum(dim) - 1).abs().max()) > 1e-5:
        raise AssertionError(
            f"{label} must be one-hot along dim={dim} in the forward pass (exactly one 1, "
            "zeros elsewhere)")


def _logistic_test(y, logits, tau, i, j, dim, label):
    """Fail unless tau (log y_i - log y_j) - (l_i - l_j) is standard logistic."""
    y64, l64 = to_f64(y), to_f64(logits)
    yi, yj = y64.select(dim, i), y64.select(dim, j)
    # float32 may underflow in the far tails; a few such draws are left out, many are an error
    keep = torch.minimum(yi, yj) > 1e-30
    if float(keep.to(_f64).mean()) < 0.99:
        raise AssertionError(
            f"{label} has many entries that are 0 for tau={tau:g}: compute the softmax "
            "stably (subtract the max, or use torch.softmax), without clamping or rounding")
    d = (tau * (yi.log() - yj.log()) - (l64.select(dim, i) - l64.select(dim, j)))[keep]
    p = ks_pvalue(d, _logistic_cdf)
    if p < P_MIN:
        spread = float(d.std()) / (math.pi / math.sqrt(3))
        if abs(spread - tau) < 0.15 * tau and abs(tau - 1) > 0.3:
            hint = " (the noise looks scaled by tau: add g to the logits, then divide by tau)"
        elif abs(spread * tau - 1) < 0.15 and abs(tau - 1) > 0.3:
            hint = " (the samples look sharpened by 1/tau twice, or tau is ignored)"
        else:
            hint = (" (add standard Gumbel noise g = -log(-log u) to the logits, then take "
                    "softmax(... / tau))")
        raise AssertionError(
            f"{label}: the soft samples do not have the Gumbel-softmax distribution: "
            f"tau * (log y_i - log y_j) - (logits_i - logits_j) must be a difference of two "
            f"Gumbel(0, 1) draws (a logistic variable); test p = {_fmt_p(p)}{hint}")


def _chi2_test(y, probs, dim, label, what="the argmax of the samples"):
    k = probs.numel()
    idx = to_f64(y).argmax(dim).reshape(-1)
    counts = torch.bincount(idx, minlength=k)
    p = chi2_pvalue(counts, probs)
    if p < P_MIN:
        freq = to_f64(counts) / idx.numel()
        raise AssertionError(
            f"{label}: {what} must follow softmax(logits) (the Gumbel-max trick), but its "
            f"frequencies are [{', '.join(f'{v:.3f}' for v in freq.tolist())}] against "
            f"[{', '.join(f'{v:.3f}' for v in probs.tolist())}] (chi-square test p = "
            f"{_fmt_p(p)})")


@check
def check_gumbel_softmax(gumbel_softmax):
    """Check ``gumbel_softmax(logits, tau=1.0, hard=False, dim=-1, generator=None)``."""
    fn = gumbel_softmax
    _own(fn, "gumbel_softmax")
    gen = generator(3100)

    # shape, simplex, inputs kept, the generator used
    logits = randn(gen, 4, 5)
    before = logits.clone()
    label = "gumbel_softmax(logits [4, 5], tau=1.0, generator=g)"
    y = _gs_call(fn, logits, 1.0, False, -1, 1, label)
    assert_unchanged(before, logits, "gumbel_softmax")
    _assert_simplex(y, -1, label)
    again = _gs_call(fn, logits, 1.0, False, -1, 1, label)
    if max_abs(to_f64(y) - to_f64(again)) > 0:
        raise AssertionError(
            "gumbel_softmax must draw its noise from generator: the same seed gave two "
            "different samples (is the global random generator used instead?)")
    other = _gs_call(fn, logits, 1.0, False, -1, 2, label)
    if max_abs(to_f64(y) - to_f64(other)) == 0:
        raise AssertionError("gumbel_softmax gave the same sample for two different generators "
                             "(is noise added at all?)")

    row = torch.tensor(_LOGITS)
    # lower tau: sharper samples (the same noise)
    logits = row.repeat(2000, 1)
    sharp = []
    for tau in (10.0, 1.0, 0.1):
        y = _gs_call(fn, logits, tau, False, -1, 3101,
                     f"gumbel_softmax(logits [2000, 5], tau={tau})")
        sharp.append(float(to_f64(y).max(-1).values.mean()))
    if not sharp[0] < sharp[1] < sharp[2] or sharp[2] < 0.9 or sharp[0] > 0.5:
        hint = ("; at tau = 10 the samples stay peaked: is the noise added after dividing by "
                "tau? softmax((logits + g) / tau) divides both" if sharp[0] < sharp[1] < sharp[2]
                else "; y = softmax((logits + g) / tau)")
        raise AssertionError(
            "lower temperatures must give sharper samples: the mean largest entry of the "
            f"samples is {sharp[0]:.3f}, {sharp[1]:.3f}, {sharp[2]:.3f} at tau = 10, 1, 0.1 "
            f"(expected near 1/K = 0.2 at tau = 10 and near 1 at tau = 0.1{hint})")

    # the soft sample's gradient, from the sample itself
    for tau, shape in ((0.7, (6, 5)), (2.0, (3, 4))):
        logits = randn(gen, *shape).requires_grad_()
        label = f"gumbel_softmax(logits {list(shape)}, tau={tau}, generator=g)"
        y = _gs_call(fn, logits, tau, False, -1, 7, label)
        w = randn(gen, *shape)
        (g,) = grads((y * w).sum(), [logits])
        if is_zero_grad(g):
            raise AssertionError(f"{label} must be differentiable in logits")
        assert_close(g, _soft_grad(y, w, tau, -1), f"the gradient of {label}", atol=1e-6,
                     rtol=1e-4, hint=" (y = softmax((logits + g) / tau), g held fixed)")

    # the Gumbel-max trick and the noise scale, along several dims
    probs = _probs(row)
    n = 20000
    cases = [  # logits, dim, tau, seed, description, pair
        (row.repeat(n, 1), -1, 1.0, 3102, f"logits [{n}, 5], dim=-1", (0, 1)),
        (row.repeat(n, 1), -1, 0.5, 3103, f"logits [{n}, 5], dim=-1", (2, 3)),
        (row.repeat(n, 1), 1, 2.0, 3104, f"logits [{n}, 5], dim=1", (0, 4)),
        (row[:, None].repeat(1, n), 0, 1.0, 3105, f"logits [5, {n}], dim=0", (3, 1)),
        (row[None, :, None, None].repeat(50, 1, 8, 8), 1, 0.5, 3106,
         "logits [50, 5, 8, 8], dim=1", (0, 2)),
    ]
    for logits, dim, tau, seed, desc, (i, j) in cases:
        label = f"gumbel_softmax({desc}, tau={tau})"
        y = _gs_call(fn, logits, tau, False, dim, seed, label)
        _assert_simplex(y, dim, label)
        _chi2_test(y, probs, dim, label)
        _logistic_test(y, logits, tau, i, j, dim, label)

    # hard samples: one-hot of the soft sample's argmax, with its gradient
    cases = [  # logits, dim, tau, seed, description
        (row.repeat(n, 1), -1, 1.0, 3110, f"logits [{n}, 5], dim=-1"),
        (row[None, :, None, None].repeat(50, 1, 8, 8), 1, 0.5, 3111,
         "logits [50, 5, 8, 8], dim=1"),
    ]
    for logits, dim, tau, seed, desc in cases:
        label = f"gumbel_softmax({desc}, tau={tau}, hard=True)"
        y_hard = _gs_call(fn, logits, tau, True, dim, seed, label)
        _assert_one_hot(y_hard, dim, label)
        _chi2_test(y_hard, probs, dim, label, what="the hard samples")
        y_soft = _gs_call(fn, logits, tau, False, dim, seed, label.replace("True", "False"))
        same = to_f64(y_hard).argmax(dim) == to_f64(y_soft).argmax(dim)
        if float(same.to(_f64).mean()) < 0.999:
            raise AssertionError(
                f"{label} must be the one-hot of the argmax of the soft sample drawn with the "
                "same noise (with the same generator seed, hard=True and hard=False must add "
                "the same g)")

    for tau, shape, dim in ((0.5, (6, 5), -1), (1.5, (2, 4, 3, 3), 1)):
        logits = randn(gen, *shape).requires_grad_()
        label = f"gumbel_softmax(logits {list(shape)}, tau={tau}, hard=True, dim={dim})"
        y_hard = _gs_call(fn, logits, tau, True, dim, 3120, label)
        _assert_one_hot(y_hard, dim, label)
        y_soft = _gs_call(fn, logits.detach(), tau, False, dim, 3120, label)
        w = randn(gen, *shape)
        (g,) = grads((y_hard * w).sum(), [logits])
        if is_zero_grad(g):
            raise AssertionError(
                f"{label} sends no gradient to logits: a hard sample must carry the soft "
                "sample's gradient (straight-through: y_hard - y.detach() + y)")
        assert_close(g, _soft_grad(y_soft, w, tau, dim), f"the gradient of {label}",
                     atol=1e-6, rtol=1e-4,
                     hint=" (it must be the gradient of the soft sample with the same noise)")


# --------------------------------------------------------------------------
# temperature_schedule

def _ref_schedule(step, tau_start, tau_end, anneal_steps, kind):
    f = min(step / anneal_steps, 1.0)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@check
def check_temperature_schedule(temperature_schedule):
    """Check ``temperature_schedule(step, tau_start, tau_end, anneal_steps, kind="exp")``."""
    fn = temperature_schedule
    _own(fn, "temperature_schedule")
    cases = [(1.0, 1 / 16, 1000), (2.0, 0.5, 37), (0.5, 5.0, 10), (1.0, 0.1, 3)]
    for tau_start, tau_end, n in cases:
        steps = sorted({0, 1, n // 3, n // 2, max(n - 1, 0), n, n + 1, 3 * n})
        for kind_ in ("exp", "linear", None):
            for step in steps:
                args = f"{step}, {tau_start:g}, {tau_end:g}, {n}"
                if kind_ is None:
                    label = f"temperature_schedule({args})"
                    out = _call(fn, step, tau_start, tau_end, n, what=label)
                    ref_kind = "exp"
                else:
                    label = f"temperature_schedule({args}, kind={kind_!r})"
                    out = _call(fn, step, tau_start, tau_end, n, kind=kind_, what=label)
                    ref_kind = kind_
                if _isinstance(out, bool) or not _isinstance(out, numbers.Real):
                    raise AssertionError(f"{label} must return a Python float, got {kind(out)}")
                value = float(out)
                want = _ref_schedule(step, tau_start, tau_end, n, ref_kind)
                if not math.isfinite(value) or abs(value - want) > 1e-9 + 1e-6 * abs(want):
                    raise AssertionError(f"{label} must be {want:.6g}, got {value:.6g}"
                                         + _schedule_hint(step, n, tau_start, tau_end,
                                                          ref_kind, value, kind_ is None))


def _schedule_hint(step, n, tau_start, tau_end, kind_, value, default):
    def near(v):
        return abs(value - v) <= 1e-9 + 1e-6 * abs(v)
    f = step / n
    unclamped = (tau_start * (tau_end / tau_start) ** f if kind_ == "exp" else
                 tau_start + (tau_end - tau_start) * f)
    if step > n and near(unclamped):
        return " (after anneal_steps tau must stay at tau_end: f = min(step / anneal_steps, 1))"
    other = "linear" if kind_ == "exp" else "exp"
    if 0 < step < n and near(_ref_schedule(step, tau_start, tau_end, n, other)):
        if default:
            return " (the default kind is 'exp')"
        return f" (kind={kind_!r} gives the {other} schedule: are the two swapped?)"
    if 0 < step < n and near(tau_start):
        return " (f = step / anneal_steps must be a float division)"
    if kind_ == "exp":
        return " (exp: tau_start * (tau_end / tau_start) ** f)"
    return " (linear: tau_start + (tau_end - tau_start) * f)"


# --------------------------------------------------------------------------
# kl_to_uniform

def _ref_kl(logits):
    return _kl64(to_f64(logits))


def _kl64(x):
    log_q = torch.log_softmax(x, dim=1)
    return (log_q.exp() * (log_q + math.log(x.shape[1]))).sum(1).sum((1, 2))


def _kl_hint(out, logits):
    x = to_f64(logits)
    _, k, h, w = x.shape
    ref = _ref_kl(logits)
    got = to_f64(out)

    def near(v):
        return bool(((got - v).abs() <= 1e-4 * v.abs() + 1e-4).all())
    log_q = torch.log_softmax(x, dim=1)
    if h * w > 1 and near(ref / (h * w)):
        return " (sum the KL over the positions H x W, do not average it)"
    if near(-ref):
        return " (the sign is flipped: KL(q || U) = sum_k q_k log(q_k K) >= 0)"
    reverse = (-(math.log(k) + log_q).sum(1) / k).sum((1, 2))
    if near(reverse):
        return " (that is KL(U || q): the KL must be KL(q || U), with q = softmax(logits))"
    if near(ref - h * w * math.log(k)):
        return " (log K is missing: KL(q || U) = log K - H(q) at each position)"
    if near(ref / math.log(2)):
        return " (use natural logarithms: nats, not bits)"
    return " (q = softmax over the codes, dim 1; KL(q || U) = sum_k q_k log(q_k K), summed " \
           "over positions)"


@check
def check_kl_to_uniform(kl_to_uniform):
    """Check ``kl_to_uniform(logits) -> [B]``."""
    fn = kl_to_uniform
    _own(fn, "kl_to_uniform")

    # by hand: uniform logits -> 0; a sure code at every one of 3 positions -> 3 log 2
    label = "kl_to_uniform(torch.zeros(2, 4, 1, 3))"
    out = _call(fn, torch.zeros(2, 4, 1, 3), what=label)
    expect_tensor(out, label, shape=(2,), dims="[B]", floating=True)
    if max_abs(out) > 1e-6:
        hint = (" (log K is missing: KL(q || U) = log K - H(q) at each position)"
                if float((to_f64(out) + 3 * math.log(4)).abs().max()) < 1e-4 else "")
        raise AssertionError(f"{label} must be [0, 0] (q is uniform), got "
                             f"{to_f64(out).tolist()}{hint}")
    sure = torch.tensor([50.0, 0.0])[None, :, None, None].repeat(1, 1, 1, 3)
    label = "kl_to_uniform(logits [1, 2, 1, 3] with q = (1, 0) at each position)"
    out = _call(fn, sure, what=label)
    expect_tensor(out, label, shape=(1,), dims="[B]", floating=True)
    if abs(float(to_f64(out)[0]) - 3 * math.log(2)) > 1e-4:
        raise AssertionError(f"{label} must be [3 log 2] = [{3 * math.log(2):.4f}], got "
                             f"{to_f64(out).tolist()}" + _kl_hint(out, sure))

    gen = generator(3200)
    cases = [  # B, K, H, W, scale, layout
        (2, 5, 3, 4, 1.0, None), (1, 1, 2, 2, 1.0, None), (3, 16, 1, 1, 3.0, None),
        (4, 8, 2, 3, 2.0, "channels_last"), (2, 6, 3, 3, 1.0, "noncontiguous"),
        (2, 7, 2, 2, 1000.0, None),
    ]
    for b, k, h, w, scale, layout in cases:
        logits = randn(gen, b, k, h, w, scale=scale)
        if layout == "channels_last":
            logits = channels_last(logits)
        elif layout == "noncontiguous":
            logits = noncontiguous(logits)
        logits.requires_grad_()
        before = logits.detach().clone()
        label = f"kl_to_uniform(logits of shape {(b, k, h, w)}, scale {scale:g})"
        out = _call(fn, logits, what=label)
        expect_tensor(out, label, shape=(b,), dims="[B]", floating=True)
        assert_unchanged(before, logits, "kl_to_uniform")
        if not all_finite(out):
            raise AssertionError(f"{label} contains NaN or inf (with very confident logits some "
                                 "q_k are exactly 0: use log_softmax, not log(softmax))")
        ref = _ref_kl(logits)
        assert_close(out, ref, label, atol=1e-5 * h * w, rtol=1e-4, hint=_kl_hint(out, logits))
        weights = randn(gen, b)
        (g,) = grads((out * weights).sum(), [logits])
        x = to_f64(logits).requires_grad_()
        (ref_g,) = torch.autograd.grad((_kl64(x) * to_f64(weights)).sum(), [x])
        if k > 1 and scale < 10 and is_zero_grad(g):
            raise AssertionError(f"{label} must be differentiable in logits")
        if g is not None and not all_finite(g):
            raise AssertionError(
                f"the gradient of {label} contains NaN or inf (q log q must have a finite "
                "gradient where q = 0: use log_softmax)")
        if g is not None:
            assert_close(g, ref_g, f"the gradient of {label}", atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------
# GumbelQuantizer

def _ref_perplexity(counts):
    p = to_f64(counts) / float(to_f64(counts).sum())
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def _quantizer_out(module, z, label, b, k, d, h, w):
    out = call(module, z, what=label, forbid=_REFERENCE)
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{label} must return (z_q, kl, info), got {kind(out)}")
    z_q, kl, info = out
    expect_tensor(z_q, "z_q", shape=(b, d, h, w), dims="[B, D, H, W]", floating=True)
    expect_scalar(kl, "kl")
    if not _isinstance(info, _dict):
        raise AssertionError(f"info must be a dict, got {kind(info)}")
    for key in ("indices", "perplexity", "logits"):
        if key not in _dict.keys(info):
            raise AssertionError(f"info must have the key {key!r}")
    idx = _dict.__getitem__(info, "indices")
    expect_tensor(idx, "info['indices']", shape=(b, h, w), dims="[B, H, W]", dtype=torch.long)
    flat = to_long(idx).reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= k):
        raise AssertionError(f"info['indices'] must lie in [0, K) = [0, {k})")
    logits = _dict.__getitem__(info, "logits")
    expect_tensor(logits, "info['logits']", shape=(b, k, h, w), dims="[B, K, H, W]",
                  floating=True)
    if not all_finite(z_q) or not all_finite(logits):
        raise AssertionError(f"{label} gives NaN or inf")
    return z_q, kl, info, idx, logits


def _set_codebook(module, value, name):
    try:
        codebook = getattr(module, "codebook")
    except Exception:   # a missing attribute or a property that raises
        codebook = None
    if not _isinstance(codebook, _Parameter) or not any(p is codebook for p in module.parameters()):
        raise AssertionError(
            f"{name}.codebook must be an nn.Parameter registered on the module (the codes "
            f"e_k, trained by the optimizer), got {kind(codebook)}")
    if tuple(codebook.shape) != tuple(value.shape):
        raise AssertionError(f"{name}.codebook must have shape [K, D] = {tuple(value.shape)}, "
                             f"got {tuple(codebook.shape)}")
    with torch.no_grad():
        codebook.copy_(value)
    return codebook


def _run_seeded(module, z, seed, label, dims):
    torch.manual_seed(seed)      # the layer draws from the global generator (restored by @check)
    return _quantizer_out(module, z, label, *dims)


@check
def check_GumbelQuantizer(GumbelQuantizer):
    """Check the ``GumbelQuantizer(num_codes, code_dim, in_channels)`` module."""
    cls = GumbelQuantizer
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"GumbelQuantizer must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, "GumbelQuantizer")
    gen = generator(3300)

    # shapes with K != D != in_channels
    for k, d, c in ((7, 3, 4), (5, 6, 2)):
        name = f"GumbelQuantizer({k}, {d}, {c})"
        module = call(cls, k, d, c, what=name, forbid=_REFERENCE)
        if not _isinstance(module, _Module):
            raise AssertionError(f"{name} must be an nn.Module, got {kind(module)}")
        try:
            tau = getattr(module, "tau")
        except Exception:
            tau = None
        if _isinstance(tau, bool) or not _isinstance(tau, numbers.Real) or float(tau) != 1.0:
            raise AssertionError(f"{name}.tau must be the temperature, a float that starts at "
                                 f"1.0 (the training loop sets it), got {tau!r}")
        _set_codebook(module, randn(gen, k, d), name)
        module.train()
        z = randn(gen, 2, c, 3, 5)
        _run_seeded(module, z, 0, f"{name}(z) for z of shape (2, {c}, 3, 5)", (2, k, d, 3, 5))

    # the sample, with an identity codebook (then z_q is the sample y itself)
    k = d = 6
    c = 4
    name = f"GumbelQuantizer({k}, {d}, {c})"
    module = call(cls, k, d, c, what=name, forbid=_REFERENCE)
    module.train()
    b, h, w = 40, 8, 8
    z = randn(gen, b, c, h, w, scale=1.5).requires_grad_()
    z0 = z.detach().clone()
    dims = (b, k, d, h, w)
    for tau, seed in ((2.0, 11), (0.5, 12), (1.0, 13)):
        module.tau = tau
        codebook = _set_codebook(module, torch.eye(k), name)
        label = f"{name}(z) in training mode with tau={tau} and codebook = identity"
        z_q, kl, info, idx, logits = _run_seeded(module, z, seed, label, dims)
        assert_unchanged(z0, z, name)
        y = to_f64(z_q)                                               # [B, K, H, W]
        if float(y.min()) < -1e-5 or float((y.sum(1) - 1).abs().max()) > 1e-4:
            raise AssertionError(
                f"{label}: z_q must be sum_k y_k e_k with y a probability vector over the "
                "codes (a Gumbel-softmax sample of the logits along dim 1), but with e_k the "
                "unit vectors z_q is not on the simplex")
        if float(y.max(1).values.min()) > 1 - 1e-6:
            raise AssertionError(
                f"{label}: z_q is made of whole codes; in training mode y must be the soft "
                "Gumbel-softmax sample (hard one-hot samples only when .hard is set)")
        top = y.topk(2, dim=1).values
        clear = (top[:, 0] - top[:, 1]) > 1e-5
        if bool(((y.argmax(1) != to_long(idx)) & clear).any()):
            raise AssertionError(f"{label}: info['indices'] must be the argmax over the codes of "
                                 "the sample y (the hard code of each position)")
        ppl = expect_scalar(_dict.__getitem__(info, "perplexity"), "info['perplexity']",
                            allow_number=True)
        ref_ppl = _ref_perplexity(torch.bincount(to_long(idx).reshape(-1), minlength=k))
        if abs(ppl - ref_ppl) > 1e-4 * ref_ppl:
            raise AssertionError(f"info['perplexity'] must be the perplexity of the indices' "
                                 f"counts ({ref_ppl:.4g}), got {ppl:.4g}")
        ref_kl = float(_ref_kl(logits).mean())
        kl_value = expect_scalar(kl, "kl")
        if abs(kl_value - ref_kl) > 1e-4 * abs(ref_kl) + 1e-6:
            per_pos = ref_kl / (h * w)
            hint = (" (sum over positions, do not average)" if abs(kl_value - per_pos) < 1e-4 *
                    abs(per_pos) + 1e-6 else " (average over the batch, do not sum)"
                    if abs(kl_value - ref_kl * b) < 1e-4 * abs(ref_kl * b) else "")
            raise AssertionError(
                f"{label}: kl must be the mean over the batch of KL(softmax(logits) || "
                f"Uniform(K)) summed over positions = {ref_kl:.5g}, got {kl_value:.5g}{hint}")
        _logistic_test(z_q, logits, tau, 0, 1, 1, label)
        if tau == 1.0:
            # the gradient of z_q reaches the logits as the soft sample's, and the codebook
            wz = randn(gen, b, d, h, w)
            g_logits, g_code = grads((z_q * wz).sum(), [logits, codebook])
            (g_input,) = grads((z_q * wz).sum(), [z])
            if is_zero_grad(g_input) or (g_logits is not None and is_zero_grad(g_logits)):
                raise AssertionError(f"{label}: z_q must be differentiable in the logits (the "
                                     "relaxation is what trains the encoder)")
            if g_logits is not None:      # info['logits'] is the tensor the sample was drawn from
                assert_close(g_logits, _soft_grad(z_q, wz, tau, 1), "the gradient that z_q "
                             "sends to the logits", atol=1e-6, rtol=1e-4,
                             hint=" (it must be the soft sample's gradient, y = softmax((logits "
                                  "+ g) / tau))")
            ref_code = torch.einsum("bkhw,bdhw->kd", y, to_f64(wz))
            if is_zero_grad(g_code):
                raise AssertionError(f"{label}: z_q must send gradient to the codebook")
            assert_close(g_code, ref_code, "the gradient that z_q sends to the codebook",
                         atol=1e-5, rtol=1e-4)
            (g_z,) = grads(kl, [z])
            if is_zero_grad(g_z):
                raise AssertionError(f"{label}: kl must be differentiable in the logits (and so "
                                     "in z)")
            # the same noise with another codebook: z_q = sum_k y_k e_k
            cb = torch.eye(k) + randn(gen, k, d, scale=0.5)
            _set_codebook(module, cb, name)
            label2 = f"{name}(z) in training mode with tau={tau} and a random codebook"
            z_q2, _, _, _, _ = _run_seeded(module, z, seed, label2, dims)
            assert_close(z_q2, torch.einsum("bkhw,kd->bdhw", y, to_f64(cb)), f"z_q of {label2}",
                         atol=1e-5, rtol=1e-4,
                         hint=" (z_q = sum_k y_k e_k: the sample's weights times the codes)")

    # eval mode: no noise, the most likely code
    module.eval()
    cb = randn(gen, k, d)
    _set_codebook(module, cb, name)
    label = f"{name}(z) in eval mode"
    z_q, _, info, idx, logits = _run_seeded(module, z, 21, label, dims)
    z_q_again, _, _, _, _ = _run_seeded(module, z, 22, label, dims)
    if max_abs(to_f64(z_q) - to_f64(z_q_again)) > 1e-6:
        raise AssertionError(f"{label} must be deterministic (no noise in eval mode)")
    lg = to_f64(logits)
    top = lg.topk(2, dim=1).values
    clear = (top[:, 0] - top[:, 1]) > 1e-5
    if bool(((lg.argmax(1) != to_long(idx)) & clear).any()):
        raise AssertionError(f"{label}: info['indices'] must be the argmax of the logits")
    rows = to_f64(cb)[to_long(idx)].permute(0, 3, 1, 2)
    assert_close(z_q, rows, f"z_q of {label}", atol=1e-5, rtol=1e-5,
                 hint=" (in eval mode z_q is the codebook row of each index)")
