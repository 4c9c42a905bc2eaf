"""Hidden tests of ``07_modern_tokenizers``: patches, 1-D latent tokens, VQ on a frozen encoder.

One check per answer cell; each takes the learner's function or class and
raises ``AssertionError`` saying what is wrong:

- ``check_patchify(fn)``             ``[B, C, H, W] -> [B, (H/p)(W/p), C p p]``: raster order of
                                     the patches, ``(channel, row, column)`` inside each,
                                     non-square images, any memory layout, gradients
- ``check_unpatchify(fn)``           the exact inverse of that layout, for any tokens
- ``check_LatentTokenEncoder(cls)``  against the model's own modules: patch embeddings plus
                                     positions, the learned latent tokens appended, the
                                     transformer over both, only the latent tokens' outputs
                                     returned; rows independent; gradients reach the tokens
- ``check_LatentTokenDecoder(cls)``  against the model's own modules: a mask token plus its
                                     position at every patch, the latent tokens plus theirs,
                                     the outputs at the patch positions to pixels
- ``check_FrozenEncoderVQ(cls)``     with the check's own encoder (BatchNorm: train mode shows),
                                     quantizer (counts its train-mode calls) and decoder: the
                                     encoder in eval mode after ``.train()``, no gradient to it,
                                     its statistics untouched; the forward wiring, loss and
                                     indices; ``encode_to_indices`` without codebook updates and
                                     with the mode restored; ``decode_from_indices`` and the
                                     round trip

The layer checks build the learner's class from its template (the modules the
template creates in ``__init__`` are the contract), give the learned
embeddings values large enough to matter, and compute what the answer must
return with the model's own modules and the checks' own ``patchify``. When the
answer differs they try the usual mistakes and name the one that matches.

The references live here (they never import ``dvl_helpers``); calling the
course's reference implementation ``dvl_helpers.tokenizers`` is caught.
"""
from __future__ import annotations

import torch

from ._common import (
    _Module, _Parameter, assert_own_implementation, call, channels_last, check, expect_scalar,
    expect_tensor, generator, grads, is_zero_grad, kind, max_abs, max_excess, noncontiguous, randn,
    to_f64, to_long,
)

__all__ = [
    "check_patchify", "check_unpatchify", "check_LatentTokenEncoder", "check_LatentTokenDecoder",
    "check_FrozenEncoderVQ",
]

_REFERENCE = ("dvl_helpers.tokenizers", None)

_type = type
_isinstance = isinstance
_issubclass = issubclass
_dict = dict
_long = torch.long


def _call(fn, *args, what, **kwargs):
    return call(fn, *args, what=what, forbid=_REFERENCE, **kwargs)


def _own(obj, label):
    assert_own_implementation(obj, label, *_REFERENCE)


def _same(a, b, tol=1e-5):
    """Whether tensor ``a`` matches ``b`` (same shape) within ``tol`` relative to ``b``'s scale."""
    if _type(a) is not torch.Tensor or _type(b) is not torch.Tensor or \
            _tuple_shape(a) != _tuple_shape(b):
        return False
    return max_excess(a, b, tol * (max_abs(b) + 1)) <= 0


def _tuple_shape(t):
    return tuple(t.shape)


def _expect_class(cls, name):
    if not _isinstance(cls, type) or not _issubclass(cls, _Module):
        raise AssertionError(f"{name} must be a subclass of torch.nn.Module, got {kind(cls)}")
    _own(cls, name)


def _build(cls, name, kwargs, seed):
    label = name + "(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _call(cls, what=label, **kwargs)
    return model, label


def _parts(model, label, specs):
    """The template's modules and parameters: ``specs`` is ``{name: shape or module type}``."""
    found = {}
    for name, spec in specs.items():
        value = getattr(model, name, None)
        if _isinstance(spec, tuple):
            if _type(value) is not _Parameter or _tuple_shape(value) != spec:
                raise AssertionError(
                    f"{label} must keep the parameter self.{name} the template creates, an "
                    f"nn.Parameter of shape {spec}; got {kind(value)}")
        elif not _isinstance(value, _Module):
            raise AssertionError(f"{label} must keep the module self.{name} the template creates; "
                                 f"got {kind(value)}")
        found[name] = value
    return found


def _weight(module, label, name):
    """``module.weight``, the Linear's weight the template creates."""
    weight = getattr(module, "weight", None)
    if _type(weight) is not _Parameter:
        raise AssertionError(f"{label}: self.{name} must be the nn.Linear the template creates; "
                             f"got {kind(module)}")
    return weight


def _randomize(gen, params, scale=1.0):
    """Give learned embeddings values large enough that forgetting one shows."""
    with torch.no_grad():
        for p in params:
            p.copy_(randn(gen, *p.shape, scale=scale))


