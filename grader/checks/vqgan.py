"""Hidden tests of ``05_vqgan``: perceptual and adversarial losses.

One check per answer cell; each takes the learner's function and raises
``AssertionError`` saying what is wrong:

- ``check_hinge_d_loss(fn)``       ``½ (mean relu(1 - real) + mean relu(1 + fake))``
- ``check_hinge_g_loss(fn)``       ``-mean fake``
- ``check_non_saturating_d_loss(fn)`` ``½ (mean softplus(-real) + mean softplus(fake))``,
  finite for logits of any size
- ``check_non_saturating_g_loss(fn)`` ``mean softplus(-fake)``
- ``check_adaptive_weight(fn)``    ``||grad_w rec|| / (||grad_w g|| + delta)`` clamped to
  ``[0, max_weight]``, detached, the graph kept and no ``.grad`` touched
- ``check_perceptual_distance(fn)`` LPIPS with unit weights: ``[B]``, channel
  normalisation, squared difference summed over channels, mean over space,
  sum over layers; finite where a feature vector is all zeros
- ``check_disc_weight(fn)``        0 before ``disc_start``, 1 from it on
- ``check_patchgan_receptive_field(fn)`` ``1 + sum (k_i - 1) prod_{m<i} s_m``

The losses are compared in value and in gradient with float64 references kept
here, on logits of several shapes and layouts, with inputs that must not be
modified. Every answer is also checked for calling the course's reference
implementation in ``dvl_helpers.vqgan`` (statically and while it runs).
"""
from __future__ import annotations

import torch

from ._common import (
    _Tensor, all_finite, assert_close, assert_own_implementation, assert_unchanged, call, channels_last, check,
    expect_scalar, expect_tensor, generator, grads, is_zero_grad, kind, noncontiguous, randn,
    to_f64,
)

__all__ = [
    "check_hinge_d_loss", "check_hinge_g_loss", "check_non_saturating_d_loss",
    "check_non_saturating_g_loss", "check_adaptive_weight", "check_perceptual_distance",
    "check_disc_weight", "check_patchgan_receptive_field",
]

_REFERENCE = ("dvl_helpers.vqgan", None)

_type = type
_tuple = tuple
_f64 = torch.float64
_grad = torch.autograd.grad
_relu = torch.relu
_softplus = torch.nn.functional.softplus


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


def _layout(t, layout):
    if layout == "noncontiguous":
        return noncontiguous(t)
    if layout == "channels_last":
        return channels_last(t)
    return t


def _leaf(t):
    """A float64 leaf copy of ``t`` that requires grad (for the references' gradients)."""
    return to_f64(t).requires_grad_()


def _ref_and_grads(ref, *inputs):
    """``ref(*float64 copies)`` and its gradients with respect to each input (float64)."""
    leaves = [_leaf(t) for t in inputs]
    value = ref(*leaves)
    return value.detach(), list(_grad(value, leaves))


# --------------------------------------------------------------------------
# GAN losses: one shared routine

_LOGIT_CASES = [  # shape of the logits, layout, scale
    ((4, 1, 3, 3), None, 1.5),
    ((6,), None, 2.0),
    ((1, 1, 1, 1), None, 1.0),
    ((3, 1, 5, 5), "channels_last", 1.0),
    ((2, 1, 4, 6), "noncontiguous", 3.0),
    ((8, 1, 2, 2), None, 0.3),
]


