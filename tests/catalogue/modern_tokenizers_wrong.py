"""Wrong answers to 07_modern_tokenizers: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make: patch layouts that do not match (``(p, p, C)`` pixels against
``(C, p, p)``, a transposed grid, a plain reshape), ``view`` after a
permutation, square images assumed; encoders that return the patch
outputs or drop the latent tokens, forget positions or add a causal mask;
decoders whose mask tokens have no positions or whose pixels come from the
latent tokens; frozen encoders that still get gradients or run in train mode,
encoders that update the codebook, decoders that do not round-trip. A few are
shortcuts the grader must refuse (the course's reference implementation).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers.tokenizers as ref_tok
from dvl_helpers.transformer import Transformer

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _patchify(x, p):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b, (h // p) * (w // p), c * p * p)


def _unpatchify(tokens, p, height, width):
    b, _, d = tokens.shape
    c = d // (p * p)
    t = tokens.reshape(b, height // p, width // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, height, width)


# ----------------------------------------------------------------------------- patchify

@wrong("patchify", "pixels of a patch in (row, column, channel) order, as timm does")
def patch_pixels_last(x, patch):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(b, -1, c * patch * patch)


@wrong("patchify", "patches in column-major order (the grid transposed)")
def patch_grid_transposed(x, patch):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 4, 2, 1, 3, 5)
    return t.reshape(b, -1, c * patch * patch)


@wrong("patchify", "pixels of a patch transposed (column before row)")
def patch_pixels_col_row(x, patch):
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 5, 3)
    return t.reshape(b, -1, c * patch * patch)


@wrong("patchify", "a plain reshape: no permutation at all")
def patch_plain_reshape(x, patch):
    b, c, h, w = x.shape
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


@wrong("patchify", "assumes square images: the grid is (H/p) x (H/p)")
def patch_square(x, patch):
    b, c, h, w = x.shape
    g = h // patch
    return x[..., :h].reshape(b, c, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(
        b, g * g, c * patch * patch)


@wrong("patchify", "F.unfold without the transpose: [B, C p p, N]")
def patch_unfold_no_transpose(x, patch):
    return F.unfold(x, kernel_size=patch, stride=patch)


@wrong("patchify", "through NumPy: no gradient")
def patch_numpy(x, patch):
    arr = x.detach().cpu().numpy()
    b, c, h, w = arr.shape
    t = arr.reshape(b, c, h // patch, patch, w // patch, patch).transpose(0, 2, 4, 1, 3, 5)
    return torch.from_numpy(np.ascontiguousarray(t.reshape(b, -1, c * patch * patch)))


@wrong("patchify", "calls the course's reference")
def patch_reference(x, patch):
    return ref_tok.patchify(x, patch)


# ----------------------------------------------------------------------------- unpatchify

@wrong("unpatchify", "reads the pixels of a patch as (row, column, channel)")
def unpatch_pixels_last(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    t = tokens.reshape(b, height // patch, width // patch, patch, patch, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, height, width)


@wrong("unpatchify", "reads the patches in column-major order")
def unpatch_grid_transposed(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    t = tokens.reshape(b, width // patch, height // patch, c, patch, patch).permute(0, 3, 2, 4, 1, 5)
    return t.reshape(b, c, height, width)


@wrong("unpatchify", "a plain reshape back to the image")
def unpatch_plain_reshape(tokens, patch, height, width):
    b, _, d = tokens.shape
    return tokens.reshape(b, d // (patch * patch), height, width)


@wrong("unpatchify", "height and width swapped in the output")
def unpatch_hw_swapped(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    t = tokens.reshape(b, height // patch, width // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, width, height)


@wrong("unpatchify", "view after the permutation (the permuted tensor is not contiguous)")
def unpatch_view(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    t = tokens.reshape(b, height // patch, width // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return t.view(b, c, height, width)


@wrong("unpatchify", "detaches the tokens: no gradient to the decoder")
def unpatch_detached(tokens, patch, height, width):
    return _unpatchify(tokens.detach(), patch, height, width)


@wrong("unpatchify", "the inverse of the (row, column, channel) layout, with the grid transposed too")
def unpatch_both_wrong(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    t = tokens.reshape(b, width // patch, height // patch, patch, patch, c).permute(0, 5, 2, 3, 1, 4)
    return t.reshape(b, c, height, width)


@wrong("unpatchify", "calls the course's reference")
def unpatch_reference(tokens, patch, height, width):
    return ref_tok.unpatchify(tokens, patch, height, width)


# ----------------------------------------------------------------------------- LatentTokenEncoder

class _Enc(nn.Module):
    """The notebook's template of LatentTokenEncoder (its __init__) with helpers."""

    def __init__(self, image_size, patch, dim, num_latent_tokens=32, depth=2, heads=4, in_channels=3):
        super().__init__()
        self.patch = patch
        self.num_patches = (image_size // patch) ** 2
        self.num_latent_tokens = num_latent_tokens
        self.dim = dim
        self.patch_embed = nn.Linear(in_channels * patch * patch, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim))
        self.latent_tokens = nn.Parameter(torch.randn(1, num_latent_tokens, dim))
        self.transformer = Transformer(dim, depth, heads)

    def seq(self, x):
        tokens = self.patch_embed(_patchify(x, self.patch)) + self.pos_embed
        return torch.cat([tokens, self.latent_tokens.expand(x.shape[0], -1, -1)], dim=1)


