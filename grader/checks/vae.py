"""Hidden tests of ``00_vae``: the variational autoencoder.

One check per answer cell; each takes the learner's function (or class) and
raises ``AssertionError`` saying what is wrong:

- ``check_reparameterize(fn)``  ``z = mu + exp(logvar / 2) * eps``: shape,
  reproducible from a generator, the statistics of ``N(mu, exp(logvar))``, the
  exact gradients (see below), and ``eps`` drawn on ``mu``'s device
- ``check_gaussian_kl(fn)``     ``[B]`` closed-form KL to ``N(0, I)``, summed
  over every non-batch dimension; values and gradients
- ``check_negative_elbo(fn)``   ``(loss, recon, kl)``: Bernoulli NLL from
  logits summed over pixels, KL, both averaged over the batch, ``beta`` on the
  KL; stable for large logits; gradients
- ``check_VAE(cls)``            the assembled model: ``encode``, ``decode`` and
  a ``forward`` that decodes a reparameterized sample of its own ``(mu, logvar)``

What is fair for a random function. ``eps`` may be drawn any way that uses
the generator (``torch.randn(shape, generator=g)``, ``empty_like(mu).normal_
(generator=g)``, ``torch.normal(0, 1, size, generator=g)``...), so the check
never compares ``z`` with a particular stream. It asks instead that

- two calls with generators in the same state give the same ``z``, generators
  with different seeds different ones, and a generator used twice moves on
  (so ``eps`` comes from the generator, is not drawn once and reused);
- without a generator, ``z`` comes from torch's global generator (reproducible
  after ``torch.manual_seed``);
- ``eps = (z - mu) / exp(logvar / 2)`` over 4,000 x 6 draws has mean 0,
  variance 1, no correlation between units and the kurtosis of a Gaussian
  (5-sigma bounds: the chance of failing a right answer is below 1e-5);
- ``dz/dmu = 1`` and ``dz/dlogvar = (z - mu) / 2 = eps exp(logvar / 2) / 2``,
  exactly (in terms of the returned ``z``, so whatever ``eps`` was drawn).

``check_VAE`` uses the same identity on the model: with ``G_mu`` and
``G_logvar`` the gradients of ``<x_logits, g>`` with respect to the returned
``mu`` and ``logvar``, ``z - mu = 2 G_logvar / G_mu`` element-wise, so the
``z`` that ``forward`` decoded can be recovered and ``x_logits`` must equal
``decode(z)``.

References are computed here in float64 (never from ``dvl_helpers``). Every
answer is also checked for calling the course's reference implementation in
``dvl_helpers.vae`` (statically and while it runs).
"""
from __future__ import annotations

import math

import torch

from ._common import (
    _Module, assert_close, assert_own_implementation, assert_unchanged, call, check,
    expect_scalar, expect_tensor, generator, grads, is_zero_grad, kind, max_abs,
    max_excess, noncontiguous, randn, to_f64,
)

__all__ = ["check_reparameterize", "check_gaussian_kl", "check_negative_elbo", "check_VAE"]

_REFERENCE = ("dvl_helpers.vae", None)

_type = type
_tuple = tuple
_issubclass = issubclass
_isinstance = isinstance
_f64 = torch.float64


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


def _expect_triple(x, name):
    if _type(x) not in (tuple, list) or len(x) != 3:
        raise AssertionError(f"{name} must return a tuple of 3 items, got {kind(x)}")
    return x[0], x[1], x[2]


def _expect_pair(x, name, items):
    if _type(x) not in (tuple, list) or len(x) != 2:
        raise AssertionError(f"{name} must return a tuple of 2 items {items}, got {kind(x)}")
    return x[0], x[1]


# --------------------------------------------------------------------------
# References (float64, CPU)

def _ref_kl(mu, logvar):
    """[B, ...] -> [B]: (mu^2 + exp(logvar) - 1 - logvar) / 2 summed over non-batch dims."""
    mu, logvar = to_f64(mu), to_f64(logvar)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(1)