def _check_gan_loss(fn, name, args, ref, *, seed, hand, hints, large=None):
    """Check a GAN loss ``fn(*logits)`` against ``ref`` (float64 torch ops).

    ``args`` names the arguments (``("logits_real", "logits_fake")``); ``hand`` is
    ``(inputs, expected, text)`` for a hand-computed case; ``hints(got, inputs)``
    may return a hint (string) about a wrong value; ``large`` is a scale at which
    the loss must stay finite with finite gradients.
    """
    _own(fn, name)
    what = f"{name}({', '.join(args)})"

    inputs, expected, text = hand
    got = expect_scalar(_call(fn, *inputs, what=what), what)
    if abs(got - expected) > 1e-5:
        hint = hints(got, [to_f64(t) for t in inputs]) or ""
        raise AssertionError(f"{what} for {text} must be {expected:.6g}, got {got:.6g}{hint}")

    gen = generator(seed)
    scales = [s for _, _, s in _LOGIT_CASES] + ([large] if large else [])
    shapes = [(c[0], c[1]) for c in _LOGIT_CASES] + ([((4, 1, 3, 3), None)] if large else [])
    for (shape, layout), scale in zip(shapes, scales):
        logits = [_layout(randn(gen, *shape, scale=scale).requires_grad_(), layout) for _ in args]
        before = [t.detach().clone() for t in logits]
        label = f"{what} for logits of shape {shape}" + (f" ({layout} memory)" if layout else "") + \
            (f" and size up to {3 * scale:g}" if scale == large else "")
        out = _call(fn, *logits, what=label)
        if scale == large and _type(out) is _Tensor and out.numel() == 1 and not all_finite(out):
            raise AssertionError(
                f"{label} is NaN or inf: log(sigmoid(l)) underflows for large |l|; write the "
                "loss with softplus (softplus(-l) = -log sigmoid(l)), which stays finite")
        got = expect_scalar(out, label)
        value, ref_grads = _ref_and_grads(ref, *logits)
        if abs(got - float(value)) > 1e-5 * abs(float(value)) + 1e-6:
            hint = hints(got, [to_f64(t) for t in logits]) or ""
            raise AssertionError(f"{label} is wrong: expected {float(value):.6g}, "
                                 f"got {got:.6g}{hint}")
        for t, b in zip(logits, before):
            assert_unchanged(b, t, name)
        found = grads(out, logits)
        for arg, g, ref_g in zip(args, found, ref_grads):
            if g is None:
                raise AssertionError(
                    f"{label}: no gradient reaches {arg}; the loss must be differentiable in "
                    "the logits (no detach, no .item(), no numpy)")
            assert_close(g, ref_g, f"the gradient of {name} with respect to {arg} ({label})",
                         atol=1e-7, rtol=1e-4)


def _ratio_hint(got, expected, text):
    if abs(expected) > 1e-6 and abs(got / expected - 2.0) < 1e-4:
        return f" ({text})"
    return ""


def _hinge_d_ref(real, fake):
    return 0.5 * (_relu(1 - real).mean() + _relu(1 + fake).mean())


def _hinge_d_hints(got, inputs):
    real, fake = inputs
    expected = float(_hinge_d_ref(real, fake))
    hint = _ratio_hint(got, expected, "the two means are averaged: ½ (... + ...)")
    if hint:
        return hint
    if abs(got - float(_hinge_d_ref(fake, real))) < 1e-5:
        return " (logits_real and logits_fake are swapped)"
    if abs(got - float(0.5 * (_relu(1 - real).mean() + _relu(1 - fake).mean()))) < 1e-5:
        return " (fake logits are pushed below -1: relu(1 + fake))"
    return ""


@check
def check_hinge_d_loss(hinge_d_loss):
    """Check ``hinge_d_loss(logits_real, logits_fake)`` -> scalar."""
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    _check_gan_loss(
        hinge_d_loss, "hinge_d_loss", ("logits_real", "logits_fake"), _hinge_d_ref, seed=5001,
        hand=((real, fake), 0.5 * (2.5 / 3 + 1.0), "logits_real = [2, 0.5, -1] and "
              "logits_fake = [-2, 0, 1]"),
        hints=_hinge_d_hints)


def _hinge_g_hints(got, inputs):
    fake, = inputs
    if abs(got + float(-fake.mean())) < 1e-5 and abs(got) > 1e-6:
        return " (the sign: the generator wants the fake logits to be large)"
    return ""


@check
def check_hinge_g_loss(hinge_g_loss):
    """Check ``hinge_g_loss(logits_fake)`` -> scalar."""
    fake = torch.tensor([-2.0, 0.5, 3.0, 1.5])
    _check_gan_loss(
        hinge_g_loss, "hinge_g_loss", ("logits_fake",), lambda f: -f.mean(), seed=5002,
        hand=((fake,), -0.75, "logits_fake = [-2, 0.5, 3, 1.5]"), hints=_hinge_g_hints)


def _ns_d_ref(real, fake):
    return 0.5 * (_softplus(-real).mean() + _softplus(fake).mean())