@wrong("LatentTokenEncoder", "returns the first T outputs: patch positions, not the latent tokens")
class EncPatchOutputs(_Enc):
    def forward(self, x):
        return self.transformer(self.seq(x))[:, :self.num_latent_tokens]


@wrong("LatentTokenEncoder", "returns every patch output [B, N, dim]")
class EncAllPatches(_Enc):
    def forward(self, x):
        return self.transformer(self.seq(x))[:, :self.num_patches]


@wrong("LatentTokenEncoder", "drops the latent tokens: the transformer sees the patches only")
class EncNoLatents(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(_patchify(x, self.patch)) + self.pos_embed
        return self.transformer(tokens)[:, -self.num_latent_tokens:]


@wrong("LatentTokenEncoder", "forgets the position embeddings of the patches")
class EncNoPos(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(_patchify(x, self.patch))
        latents = self.latent_tokens.expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat([tokens, latents], 1))[:, self.num_patches:]


@wrong("LatentTokenEncoder", "a causal mask: early tokens never see later ones")
class EncCausal(_Enc):
    def forward(self, x):
        seq = self.seq(x)
        mask = torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool).tril()
        return self.transformer(seq, mask=mask)[:, self.num_patches:]


@wrong("LatentTokenEncoder", "runs the whole batch as one long sequence: images see each other")
class EncMixesBatch(_Enc):
    def forward(self, x):
        seq = self.seq(x)
        b, length, d = seq.shape
        out = self.transformer(seq.reshape(1, b * length, d)).reshape(b, length, d)
        return out[:, self.num_patches:]


@wrong("LatentTokenEncoder", "detaches the latent tokens: they are never learned")
class EncDetachedLatents(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(_patchify(x, self.patch)) + self.pos_embed
        latents = self.latent_tokens.detach().expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat([tokens, latents], 1))[:, self.num_patches:]


@wrong("LatentTokenEncoder", "runs the blocks but skips the transformer's final LayerNorm")
class EncBlocksOnly(_Enc):
    def forward(self, x):
        h = self.seq(x)
        for block in self.transformer.blocks:
            h = block(h)
        return h[:, self.num_patches:]