def _ref_bce(x, logits):
    """[B, ...] -> [B]: sum of softplus(l) - x l over non-batch dims."""
    x, logits = to_f64(x), to_f64(logits)
    nll = torch.nn.functional.softplus(logits) - x * logits
    return nll.reshape(nll.shape[0], -1).sum(1)


def _close(a, b, rtol, atol):
    """Whether float64 ``a`` and ``b`` agree (plain tensors made here, not the learner's)."""
    return bool(((a - b).abs() <= atol + rtol * b.abs()).all())


# --------------------------------------------------------------------------
# reparameterize

def _z_of(fn, mu, logvar, gen, label):
    z = _call(fn, mu, logvar, generator=gen, what=label)
    expect_tensor(z, label, shape=_tuple(mu.shape), dims="mu.shape", floating=True)
    return z


def _assert_differs(a, b, message):
    if max_abs(to_f64(a) - to_f64(b)) < 1e-6:
        raise AssertionError(message)


@check
def check_reparameterize(reparameterize):
    """Check ``reparameterize(mu, logvar, generator=None) -> z`` shaped like ``mu``."""
    fn = reparameterize
    _own(fn, "reparameterize")
    what = "reparameterize(mu, logvar, generator=g)"

    # shapes, and reproducibility from the generator
    gen = generator(2001)
    cases = [  # shape, layout
        ((5, 3), None),
        ((1, 1), None),
        ((8, 2), None),
        ((2, 3, 4, 4), None),
        ((6, 4), "noncontiguous"),
    ]
    for shape, layout in cases:
        mu = randn(gen, *shape)
        logvar = randn(gen, *shape)
        if layout:
            mu, logvar = noncontiguous(mu), noncontiguous(logvar)
        mu0, lv0 = mu.clone(), logvar.clone()
        label = f"{what} for mu of shape {shape}"
        z1 = _z_of(fn, mu, logvar, generator(7), label)
        assert_unchanged(mu0, mu, "reparameterize")
        assert_unchanged(lv0, logvar, "reparameterize")
        z2 = _z_of(fn, mu, logvar, generator(7), label)
        if max_excess(z1, z2, 0.0) > 0:
            raise AssertionError(
                f"two calls of {what} with generators in the same state (seeded alike) must give "
                "the same z: draw eps with that generator (torch.randn(..., generator=generator))")
        z3 = _z_of(fn, mu, logvar, generator(8), label)
        _assert_differs(z1, z3, f"{what} gives the same z for generators with different seeds: "
                                "eps must be drawn from the generator, not fixed")
        assert_unchanged(mu0, mu, "reparameterize")
        assert_unchanged(lv0, logvar, "reparameterize")

    # one generator, two calls: it moves on (eps is not drawn once and reused)
    mu, logvar = randn(gen, 4, 3), randn(gen, 4, 3)
    g = generator(9)
    z1 = _z_of(fn, mu, logvar, g, what)
    z2 = _z_of(fn, mu, logvar, g, what)
    _assert_differs(z1, z2, f"two calls of {what} with the same generator give the same z: each "
                            "call must draw fresh noise eps from the generator")
    # every element gets its own noise
    z = to_f64(_z_of(fn, torch.zeros(64, 5), torch.full((64, 5), 0.5), generator(10), what))
    if float(z.std(0).max()) < 1e-6 or float(z.std(1).max()) < 1e-6:
        raise AssertionError(
            f"{what} must draw a separate eps for every element of mu (eps shaped like mu): "
            "for mu of shape (64, 5) the samples repeat across the batch or across the units")

    # without a generator: torch's global generator
    mu, logvar = randn(gen, 3, 4), randn(gen, 3, 4)
    label = "reparameterize(mu, logvar)"
    torch.manual_seed(11)
    z1 = _call(fn, mu, logvar, what=label)
    expect_tensor(z1, label, shape=(3, 4), dims="mu.shape", floating=True)
    torch.manual_seed(11)
    z2 = _call(fn, mu, logvar, what=label)
    expect_tensor(z2, label, shape=(3, 4), dims="mu.shape", floating=True)
    if max_excess(z1, z2, 0.0) > 0:
        raise AssertionError(
            f"{label} without a generator must draw eps from torch's global generator (the "
            "same z after the same torch.manual_seed)")
    torch.manual_seed(12)
    _assert_differs(z1, _call(fn, mu, logvar, what=label),
                    f"{label} gives the same z after different torch.manual_seed calls")

    # statistics: eps = (z - mu) / exp(logvar / 2) must be standard normal
    n, d = 4000, 6
    mu = randn(gen, n, d, scale=3.0)
    logvar = torch.tensor([-3.0, -1.0, 0.0, 0.7, 1.5, 2.5]).expand(n, d).contiguous()
    label = f"{what} for mu of shape {(n, d)}"
    z = _z_of(fn, mu, logvar, generator(13), label)
    if not bool(torch.isfinite(to_f64(z)).all()):
        raise AssertionError(f"{label} contains NaN or inf")
    std = to_f64(logvar).mul(0.5).exp()
    eps = (to_f64(z) - to_f64(mu)) / std                            # [N, D]
    mean, var = eps.mean(0), eps.var(0)
    bound = 5 / math.sqrt(n)
    if float(var.max()) < 1e-8:
        raise AssertionError(
            f"{label}: z equals mu; z must be mu + exp(logvar / 2) * eps with eps ~ N(0, I)")
    if float(mean.abs().max()) > bound or float((var - 1).abs().max()) > 5 * math.sqrt(2 / n):
        hint = ""
        ratio = var / to_f64(logvar[0]).exp()
        if float((ratio - 1).abs().max()) < 0.15:
            hint = " (exp(logvar) is the variance; the standard deviation is exp(logvar / 2))"
        elif float(mean.abs().max()) > 0.3:
            hint = " (eps must have mean 0: torch.randn, not torch.rand)"
        raise AssertionError(
            f"{label}: (z - mu) / exp(logvar / 2) must be standard normal noise, but its mean per "
            f"unit ranges over [{float(mean.min()):.3f}, {float(mean.max()):.3f}] and its variance "
            f"over [{float(var.min()):.3f}, {float(var.max()):.3f}]{hint}")
    corr = torch.corrcoef(eps.t())
    off = (corr - torch.eye(d, dtype=_f64)).abs().max()
    if float(off) > bound:
        raise AssertionError(
            f"{label}: the noise of different latent units must be independent (draw eps with "
            f"the shape of mu), but two units correlate by {float(off):.2f}")
    kurtosis = float(((eps - mean) / var.sqrt()).pow(4).mean())
    if abs(kurtosis - 3) > 5 * math.sqrt(24 / (n * d)):
        raise AssertionError(
            f"{label}: (z - mu) / exp(logvar / 2) has mean 0 and variance 1 but is not Gaussian "
            f"(kurtosis {kurtosis:.2f}, a Gaussian has 3): eps must come from torch.randn")

    # gradients: dz/dmu = 1, dz/dlogvar = eps * exp(logvar / 2) / 2 = (z - mu) / 2
    for shape in ((5, 3), (2, 3, 4, 4)):
        mu = randn(gen, *shape).requires_grad_()
        logvar = randn(gen, *shape).requires_grad_()
        label = f"{what} for mu of shape {shape}"
        z = _z_of(fn, mu, logvar, generator(14), label)
        upstream = randn(gen, *shape)
        if not z.requires_grad:
            raise AssertionError(
                f"{label} must be differentiable with respect to mu and logvar (the "
                "reparameterization trick: keep them in the graph, without detach or no_grad)")
        g_mu, g_lv = grads((z * upstream).sum(), [mu, logvar])
        if is_zero_grad(g_mu):
            raise AssertionError(
                f"{label}: no gradient reaches mu; z = mu + exp(logvar / 2) * eps must be "
                "differentiable in mu (dz/dmu = 1)")
        assert_close(g_mu, upstream, "the gradient of z with respect to mu", atol=1e-6, rtol=1e-5,
                     hint=" (dz/dmu must be 1)")
        if is_zero_grad(g_lv):
            raise AssertionError(
                f"{label}: no gradient reaches logvar; z = mu + exp(logvar / 2) * eps must be "
                "differentiable in logvar")
        expected = to_f64(upstream) * (to_f64(z) - to_f64(mu)) / 2
        assert_close(g_lv, expected, "the gradient of z with respect to logvar", atol=1e-5,
                     rtol=1e-4, hint=" (dz/dlogvar must be eps * exp(logvar / 2) / 2: is the "
                                     "standard deviation exp(logvar / 2)?)")

    # eps lives on mu's device: a GPU's latents, here the "meta" device, which
    # refuses to mix with CPU tensors exactly as CUDA does. Meta tensors hold no
    # values, so an answer that reads one (.item(), an if on a tensor, argument
    # validation in torch.distributions) cannot be judged this way: it passes.
    mu = torch.zeros(4, 3, device="meta")
    label = "reparameterize(mu, logvar) for mu and logvar on another device than the CPU"
    try:
        z = _call(fn, mu, torch.zeros(4, 3, device="meta"), what=label)
    except AssertionError as err:
        cause = err.__cause__
        text = str(cause)
        if cause is None:                   # a call into the reference implementation
            raise
        if "expected device" in text or "same device" in text:
            raise AssertionError(
                f"{label} mixes devices: draw eps on mu's device "
                "(torch.randn(mu.shape, generator=generator, device=mu.device), or "
                "torch.randn_like(mu) without a generator)") from None
        return
    if _type(z) is not torch.Tensor or z.device != mu.device or _tuple(z.shape) != (4, 3):
        raise AssertionError(f"{label} must return z on that device, got {kind(z)}"
                             + (f" on {z.device}" if _isinstance(z, torch.Tensor) else ""))