def _ns_d_hints(got, inputs):
    real, fake = inputs
    expected = float(_ns_d_ref(real, fake))
    hint = _ratio_hint(got, expected, "the two means are averaged: ½ (... + ...)")
    if hint:
        return hint
    if abs(got - float(_ns_d_ref(fake, real))) < 1e-5:
        return " (a sign inside softplus, or the arguments swapped: real logits should be " \
               "large, fake ones small)"
    return ""


@check
def check_non_saturating_d_loss(non_saturating_d_loss):
    """Check ``non_saturating_d_loss(logits_real, logits_fake)`` -> scalar."""
    real = torch.tensor([0.0, 2.0])
    fake = torch.tensor([0.0, -1.0])
    expected = float(_ns_d_ref(to_f64(real), to_f64(fake)))
    _check_gan_loss(
        non_saturating_d_loss, "non_saturating_d_loss", ("logits_real", "logits_fake"), _ns_d_ref,
        seed=5003, hand=((real, fake), expected, "logits_real = [0, 2] and logits_fake = [0, -1]"),
        hints=_ns_d_hints, large=40.0)


def _ns_g_hints(got, inputs):
    fake, = inputs
    if abs(got - float(_softplus(fake).mean())) < 1e-5:
        return " (the sign inside softplus: the generator wants the fake logits to be large)"
    if abs(got + float(_softplus(fake).mean())) < 1e-5:
        return " (that is the saturating minimax loss, mean log(1 - sigmoid(fake)))"
    return ""


@check
def check_non_saturating_g_loss(non_saturating_g_loss):
    """Check ``non_saturating_g_loss(logits_fake)`` -> scalar."""
    fake = torch.tensor([0.0, 3.0, -2.0])
    expected = float(_softplus(-to_f64(fake)).mean())
    _check_gan_loss(
        non_saturating_g_loss, "non_saturating_g_loss", ("logits_fake",),
        lambda f: _softplus(-f).mean(), seed=5004,
        hand=((fake,), expected, "logits_fake = [0, 3, -2]"), hints=_ns_g_hints, large=40.0)


# --------------------------------------------------------------------------
# adaptive_weight

def _decoder_graph(gen, rec_scale=1.0, g_scale=1.0, conv=True):
    """A tiny 'decoder' ending in a layer with weight ``w``, and two losses through it.

    Returns ``(rec_loss, g_loss, w, params)``: ``v`` (an earlier parameter) and ``w``
    both reach both losses, so a gradient taken with respect to anything but
    ``w`` gives other numbers.
    """
    v = randn(gen, 3, 3, 4, 4, scale=0.5).requires_grad_()
    x = randn(gen, 2, 3, 4, 4)
    if conv:
        w = randn(gen, 3, 2, 4, 4, scale=0.3).requires_grad_()         # ConvTranspose2d weight
        h = torch.nn.functional.conv2d(x, v, padding="same").relu()
        out = torch.nn.functional.conv_transpose2d(h, w, stride=2, padding=1)   # [2, 2, 8, 8]
    else:
        w = randn(gen, 5, 48, scale=0.3).requires_grad_()               # Linear weight
        h = torch.nn.functional.conv2d(x, v, padding="same").relu().reshape(2, 48)
        out = h @ w.t()
    target = randn(gen, *out.shape)
    critic = randn(gen, *out.shape)
    rec_loss = (out - target).abs().mean() * rec_scale
    g_loss = -(out * critic).mean() * g_scale + 0.1 * (v * v).sum()
    return rec_loss, g_loss, w, [v, w]


def _ref_lambda(rec_loss, g_loss, w, delta, max_weight):
    gr, = _grad(rec_loss, [w], retain_graph=True)
    gg, = _grad(g_loss, [w], retain_graph=True)
    ratio = to_f64(gr).norm() / (to_f64(gg).norm() + delta)
    return float(ratio.clamp(0.0, max_weight))