@wrong("LatentTokenEncoder", "patches in (row, column, channel) order")
class EncPixelsLast(_Enc):
    def forward(self, x):
        b, c, hh, ww = x.shape
        p = self.patch
        patches = x.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, c * p * p)
        tokens = self.patch_embed(patches) + self.pos_embed
        latents = self.latent_tokens.expand(b, -1, -1)
        return self.transformer(torch.cat([tokens, latents], 1))[:, self.num_patches:]


@wrong("LatentTokenEncoder", "latents first, but slices as if they came last")
class EncWrongSlice(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(_patchify(x, self.patch)) + self.pos_embed
        latents = self.latent_tokens.expand(x.shape[0], -1, -1)
        out = self.transformer(torch.cat([latents, tokens], 1))
        return out[:, -self.num_latent_tokens:]


@wrong("LatentTokenEncoder", "adds the patch positions to the latent tokens as well")
class EncPosOnLatents(_Enc):
    def forward(self, x):
        t = self.num_latent_tokens
        tokens = self.patch_embed(_patchify(x, self.patch)) + self.pos_embed
        extra = self.pos_embed[:, :t] if t <= self.num_patches else 0
        latents = self.latent_tokens.expand(x.shape[0], -1, -1) + extra
        return self.transformer(torch.cat([tokens, latents], 1))[:, self.num_patches:]


@wrong("LatentTokenEncoder", "mean-pools the patch outputs into every latent token")
class EncMeanPool(_Enc):
    def forward(self, x):
        out = self.transformer(self.seq(x))
        pooled = out[:, :self.num_patches].mean(1, keepdim=True)
        return pooled.expand(-1, self.num_latent_tokens, -1)


@wrong("LatentTokenEncoder", "subclasses the course's reference")
class EncSubclass(ref_tok.LatentTokenEncoder):
    pass


# ----------------------------------------------------------------------------- LatentTokenDecoder

class _Dec(nn.Module):
    """The notebook's template of LatentTokenDecoder (its __init__) with helpers."""

    def __init__(self, image_size, patch, dim, num_latent_tokens=32, depth=2, heads=4, in_channels=3):
        super().__init__()
        self.image_size = image_size
        self.patch = patch
        self.num_patches = (image_size // patch) ** 2
        self.num_latent_tokens = num_latent_tokens
        self.dim = dim
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim))
        self.latent_pos = nn.Parameter(torch.randn(1, num_latent_tokens, dim))
        self.transformer = Transformer(dim, depth, heads)
        self.to_pixels = nn.Linear(dim, in_channels * patch * patch)

    def masks(self, b):
        return self.mask_token.expand(b, self.num_patches, -1)

    def image(self, h):
        return _unpatchify(self.to_pixels(h), self.patch, self.image_size, self.image_size)


@wrong("LatentTokenDecoder", "the mask tokens get no positions: every patch decodes the same")
class DecNoMaskPos(_Dec):
    def forward(self, z_q):
        out = self.transformer(torch.cat([self.masks(z_q.shape[0]), z_q + self.latent_pos], 1))
        return self.image(out[:, :self.num_patches])


@wrong("LatentTokenDecoder", "the latent tokens get no positions")
class DecNoLatentPos(_Dec):
    def forward(self, z_q):
        masks = self.masks(z_q.shape[0]) + self.pos_embed
        out = self.transformer(torch.cat([masks, z_q], 1))
        return self.image(out[:, :self.num_patches])


@wrong("LatentTokenDecoder", "pixels from the latent tokens' outputs (the last N)")
class DecReadsLatents(_Dec):
    def forward(self, z_q):
        masks = self.masks(z_q.shape[0]) + self.pos_embed
        out = self.transformer(torch.cat([masks, z_q + self.latent_pos], 1))
        return self.image(out[:, -self.num_patches:])


@wrong("LatentTokenDecoder", "positions alone at the patch positions: the mask token is forgotten")
class DecNoMaskToken(_Dec):
    def forward(self, z_q):
        masks = self.pos_embed.expand(z_q.shape[0], -1, -1)
        out = self.transformer(torch.cat([masks, z_q + self.latent_pos], 1))
        return self.image(out[:, :self.num_patches])