# --------------------------------------------------------------------------
# gaussian_kl

@check
def check_gaussian_kl(gaussian_kl):
    """Check ``gaussian_kl(mu, logvar) -> [B]``."""
    fn = gaussian_kl
    _own(fn, "gaussian_kl")
    what = "gaussian_kl(mu, logvar)"

    hand = [
        ([[0.0, 0.0]], [[0.0, 0.0]], [0.0], "q equal to the prior"),
        ([[1.0, 2.0]], [[0.0, 0.0]], [2.5], "unit variances: |mu|^2 / 2"),
        ([[0.0]], [[math.log(4.0)]], [(3.0 - math.log(4.0)) / 2], "variance 4: (4 - 1 - log 4) / 2"),
        ([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, math.log(4.0)]],
         [0.5, (3.0 - math.log(4.0)) / 2], "two items"),
    ]
    for mu, logvar, expected, why in hand:
        label = f"{what} for mu = {mu}, logvar = {[[round(v, 3) for v in r] for r in logvar]}"
        kl = _call(fn, torch.tensor(mu), torch.tensor(logvar), what=label)
        b = len(mu)
        expect_tensor(kl, label, shape=(b,), dims="[B]", floating=True)
        ref = torch.tensor(expected, dtype=_f64)
        if max_excess(kl, ref, 1e-5) > 0:
            raise AssertionError(
                f"{label} ({why}) must be {[round(e, 4) for e in expected]}, "
                f"got {[round(v, 4) for v in to_f64(kl).tolist()]}")

    gen = generator(2002)
    cases = [  # shape, logvar scale, layout, dtype
        ((5, 3), 1.0, None, torch.float32),
        ((1, 4), 1.0, None, torch.float32),
        ((7, 1), 1.0, None, torch.float32),
        ((6, 16), 4.0, None, torch.float32),
        ((4, 8), 1.0, "noncontiguous", torch.float32),
        ((3, 5), 2.0, None, torch.float64),
        ((3, 2, 4, 4), 1.0, None, torch.float32),
    ]
    for shape, scale, layout, dtype in cases:
        mu = randn(gen, *shape, scale=2.0, dtype=dtype)
        logvar = randn(gen, *shape, scale=scale, dtype=dtype)
        if layout:
            mu, logvar = noncontiguous(mu), noncontiguous(logvar)
        mu.requires_grad_()
        logvar.requires_grad_()
        mu0, lv0 = mu.detach().clone(), logvar.detach().clone()
        b = shape[0]
        label = f"{what} for mu of shape {shape}"
        kl = _call(fn, mu, logvar, what=label)
        sum_hint = " (sum over every dimension except the first, the batch)" if len(shape) > 2 else ""
        expect_tensor(kl, label, floating=True)
        if _tuple(kl.shape) != (b,):
            raise AssertionError(
                f"{label} must have shape [B] = {(b,)} (one KL per item of the batch), got "
                f"{_tuple(kl.shape)}{sum_hint}")
        ref = _ref_kl(mu, logvar)
        if max_excess(kl, ref, 1e-5 + 1e-5 * to_f64(ref).abs()) > 0:
            got = to_f64(kl)
            units = mu[0].numel()
            hint = ""
            if _close(got, ref / units, 1e-4, 1e-5):
                hint = " (it is the mean over the latent units: sum them)"
            elif _close(got, -ref, 1e-4, 1e-5):
                hint = " (sign error: a KL divergence is never negative)"
            elif _close(got, 2 * ref, 1e-4, 1e-5):
                hint = " (missing the factor 1/2)"
            elif len(shape) > 2:
                hint = sum_hint
            raise AssertionError(f"{label} has wrong values (largest error "
                                 f"{max_abs(got - ref):.3g}){hint}")
        assert_unchanged(mu0, mu, "gaussian_kl")
        assert_unchanged(lv0, logvar, "gaussian_kl")

        upstream = randn(gen, b, dtype=dtype)
        g_mu, g_lv = grads((kl * upstream).sum(), [mu, logvar])
        if g_mu is None or g_lv is None:
            raise AssertionError(f"{label} must be differentiable with respect to mu and logvar "
                                 "(the KL term trains the encoder)")
        per_item = to_f64(upstream).reshape((b,) + (1,) * (len(shape) - 1))
        assert_close(g_mu, per_item * to_f64(mu), "the gradient of gaussian_kl with respect to mu",
                     atol=1e-5, rtol=1e-4)
        assert_close(g_lv, per_item * 0.5 * (to_f64(logvar).exp() - 1),
                     "the gradient of gaussian_kl with respect to logvar", atol=1e-5, rtol=1e-4)

    # extreme log-variances stay finite
    mu = torch.zeros(2, 3)
    logvar = torch.tensor([[-20.0, 0.0, 20.0], [15.0, -15.0, 0.0]])
    label = f"{what} for log-variances of +-20"
    kl = _call(fn, mu, logvar, what=label)
    expect_tensor(kl, label, shape=(2,), dims="[B]", floating=True)
    assert_close(kl, _ref_kl(mu, logvar), label, atol=1e-3, rtol=1e-5)