def _adaptive_call(fn, rec_loss, g_loss, w, params, label, kwargs):
    for p in params:
        p.grad = None
    out = _call(fn, rec_loss, g_loss, w, what=label, **kwargs)
    if _type(out) is _Tensor and out.requires_grad:
        raise AssertionError(
            f"{label} must return a detached weight (it is a number that scales the GAN loss, "
            "not something to differentiate through): detach it")
    got = expect_scalar(out, label, allow_number=True)
    for p in params:
        if p.grad is not None:
            raise AssertionError(
                f"{label} left gradients in .grad of the parameters; take the two gradients "
                "with torch.autograd.grad(..., retain_graph=True) instead of .backward(), so the "
                "training step's own backward pass starts from clean gradients")
    try:
        _grad(rec_loss + g_loss, [w], retain_graph=True)
    except RuntimeError as err:
        raise AssertionError(
            f"after {label} the graph of the losses is gone, so the training step cannot "
            "backpropagate through them any more: pass retain_graph=True to torch.autograd.grad"
        ) from err
    return got


@check
def check_adaptive_weight(adaptive_weight):
    """Check ``adaptive_weight(rec_loss, g_loss, last_layer_weight, delta, max_weight)``."""
    fn = adaptive_weight
    _own(fn, "adaptive_weight")
    what = "adaptive_weight(rec_loss, g_loss, last_layer_weight"

    gen = generator(5005)
    cases = [  # rec scale, g scale, conv weight, kwargs, what the case is about
        (1.0, 1.0, True, {}, ""),
        (1.0, 3.0, False, {}, ""),
        (50.0, 0.2, True, {}, ""),
        (1.0, 1.0, True, {"delta": 0.5}, " (delta = 0.5 must be used)"),
        (30.0, 0.1, False, {"max_weight": 2.0}, " (the weight must be clamped to max_weight)"),
        (1.0, 1e-4, True, {}, " (a tiny GAN gradient: delta keeps the ratio finite)"),
        (1e-3, 1e-3, False, {"delta": 1e-3}, ""),
    ]
    for rec_scale, g_scale, conv, kwargs, about in cases:
        rec_loss, g_loss, w, params = _decoder_graph(gen, rec_scale, g_scale, conv)
        w0 = w.detach().clone()
        args = "".join(f", {k}={v:g}" for k, v in kwargs.items())
        label = f"{what}{args})"
        expected = _ref_lambda(rec_loss, g_loss, w, kwargs.get("delta", 1e-4),
                               kwargs.get("max_weight", 1e4))
        got = _adaptive_call(fn, rec_loss, g_loss, w, params, label, kwargs)
        assert_unchanged(w0, w, "adaptive_weight")
        if abs(got - expected) > 1e-4 * abs(expected) + 1e-7:
            hint = about
            inverted = _ref_lambda(g_loss, rec_loss, w, kwargs.get("delta", 1e-4), 1e30)
            if abs(got - inverted) <= 1e-4 * abs(inverted) + 1e-7:
                hint = " (the ratio is upside down: the reconstruction gradient's norm goes on top)"
            raise AssertionError(
                f"{label} is wrong for a decoder whose last layer has a "
                f"{'ConvTranspose2d' if conv else 'Linear'} weight: expected {expected:.6g}, "
                f"got {got:.6g}{hint}")

    # the GAN gradient vanishes at the last layer: rec / delta, clamped
    for rec_scale, expected_kind in ((0.5, "ratio"), (1e6, "clamped")):
        gen = generator(5006)
        rec_loss, g_loss, w, params = _decoder_graph(gen, rec_scale, 0.0, True)
        expected = _ref_lambda(rec_loss, g_loss, w, 1e-4, 1e4)
        got = _adaptive_call(fn, rec_loss, g_loss, w, params, f"{what})", {})
        if abs(got - expected) > 1e-4 * abs(expected) + 1e-7:
            raise AssertionError(
                f"{what}) with a GAN loss whose gradient at the last layer is zero must be "
                f"||grad rec_loss|| / delta = {expected:.6g}"
                f"{' clamped to max_weight' if expected_kind == 'clamped' else ''}, got {got:.6g}")

    # both gradients zero: 0 / delta = 0, not NaN
    w = randn(generator(5007), 4, 3).requires_grad_()
    zero = (w * 0.0).sum()
    other = randn(generator(5008), 3).requires_grad_()
    got = _adaptive_call(fn, zero + other.sum(), zero * 2.0 + other.sum(), w, [w, other],
                         f"{what}) with zero gradients", {})
    if got != 0.0:
        raise AssertionError(
            f"{what}) must be 0 when both gradients at the last layer are zero (0 / delta), "
            f"got {got}")