@wrong("LatentTokenDecoder", "a causal mask: the patch positions (first) never see the latent tokens")
class DecCausal(_Dec):
    def forward(self, z_q):
        seq = torch.cat([self.masks(z_q.shape[0]) + self.pos_embed, z_q + self.latent_pos], 1)
        mask = torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool).tril()
        return self.image(self.transformer(seq, mask=mask)[:, :self.num_patches])


@wrong("LatentTokenDecoder", "puts the patches back in (row, column, channel) order")
class DecPixelsLast(_Dec):
    def forward(self, z_q):
        seq = torch.cat([self.masks(z_q.shape[0]) + self.pos_embed, z_q + self.latent_pos], 1)
        h = self.to_pixels(self.transformer(seq)[:, :self.num_patches])
        b, _, d = h.shape
        p, s = self.patch, self.image_size
        c = d // (p * p)
        return h.reshape(b, s // p, s // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, s, s)


@wrong("LatentTokenDecoder", "detaches z_q: no gradient back to the encoder")
class DecDetached(_Dec):
    def forward(self, z_q):
        seq = torch.cat([self.masks(z_q.shape[0]) + self.pos_embed, z_q.detach() + self.latent_pos], 1)
        return self.image(self.transformer(seq)[:, :self.num_patches])


@wrong("LatentTokenDecoder", "adds the mean latent token to every mask token and drops the latents")
class DecPooledLatents(_Dec):
    def forward(self, z_q):
        context = (z_q + self.latent_pos).mean(1, keepdim=True)
        masks = self.masks(z_q.shape[0]) + self.pos_embed + context
        return self.image(self.transformer(masks))


@wrong("LatentTokenDecoder", "runs the blocks but skips the transformer's final LayerNorm")
class DecBlocksOnly(_Dec):
    def forward(self, z_q):
        h = torch.cat([self.masks(z_q.shape[0]) + self.pos_embed, z_q + self.latent_pos], 1)
        for block in self.transformer.blocks:
            h = block(h)
        return self.image(h[:, :self.num_patches])


@wrong("LatentTokenDecoder", "subclasses the course's reference")
class DecSubclass(ref_tok.LatentTokenDecoder):
    pass


# ----------------------------------------------------------------------------- FrozenEncoderVQ

class _FVQ(nn.Module):
    """The notebook's template of FrozenEncoderVQ with the right pieces, for the wrong ones to change."""

    def __init__(self, encoder, quantizer, decoder):
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode=True):
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            feats = self.encoder(x)
        z_q, loss, info = self.quantizer(feats)
        return self.decoder(z_q), loss, info

    def encode_to_indices(self, x):
        was = self.quantizer.training
        self.quantizer.eval()
        try:
            with torch.no_grad():
                _, _, info = self.quantizer(self.encoder(x))
        finally:
            self.quantizer.train(was)
        return info["indices"]

    def decode_from_indices(self, indices):
        return self.decoder(self.quantizer.lookup(indices))


@wrong("FrozenEncoderVQ", "not frozen at all: the encoder gets gradients")
class FvqNotFrozen(_FVQ):
    def __init__(self, encoder, quantizer, decoder):
        nn.Module.__init__(self)
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.encoder.eval()

    def forward(self, x):
        z_q, loss, info = self.quantizer(self.encoder(x))
        return self.decoder(z_q), loss, info


@wrong("FrozenEncoderVQ", "no gradients, but model.train() puts the encoder back in train mode")
class FvqTrainMode(_FVQ):
    def train(self, mode=True):
        return nn.Module.train(self, mode)


@wrong("FrozenEncoderVQ", "the encoder switched to eval inside forward only: it reports train mode")
class FvqEvalInForward(_FVQ):
    def train(self, mode=True):
        return nn.Module.train(self, mode)

    def forward(self, x):
        self.encoder.eval()
        return super().forward(x)