# --------------------------------------------------------------------------
# References (layouts of the patches)

def _ref_patchify(x, p):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b, (h // p) * (w // p), c * p * p)


def _ref_unpatchify(tokens, p, h, w):
    b, _, d = tokens.shape
    c = d // (p * p)
    t = tokens.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, h, w)


#: wrong layouts: name -> the permutation of ``[b, c, gh, ph, gw, pw]`` they flatten
_LAYOUTS = {
    "pixels (row, column, channel)": (0, 2, 4, 3, 5, 1),
    "grid transposed (column-major patches)": (0, 4, 2, 1, 3, 5),
    "grid transposed and (row, column, channel) pixels": (0, 4, 2, 3, 5, 1),
    "pixels (channel, column, row)": (0, 2, 4, 1, 5, 3),
}

_LAYOUT_HINTS = {
    "pixels (row, column, channel)": (
        "the values inside a patch are ordered (row, column, channel); the course's layout is "
        "(channel, row, column), what x[:, :, rows, cols].reshape(B, -1) gives for the patch's crop"),
    "grid transposed (column-major patches)": (
        "the patches are in column-major order; patch (i, j) of the grid (row i, column j) must be "
        "entry i * (W/p) + j (raster order: row by row)"),
    "grid transposed and (row, column, channel) pixels": (
        "the patches are in column-major order and their values ordered (row, column, channel); "
        "the layout is raster order of patches, (channel, row, column) inside each"),
    "pixels (channel, column, row)": (
        "the pixels inside a patch are transposed (column before row); the layout is (channel, "
        "row, column)"),
}