# --------------------------------------------------------------------------
# negative_elbo

def _elbo_parts(fn, x, logits, mu, logvar, beta, label):
    args = (x, logits, mu, logvar) if beta is None else (x, logits, mu, logvar, beta)
    out = _expect_triple(_call(fn, *args, what=label), label)
    loss, recon, kl = out
    values = [expect_scalar(v, f"{name} ({label})") for v, name in
              zip(out, ("loss", "recon", "kl"))]
    return (loss, recon, kl), values


@check
def check_negative_elbo(negative_elbo):
    """Check ``negative_elbo(x, x_logits, mu, logvar, beta=1.0) -> (loss, recon, kl)``."""
    fn = negative_elbo
    _own(fn, "negative_elbo")
    what = "negative_elbo(x, x_logits, mu, logvar, beta)"

    # by hand: two pixels with logit 0 (p = 1/2) cost 2 log 2; mu = 1, logvar = 0 costs 1/2
    x = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.zeros(1, 1, 1, 2)
    mu, logvar = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    for beta, expected_loss in ((None, 2 * math.log(2) + 0.5), (2.0, 2 * math.log(2) + 1.0)):
        label = ("negative_elbo(x, x_logits, mu, logvar)" if beta is None else what +
                 f" with beta={beta}") + " for x = [1, 0], x_logits = [0, 0], mu = [1], logvar = [0]"
        _, (loss, recon, kl) = _elbo_parts(fn, x, logits, mu, logvar, beta, label)
        if abs(recon - 2 * math.log(2)) > 1e-5:
            raise AssertionError(f"recon for {label} must be 2 log 2 = {2 * math.log(2):.4f} "
                                 f"(each pixel costs log 2 at p = 1/2), got {recon:.4f}")
        if abs(kl - 0.5) > 1e-5:
            raise AssertionError(f"kl for {label} must be 0.5, got {kl:.4f}")
        if abs(loss - expected_loss) > 1e-5:
            raise AssertionError(f"loss for {label} must be recon + beta * kl = "
                                 f"{expected_loss:.4f}, got {loss:.4f}")

    gen = generator(2003)
    cases = [  # x shape, latent D, beta, logit scale, binary x
        ((4, 1, 8, 8), 2, 1.0, 3.0, False),
        ((3, 3, 4, 4), 5, 0.5, 3.0, True),
        ((1, 1, 4, 4), 3, 4.0, 2.0, False),
        ((5, 1, 6, 6), 2, 0.0, 1.0, False),
        ((6, 20), 4, 2.5, 2.0, False),
        ((2, 1, 4, 4), 2, 1.0, 25.0, True),
    ]
    for shape, d, beta, scale, binary in cases:
        b = shape[0]
        pixels = math.prod(shape[1:])
        x = torch.rand(*shape, generator=gen)
        if binary:
            x = (x > 0.5).float()
        logits = randn(gen, *shape, scale=scale).requires_grad_()
        mu = randn(gen, b, d).requires_grad_()
        logvar = randn(gen, b, d).requires_grad_()
        saved = [(t.detach().clone(), t) for t in (x, logits, mu, logvar)]
        label = f"{what} with beta={beta} for x of shape {shape}"
        large = " with logits as large as +-25" if scale > 10 else ""
        (loss, recon, kl), (v_loss, v_recon, v_kl) = _elbo_parts(
            fn, x, logits, mu, logvar, beta, label)
        ref_recon = float(_ref_bce(x, logits).mean())
        ref_kl = float(_ref_kl(mu, logvar).mean())
        if abs(v_recon - ref_recon) > 1e-5 * abs(ref_recon) + 1e-4:
            hint = ""
            if abs(v_recon - ref_recon / pixels) < 1e-4 * abs(ref_recon / pixels) + 1e-6:
                hint = (" (it is averaged over the pixels: sum the negative log-likelihood over "
                        "every non-batch dimension, then average over the batch)")
            elif abs(v_recon - ref_recon * b) < 1e-5 * abs(ref_recon * b) + 1e-4 and b > 1:
                hint = " (it is summed over the batch: average it)"
            elif large:
                hint = (f"{large}: compute the Bernoulli log-likelihood from the logits "
                        "(softplus, or F.binary_cross_entropy_with_logits), not from "
                        "probabilities, which round to 0 or 1")
            else:
                hint = (": it must be the Bernoulli negative log-likelihood of x under the "
                        "logits x_logits (one sigmoid, inside the loss)")
            raise AssertionError(f"recon for {label} is {v_recon:.5g}, expected "
                                 f"{ref_recon:.5g}{hint}")
        if abs(v_kl - ref_kl) > 1e-5 * abs(ref_kl) + 1e-5:
            hint = ""
            if abs(v_kl - beta * ref_kl) < 1e-5 * abs(beta * ref_kl) + 1e-5:
                hint = " (kl must be the KL itself, without beta)"
            elif abs(v_kl - ref_kl * b) < 1e-5 * abs(ref_kl * b) + 1e-5 and b > 1:
                hint = " (it is summed over the batch: average it)"
            raise AssertionError(f"kl for {label} is {v_kl:.5g}, expected the batch mean of "
                                 f"gaussian_kl, {ref_kl:.5g}{hint}")
        expected = ref_recon + beta * ref_kl
        if abs(v_loss - expected) > 1e-5 * abs(expected) + 1e-4:
            hint = ""
            if abs(v_loss - (beta * ref_recon + ref_kl)) < 1e-5 * abs(expected) + 1e-4:
                hint = " (beta weighs the KL term, not the reconstruction)"
            raise AssertionError(f"loss for {label} must be recon + beta * kl = {expected:.5g}, "
                                 f"got {v_loss:.5g}{hint}")
        for before, after in saved:
            assert_unchanged(before, after, "negative_elbo")

        g_logits, g_mu, g_lv = grads(loss, [logits, mu, logvar])
        for g, name in ((g_logits, "x_logits"), (g_mu, "mu"), (g_lv, "logvar")):
            if g is None and (name == "x_logits" or beta != 0):
                raise AssertionError(f"loss of {what} must be differentiable with respect to "
                                     f"{name}")
        xf, lf = to_f64(x), to_f64(logits)
        assert_close(g_logits, (torch.sigmoid(lf) - xf) / b,
                     "the gradient of loss with respect to x_logits", atol=1e-6, rtol=1e-4,
                     hint=f" (expected (sigmoid(x_logits) - x) / B{large})")
        if beta != 0:
            assert_close(g_mu, beta * to_f64(mu) / b, "the gradient of loss with respect to mu",
                         atol=1e-6, rtol=1e-4)
            assert_close(g_lv, beta * 0.5 * (to_f64(logvar).exp() - 1) / b,
                         "the gradient of loss with respect to logvar", atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------
# VAE

def _vae_case(cls, kwargs, b, gen):
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    name = f"VAE({args})"
    model = call(cls, what=name, forbid=_REFERENCE, **kwargs)
    if not _isinstance(model, _Module):
        raise AssertionError(f"{name} must be an nn.Module, got {kind(model)}")
    params = list(model.parameters())
    if not params:
        raise AssertionError(f"{name} has no parameters: build it from an Encoder, a Decoder "
                             "and linear layers")
    c = kwargs.get("in_channels", 1)
    d = kwargs.get("latent_dim", 2)
    s = kwargs.get("image_size", 32)
    x = torch.rand(b, c, s, s, generator=gen)
    x0 = x.clone()

    # encode
    label = f"{name}.encode(x) for x of shape {(b, c, s, s)}"
    mu_e, lv_e = _expect_pair(_call(model.encode, x, what=label), label, "(mu, logvar)")
    expect_tensor(mu_e, f"mu from {label}", shape=(b, d), dims="[B, latent_dim]", floating=True)
    expect_tensor(lv_e, f"logvar from {label}", shape=(b, d), dims="[B, latent_dim]",
                  floating=True)

    # decode
    z = randn(gen, b + 1, d)
    label = f"{name}.decode(z) for z of shape {(b + 1, d)}"
    out = _call(model.decode, z, what=label)
    expect_tensor(out, label, shape=(b + 1, c, s, s), dims="[B, C, H, W]", floating=True)

    # forward
    label = f"{name}(x, generator=g) for x of shape {(b, c, s, s)}"
    out = _expect_triple(_call(model, x, generator=generator(21), what=label), label)
    x_logits, mu, logvar = out
    expect_tensor(x_logits, f"x_logits from {label}", shape=(b, c, s, s), dims="[B, C, H, W]",
                  floating=True)
    expect_tensor(mu, f"mu from {label}", shape=(b, d), dims="[B, latent_dim]", floating=True)
    expect_tensor(logvar, f"logvar from {label}", shape=(b, d), dims="[B, latent_dim]",
                  floating=True)
    assert_unchanged(x0, x, name)
    tol = 1e-5 * (max_abs(mu_e) + max_abs(lv_e)) + 1e-6
    if max_excess(mu, mu_e, tol) > 0 or max_excess(logvar, lv_e, tol) > 0:
        raise AssertionError(f"mu and logvar returned by {label} must be those of "
                             f"{name}.encode(x) (in this order)")

    again = _expect_triple(_call(model, x, generator=generator(21), what=label), label)
    if _type(again[0]) is not torch.Tensor or max_excess(again[0], x_logits, 1e-6) > 0:
        raise AssertionError(f"{label} must give the same x_logits for generators in the same "
                             "state: sample z with reparameterize(mu, logvar, generator)")
    other = _expect_triple(_call(model, x, generator=generator(22), what=label), label)
    if _type(other[0]) is not torch.Tensor or max_abs(to_f64(other[0]) - to_f64(x_logits)) < 1e-7:
        raise AssertionError(f"{label} gives the same x_logits for generators with different "
                             "seeds: forward must decode a sample z, not the mean")
    default = _expect_triple(_call(model, x, what=f"{name}(x)"), f"{name}(x)")
    expect_tensor(default[0], f"x_logits from {name}(x)", shape=(b, c, s, s),
                  dims="[B, C, H, W]", floating=True)

    # the decoded z is mu + exp(logvar / 2) * eps: recover it from the gradients
    if not (mu.requires_grad and logvar.requires_grad):
        raise AssertionError(f"mu and logvar from {label} must be differentiable (the KL term "
                             "trains the encoder through them): no detach, no no_grad")
    g_mu_pl, g_lv_pl = [], []
    for _ in range(2):
        upstream = randn(gen, b, c, s, s)
        g_mu, g_lv = grads((x_logits * upstream).sum(), [mu, logvar])
        if is_zero_grad(g_mu):
            raise AssertionError(f"x_logits from {label} do not depend on the returned mu: "
                                 "decode z = reparameterize(mu, logvar, generator)")
        if is_zero_grad(g_lv):
            raise AssertionError(f"x_logits from {label} do not depend on logvar: forward must "
                                 "decode a sample z = mu + exp(logvar / 2) * eps, not mu")
        g_mu_pl.append(to_f64(g_mu))
        g_lv_pl.append(to_f64(g_lv))
    pick = g_mu_pl[0].abs() >= g_mu_pl[1].abs()
    g_mu = torch.where(pick, g_mu_pl[0], g_mu_pl[1])
    g_lv = torch.where(pick, g_lv_pl[0], g_lv_pl[1])
    offset = 2 * g_lv / g_mu.where(g_mu.abs() > 1e-30, torch.full_like(g_mu, 1e-30))
    z_hat = (to_f64(mu) + offset).to(torch.float32)
    decoded = _call(model.decode, z_hat, what=f"{name}.decode(z)")
    expect_tensor(decoded, f"{name}.decode(z)", shape=(b, c, s, s), dims="[B, C, H, W]",
                  floating=True)
    scale = max_abs(x_logits) + 1e-3
    if max_excess(x_logits, decoded, 2e-3 * scale) > 0:
        raise AssertionError(
            f"x_logits from {label} must be decode(z) for z = mu + exp(logvar / 2) * eps: "
            "the logits of the sampled z (no sigmoid in forward; exp(logvar / 2) is the "
            "standard deviation)")


@check
def check_VAE(VAE):
    """Check ``VAE(in_channels, latent_dim, hidden, res_hidden, num_res_blocks, image_size)``."""
    cls = VAE
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"VAE must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, "VAE")
    gen = generator(2004)
    cases = [  # constructor arguments, batch
        (dict(in_channels=1, latent_dim=2, hidden=16, res_hidden=4, num_res_blocks=1,
              image_size=16), 3),
        (dict(in_channels=3, latent_dim=5, hidden=8, res_hidden=4, num_res_blocks=2,
              image_size=8), 2),
        (dict(in_channels=1, latent_dim=1, hidden=8, res_hidden=2, num_res_blocks=0,
              image_size=12), 1),
        (dict(), 2),
    ]
    for kwargs, b in cases:
        _vae_case(cls, kwargs, b, gen)