@wrong("FrozenEncoderVQ", "train() without super(): the quantizer and decoder never change mode")
class FvqTrainNoSuper(_FVQ):
    def train(self, mode=True):
        self.encoder.eval()
        return self


@wrong("FrozenEncoderVQ", "train() forgets to return self")
class FvqTrainNoReturn(_FVQ):
    def train(self, mode=True):
        super().train(mode)


@wrong("FrozenEncoderVQ", "freezes the whole model: the decoder and codebook never learn")
class FvqFreezesAll(_FVQ):
    def __init__(self, encoder, quantizer, decoder):
        super().__init__(encoder, quantizer, decoder)
        self.requires_grad_(False)


@wrong("FrozenEncoderVQ", "decodes the encoder's features instead of z_q")
class FvqDecodesFeatures(_FVQ):
    def forward(self, x):
        with torch.no_grad():
            feats = self.encoder(x)
        _, loss, info = self.quantizer(feats)
        return self.decoder(feats), loss, info


@wrong("FrozenEncoderVQ", "adds the reconstruction error to the returned loss")
class FvqLossWithRec(_FVQ):
    def forward(self, x):
        x_rec, loss, info = super().forward(x)
        return x_rec, loss + F.mse_loss(x_rec, x), info


@wrong("FrozenEncoderVQ", "detaches the quantizer's loss: the codebook never learns")
class FvqDetachedLoss(_FVQ):
    def forward(self, x):
        x_rec, loss, info = super().forward(x)
        return x_rec, loss.detach(), info


@wrong("FrozenEncoderVQ", "runs the quantizer in eval mode during training")
class FvqQuantizerEval(_FVQ):
    def forward(self, x):
        self.quantizer.eval()
        return super().forward(x)


@wrong("FrozenEncoderVQ", "encode_to_indices runs the quantizer in train mode: it updates the codebook")
class FvqEncodeUpdates(_FVQ):
    def encode_to_indices(self, x):
        return self.forward(x)[2]["indices"]


@wrong("FrozenEncoderVQ", "encode_to_indices leaves the whole model in eval mode")
class FvqEncodeLeavesEval(_FVQ):
    def encode_to_indices(self, x):
        self.eval()
        with torch.no_grad():
            return self.forward(x)[2]["indices"]


@wrong("FrozenEncoderVQ", "encode_to_indices returns z_q, not the indices")
class FvqEncodeReturnsZq(_FVQ):
    def encode_to_indices(self, x):
        self.quantizer.eval()
        with torch.no_grad():
            z_q, _, _ = self.quantizer(self.encoder(x))
        self.quantizer.train()
        return z_q


@wrong("FrozenEncoderVQ", "encode_to_indices takes the argmax over the feature channels")
class FvqEncodeArgmax(_FVQ):
    def encode_to_indices(self, x):
        with torch.no_grad():
            return self.encoder(x).argmax(dim=1)


@wrong("FrozenEncoderVQ", "decode_from_indices gives the decoder channel-last codes")
class FvqDecodeChannelsLast(_FVQ):
    def decode_from_indices(self, indices):
        return self.decoder(self.quantizer.codebook[indices])


@wrong("FrozenEncoderVQ", "decode_from_indices decodes the last forward's z_q, not its indices")
class FvqDecodeCached(_FVQ):
    def forward(self, x):
        with torch.no_grad():
            feats = self.encoder(x)
        z_q, loss, info = self.quantizer(feats)
        self.last = z_q.detach()
        return self.decoder(z_q), loss, info

    def decode_from_indices(self, indices):
        return self.decoder(self.last)


@wrong("FrozenEncoderVQ", "subclasses the course's reference")
class FvqSubclass(ref_tok.FrozenEncoderVQ):
    pass
