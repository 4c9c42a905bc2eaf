"""Different but correct answers to 07_modern_tokenizers: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: einops, ``F.unfold``
and ``F.fold``, ``Tensor.unfold``, loops over the grid; latent tokens placed
before the patches (a bidirectional transformer without positions inside is
permutation-equivariant, so only the slice changes), ``repeat`` instead of
``expand``, the blocks run one by one; frozen encoders frozen by
``requires_grad_(False)`` alone or by ``torch.no_grad()`` alone, modes set
module by module, encoding through the model's own forward in eval mode.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dvl_helpers.transformer import Transformer

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ----------------------------------------------------------------------------- patchify

@right("patchify", "einops.rearrange")
def patch_einops(x, patch):
    return rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch, p2=patch)


@right("patchify", "F.unfold, transposed")
def patch_unfold(x, patch):
    return F.unfold(x, kernel_size=patch, stride=patch).transpose(1, 2)


@right("patchify", "Tensor.unfold twice, then permute")
def patch_tensor_unfold(x, patch):
    b, c = x.shape[:2]
    t = x.unfold(2, patch, patch).unfold(3, patch, patch)       # b c gh gw p p
    return t.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * patch * patch)


@right("patchify", "a loop over the grid, crops stacked")
def patch_loop(x, patch):
    b, c, h, w = x.shape
    crops = [x[:, :, i:i + patch, j:j + patch].reshape(b, -1)
             for i in range(0, h, patch) for j in range(0, w, patch)]
    return torch.stack(crops, dim=1)


# ----------------------------------------------------------------------------- unpatchify

@right("unpatchify", "einops.rearrange")
def unpatch_einops(tokens, patch, height, width):
    return rearrange(tokens, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=height // patch,
                     w=width // patch, p1=patch, p2=patch)


@right("unpatchify", "F.fold of the transposed tokens")
def unpatch_fold(tokens, patch, height, width):
    return F.fold(tokens.transpose(1, 2), output_size=(height, width), kernel_size=patch, stride=patch)


@right("unpatchify", "a loop writing each patch into a new image")
def unpatch_loop(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    out = tokens.new_zeros(b, c, height, width)
    cols = width // patch
    for k in range(tokens.shape[1]):
        i, j = divmod(k, cols)
        out[:, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = \
            tokens[:, k].reshape(b, c, patch, patch)
    return out


@right("unpatchify", "rows of patches concatenated")
def unpatch_cat(tokens, patch, height, width):
    b, _, d = tokens.shape
    c = d // (patch * patch)
    cols = width // patch
    patches = tokens.reshape(b, -1, c, patch, patch)
    rows = [torch.cat(list(patches[:, r * cols:(r + 1) * cols].unbind(1)), dim=3)
            for r in range(height // patch)]
    return torch.cat(rows, dim=2)


# ----------------------------------------------------------------------------- LatentTokenEncoder

class _Enc(nn.Module):
    """The notebook's template of LatentTokenEncoder (its __init__)."""

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