# --------------------------------------------------------------------------
# perceptual_distance

def _ref_perceptual(fx, fy):
    total = 0.0
    for a, b in zip(fx, fy):
        na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (na - nb).pow(2).sum(1).mean(dim=(1, 2))
    return total


def _features(gen, b, shapes, scales, zero_positions=False):
    out = []
    for (c, h, w), s in zip(shapes, scales):
        f = randn(gen, b, c, h, w, scale=s).relu() + 0.05 * s * torch.rand(b, c, h, w, generator=gen)
        if zero_positions:
            f = f.clone()
            f[:, :, 0, 0] = 0.0          # a ReLU map can be zero at every channel
        out.append(f)
    return out


@check
def check_perceptual_distance(perceptual_distance):
    """Check ``perceptual_distance(features_x, features_y) -> [B]``."""
    fn = perceptual_distance
    _own(fn, "perceptual_distance")
    what = "perceptual_distance(features_x, features_y)"

    # by hand: one layer, one image, two positions
    fx = [torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])]       # [1, 2, 1, 2]: (3, 4) and (1, 0)
    fy = [torch.tensor([[[[4.0, 0.0]], [[3.0, 2.0]]]])]       # (4, 3) and (0, 2)
    out = _call(fn, fx, fy, what=what)
    expect_tensor(out, what, shape=(1,), dims="[B], one distance per image", floating=True)
    got = float(to_f64(out)[0])
    if abs(got - 1.04) > 1e-5:
        raise AssertionError(
            f"{what} for one layer [1, 2, 1, 2] holding the feature vectors (3, 4), (1, 0) and "
            f"(4, 3), (0, 2) must be 1.04 (unit vectors along the channels, squared differences "
            f"0.08 and 2 summed over channels, their mean over the 2 positions), got {got:.6g}")

    gen = generator(5009)
    cases = [  # B, per layer (C, H, W), per layer scale, layout of layer 1, zero positions, tuple
        (3, [(4, 8, 8), (8, 4, 4), (16, 2, 2)], [1.0, 30.0, 0.05], None, False, False),
        (2, [(6, 5, 7)], [2.0], None, False, True),
        (1, [(3, 4, 4), (5, 2, 2)], [1.0, 1.0], "channels_last", False, False),
        (4, [(8, 6, 6), (4, 3, 3)], [0.2, 5.0], "noncontiguous", True, True),
    ]
    for b, shapes, scales, layout, zeros, as_tuple in cases:
        fx = _features(gen, b, shapes, scales, zeros)
        fy = _features(gen, b, shapes, [2.0 * s for s in scales], zeros)
        if layout:
            fx[-1], fy[-1] = _layout(fx[-1], layout), _layout(fy[-1], layout)
        fx = [f.requires_grad_() for f in fx]
        fy = [f.requires_grad_() for f in fy]
        before = [t.detach().clone() for t in fx + fy]
        label = f"{what} for {len(shapes)} layer(s) of shapes " + \
            ", ".join(str((b, *s)) for s in shapes) + \
            (" with all-zero feature vectors at one position" if zeros else "") + \
            (f" ({layout} memory)" if layout else "")
        args = (_tuple(fx), _tuple(fy)) if as_tuple else (fx, fy)
        out = _call(fn, *args, what=label)
        expect_tensor(out, label, shape=(b,), dims="[B], one distance per image", floating=True)
        leaves_x, leaves_y = [_leaf(t) for t in fx], [_leaf(t) for t in fy]
        ref = _ref_perceptual(leaves_x, leaves_y)
        hint = ""
        if zeros:
            hint = (" (a feature vector that is zero at every channel has no direction: its "
                    "normalised vector must be 0, not NaN; add a small eps to the norm)")
        assert_close(out, ref.detach(), label, atol=1e-6, rtol=1e-5, hint=hint)
        for t, t0 in zip(fx + fy, before):
            assert_unchanged(t0, t, "perceptual_distance")
        if zeros:
            # LPIPS's own sqrt(sum f^2) has an infinite derivative at a zero vector: the
            # value must be finite there, the gradient is compared on the other cases
            continue
        upstream = randn(gen, b)
        found = grads((out * upstream).sum(), fx + fy)
        ref_grads = _grad((ref * to_f64(upstream)).sum(), leaves_x + leaves_y)
        for i, (g, rg) in enumerate(zip(found, ref_grads)):
            side = "features_x" if i < len(fx) else "features_y"
            if is_zero_grad(g):
                raise AssertionError(
                    f"{label}: no gradient reaches {side}[{i % len(fx)}]; the distance is a loss "
                    "and must be differentiable in the features")
            assert_close(g, rg, f"the gradient of {what} with respect to "
                                f"{side}[{i % len(fx)}] ({label})", atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------
# disc_weight

def _number(x, label):
    if _type(x) is bool:
        return float(x)
    return expect_scalar(x, label, allow_number=True)


@check
def check_disc_weight(disc_weight):
    """Check ``disc_weight(step, disc_start)`` -> 0.0 or 1.0."""
    fn = disc_weight
    _own(fn, "disc_weight")
    cases = [(0, 0), (1, 0), (0, 1), (4, 5), (5, 5), (6, 5), (999, 1000), (1000, 1000),
             (1001, 1000), (250_000, 10), (3, 10_000)]
    for step, start in cases:
        label = f"disc_weight(step={step}, disc_start={start})"
        got = _number(_call(fn, step, start, what=label), label)
        expected = 1.0 if step >= start else 0.0
        if got != expected:
            hint = ""
            if step == start:
                hint = " (the discriminator starts AT disc_start: step >= disc_start)"
            elif 0.0 < got < 1.0:
                hint = " (a hard switch, not a ramp)"
            raise AssertionError(f"{label} must be {expected}, got {got}{hint}")


# --------------------------------------------------------------------------
# patchgan_receptive_field

def _ref_field(kernels, strides):
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


def _integer(x, label):
    if _type(x) is bool:
        raise AssertionError(f"{label} must be an int, got a bool")
    if _type(x) is int:
        return x
    if _type(x) is float and x == int(x):
        return int(x)
    if _type(x) is _Tensor and x.numel() == 1:
        value = float(to_f64(x).reshape(()))
        if value == int(value):
            return int(value)
    if _type(x).__module__ == "numpy" and hasattr(x, "item"):
        value = x.item()
        if _type(value) in (int, float) and value == int(value):
            return int(value)
    raise AssertionError(f"{label} must be an int (a number of pixels), got {kind(x)}")


@check
def check_patchgan_receptive_field(patchgan_receptive_field):
    """Check ``patchgan_receptive_field(kernel_sizes, strides) -> int``."""
    fn = patchgan_receptive_field
    _own(fn, "patchgan_receptive_field")
    fixed = [
        ([4, 4, 4, 4, 4], [2, 2, 2, 1, 1], "the pix2pix PatchGAN"),
        ([3], [1], "one 3x3 conv"),
        ([1], [2], "one 1x1 conv"),
        ([3, 3, 3], [1, 1, 1], "three 3x3 convs of stride 1"),
        ([4, 4], [2, 2], "two 4x4 convs of stride 2"),
        ([3, 3], [2, 1], "a stride-2 conv then a stride-1 conv"),
        ([3, 3], [1, 2], "a stride-1 conv then a stride-2 conv"),
        ([7, 3, 3], [2, 2, 1], "kernels 7, 3, 3 with strides 2, 2, 1"),
        ([4, 4, 4, 4], [2, 2, 1, 1], "this notebook's discriminator"),
    ]
    gen = generator(5010)
    for _ in range(12):
        n = int(torch.randint(1, 7, (1,), generator=gen))
        kernels = torch.randint(1, 8, (n,), generator=gen).tolist()
        strides = torch.randint(1, 4, (n,), generator=gen).tolist()
        fixed.append((kernels, strides, None))
    for i, (kernels, strides, text) in enumerate(fixed):
        args = (_tuple(kernels), _tuple(strides)) if i % 2 else (list(kernels), list(strides))
        label = f"patchgan_receptive_field({list(kernels)}, {list(strides)})"
        got = _integer(_call(fn, *args, what=label), label)
        expected = _ref_field(kernels, strides)
        if got != expected:
            about = f" ({text})" if text else ""
            raise AssertionError(f"{label}{about} must be {expected} pixels, got {got}")
