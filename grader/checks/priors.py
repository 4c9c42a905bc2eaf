"""Hidden tests of ``08_priors``: sampling from priors over discrete codes.

One check per answer cell; each takes the learner's function and raises
``AssertionError`` saying what is wrong:

- ``check_causal_mask(fn)``           bool ``[T, T]``, True exactly where ``j <= i``
- ``check_top_k_filter(fn)``          the k largest kept unchanged, the rest ``-inf``, ties
                                      at the k-th value kept, inputs untouched
- ``check_sample_logits(fn)``         long ``[B]``, the generator used, the distribution
                                      ``softmax(logits / T)`` (chi-square), row by row, top-k
- ``check_sample_autoregressive(fn)`` on a Markov-chain model: the prefixes the model
                                      sees, the joint law of the codes (chi-square),
                                      temperature and top-k passed on, the generator
- ``check_maskgit_schedule(fn)``      the three schedules against float64 values
- ``check_maskgit_decode_step(fn)``   decoded positions unchanged, exactly ``num_to_mask``
                                      re-masked and the least confident ones, the law of
                                      the samples (chi-square), the generator
- ``check_maskgit_generate(fn)``      on a model whose confidences are known: the number
                                      masked before every call, the decoding order, mask
                                      tokens where masked, decoded codes never changing,
                                      no mask left, the temperature, the generator

Statistical tests use fixed generators, so a verdict is reproducible; their
threshold is a p-value of ``1e-6`` (a correct answer fails one in a million
draws per test), while the wrong answers they target give p-values below
``1e-30``. The ``_stats_*`` functions take the seed, so the test suite runs
them on many seeds against correct answers.

Confidences that do not depend on the draw: a position whose logits are equal
on a set ``S`` of codes and ``-1e4`` elsewhere is uniform over ``S``, so every
sample there has probability ``1 / |S|`` whatever was drawn and whatever the
temperature. The MaskGIT checks give positions sets of different sizes and so
know which positions must stay masked.

The references live here, in float64 (they never import ``dvl_helpers``);
calling the course's reference implementation ``dvl_helpers.priors`` is caught.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._common import (
    _Module, _Parameter, assert_own_implementation, call, check, expect_tensor, generator,
    kind, noncontiguous, quiet, randn, to_f64, to_long,
)
from .gumbel import chi2_pvalue

__all__ = [
    "check_causal_mask", "check_top_k_filter", "check_sample_logits",
    "check_sample_autoregressive", "check_maskgit_schedule", "check_maskgit_decode_step",
    "check_maskgit_generate",
]

_REFERENCE = ("dvl_helpers.priors", None)

#: a correct answer fails a statistical test with this probability
P_MIN = 1e-6

_f64 = torch.float64
_long = torch.long
_bool = torch.bool
_type = type
_isinstance = isinstance
_NEG = -1e4          # "minus infinity" of the uniform-over-a-set logits (exp underflows to 0)


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


def _fmt(p):
    return f"{p:.1e}"


def _equal_long(a, b):
    """Whether two integer tensors of the same shape hold the same values."""
    return bool((to_long(a) == to_long(b)).all())


def _counts(x, n):
    return torch.bincount(to_long(x).reshape(-1), minlength=n)[:n].to(_f64)


def _in_range(x, low, high):
    x = to_long(x)
    return x.numel() == 0 or (int(x.min()) >= low and int(x.max()) < high)


# --------------------------------------------------------------------------
# causal_mask

@check
def check_causal_mask(causal_mask):
    """Check ``causal_mask(T)``."""
    _own(causal_mask, "causal_mask")
    for t in (1, 2, 5, 8):
        label = f"causal_mask({t})"
        out = _call(causal_mask, t, what=label)
        expect_tensor(out, label, shape=(t, t), dims="[T, T]", dtype=_bool)
        got = to_long(out)
        want = torch.ones(t, t, dtype=_long).tril()
        if _equal_long(got, want):
            continue
        if _equal_long(got, want.T):
            raise AssertionError(f"{label} is transposed: row i is the query, column j the key, "
                                 "and query i may attend keys j <= i")
        if _equal_long(got, torch.ones(t, t, dtype=_long).tril(-1)):
            raise AssertionError(f"{label} has no diagonal: a position must attend to itself "
                                 "(j <= i), else the first position attends to nothing")
        if _equal_long(got, 1 - want):
            raise AssertionError(f"{label} is inverted: True must mark what a query MAY attend")
        wrong = (got != want).nonzero()[0].tolist()
        raise AssertionError(f"{label} is wrong at (i, j) = {tuple(wrong)}: True exactly where j <= i")


# --------------------------------------------------------------------------
# top_k_filter

def _topk_reference(logits, k):
    x = to_f64(logits)
    if k >= x.shape[1]:
        return x
    kth = x.topk(k, dim=1).values[:, -1:]
    return x.masked_fill(x < kth, float("-inf"))


def _compare_filtered(out, logits, k, label):
    want = _topk_reference(logits, k)
    got = to_f64(out)
    keep = torch.isfinite(want)
    got_keep = torch.isfinite(got)
    if bool((got == 0).logical_and(~keep).any()):
        raise AssertionError(f"{label} sets removed logits to 0; they must be -inf (0 is a "
                             "perfectly likely logit, exp(-inf) = 0 is what removes a code)")
    if bool((got_keep & ~keep).any()) and not bool((~got_keep & keep).any()) \
            and bool(torch.isfinite(got).all()):
        raise AssertionError(f"{label} must set the removed logits to -inf, not to a finite value")
    if not bool((got_keep == keep).all()):
        kept = int(got_keep.sum(1)[0])
        wanted = int(keep.sum(1)[0])
        small = to_f64(logits).topk(k, dim=1, largest=False).indices
        if k < logits.shape[1] and bool(got_keep.gather(1, small).all()):
            raise AssertionError(f"{label} keeps the k smallest logits; it must keep the k largest")
        raise AssertionError(f"{label} keeps the wrong logits (row 0 keeps {kept}, expected the "
                             f"{wanted} largest)")
    if bool((~got_keep & ~torch.isinf(got)).any()) or bool((got[~keep] > -float("inf")).any()):
        raise AssertionError(f"{label} must set every removed logit to -inf")
    if bool((got[keep] != want[keep]).any()):
        raise AssertionError(f"{label} must keep the k largest logits unchanged")


@check
def check_top_k_filter(top_k_filter):
    """Check ``top_k_filter(logits, k)``."""
    fn = top_k_filter
    _own(fn, "top_k_filter")
    gen = generator(8100)
    logits = randn(gen, 4, 10, scale=2.0)
    for k in (1, 3, 9, 10, 15):
        label = f"top_k_filter(logits [4, 10], k={k})"
        before = logits.clone()
        out = _call(fn, logits, k, what=label)
        expect_tensor(out, label, shape=(4, 10), dims="[B, V]", floating=True)
        if bool((to_f64(logits) != to_f64(before)).any()):
            raise AssertionError(f"{label} must not modify logits in place (return a new tensor)")
        _compare_filtered(out, logits, k, label)
    negative = -5.0 - randn(gen, 3, 6).abs()
    label = "top_k_filter(negative logits [3, 6], k=2)"
    _compare_filtered(_call(fn, negative, 2, what=label), negative, 2, label)
    skew = noncontiguous(randn(gen, 5, 7))
    label = "top_k_filter(non-contiguous logits [5, 7], k=3)"
    out = _call(fn, skew, 3, what=label)
    expect_tensor(out, label, shape=(5, 7), floating=True)
    _compare_filtered(out, skew, 3, label)

    ties = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0], [4.0, 2.0, 2.0, 1.0, 0.5, 2.0]])
    label = "top_k_filter(logits with ties at the k-th value, k=2)"
    out = _call(fn, ties, 2, what=label)
    expect_tensor(out, label, shape=(2, 6), floating=True)
    got = torch.isfinite(to_f64(out))
    want = torch.isfinite(_topk_reference(ties, 2))
    if not bool((got == want).all()):
        raise AssertionError(
            f"{label}: a logit equal to the k-th largest must be kept (row [1, 3, 3, 2, 3, 0] with "
            "k=2 keeps all three 3s, as `logits < kth_largest` does); kept "
            f"{got.long().tolist()}")
    _compare_filtered(out, ties, 2, label)


# --------------------------------------------------------------------------
# sample_logits

_ROW_A = (1.0, 0.2, -0.5, 0.7, -1.0, 0.0)
_ROW_B = (-0.8, 0.9, 0.3, -0.2, 0.6, -1.2)


def _law(row, temperature=1.0, top_k=None):
    x = torch.tensor(row, dtype=_f64)[None] / temperature
    if top_k is not None:
        x = _topk_reference(x, top_k)
    return torch.softmax(x, 1)[0]


def _assert_law(samples, probs, label, what):
    counts = _counts(samples, probs.numel())
    outside = float(counts[probs == 0].sum())
    if outside:
        raise AssertionError(f"{label} drew {int(outside)} codes that {what} gives probability 0")
    support = probs > 0
    if int(support.sum()) < 2:
        return
    p = chi2_pvalue(counts[support], probs[support])
    if p < P_MIN:
        n = float(counts.sum())
        freq = [round(float(c) / n, 3) for c in counts]
        raise AssertionError(
            f"{label} does not draw from {what} (chi-square test p = {_fmt(p)}; frequencies "
            f"{freq}, expected {[round(float(q), 3) for q in probs]})")


def _stats_sample_logits(fn, seed):
    """The statistical part of :func:`check_sample_logits` with generators seeded from ``seed``."""
    n = 4000
    cases = ((1.0, None), (0.5, None), (2.0, None), (1.0, 3), (0.7, 2))
    for i, (temperature, top_k) in enumerate(cases):
        # rows alternate between two logit vectors: each row must use its own logits
        logits = torch.tensor([_ROW_A, _ROW_B] * (n // 2), dtype=torch.float32)
        kwargs = {"temperature": temperature}
        if top_k is not None:
            kwargs["top_k"] = top_k
        label = (f"sample_logits(logits [{n}, 6], temperature={temperature}"
                 + (f", top_k={top_k}" if top_k else "") + ", generator=g)")
        out = _call(fn, logits, generator=generator(seed + i), what=label, **kwargs)
        expect_tensor(out, label, shape=(n,), dims="[B]", dtype=_long)
        if not _in_range(out, 0, 6):
            raise AssertionError(f"{label} must return indices in [0, V) = [0, 6)")
        what = "softmax(logits / temperature)" + (" after top-k filtering" if top_k else "")
        _assert_law(out[0::2], _law(_ROW_A, temperature, top_k), label, what)
        _assert_law(out[1::2], _law(_ROW_B, temperature, top_k), label, what)


@check
def check_sample_logits(sample_logits):
    """Check ``sample_logits(logits, temperature=1.0, top_k=None, generator=None)``."""
    fn = sample_logits
    _own(fn, "sample_logits")
    logits = torch.tensor([_ROW_A, _ROW_B] * 100)
    label = "sample_logits(logits [200, 6], generator=g)"
    before = logits.clone()
    a = _call(fn, logits, generator=generator(1), what=label)
    b = _call(fn, logits, generator=generator(1), what=label)
    c = _call(fn, logits, generator=generator(2), what=label)
    for x in (a, b, c):
        expect_tensor(x, label, shape=(200,), dims="[B]", dtype=_long)
    if bool((to_f64(logits) != to_f64(before)).any()):
        raise AssertionError(f"{label} must not modify logits in place")
    if not _equal_long(a, b):
        raise AssertionError("sample_logits must draw with generator: the same seed gave two "
                             "different samples (is the global random generator used instead?)")
    if _equal_long(a, c):
        raise AssertionError("sample_logits gave the same samples for two different generators "
                             "(is it taking the argmax instead of sampling?)")
    out = _call(fn, torch.tensor([[0.0, 5.0, 1.0]]), what="sample_logits(logits [1, 3])")
    expect_tensor(out, "sample_logits(logits [1, 3])", shape=(1,), dims="[B]", dtype=_long)
    _stats_sample_logits(fn, 8200)


# --------------------------------------------------------------------------
# sample_autoregressive

_P0 = (0.4, -0.3, 0.0)
_TRANS = ((1.0, -0.5, 0.2), (-0.4, 0.6, 0.1), (0.3, 0.0, -0.6))


class _MarkovModel(_Module):
    """A causal "model" over V codes: logits[:, 0] = p0, logits[:, i] = T[codes[:, i - 1]].

    It records (a copy of) every input it is called with.
    """

    def __init__(self, p0, trans, length):
        super().__init__()
        self.anchor = _Parameter(torch.zeros(()))       # a device for the samplers to read
        self.p0 = torch.tensor(p0, dtype=torch.float32)
        self.trans = torch.tensor(trans, dtype=torch.float32)
        self.vocab = self.p0.numel()
        self.length = length
        self.calls = []

    def forward(self, codes):
        if _type(codes) is not torch.Tensor or codes.dim() != 2 or codes.dtype != _long:
            raise ValueError(f"the model takes codes as a torch.long tensor [B, t], got {kind(codes)}"
                             + (f" of dtype {codes.dtype}" if _isinstance(codes, torch.Tensor) else ""))
        b, t = codes.shape
        if not 1 <= t <= self.length:
            raise ValueError(f"the model takes 1 to length={self.length} codes, got t = {t}")
        seen = to_long(codes)
        self.calls.append(seen)
        if not _in_range(seen[:, :t - 1], 0, self.vocab):
            raise ValueError(f"the model was given codes outside [0, {self.vocab}) at positions "
                             "already sampled")
        logits = torch.empty(b, t, self.vocab)
        logits[:, 0] = self.p0
        if t > 1:
            logits[:, 1:] = self.trans[seen[:, :t - 1]]
        return logits


def _chain_law(length, temperature=1.0):
    """Joint probabilities [V ** length] of the Markov chain, first code most significant."""
    p0 = torch.softmax(torch.tensor(_P0, dtype=_f64) / temperature, 0)
    trans = torch.softmax(torch.tensor(_TRANS, dtype=_f64) / temperature, 1)
    law = p0
    for _ in range(length - 1):
        law = (law[:, None] * trans[torch.arange(law.numel()) % 3]).reshape(-1)
    return law


def _run_ar(fn, batch, length, seed, **kwargs):
    model = _MarkovModel(_P0, _TRANS, length)
    extra = "".join(f", {k}={v}" for k, v in kwargs.items())
    label = f"sample_autoregressive(model, batch_size={batch}, length={length}{extra}, generator=g)"
    out = _call(fn, model, batch, length, generator=generator(seed), what=label, **kwargs)
    expect_tensor(out, label, shape=(batch, length), dims="[batch_size, length]", dtype=_long)
    if not _in_range(out, 0, 3):
        raise AssertionError(f"{label} must return codes in [0, K) = [0, 3)")
    final = to_long(out)
    for seen in model.calls:
        if seen.shape[0] != batch:
            raise AssertionError(f"{label} called the model with {seen.shape[0]} rows, "
                                 f"not batch_size = {batch}")
    # position i must have been scored by a call that held the returned codes[:, :i] before it
    for i in range(length):
        if not any(seen.shape[1] > i and bool((seen[:, :i] == final[:, :i]).all())
                   for seen in model.calls):
            raise AssertionError(
                f"{label}: no call of the model was given the returned codes before position {i} "
                f"(codes[:, :{i}]) while scoring it; sample one position at a time, each from the "
                "logits of the codes already sampled")
    return final, label


def _index(codes):
    weights = torch.tensor([3 ** (codes.shape[1] - 1 - i) for i in range(codes.shape[1])])
    return (codes * weights).sum(1)


def _stats_sample_autoregressive(fn, seed):
    """The statistical part of :func:`check_sample_autoregressive`."""
    n = 4000
    for i, (length, temperature) in enumerate(((3, 1.0), (2, 0.5), (2, 2.0))):
        kwargs = {} if temperature == 1.0 else {"temperature": temperature}
        codes, label = _run_ar(fn, n, length, seed + i, **kwargs)
        counts = torch.bincount(_index(codes), minlength=3 ** length).to(_f64)
        law = _chain_law(length, temperature)
        p = chi2_pvalue(counts, law)
        if p < P_MIN:
            first = _counts(codes[:, 0], 3) / n
            raise AssertionError(
                f"{label} does not follow the model's distribution (chi-square test of the joint "
                f"law of the {length} codes, p = {_fmt(p)}; the first code has frequencies "
                f"{[round(float(f), 3) for f in first]}): position i must be drawn from "
                "softmax(logits[:, i] / temperature) given the codes sampled before it")


@check
def check_sample_autoregressive(sample_autoregressive):
    """Check ``sample_autoregressive(model, batch_size, length, temperature, top_k, generator)``."""
    fn = sample_autoregressive
    _own(fn, "sample_autoregressive")
    a, label = _run_ar(fn, 50, 6, 1)
    b, _ = _run_ar(fn, 50, 6, 1)
    c, _ = _run_ar(fn, 50, 6, 2)
    if not _equal_long(a, b):
        raise AssertionError(f"{label} must draw with generator: the same seed gave two different "
                             "samples")
    if _equal_long(a, c):
        raise AssertionError(f"{label} gave the same codes for two different generators "
                             "(is it taking the argmax instead of sampling?)")
    greedy, label = _run_ar(fn, 4, 6, 3, top_k=1)
    want = [0]                                         # argmax of p0, then of each row of T
    for _ in range(5):
        want.append(max(range(3), key=lambda j: _TRANS[want[-1]][j]))
    if not bool((greedy == torch.tensor(want)).all()):
        raise AssertionError(f"{label} must follow the most likely code at every position "
                             f"(top_k=1 leaves one choice): expected {want}, got "
                             f"{greedy[0].tolist()} (is top_k passed on?)")
    _stats_sample_autoregressive(fn, 8300)


# --------------------------------------------------------------------------
# maskgit_schedule

def _schedule_ref(r, kind):
    if kind == "cosine":
        return math.cos(math.pi / 2 * r)
    if kind == "linear":
        return 1.0 - r
    return 1.0 - r * r


def _number(x, label):
    if _isinstance(x, bool):
        raise AssertionError(f"{label} must return a number, got a bool")
    if _isinstance(x, numbers.Real):
        return float(x)
    if _type(x) is torch.Tensor and x.numel() == 1 and x.is_floating_point():
        return float(to_f64(x).reshape(-1)[0])
    try:
        import numpy as np
        if _isinstance(x, np.ndarray) and x.size == 1:
            return float(x.reshape(-1)[0])
    except ImportError:  # pragma: no cover
        pass
    raise AssertionError(f"{label} must return a number (or a one-element tensor), got {kind(x)}")


@check
def check_maskgit_schedule(maskgit_schedule):
    """Check ``maskgit_schedule(r, kind="cosine")``."""
    fn = maskgit_schedule
    _own(fn, "maskgit_schedule")
    rs = (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0)
    values = {}
    for kind_ in ("cosine", "linear", "square"):
        got = []
        for r in rs:
            label = f"maskgit_schedule({r}, kind={kind_!r})"
            got.append(_number(_call(fn, r, kind=kind_, what=label), label))
        values[kind_] = got
    for kind_, got in values.items():
        want = [_schedule_ref(r, kind_) for r in rs]
        if all(abs(g - w) <= 1e-6 for g, w in zip(got, want)):
            continue
        where = next(i for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 1e-6)
        label = f"maskgit_schedule({rs[where]}, kind={kind_!r})"
        for other in ("cosine", "linear", "square"):
            if other != kind_ and all(abs(g - _schedule_ref(r, other)) <= 1e-6
                                      for g, r in zip(got, rs)):
                raise AssertionError(f"{label} gives the {other!r} schedule, not the {kind_!r} one")
        if kind_ == "cosine" and all(abs(g - math.cos(math.pi * r)) <= 1e-6 for g, r in zip(got, rs)):
            raise AssertionError(f"{label} uses cos(pi r), which reaches -1 at r = 1; the masked "
                                 "fraction is cos(pi r / 2), from 1 down to 0")
        if abs(got[0] - 1.0) > 1e-6 or abs(got[-1]) > 1e-6:
            raise AssertionError(f"maskgit_schedule(r, kind={kind_!r}) must be 1 at r = 0 (all "
                                 f"masked) and 0 at r = 1 (none masked), got {got[0]:.4g} and "
                                 f"{got[-1]:.4g}")
        raise AssertionError(f"{label} is {got[where]:.6g}, expected {want[where]:.6g}")
    label = "maskgit_schedule(0.5)"
    default = _number(_call(fn, 0.5, what=label), label)
    if abs(default - math.cos(math.pi / 4)) > 1e-6:
        raise AssertionError(f"{label}: the default kind must be 'cosine', got {default:.6g}")
    try:
        with quiet():
            fn(0.5, kind="cosinus")
    except Exception:   # any error names the bad kind; what matters is that there is one
        pass
    else:
        raise AssertionError("maskgit_schedule(0.5, kind='cosinus') must raise an error for an "
                             "unknown kind (a typo must not silently pick a schedule)")


# --------------------------------------------------------------------------
# maskgit_decode_step

def _set_logits(sizes, k, gen):
    """[L, k] logits uniform over a random set of sizes[j] codes at position j."""
    rows = torch.full((len(sizes), k), _NEG)
    for j, s in enumerate(sizes):
        rows[j, torch.randperm(k, generator=gen)[:s]] = 0.0
    return rows


def _decode_case(seed, b=3, length=8, k=10, masked_counts=(6, 6, 6)):
    """Logits, tokens, masked and the expected set of re-masked positions for re-masking tests."""
    gen = generator(seed)
    logits = torch.zeros(b, length, k)
    tokens = torch.randint(0, k, (b, length), generator=gen)
    masked = torch.zeros(b, length, dtype=_bool)
    for row, count in enumerate(masked_counts):
        where = torch.randperm(length, generator=gen)[:count]
        masked[row, where] = True
        sizes = torch.randperm(8, generator=gen)[:count] + 1          # distinct sizes 1..8
        full = torch.zeros(length, dtype=_long)
        full[where] = sizes
        logits[row] = torch.where(masked[row, :, None], _set_logits(full.clamp(min=1).tolist(), k, gen),
                                  torch.zeros(length, k))           # decoded: uniform over all k
        logits[row, ~masked[row]] = 0.0
        tokens[row, masked[row]] = k                                  # a mask id
    return logits, tokens, masked


def _run_decode(fn, logits, tokens, masked, num_to_mask, seed, label, **kwargs):
    inputs = [t.clone() for t in (logits, tokens, masked)]
    out = _call(fn, logits, tokens, masked, num_to_mask, generator=generator(seed), what=label,
                **kwargs)
    if _type(out) not in (tuple, list) or len(out) != 2:
        raise AssertionError(f"{label} must return (tokens, masked), got {kind(out)}")
    new_tokens, new_masked = out
    b, length = tokens.shape
    expect_tensor(new_tokens, f"tokens returned by {label}", shape=(b, length), dims="[B, L]",
                  dtype=_long)
    expect_tensor(new_masked, f"masked returned by {label}", shape=(b, length), dims="[B, L]",
                  dtype=_bool)
    for before, after, name in zip(inputs, (logits, tokens, masked), ("logits", "tokens", "masked")):
        if bool((to_f64(before) != to_f64(after)).any()):
            raise AssertionError(f"{label} must not modify {name} in place")
    old_t, old_m = to_long(tokens), to_long(masked).bool()
    new_t, new_m = to_long(new_tokens), to_long(new_masked).bool()
    if bool((new_m & ~old_m).any()):
        raise AssertionError(f"{label} masked a position that was already decoded: only sampled "
                             "positions can be re-masked")
    if bool((new_t[~old_m] != old_t[~old_m]).any()):
        raise AssertionError(f"{label} changed tokens that were already decoded (masked False): "
                             "decoded positions must keep their codes")
    counts = new_m.sum(1)
    if bool((counts != num_to_mask).any()):
        raise AssertionError(f"{label} must leave exactly num_to_mask = {num_to_mask} positions of "
                             f"every row masked, got {counts.tolist()}")
    k = logits.shape[-1]
    fresh = old_m & ~new_m
    if not _in_range(new_t[fresh], 0, k):
        raise AssertionError(f"{label} must put a code in [0, K) = [0, {k}) at every newly "
                             "decoded position")
    return new_t, new_m


def _stats_maskgit_decode_step(fn, seed):
    """The statistical part of :func:`check_maskgit_decode_step`."""
    n, length = 200, 30                       # position j follows pattern j % 3: 2000 draws each
    rows = torch.tensor([_ROW_A[:5], _ROW_B[:5], (0.0, 0.3, -0.3, 0.6, -0.6)])
    pattern = rows[torch.arange(length) % 3]                          # [L, 5]
    for i, temperature in enumerate((1.0, 0.5, 2.0)):
        logits = pattern[None].repeat(n, 1, 1)                        # [n, L, 5]
        tokens = torch.full((n, length), 5, dtype=_long)
        masked = torch.ones(n, length, dtype=_bool)
        label = (f"maskgit_decode_step(logits [{n}, {length}, 5], tokens, masked (all True), "
                 f"num_to_mask=0, temperature={temperature}, generator=g)")
        new_t, new_m = _run_decode(fn, logits, tokens, masked, 0, seed + i, label,
                                   temperature=temperature)
        for j in range(3):
            probs = torch.softmax(to_f64(rows[j]) / temperature, 0)
            _assert_law(new_t[:, j::3], probs, label + f" at positions {j}, {j + 3}, ...",
                        "softmax(logits / temperature)")


@check
def check_maskgit_decode_step(maskgit_decode_step):
    """Check ``maskgit_decode_step(logits, tokens, masked, num_to_mask, temperature, generator)``."""
    fn = maskgit_decode_step
    _own(fn, "maskgit_decode_step")
    cases = ((8400, (6, 6, 6), 2, 1.0), (8401, (5, 7, 3), 1, 1.0), (8402, (8, 8, 8), 5, 0.5),
             (8403, (4, 6, 8), 0, 1.0), (8404, (6, 6, 6), 3, 2.0))
    for seed, counts, num, temperature in cases:
        logits, tokens, masked = _decode_case(seed, masked_counts=counts)
        label = (f"maskgit_decode_step(logits [3, 8, 10], tokens, masked (rows with {list(counts)} "
                 f"masked), num_to_mask={num}, temperature={temperature}, generator=g)")
        new_t, new_m = _run_decode(fn, logits, tokens, masked, num, seed, label,
                                   temperature=temperature)
        # a masked position uniform over a set of s codes has confidence 1/s whatever is drawn
        sizes = (to_f64(logits) > _NEG / 2).sum(-1)
        sizes = torch.where(masked, sizes, torch.zeros_like(sizes))
        for row in range(3):
            if num == 0:
                break
            want = set(sizes[row].topk(num).indices.tolist())         # largest sets: least confident
            got = set(new_m[row].nonzero().flatten().tolist())
            if got != want:
                most = set(sizes[row].masked_fill(~masked[row], 99).topk(num, largest=False)
                           .indices.tolist())
                if got == most:
                    raise AssertionError(f"{label} re-masked the MOST confident samples; the "
                                         "least confident ones must be masked again")
                raise AssertionError(
                    f"{label} re-masked positions {sorted(got)} of row {row}; the {num} sampled "
                    f"positions with the lowest confidence were {sorted(want)} (confidence: the "
                    "probability of the sampled code; decoded positions are never re-masked)")
        fresh = masked & ~new_m
        allowed = to_f64(logits) > _NEG / 2
        picked = allowed.gather(2, new_t.clamp(0, 9)[..., None]).squeeze(-1)
        if not bool(picked[fresh].all()):
            raise AssertionError(f"{label} decoded a code that has probability 0 under the logits")

    logits, tokens, masked = _decode_case(8410, masked_counts=(8, 8, 8))
    label = "maskgit_decode_step(logits [3, 8, 10], tokens, masked, num_to_mask=0, generator=g)"
    a, _ = _run_decode(fn, logits, tokens, masked, 0, 1, label)
    b, _ = _run_decode(fn, logits, tokens, masked, 0, 1, label)
    logits = torch.zeros(3, 8, 10)
    c, _ = _run_decode(fn, logits, tokens, masked, 0, 1, label)
    d, _ = _run_decode(fn, logits, tokens, masked, 0, 2, label)
    if not _equal_long(a, b):
        raise AssertionError(f"{label} must draw with generator: the same seed gave two different "
                             "results")
    if _equal_long(c, d):
        raise AssertionError(f"{label} gave the same codes for two different generators (is it "
                             "taking the argmax instead of sampling?)")
    _stats_maskgit_decode_step(fn, 8420)


# --------------------------------------------------------------------------
# maskgit_generate

def _num_masked_ref(length, steps, kind_):
    """Masked counts before every call of the model: [L, n_1, n_2, ...] while > 0."""
    seq, n = [length], length
    for s in range(1, steps + 1):
        if n == 0:
            break
        n = max(min(math.floor(length * _schedule_ref(s / steps, kind_)), n - 1), 0)
        seq.append(n)
    return [c for c in seq[:-1] if c > 0]


class _ConfidenceModel(_Module):
    """A MaskGIT "model" that ignores its input: position j is uniform over a set of sizes[j] codes.

    Records every input; checks that it is [B, L] long with codes in [0, K) or mask_id.
    """

    def __init__(self, logits, mask_id):
        super().__init__()
        self.anchor = _Parameter(torch.zeros(()))
        self.logits = logits                      # [L, K]
        self.mask_id = mask_id
        self.calls = []

    def forward(self, tokens):
        length, k = self.logits.shape
        if _type(tokens) is not torch.Tensor or tokens.dim() != 2 or tokens.dtype != _long \
                or tokens.shape[1] != length:
            raise ValueError(f"the model takes tokens as a torch.long tensor [B, L={length}], "
                             f"got {kind(tokens)}")
        seen = to_long(tokens)
        if not _in_range(seen, 0, k + 1):
            raise ValueError(f"the model takes codes in [0, {k}) and mask_id = {k}, got values "
                             f"in [{int(seen.min())}, {int(seen.max())}]")
        self.calls.append(seen)
        return self.logits[None].expand(tokens.shape[0], length, k).clone()


def _run_generate(fn, logits, batch, steps, kind_, seed, label_extra="", **kwargs):
    length, k = logits.shape
    model = _ConfidenceModel(logits, k)
    extra = "".join(f", {a}={v!r}" for a, v in kwargs.items())
    label = (f"maskgit_generate(model, batch_size={batch}, length={length}, steps={steps}, "
             f"kind={kind_!r}{extra}, generator=g){label_extra}")
    out = _call(fn, model, batch, length, steps, kind=kind_, generator=generator(seed), what=label,
                **kwargs)
    expect_tensor(out, label, shape=(batch, length), dims="[batch_size, length]", dtype=_long)
    final = to_long(out)
    if bool((final == k).any()):
        raise AssertionError(f"{label} left {int((final == k).sum())} positions masked "
                             "(mask_id) after the last step: every position must be decoded")
    if not _in_range(final, 0, k):
        raise AssertionError(f"{label} must return codes in [0, K) = [0, {k})")
    return model, final, label


@check
def check_maskgit_generate(maskgit_generate):
    """Check ``maskgit_generate(model, batch_size, length, steps, kind, temperature, generator)``."""
    fn = maskgit_generate
    _own(fn, "maskgit_generate")
    configs = ((16, 4, "cosine"), (16, 8, "linear"), (16, 4, "square"), (16, 8, "cosine"),
               (16, 16, "cosine"), (6, 10, "cosine"), (16, 1, "linear"))
    for i, (length, steps, kind_) in enumerate(configs):
        gen = generator(8500 + i)
        sizes = (torch.randperm(16, generator=gen)[:length] + 1).tolist()   # distinct: 1..16
        logits = _set_logits(sizes, 16, gen)
        model, final, label = _run_generate(fn, logits, 3, steps, kind_, 8600 + i)
        allowed = logits > _NEG / 2
        if not bool(allowed.gather(1, final.T).all()):
            raise AssertionError(f"{label} returned codes that have probability 0 under the logits")
        mask_id = logits.shape[1]
        calls = [c for c in model.calls if bool((c == mask_id).any())]
        seen = [int((c == mask_id).sum(1).max()) for c in calls]
        want = _num_masked_ref(length, steps, kind_)
        for c in calls:
            counts = (c == mask_id).sum(1)
            if bool((counts != counts[0]).any()):
                raise AssertionError(f"{label}: the rows of one call held different numbers of "
                                     f"mask tokens {counts.tolist()}")
        if seen != want:
            raise AssertionError(
                f"{label} called the model with {seen} masked positions per row; expected {want}: "
                f"after step s, floor(length * maskgit_schedule(s / steps, kind)) positions stay "
                "masked (at most one fewer than before the step)")
        order = sorted(range(length), key=lambda j: sizes[j])          # most confident first
        for step, c in enumerate(calls[1:] + [final]):
            decoded = set((c[0] != mask_id).nonzero().flatten().tolist())
            expect = set(order[:length - (want[step + 1] if step + 1 < len(want) else 0)])
            if decoded != expect:
                raise AssertionError(
                    f"{label}: after step {step + 1} the decoded positions are not the most "
                    "confident ones (each step keeps the samples with the highest probability and "
                    "re-masks the others)")
        for c in calls[1:]:
            known = c != mask_id
            if not bool((c[known] == final[known]).all()):
                raise AssertionError(f"{label}: a decoded code changed in a later step; decoded "
                                     "positions must keep their codes to the end")

    gen = generator(8700)
    sizes = (torch.randperm(16, generator=gen)[:12] + 1).tolist()
    logits = _set_logits(sizes, 16, gen)
    _, a, label = _run_generate(fn, logits, 4, 4, "cosine", 1)
    _, b, _ = _run_generate(fn, logits, 4, 4, "cosine", 1)
    _, c, _ = _run_generate(fn, logits, 4, 4, "cosine", 2)
    if not _equal_long(a, b):
        raise AssertionError(f"{label} must draw with generator: the same seed gave two different "
                             "results")
    if _equal_long(a, c):
        raise AssertionError(f"{label} gave the same codes for two different generators")
    _stats_maskgit_generate(fn, 8800)


def _stats_maskgit_generate(fn, seed):
    """The temperature reaches the draws: one step decodes everything from softmax(logits / T)."""
    rows = torch.tensor([_ROW_A[:5], _ROW_B[:5]])
    pattern = rows[torch.arange(20) % 2]                              # [20, 5]
    for i, temperature in enumerate((0.5, 2.0)):
        _, final, label = _run_generate(fn, pattern, 200, 1, "cosine", seed + i,
                                        temperature=temperature)
        for j in range(2):
            _assert_law(final[:, j::2], torch.softmax(to_f64(rows[j]) / temperature, 0),
                        label + f" at positions {j}, {j + 2}, ...", "softmax(logits / temperature)")