@right("LatentTokenEncoder", "[patches ; latents], the last T outputs (the notebook's solution)")
class EncReference(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(patch_einops(x, self.patch)) + self.pos_embed
        latents = self.latent_tokens.expand(x.shape[0], -1, -1)
        return self.transformer(torch.cat([tokens, latents], dim=1))[:, self.num_patches:]


@right("LatentTokenEncoder", "[latents ; patches], the first T outputs; repeat instead of expand")
class EncLatentsFirst(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(patch_unfold(x, self.patch)) + self.pos_embed
        latents = self.latent_tokens.repeat(x.shape[0], 1, 1)
        return self.transformer(torch.cat([latents, tokens], dim=1))[:, :self.num_latent_tokens]


@right("LatentTokenEncoder", "the blocks one by one, then the final LayerNorm; negative slice")
class EncBlockLoop(_Enc):
    def forward(self, x):
        tokens = self.patch_embed(patch_loop(x, self.patch)) + self.pos_embed
        h = torch.cat([tokens, self.latent_tokens.expand(len(x), -1, -1)], dim=1)
        for block in self.transformer.blocks:
            h = block(h)
        return self.transformer.ln(h)[:, -self.num_latent_tokens:]


# ----------------------------------------------------------------------------- LatentTokenDecoder

class _Dec(nn.Module):
    """The notebook's template of LatentTokenDecoder (its __init__)."""

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


@right("LatentTokenDecoder", "[masks ; latents], the first N outputs, einops (the notebook's solution)")
class DecReference(_Dec):
    def forward(self, z_q):
        masks = self.mask_token.expand(z_q.shape[0], self.num_patches, -1) + self.pos_embed
        out = self.transformer(torch.cat([masks, z_q + self.latent_pos], dim=1))
        return unpatch_einops(self.to_pixels(out[:, :self.num_patches]), self.patch,
                              self.image_size, self.image_size)


@right("LatentTokenDecoder", "[latents ; masks], the last N outputs; F.fold")
class DecLatentsFirst(_Dec):
    def forward(self, z_q):
        masks = self.pos_embed + self.mask_token                 # broadcast [1, N, dim]
        masks = masks.repeat(z_q.shape[0], 1, 1)
        out = self.transformer(torch.cat([z_q + self.latent_pos, masks], dim=1))
        return unpatch_fold(self.to_pixels(out[:, -self.num_patches:]), self.patch,
                            self.image_size, self.image_size)


@right("LatentTokenDecoder", "the positions added after concatenation; the blocks one by one")
class DecPosAfterCat(_Dec):
    def forward(self, z_q):
        b = z_q.shape[0]
        seq = torch.cat([self.mask_token.expand(b, self.num_patches, -1), z_q], dim=1)
        h = seq + torch.cat([self.pos_embed, self.latent_pos], dim=1)
        for block in self.transformer.blocks:
            h = block(h)
        h = self.transformer.ln(h)
        return unpatch_loop(self.to_pixels(h[:, :self.num_patches]), self.patch,
                            self.image_size, self.image_size)


# ----------------------------------------------------------------------------- FrozenEncoderVQ

class _FVQBase(nn.Module):
    def __init__(self, encoder, quantizer, decoder):
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder


@right("FrozenEncoderVQ", "requires_grad_(False) and no_grad, train() overridden (the notebook's solution)")
class FvqReference(_FVQBase):
    def __init__(self, encoder, quantizer, decoder):
        super().__init__(encoder, quantizer, decoder)
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

    @torch.no_grad()
    def encode_to_indices(self, x):
        was_training = self.quantizer.training
        self.quantizer.eval()
        _, _, info = self.quantizer(self.encoder(x))
        self.quantizer.train(was_training)
        return info["indices"]

    def decode_from_indices(self, indices):
        return self.decoder(self.quantizer.lookup(indices))


@right("FrozenEncoderVQ", "frozen by requires_grad_(False) alone (the graph never reaches it)")
class FvqRequiresGradOnly(FvqReference):
    def forward(self, x):
        z_q, loss, info = self.quantizer(self.encoder(x))
        return self.decoder(z_q), loss, info


@right("FrozenEncoderVQ", "frozen by torch.no_grad() alone; modes set module by module")
class FvqNoGradOnly(_FVQBase):
    def __init__(self, encoder, quantizer, decoder):
        super().__init__(encoder, quantizer, decoder)
        self.train()

    def train(self, mode=True):
        nn.Module.train(self, mode)
        for module in self.encoder.modules():
            module.training = False
        return self

    def forward(self, x):
        with torch.no_grad():
            feats = self.encoder(x).detach()
        z_q, loss, info = self.quantizer(feats)
        return self.decoder(z_q), loss, info

    def encode_to_indices(self, x):
        mode = self.quantizer.training
        try:
            self.quantizer.train(False)
            with torch.set_grad_enabled(False):
                return self.quantizer(self.encoder(x))[2]["indices"].clone()
        finally:
            self.quantizer.train(mode)

    def decode_from_indices(self, indices):
        z_q = self.quantizer.lookup(indices)
        return self.decoder(z_q)


@right("FrozenEncoderVQ", "encodes through its own forward in eval mode, then restores the mode")
class FvqEncodeViaForward(FvqReference):
    def encode_to_indices(self, x):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self(x)[2]["indices"]
        finally:
            self.train(was_training)