def _layout_patchify(x, p, perm):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // p, p, w // p, p).permute(*perm)
    return t.reshape(b, (h // p) * (w // p), c * p * p)


def _layout_unpatchify(tokens, p, h, w, perm):
    """The images a wrong layout's unpatchify gives: the inverse of :func:`_layout_patchify`."""
    b, _, d = tokens.shape
    c = d // (p * p)
    sizes = {0: b, 1: c, 2: h // p, 3: p, 4: w // p, 5: p}
    t = tokens.reshape(*[sizes[i] for i in perm])
    inverse = [perm.index(i) for i in range(6)]
    return t.permute(*inverse).reshape(b, c, h, w)


def _identify_patchify(out, x, p):
    for name, perm in _LAYOUTS.items():
        if _same(out, _layout_patchify(x, p, perm), 0.0):
            return _LAYOUT_HINTS[name]
    return None


# --------------------------------------------------------------------------
# patchify

_PATCH_CASES = (((2, 3, 8, 8), 4), ((1, 1, 6, 9), 3), ((3, 2, 4, 6), 2), ((2, 3, 4, 4), 4),
                ((1, 2, 5, 5), 1), ((2, 3, 12, 4), 2))


@check
def check_patchify(patchify):
    """Check ``patchify(x, patch)``."""
    fn = patchify
    _own(fn, "patchify")
    gen = generator(7001)
    for shape, p in _PATCH_CASES:
        b, c, h, w = shape
        x = torch.rand(*shape, generator=gen)
        x0 = x.clone()
        label = f"patchify(x of shape {shape}, {p})"
        out = _call(fn, x, p, what=label)
        n, d = (h // p) * (w // p), c * p * p
        if _type(out) is torch.Tensor and _tuple_shape(out) == (b, d, n) and n != d:
            raise AssertionError(f"{label} must have shape [B, (H/p)(W/p), C p p] = {(b, n, d)}, got "
                                 f"{(b, d, n)}: the patches go along dim 1, their values along dim 2")
        expect_tensor(out, label, shape=(b, n, d), dims="[B, (H/p)(W/p), C p p]", floating=True)
        if max_excess(x, x0, 0.0) > 0:
            raise AssertionError(f"{label} must not modify x")
        if not _same(out, _ref_patchify(x0, p), 0.0):
            hint = _identify_patchify(out, x0, p)
            if hint:
                raise AssertionError(f"{label} is wrong: {hint}")
            raise AssertionError(
                f"{label} is wrong: patch (i, j) of the grid must be entry i * (W/p) + j and hold "
                "the p x p crop x[:, :, i p:(i+1) p, j p:(j+1) p] of every channel, flattened in "
                "(channel, row, column) order")

    # other memory layouts: a crop of a wider image, a channels-last batch
    base = torch.rand(2, 3, 8, 12, generator=gen)
    for x, how in ((noncontiguous(base), "a non-contiguous x (a crop of a wider tensor)"),
                   (channels_last(base), "a channels-last x (what conv nets often emit)")):
        label = f"patchify({how} of shape (2, 3, 8, 12), 4)"
        out = _call(fn, x, 4, what=label)
        expect_tensor(out, label, shape=(2, 6, 48), floating=True)
        if not _same(out, _ref_patchify(base, 4), 0.0):
            raise AssertionError(f"{label} is wrong: the result must not depend on how x is laid out "
                                 "in memory (use reshape, not view, or make it contiguous)")

    # a rearrangement: the gradient of sum(out * w) is w put back in place
    x = torch.rand(2, 2, 6, 4, generator=gen).requires_grad_(True)
    label = "patchify(x of shape (2, 2, 6, 4), 2)"
    out = _call(fn, x, 2, what=label)
    expect_tensor(out, label, shape=(2, 6, 8), floating=True)
    w = randn(gen, 2, 6, 8)
    (g,) = grads((out * w).sum(), [x])
    if g is None or not _same(g, _ref_unpatchify(w, 2, 6, 4)):
        raise AssertionError(f"{label} must pass gradients back to x (rearrange tensors; do not go "
                             "through NumPy, .detach() or .data)")


# --------------------------------------------------------------------------
# unpatchify

@check
def check_unpatchify(unpatchify):
    """Check ``unpatchify(tokens, patch, height, width)``."""
    fn = unpatchify
    _own(fn, "unpatchify")
    gen = generator(7002)
    for shape, p in _PATCH_CASES:
        b, c, h, w = shape
        x = torch.rand(*shape, generator=gen)
        tokens = _ref_patchify(x, p).clone()
        t0 = tokens.clone()
        label = f"unpatchify(tokens of shape {_tuple_shape(tokens)}, {p}, height={h}, width={w})"
        out = _call(fn, tokens, p, h, w, what=label)
        if _type(out) is torch.Tensor and _tuple_shape(out) == (b, c, w, h) and h != w:
            raise AssertionError(f"{label} must have shape [B, C, height, width] = {shape}, got "
                                 f"{(b, c, w, h)}: height and width are swapped")
        expect_tensor(out, label, shape=shape, dims="[B, C, height, width]", floating=True)
        if max_excess(tokens, t0, 0.0) > 0:
            raise AssertionError(f"{label} must not modify tokens")
        if _same(out, x, 0.0):
            continue
        for name, perm in _LAYOUTS.items():
            if _same(out, _layout_unpatchify(t0, p, h, w, perm), 0.0):
                raise AssertionError(
                    f"{label} does not invert patchify: it reads the tokens as if "
                    f"{_LAYOUT_HINTS[name].split(';')[0].replace('the ', '', 1)}; "
                    "unpatchify(patchify(x, p), p, H, W) must give x back exactly")
        raise AssertionError(f"{label} does not invert patchify: unpatchify(patchify(x, p), p, H, W) "
                             "must give x back exactly")

    # tokens that come from no image (a decoder's output), in other memory layouts
    tokens = randn(gen, 2, 6, 48)
    want = _ref_unpatchify(tokens, 4, 8, 12)
    for t, how in ((tokens, "random tokens"), (noncontiguous(tokens), "non-contiguous tokens"),
                   (tokens.transpose(0, 1).contiguous().transpose(0, 1), "tokens in a permuted layout")):
        label = f"unpatchify({how} of shape (2, 6, 48), 4, height=8, width=12)"
        out = _call(fn, t, 4, 8, 12, what=label)
        expect_tensor(out, label, shape=(2, 3, 8, 12), floating=True)
        if not _same(out, want, 0.0):
            raise AssertionError(f"{label} is wrong: token i * (W/p) + j is the patch at grid row i, "
                                 "column j, its values in (channel, row, column) order")

    tokens = randn(gen, 1, 6, 12).requires_grad_(True)
    label = "unpatchify(tokens of shape (1, 6, 12), 2, height=4, width=6)"
    out = _call(fn, tokens, 2, 4, 6, what=label)
    expect_tensor(out, label, shape=(1, 3, 4, 6), floating=True)
    w = randn(gen, 1, 3, 4, 6)
    (g,) = grads((out * w).sum(), [tokens])
    if g is None or not _same(g, _ref_patchify(w, 2)):
        raise AssertionError(f"{label} must pass gradients back to the tokens (rearrange tensors; "
                             "do not go through NumPy, .detach() or .data)")


# --------------------------------------------------------------------------
# LatentTokenEncoder

_ENCODER_CONFIGS = (
    dict(image_size=8, patch=2, dim=16, num_latent_tokens=5, depth=1, heads=2, in_channels=3),
    dict(image_size=8, patch=2, dim=16, num_latent_tokens=16, depth=2, heads=4, in_channels=1),
    dict(image_size=12, patch=4, dim=8, num_latent_tokens=3, depth=1, heads=2, in_channels=2),
)


def _encoder_parts(model, label, cfg):
    n = (cfg["image_size"] // cfg["patch"]) ** 2
    t, dim = cfg["num_latent_tokens"], cfg["dim"]
    return _parts(model, label, {"patch_embed": None, "pos_embed": (1, n, dim),
                                 "latent_tokens": (1, t, dim), "transformer": None}), n, t


def _no_grad_run(fn, *args, **kwargs):
    with torch.no_grad():
        try:
            return fn(*args, **kwargs)
        except Exception:        # an alternative that does not apply to this model
            return None


def _diagnose_encoder(m, x, out, label, n, t, p):
    b = x.shape[0]
    patches = _ref_patchify(x, p)
    emb = m["patch_embed"](patches)
    lat = m["latent_tokens"].expand(b, -1, -1)
    trunk = m["transformer"]
    seq = torch.cat([emb + m["pos_embed"], lat], 1)
    full = _no_grad_run(trunk, seq)
    tries = [
        (lambda: full[:, :t], "it returns outputs at the patch positions; TiTok keeps the outputs "
                              "of the latent tokens (the last T of [patches ; latents])"),
        (lambda: trunk(emb + m["pos_embed"])[:, :t],
         "the latent tokens must go through the transformer together with the patches"),
        (lambda: trunk(emb + m["pos_embed"])[:, -t:],
         "the latent tokens must go through the transformer together with the patches"),
        (lambda: trunk(torch.cat([emb, lat], 1))[:, n:],
         "the patch embeddings must get their positions: add pos_embed before the transformer"),
        (lambda: trunk(seq, mask=torch.ones(n + t, n + t, dtype=torch.bool).tril())[:, n:],
         "the transformer must be bidirectional (no causal mask): every token sees every token"),
        (lambda: trunk(torch.cat([m["patch_embed"](_layout_patchify(x, p, _LAYOUTS[
            "pixels (row, column, channel)"])) + m["pos_embed"], lat], 1))[:, n:],
         "the patches are not in the course's layout ((channel, row, column) inside each patch): "
         "check patchify first"),
        (lambda: trunk(torch.cat([m["patch_embed"](_layout_patchify(x, p, _LAYOUTS[
            "grid transposed (column-major patches)"])) + m["pos_embed"], lat], 1))[:, n:],
         "the patches are not in raster order: check patchify first"),
    ]
    blocks = getattr(trunk, "blocks", None)
    if blocks is not None:
        def without_ln():
            h = seq
            for block in blocks:
                h = block(h)
            return h[:, n:]
        tries.append((without_ln, "run the whole self.transformer (its blocks and its final "
                                  "LayerNorm), not only its blocks"))
    for make, hint in tries:
        alt = _no_grad_run(make)
        if alt is not None and _same(out, alt):
            raise AssertionError(f"{label}: {hint}")
    raise AssertionError(
        f"{label} returns the wrong tokens: they must be the outputs, at the latent tokens' "
        "positions, of self.transformer over [patch_embed(patchify(x)) + pos_embed ; latent_tokens]")


@check
def check_LatentTokenEncoder(LatentTokenEncoder):
    """Check ``LatentTokenEncoder.forward``: what goes into the transformer and what comes out."""
    cls = LatentTokenEncoder
    _expect_class(cls, "LatentTokenEncoder")
    gen = generator(7003)
    for i, cfg in enumerate(_ENCODER_CONFIGS):
        model, name = _build(cls, "LatentTokenEncoder", cfg, 7003 + i)
        m, n, t = _encoder_parts(model, name, cfg)
        _randomize(gen, [m["pos_embed"], m["latent_tokens"]])
        with torch.no_grad():
            _weight(m["patch_embed"], name, "patch_embed").mul_(10.0)
        s, c, p, dim = cfg["image_size"], cfg["in_channels"], cfg["patch"], cfg["dim"]
        x = torch.rand(2, c, s, s, generator=gen)
        if i == 0:
            x = channels_last(x)
        x0 = x.clone()
        label = f"{name}(x of shape {_tuple_shape(x)})"
        out = _call(model, x, what=label)
        if _type(out) is torch.Tensor and _tuple_shape(out) == (2, n, dim) and n != t:
            raise AssertionError(f"{label} returns {n} tokens, one per patch; it must return the "
                                 f"T = {t} latent tokens' outputs [B, T, dim]")
        expect_tensor(out, label, shape=(2, t, dim), dims="[B, T, dim]", floating=True)
        if max_excess(x, x0, 0.0) > 0:
            raise AssertionError(f"{label} must not modify x")
        # each image's tokens depend on that image only
        one = _call(model, x0[1:2], what=f"{name}(x[1:2])")
        expect_tensor(one, f"{name}(x[1:2])", shape=(1, t, dim), floating=True)
        if not _same(one, out[1:2]):
            raise AssertionError(f"{name}: the tokens of an image must not depend on the other "
                                 "images of the batch (expand the latent tokens over the batch)")
        with torch.no_grad():
            emb = m["patch_embed"](_ref_patchify(x0, p)) + m["pos_embed"]
            want = m["transformer"](torch.cat([emb, m["latent_tokens"].expand(2, -1, -1)], 1))[:, n:]
        if not _same(out, want):
            _diagnose_encoder(m, x0, out, label, n, t, p)

    # the learned embeddings are trained by what the tokens feed
    out = _call(model, x0, what=label)
    w = randn(gen, *_tuple_shape(out))
    found = grads((out * w).sum(), [m["latent_tokens"], m["pos_embed"], m["patch_embed"].weight])
    for g, what in zip(found, ("self.latent_tokens", "self.pos_embed", "self.patch_embed")):
        if is_zero_grad(g):
            raise AssertionError(f"{label}: no gradient reaches {what}; it must be used (and not "
                                 "detached) so that it is learned")


# --------------------------------------------------------------------------
# LatentTokenDecoder

def _decoder_parts(model, label, cfg):
    n = (cfg["image_size"] // cfg["patch"]) ** 2
    t, dim = cfg["num_latent_tokens"], cfg["dim"]
    return _parts(model, label, {"mask_token": (1, 1, dim), "pos_embed": (1, n, dim),
                                 "latent_pos": (1, t, dim), "transformer": None,
                                 "to_pixels": None}), n, t


def _diagnose_decoder(m, z, out, label, n, t, p, s):
    b = z.shape[0]
    trunk, to_pixels = m["transformer"], m["to_pixels"]
    masks = m["mask_token"].expand(b, n, -1)
    lat = z + m["latent_pos"]

    def image(h):
        return _ref_unpatchify(to_pixels(h), p, s, s)

    seq = torch.cat([masks + m["pos_embed"], lat], 1)
    tries = [
        (lambda: image(trunk(seq)[:, -n:]),
         "the pixels come from the outputs at the patch positions (the mask tokens), not from "
         "the latent tokens' outputs"),
        (lambda: image(trunk(torch.cat([masks, lat], 1))[:, :n]),
         "every mask token must carry its position (add pos_embed): without it all patch "
         "positions look the same and decode the same patch"),
        (lambda: image(trunk(torch.cat([masks + m["pos_embed"], z], 1))[:, :n]),
         "the latent tokens must get their positions: add latent_pos to z_q"),
        (lambda: image(trunk(torch.cat([m["pos_embed"].expand(b, -1, -1), lat], 1))[:, :n]),
         "each patch position must start from the learned mask_token plus its position"),
        (lambda: image(trunk(seq, mask=torch.ones(n + t, n + t, dtype=torch.bool).tril())[:, :n]),
         "the transformer must be bidirectional (no causal mask): the patch positions must see the "
         "latent tokens"),
        (lambda: image(trunk(lat)),
         "the decoder must run the transformer over [mask tokens ; latent tokens] and read the "
         "outputs at the mask tokens"),
    ]
    for perm in _LAYOUTS.values():
        def wrong_layout(perm=perm):
            return _layout_unpatchify(to_pixels(trunk(seq)[:, :n]), p, s, s, perm)
        tries.append((wrong_layout, "the patches are put back in the wrong layout: check "
                                    "unpatchify first"))
    blocks = getattr(trunk, "blocks", None)
    if blocks is not None:
        def without_ln():
            h = seq
            for block in blocks:
                h = block(h)
            return image(h[:, :n])
        tries.append((without_ln, "run the whole self.transformer (its blocks and its final "
                                  "LayerNorm), not only its blocks"))
    for make, hint in tries:
        alt = _no_grad_run(make)
        if alt is not None and _same(out, alt):
            raise AssertionError(f"{label}: {hint}")
    raise AssertionError(
        f"{label} decodes the wrong image: it must be unpatchify(to_pixels(h)) where h is the "
        "output of self.transformer over [mask_token + pos_embed (every patch) ; z_q + latent_pos] "
        "at the patch positions")


@check
def check_LatentTokenDecoder(LatentTokenDecoder):
    """Check ``LatentTokenDecoder.forward``: mask tokens, positions, which outputs become pixels."""
    cls = LatentTokenDecoder
    _expect_class(cls, "LatentTokenDecoder")
    gen = generator(7004)
    for i, cfg in enumerate(_ENCODER_CONFIGS):
        model, name = _build(cls, "LatentTokenDecoder", cfg, 7004 + i)
        m, n, t = _decoder_parts(model, name, cfg)
        _randomize(gen, [m["mask_token"], m["pos_embed"], m["latent_pos"]])
        with torch.no_grad():
            _weight(m["to_pixels"], name, "to_pixels").mul_(10.0)
        s, c, p, dim = cfg["image_size"], cfg["in_channels"], cfg["patch"], cfg["dim"]
        z = randn(gen, 2, t, dim)
        if i == 1:
            z = noncontiguous(z)
        z0 = z.clone()
        label = f"{name}(z_q of shape {_tuple_shape(z)})"
        out = _call(model, z, what=label)
        expect_tensor(out, label, shape=(2, c, s, s), dims="[B, C, H, W]", floating=True)
        if max_excess(z, z0, 0.0) > 0:
            raise AssertionError(f"{label} must not modify z_q")
        one = _call(model, z0[1:2], what=f"{name}(z_q[1:2])")
        expect_tensor(one, f"{name}(z_q[1:2])", shape=(1, c, s, s), floating=True)
        if not _same(one, out[1:2]):
            raise AssertionError(f"{name}: the image decoded from one row of z_q must not depend on "
                                 "the other rows (expand the mask token over the batch)")
        with torch.no_grad():
            seq = torch.cat([m["mask_token"].expand(2, n, -1) + m["pos_embed"], z0 + m["latent_pos"]], 1)
            want = _ref_unpatchify(m["to_pixels"](m["transformer"](seq)[:, :n]), p, s, s)
        if not _same(out, want):
            _diagnose_decoder(m, z0, out, label, n, t, p, s)

    z = randn(gen, 2, t, dim).requires_grad_(True)
    out = _call(model, z, what=label)
    w = randn(gen, *_tuple_shape(out))
    found = grads((out * w).sum(), [z, m["mask_token"], m["pos_embed"], m["latent_pos"],
                                    m["to_pixels"].weight])
    for g, what in zip(found, ("z_q", "self.mask_token", "self.pos_embed", "self.latent_pos",
                               "self.to_pixels")):
        if is_zero_grad(g):
            raise AssertionError(f"{label}: no gradient reaches {what}; the decoder must use it "
                                 "(and not detach it)")


# --------------------------------------------------------------------------
# FrozenEncoderVQ

_D, _K = 5, 7


class _StubEncoder(_Module):
    """A frozen encoder whose train mode shows: conv 2x2/2 then BatchNorm, ``[B, 3, H, W] -> [B, 5, H/2, W/2]``.

    Its BatchNorm has running statistics far from a batch's own, so an encoder run
    in train mode gives other features and changes its statistics.
    """

    def __init__(self, gen):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, _D, 2, stride=2)
        self.norm = torch.nn.BatchNorm2d(_D)
        with torch.no_grad():
            self.conv.weight.copy_(randn(gen, _D, 3, 2, 2, scale=0.8))
            self.conv.bias.copy_(randn(gen, _D, scale=0.3))
            self.norm.running_mean.copy_(randn(gen, _D, scale=0.5))
            self.norm.running_var.copy_(torch.rand(_D, generator=gen) * 2 + 0.5)
            self.norm.weight.copy_(torch.rand(_D, generator=gen) + 0.5)
            self.norm.bias.copy_(randn(gen, _D, scale=0.2))

    def forward(self, x):
        if _type(x) is not torch.Tensor or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the encoder takes images [B, 3, H, W], got {kind(x)}")
        return self.norm(self.conv(x))

    def stats(self):
        return [self.norm.running_mean.clone(), self.norm.running_var.clone(),
                self.norm.num_batches_tracked.clone().double()]


class _StubQuantizer(_Module):
    """A VQ layer the check controls: nearest code of a trainable codebook, straight-through,
    the two VQ losses; it counts its calls in train mode (where an EMA codebook would move)."""

    def __init__(self, gen):
        super().__init__()
        self.codebook = _Parameter(randn(gen, _K, _D))
        self.num_codes, self.code_dim = _K, _D
        self.train_calls = 0

    def nearest(self, z):
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
        dist = (flat[:, None, :] - self.codebook.detach()[None]).pow(2).sum(-1)
        return dist.argmin(1).reshape(b, h, w)

    def forward(self, z):
        if _type(z) is not torch.Tensor or z.dim() != 4 or z.shape[1] != _D:
            raise ValueError(f"the quantizer takes channel-first features [B, {_D}, h, w], got {kind(z)}")
        idx = self.nearest(z)
        q = self.lookup(idx)
        loss = (q - z.detach()).pow(2).mean() + 0.25 * (z - q.detach()).pow(2).mean()
        if self.training:
            self.train_calls += 1
        usage = torch.bincount(idx.reshape(-1), minlength=_K).float()
        return z + (q - z).detach(), loss, {"indices": idx, "usage": usage,
                                            "perplexity": torch.ones(())}

    def lookup(self, indices):
        if _type(indices) is not torch.Tensor or indices.dim() != 3 or indices.dtype != _long:
            raise ValueError(f"lookup takes code indices, a torch.long tensor [B, h, w], got "
                             f"{kind(indices)}" + (f" of dtype {indices.dtype}"
                                                   if _isinstance(indices, torch.Tensor) else ""))
        return self.codebook[indices].permute(0, 3, 1, 2)


class _StubDecoder(_Module):
    """A 1x1 conv to 3 channels then nearest upsampling x2: ``[B, 5, h, w] -> [B, 3, 2h, 2w]``."""

    def __init__(self, gen):
        super().__init__()
        self.proj = torch.nn.Conv2d(_D, 3, 1)
        with torch.no_grad():
            self.proj.weight.copy_(randn(gen, 3, _D, 1, 1, scale=0.5))

    def forward(self, z):
        if _type(z) is not torch.Tensor or z.dim() != 4 or z.shape[1] != _D:
            raise ValueError(f"the decoder takes quantized latents [B, {_D}, h, w] (channel-first), "
                             f"got {kind(z)}")
        return torch.nn.functional.interpolate(self.proj(z), scale_factor=2.0, mode="nearest")


def _triple(out, label):
    if _type(out) not in (tuple, list) or len(out) != 3:
        raise AssertionError(f"{label} must return (x_rec, loss, info), got {kind(out)}")
    return out


def _indices_of(info, label):
    if not _isinstance(info, _dict) or "indices" not in _dict.keys(info):
        raise AssertionError(f"info of {label} must be the quantizer's info dict (with 'indices'), "
                             f"got {kind(info)}")
    return _dict.__getitem__(info, "indices")


def _equal_long(a, b):
    return _tuple_shape(a) == _tuple_shape(b) and bool((to_long(a) == to_long(b)).all())


def _assert_modes(model, enc, quant, dec, training, label,
                  hint="call super().train(mode) in train()"):
    if any(mod.training for mod in enc.modules()):
        raise AssertionError(f"{label}: the frozen encoder (and every module inside it) must stay in "
                             "eval mode whatever the model's mode: override train() so that it "
                             "puts the encoder back in eval mode")
    for part, what in ((quant, "quantizer"), (dec, "decoder")):
        if part.training != training:
            state = "train" if training else "eval"
            raise AssertionError(f"{label}: the {what} must be in {state} mode like the model "
                                 f"({hint})")


@check
def check_FrozenEncoderVQ(FrozenEncoderVQ):
    """Check ``FrozenEncoderVQ``: freezing, the forward wiring, encoding and decoding indices."""
    cls = FrozenEncoderVQ
    _expect_class(cls, "FrozenEncoderVQ")
    gen = generator(7005)
    enc, quant, dec = _StubEncoder(gen), _StubQuantizer(gen), _StubDecoder(gen)
    name = "FrozenEncoderVQ(encoder, quantizer, decoder)"
    model = _call(cls, enc, quant, dec, what=name)
    for attr, part in (("encoder", enc), ("quantizer", quant), ("decoder", dec)):
        if getattr(model, attr, None) is not part:
            raise AssertionError(f"{name} must keep its {attr} as self.{attr}")
        if not any(child is part for child in model.children()):
            raise AssertionError(f"{name}: the {attr} must be a submodule (assign it to self.{attr}) "
                                 "so that .to(device) and state_dict() include it")

    # train mode
    ret = _call(model.train, what="model.train()")
    if ret is not model:
        raise AssertionError(f"model.train() must return the model itself, as nn.Module.train does; "
                             f"got {kind(ret)}")
    _assert_modes(model, enc, quant, dec, True, "after model.train()")

    x = torch.rand(2, 3, 8, 12, generator=gen)
    x0 = x.clone()
    before = enc.stats()
    label = f"{name}(x of shape (2, 3, 8, 12)) in train mode"
    x_rec, loss, info = _triple(_call(model, x, what=label), label)
    expect_tensor(x_rec, f"x_rec of {label}", shape=(2, 3, 8, 12), dims="[B, C, H, W]", floating=True)
    value = expect_scalar(loss, f"loss of {label}")
    indices = _indices_of(info, label)
    if max_excess(x, x0, 0.0) > 0:
        raise AssertionError(f"{label} must not modify x")
    if any(max_excess(a, b, 0.0) > 0 for a, b in zip(enc.stats(), before)):
        raise AssertionError(f"{label} ran the encoder in train mode (its BatchNorm statistics "
                             "changed); a frozen encoder always runs in eval mode")
    if quant.train_calls != 1:
        raise AssertionError(f"{label} ran the quantizer {quant.train_calls} times in train mode; it "
                             "must run once per forward, in the model's mode (an EMA codebook learns "
                             "in train mode)")
    _assert_modes(model, enc, quant, dec, True, f"after {label}")
    with torch.no_grad():
        feats = enc.eval()(x0)
        idx_ref = quant.nearest(feats)
        q_ref = quant.lookup(idx_ref)
        x_ref = dec(q_ref)
        loss_ref = float(to_f64((q_ref - feats).pow(2).mean() * 1.25))
    expect_tensor(indices, f"info['indices'] of {label}", shape=(2, 4, 6), dims="[B, h, w]",
                  dtype=_long)
    if not _equal_long(indices, idx_ref):
        raise AssertionError(f"info['indices'] of {label} must be the quantizer's indices of the "
                             "encoder's features [B, h, w]")
    if not _same(x_rec, x_ref):
        with torch.no_grad():
            if _same(x_rec, dec(feats)):
                raise AssertionError(f"{label}: x_rec must decode z_q, the quantizer's output, not the "
                                     "encoder's features")
        raise AssertionError(f"{label}: x_rec must be decoder(z_q) with (z_q, loss, info) = "
                             "quantizer(encoder(x))")
    if abs(value - loss_ref) > 1e-5 * abs(loss_ref) + 1e-7:
        raise AssertionError(f"loss of {label} must be the quantizer's loss (the reconstruction "
                             "loss is added by the training step)")

    # gradients: none to the encoder, some to the decoder and to the codebook
    enc_params = list(enc.parameters())
    dec_params = list(dec.parameters())
    total = (x_rec - x0).pow(2).mean() + loss
    found = grads(total, enc_params + dec_params + [quant.codebook])
    if not all(is_zero_grad(g) for g in found[:len(enc_params)]):
        raise AssertionError(f"{label}: the frozen encoder receives gradients; set requires_grad_(False) "
                             "on its parameters and/or compute its features under torch.no_grad()")
    if all(is_zero_grad(g) for g in found[len(enc_params):-1]):
        raise AssertionError(f"{label}: no gradient reaches the decoder; only the encoder is frozen")
    if is_zero_grad(found[-1]):
        raise AssertionError(f"{label}: the quantizer's loss must reach its codebook (do not detach "
                             "the quantizer's output or loss)")

    # eval mode
    _call(model.eval, what="model.eval()")
    _assert_modes(model, enc, quant, dec, False, "after model.eval()")
    calls = quant.train_calls
    x_eval, _, _ = _triple(_call(model, x0, what=f"{name}(x) in eval mode"), f"{name}(x) in eval mode")

    # encode_to_indices: from train mode, no codebook update, mode restored
    _call(model.train, what="model.train()")
    label = "encode_to_indices(x of shape (2, 3, 8, 12)) in train mode"
    idx = _call(model.encode_to_indices, x0, what=label)
    expect_tensor(idx, label, shape=(2, 4, 6), dims="[B, h, w]", dtype=_long)
    if quant.train_calls != calls:
        raise AssertionError(f"{label} updated the codebook (it ran the quantizer in train mode); "
                             "encoding must run the quantizer in eval mode")
    _assert_modes(model, enc, quant, dec, True, f"after {label}",
                  "encoding must leave every module in the mode it found it: put the quantizer "
                  "back with quantizer.train(was_training)")
    if any(max_excess(a, b, 0.0) > 0 for a, b in zip(enc.stats(), before)):
        raise AssertionError(f"{label} ran the encoder in train mode (its BatchNorm statistics changed)")
    if not _equal_long(idx, idx_ref):
        raise AssertionError(f"{label} must return the quantizer's indices of the frozen features")

    # decode_from_indices: any indices, and the round trip
    some = torch.randint(0, _K, (2, 4, 6), generator=gen)
    label = "decode_from_indices(indices of shape (2, 4, 6))"
    img = _call(model.decode_from_indices, some, what=label)
    expect_tensor(img, label, shape=(2, 3, 8, 12), dims="[B, C, H, W]", floating=True)
    with torch.no_grad():
        want = dec(quant.lookup(some))
    if not _same(img, want):
        raise AssertionError(f"{label} must decode the codes the indices name: "
                             "decoder(quantizer.lookup(indices))")
    _call(model.eval, what="model.eval()")
    again = _call(model.decode_from_indices, _call(model.encode_to_indices, x0, what="encode_to_indices(x)"),
                  what="decode_from_indices(encode_to_indices(x))")
    if not _same(again, x_eval):
        raise AssertionError("in eval mode, decode_from_indices(encode_to_indices(x)) must give "
                             "model(x)[0] back")
