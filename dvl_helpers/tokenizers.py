"""Modern visual tokenizers: what the learner builds in ``07_modern_tokenizers``.

Three ideas of the tokenizers used today, each as plain as nanoGPT:

- **Patches** (ViT, Dosovitskiy et al. 2021): :func:`patchify` cuts images
  ``[B, C, H, W]`` into a sequence of ``p x p`` patches ``[B, (H/p)(W/p), C p p]``
  in raster order, each patch flattened in ``(channel, row, column)`` order;
  :func:`unpatchify` puts them back exactly.
- **1-D latent tokens** (TiTok, Yu et al. 2024, https://arxiv.org/abs/2406.07550):
  :class:`LatentTokenEncoder` runs transformer blocks over
  ``[patch embeddings ; T learned latent tokens]`` and keeps only the latent
  tokens' outputs, so an image becomes ``T`` tokens (32 in the paper) that
  are tied to no position; :class:`LatentTokenDecoder` rebuilds the image from
  a learned mask token at every patch position plus the quantized latent
  tokens. :class:`TiTokTokenizer` puts an encoder, a quantizer and a decoder
  together; :class:`GridTokenizer` is the 2-D grid tokenizer with the same
  transformers and the same number of tokens, each tied to a region.
- **VQ on a frozen pretrained encoder** (VQRAE, Du et al. 2025,
  https://arxiv.org/abs/2511.23386): :class:`FrozenEncoderVQ` quantizes the
  features of an encoder that is never trained (no gradient, always in eval
  mode) and trains only the codebook and a decoder (:class:`ViTDecoder`).
  :func:`pretrained_encoder` fetches DINOv2 through ``torch.hub`` when the
  network allows; offline, :class:`MaskedImageModel` (SimMIM, Xie et al. 2022)
  trains a small ViT encoder in minutes, and :class:`PatchFeatures` turns it
  into a frozen feature map.

Quantizers are the course's (``dvl_helpers.quantizers.EMAVectorQuantizer``,
``dvl_helpers.fsq.FSQ``, ...): channel-first ``[B, D, h, w] -> (z_q, loss, info)``
with ``info["indices"]`` ``[B, h, w]`` and ``lookup(indices)``. A sequence of 1-D
tokens ``[B, T, D]`` goes through them as a ``[B, D, T, 1]`` map
(:func:`quantize_tokens`, :func:`lookup_tokens`).

Every tokenizer here has ``forward(x) -> (x_rec, loss, info)`` (so
``dvl_helpers.models.make_vqvae_step`` trains it), ``encode(x)`` (indices,
without updating a codebook) and ``decode_indices(indices)``; images are
``[B, C, H, W]`` in ``[0, 1]``, seen by the models as ``x - 0.5``.
:func:`evaluate_tokenizer` reports PSNR, SSIM and codebook usage on held-out
images; :func:`token_influence` and :func:`replace_token` measure what one token encodes.

Used in: ``07_modern_tokenizers`` (the 2-D grid tokenizer, the tokenizer wrapper
around the learner's encoder and decoder, the frozen encoder, the plots) and its
benchmark ``benchmarks/modern_tokenizers.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Transformer

__all__ = [
    "patchify", "unpatchify", "LatentTokenEncoder", "LatentTokenDecoder", "quantize_tokens",
    "lookup_tokens", "TiTokTokenizer", "ViTEncoder", "GridTokenizer", "ViTDecoder",
    "FrozenEncoderVQ", "PatchFeatures", "MaskedImageModel", "mim_step", "HubPatchFeatures",
    "pretrained_encoder", "replace_token", "token_influence", "encode_indices", "decode_indices",
    "evaluate_tokenizer",
]

#: Images enter the models as ``x - SHIFT`` and leave as ``decoder(...) + SHIFT``.
SHIFT = 0.5


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _pair(patch):
    """``patch`` as ``(ph, pw)``: an int ``p`` is ``(p, p)``."""
    if isinstance(patch, int) and not isinstance(patch, bool):
        patch = (patch, patch)
    if not (isinstance(patch, (tuple, list)) and len(patch) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch)):
        raise ValueError(f"patch must be a positive int or a pair (ph, pw) of them, got {patch!r}")
    return int(patch[0]), int(patch[1])


def _embedding(*shape) -> nn.Parameter:
    """A learned embedding (positions, latent tokens, mask tokens), standard normal.

    Large on purpose: next to patch embeddings of order 0.1-1, positions of
    that scale let attention tell tokens apart from the first step. With the
    usual 0.02 a latent-token model sits for hundreds of steps on the mean
    image before its tokens learn where to look.
    """
    return nn.Parameter(torch.randn(*shape))


# ----------------------------------------------------------------------------- patches


def patchify(x: torch.Tensor, patch) -> torch.Tensor:
    """Cut images into a sequence of flattened patches.

    Args:
        x: ``[B, C, H, W]``, ``H`` and ``W`` multiples of the patch size.
        patch: ``p`` (square patches) or ``(ph, pw)``.

    Returns:
        ``[B, (H/ph)(W/pw), C ph pw]``: patch ``(i, j)`` of the grid is entry
        ``i * (W/pw) + j`` (raster order) and holds
        ``x[:, :, i ph:(i+1) ph, j pw:(j+1) pw]`` flattened in ``(channel, row,
        column)`` order, i.e. ``.reshape(B, C * ph * pw)`` of that crop.
    """
    ph, pw = _pair(patch)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [B, C, H, W], got {_shape(x)}")
    b, c, h, w = x.shape
    if h % ph or w % pw:
        raise ValueError(f"H and W must be multiples of the patch size {(ph, pw)}, got {(h, w)}")
    x = x.reshape(b, c, h // ph, ph, w // pw, pw)                   # b c gh ph gw pw
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // ph) * (w // pw), c * ph * pw)


def unpatchify(tokens: torch.Tensor, patch, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``[B, (H/ph)(W/pw), C ph pw]`` -> images ``[B, C, H, W]``.

    ``unpatchify(patchify(x, p), p, H, W)`` is ``x`` exactly.
    """
    ph, pw = _pair(patch)
    if height % ph or width % pw:
        raise ValueError(f"height and width must be multiples of the patch size {(ph, pw)}, "
                         f"got {(height, width)}")
    gh, gw = height // ph, width // pw
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[1] != gh * gw \
            or tokens.shape[2] % (ph * pw):
        raise ValueError(f"tokens must be [B, (H/ph)(W/pw) = {gh * gw}, C * {ph * pw}], "
                         f"got {_shape(tokens)}")
    b, _, d = tokens.shape
    c = d // (ph * pw)
    x = tokens.reshape(b, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)   # b c gh ph gw pw
    return x.reshape(b, c, height, width)


# ----------------------------------------------------------------------------- TiTok


def _num_patches(image_size, patch):
    ph, pw = _pair(patch)
    if not isinstance(image_size, int) or image_size % ph or image_size % pw:
        raise ValueError(f"image_size must be an int multiple of the patch size {(ph, pw)}, "
                         f"got {image_size!r}")
    return (image_size // ph) * (image_size // pw)


class LatentTokenEncoder(nn.Module):
    """TiTok's encoder: an image to ``T`` latent tokens ``[B, T, dim]``.

    The image is cut into patches (:func:`patchify`), each embedded by
    ``patch_embed`` plus its position ``pos_embed``; ``T`` learned
    ``latent_tokens`` are appended and bidirectional transformer blocks run over
    ``[patches ; latents]``. Only the latent tokens' outputs are returned: they
    have read the whole image through attention and carry what the decoder
    needs, while the patch outputs are dropped.

    Args:
        image_size: side of the square images.
        patch: patch side ``p`` (``image_size`` a multiple of it).
        dim: token width.
        num_latent_tokens: ``T`` (32 in TiTok-L-32).
        depth, heads: blocks and heads of the :class:`~dvl_helpers.transformer.Transformer`.
        in_channels: image channels.

    Shapes:
        ``forward(x)``: ``[B, C, H, W]`` -> ``[B, T, dim]``.
    """

    def __init__(self, image_size, patch, dim, num_latent_tokens=32, depth=2, heads=4,
                 in_channels=3):
        super().__init__()
        self.image_size, self.patch, self.dim = image_size, patch, dim
        self.num_latent_tokens = num_latent_tokens
        self.num_patches = _num_patches(image_size, patch)
        ph, pw = _pair(patch)
        self.patch_embed = nn.Linear(in_channels * ph * pw, dim)
        self.pos_embed = _embedding(1, self.num_patches, dim)
        self.latent_tokens = _embedding(1, num_latent_tokens, dim)
        self.transformer = Transformer(dim, depth, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(patchify(x, self.patch)) + self.pos_embed     # [B, N, dim]
        latents = self.latent_tokens.expand(x.shape[0], -1, -1)                 # [B, T, dim]
        out = self.transformer(torch.cat([tokens, latents], dim=1))
        return out[:, self.num_patches:]                                        # [B, T, dim]


class LatentTokenDecoder(nn.Module):
    """TiTok's decoder: ``T`` quantized latent tokens ``[B, T, dim]`` to an image.

    Every patch position gets the same learned ``mask_token`` plus its own
    position ``pos_embed`` (so the decoder knows where each output patch goes);
    the latent tokens get their positions ``latent_pos``. Bidirectional
    transformer blocks run over ``[mask tokens ; latent tokens]``; the outputs
    at the patch positions become pixels (``to_pixels``, :func:`unpatchify`).

    Args: as :class:`LatentTokenEncoder`.

    Shapes:
        ``forward(z_q)``: ``[B, T, dim]`` -> ``[B, C, H, W]`` (unbounded values).
    """

    def __init__(self, image_size, patch, dim, num_latent_tokens=32, depth=2, heads=4,
                 in_channels=3):
        super().__init__()
        self.image_size, self.patch, self.dim = image_size, patch, dim
        self.num_latent_tokens = num_latent_tokens
        self.num_patches = _num_patches(image_size, patch)
        ph, pw = _pair(patch)
        self.mask_token = _embedding(1, 1, dim)
        self.pos_embed = _embedding(1, self.num_patches, dim)
        self.latent_pos = _embedding(1, num_latent_tokens, dim)
        self.transformer = Transformer(dim, depth, heads)
        self.to_pixels = nn.Linear(dim, in_channels * ph * pw)

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        b = z_q.shape[0]
        masks = self.mask_token.expand(b, self.num_patches, -1) + self.pos_embed   # [B, N, dim]
        out = self.transformer(torch.cat([masks, z_q + self.latent_pos], dim=1))
        patches = self.to_pixels(out[:, :self.num_patches])                       # [B, N, C p p]
        return unpatchify(patches, self.patch, self.image_size, self.image_size)


def quantize_tokens(quantizer: nn.Module, z: torch.Tensor):
    """Quantize a token sequence ``z`` ``[B, T, D]`` with a channel-first quantizer.

    Returns ``(z_q [B, T, D], loss, info)`` with ``info["indices"]`` ``[B, T]``;
    the quantizer sees ``z`` as a ``[B, D, T, 1]`` map.
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        raise ValueError(f"z must be tokens [B, T, D], got {_shape(z)}")
    z_q, loss, info = quantizer(z.transpose(1, 2).unsqueeze(-1))
    info = dict(info)
    info["indices"] = info["indices"].flatten(1)                                   # [B, T]
    return z_q.squeeze(-1).transpose(1, 2), loss, info


def lookup_tokens(quantizer: nn.Module, indices: torch.Tensor) -> torch.Tensor:
    """Quantized tokens ``[B, T, D]`` of ``indices`` ``[B, T]`` (``quantizer.lookup``)."""
    if not isinstance(indices, torch.Tensor) or indices.dim() != 2:
        raise ValueError(f"indices must be [B, T], got {_shape(indices)}")
    return quantizer.lookup(indices.unsqueeze(-1)).squeeze(-1).transpose(1, 2)


class _Tokenizer(nn.Module):
    """What every tokenizer here shares: ``encode`` without codebook updates, ``decode_indices``."""

    @property
    def num_codes(self) -> int:
        """``K``, the quantizer's codebook size."""
        return int(self.quantizer.num_codes)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices of images ``x`` (the quantizer in eval mode: no codebook update)."""
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            _, _, info = self._quantize(self.encode_latents(x))
        finally:
            self.quantizer.train(was_training)
        return info["indices"]

    def forward(self, x: torch.Tensor):
        """``(x_rec [B, C, H, W] unclamped, the quantizer's loss, its info)``."""
        z_q, loss, info = self._quantize(self.encode_latents(x))
        return self.decode(z_q), loss, info

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` (unclamped) from code indices."""
        return self.decode(self.lookup(indices))


class TiTokTokenizer(_Tokenizer):
    """A 1-D tokenizer: ``LatentTokenEncoder -> project -> quantizer -> project -> LatentTokenDecoder``.

    As in TiTok, the latent tokens are projected to the (small) code dimension
    before quantization (``pre_quant``) and back to the decoder's width after
    (``post_quant``).

    Args:
        encoder: maps images (``x - 0.5``) to tokens ``[B, T, encoder.dim]``
            (a :class:`LatentTokenEncoder`, or the learner's).
        quantizer: a channel-first quantizer over ``code_dim`` channels.
        decoder: maps tokens ``[B, T, decoder.dim]`` to images (minus 0.5).
        code_dim: channels the quantizer expects.

    Shapes:
        ``forward(x)`` -> ``(x_rec, loss, info)``, ``info["indices"]`` ``[B, T]``;
        ``encode(x)`` -> ``[B, T]``; ``decode_indices([B, T])`` -> images.
    """

    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: nn.Module, code_dim: int):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.code_dim = code_dim
        self.pre_quant = nn.Linear(encoder.dim, code_dim)
        self.post_quant = nn.Linear(code_dim, decoder.dim)

    @property
    def num_tokens(self) -> int:
        return int(self.encoder.num_latent_tokens)

    def encode_latents(self, x):
        """Continuous tokens ``z_e`` ``[B, T, code_dim]``."""
        return self.pre_quant(self.encoder(x - SHIFT))

    def _quantize(self, z_e):
        return quantize_tokens(self.quantizer, z_e)

    def decode(self, z_q):
        """Images from quantized tokens ``[B, T, code_dim]``."""
        return self.decoder(self.post_quant(z_q)) + SHIFT

    def lookup(self, indices):
        return lookup_tokens(self.quantizer, indices)


# ----------------------------------------------------------------------------- 2-D grid


class ViTEncoder(nn.Module):
    """A plain ViT: patches -> ``patch_embed`` + ``pos_embed`` -> transformer -> ``[B, N, dim]``.

    ``forward(x, mask=None)``: ``mask`` ``[B, N]`` (bool) replaces the embeddings
    of the masked patches by a learned ``mask_token`` (SimMIM).
    """

    def __init__(self, image_size, patch, dim, depth=2, heads=4, in_channels=3):
        super().__init__()
        self.image_size, self.patch, self.dim = image_size, patch, dim
        self.num_patches = _num_patches(image_size, patch)
        ph, pw = _pair(patch)
        self.grid = (image_size // ph, image_size // pw)
        self.patch_embed = nn.Linear(in_channels * ph * pw, dim)
        self.pos_embed = _embedding(1, self.num_patches, dim)
        self.mask_token = _embedding(1, 1, dim)
        self.transformer = Transformer(dim, depth, heads)

    def forward(self, x, mask=None):
        tokens = self.patch_embed(patchify(x, self.patch))
        if mask is not None:
            tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        return self.transformer(tokens + self.pos_embed)


class GridTokenizer(_Tokenizer):
    """A 2-D grid tokenizer: one token per region of a ``gh x gw`` grid.

    The same ViT as TiTok's encoder runs over the ``p x p`` patches; then every
    block of ``(H/p)/gh x (W/p)/gw`` neighbouring patch outputs is merged into one
    token (concatenated and projected, Swin's patch merging), so token ``(i, j)``
    stands for one ``H/gh x W/gw`` region. The decoder splits every quantized
    token back into its patches, runs a ViT over the patch positions and maps
    them to pixels. With ``image_size=32, patch=4, grid=(4, 8)`` it has 32 tokens,
    the budget of a 32-token :class:`TiTokTokenizer` over the same patches.

    Args:
        quantizer: a channel-first quantizer over ``code_dim`` channels.
        image_size, patch, dim, depth, heads, in_channels: the ViTs.
        grid: ``(gh, gw)``, the token grid (divides the patch grid).
        code_dim: channels the quantizer expects.

    Shapes:
        ``forward(x)`` -> ``(x_rec, loss, info)``, ``info["indices"]`` ``[B, gh, gw]``;
        ``encode(x)`` -> ``[B, gh, gw]``; ``decode_indices([B, gh, gw])`` -> images.
    """

    def __init__(self, quantizer, image_size=32, patch=4, grid=(4, 8), dim=128, code_dim=16,
                 depth=2, heads=4, in_channels=3):
        super().__init__()
        self.quantizer = quantizer
        self.encoder = ViTEncoder(image_size, patch, dim, depth, heads, in_channels)
        nh, nw = self.encoder.grid
        gh, gw = grid
        if nh % gh or nw % gw:
            raise ValueError(f"grid {tuple(grid)} must divide the patch grid {(nh, nw)}")
        self.grid, self.merge = (gh, gw), (nh // gh, nw // gw)
        self.code_dim, self.dim = code_dim, dim
        group = self.merge[0] * self.merge[1] * dim
        self.pre_quant = nn.Linear(group, code_dim)
        self.post_quant = nn.Linear(code_dim, group)
        self.pos_embed = _embedding(1, nh * nw, dim)
        self.decoder = Transformer(dim, depth, heads)
        ph, pw = _pair(patch)
        self.to_pixels = nn.Linear(dim, in_channels * ph * pw)
        self.image_size, self.patch = image_size, patch

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode_latents(self, x):
        """Continuous latents ``z_e`` ``[B, code_dim, gh, gw]``."""
        tokens = self.encoder(x - SHIFT)                                         # [B, N, dim]
        b = tokens.shape[0]
        (gh, gw), (mh, mw) = self.grid, self.merge
        t = tokens.reshape(b, gh, mh, gw, mw, self.dim).permute(0, 1, 3, 2, 4, 5)
        return self.pre_quant(t.reshape(b, gh, gw, -1)).permute(0, 3, 1, 2)

    def _quantize(self, z_e):
        return self.quantizer(z_e)

    def decode(self, z_q):
        """Images from quantized latents ``[B, code_dim, gh, gw]``."""
        b = z_q.shape[0]
        (gh, gw), (mh, mw) = self.grid, self.merge
        t = self.post_quant(z_q.permute(0, 2, 3, 1)).reshape(b, gh, gw, mh, mw, self.dim)
        tokens = t.permute(0, 1, 3, 2, 4, 5).reshape(b, gh * mh * gw * mw, self.dim)
        out = self.decoder(tokens + self.pos_embed)
        return unpatchify(self.to_pixels(out), self.patch, self.image_size, self.image_size) + SHIFT

    def lookup(self, indices):
        return self.quantizer.lookup(indices)


# ----------------------------------------------------------------------------- VQ on frozen features


class ViTDecoder(nn.Module):
    """A ViT decoder for a ``[B, in_dim, gh, gw]`` feature map: tokens -> transformer -> pixels.

    Each position of the map becomes one token (``embed`` + ``pos_embed``), and
    its output one ``p x p`` patch of the image, with ``p = image_size / gh``.
    Returns images ``[B, C, H, W]`` (unclamped, ``+ 0.5``).
    """

    def __init__(self, grid, in_dim, image_size=32, dim=128, depth=2, heads=4, out_channels=3):
        super().__init__()
        gh, gw = grid
        if image_size % gh or image_size % gw:
            raise ValueError(f"image_size {image_size} must be a multiple of the grid {tuple(grid)}")
        self.grid, self.image_size = (gh, gw), image_size
        self.patch = (image_size // gh, image_size // gw)
        self.embed = nn.Linear(in_dim, dim)
        self.pos_embed = _embedding(1, gh * gw, dim)
        self.transformer = Transformer(dim, depth, heads)
        self.to_pixels = nn.Linear(dim, out_channels * self.patch[0] * self.patch[1])

    def forward(self, z):
        tokens = self.embed(z.flatten(2).transpose(1, 2)) + self.pos_embed
        patches = self.to_pixels(self.transformer(tokens))
        return unpatchify(patches, self.patch, self.image_size, self.image_size) + SHIFT


class FrozenEncoderVQ(nn.Module):
    """VQ on the features of a frozen encoder, with a trained decoder (VQRAE's first stage).

    The encoder is never trained: its parameters do not require gradients, its
    features are computed under ``no_grad``, and it stays in eval mode (dropout
    off, BatchNorm statistics fixed) even when ``.train()`` is called. Only the
    quantizer (its codebook) and the decoder learn.

    Args:
        encoder: images ``[B, C, H, W]`` in ``[0, 1]`` -> features ``[B, D, h, w]``.
        quantizer: channel-first over ``D`` channels, with ``lookup(indices)``.
        decoder: ``z_q`` ``[B, D, h, w]`` -> images ``[B, C, H, W]``.

    Shapes:
        ``forward(x)`` -> ``(x_rec, the quantizer's loss, its info)``;
        ``encode_to_indices(x)`` -> ``[B, h, w]`` (``torch.long``, no codebook update);
        ``decode_from_indices(indices)`` -> images.
    """

    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()                       # frozen: always in eval mode
        return self

    @property
    def num_codes(self) -> int:
        return int(self.quantizer.num_codes)

    def features(self, x):
        """The frozen encoder's features ``[B, D, h, w]`` (no gradient)."""
        with torch.no_grad():
            return self.encoder(x)

    def forward(self, x):
        z_q, loss, info = self.quantizer(self.features(x))
        return self.decoder(z_q), loss, info

    @torch.no_grad()
    def encode_to_indices(self, x):
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            _, _, info = self.quantizer(self.features(x))
        finally:
            self.quantizer.train(was_training)
        return info["indices"]

    def decode_from_indices(self, indices):
        return self.decoder(self.quantizer.lookup(indices))

    # the names of the other tokenizers, so one widget and one step serve all
    encode = encode_to_indices
    decode_indices = decode_from_indices


class PatchFeatures(nn.Module):
    """A :class:`ViTEncoder` as a feature map: images in ``[0, 1]`` -> ``[B, dim, gh, gw]``."""

    def __init__(self, encoder: ViTEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        tokens = self.encoder(x - SHIFT)                                      # [B, N, dim]
        gh, gw = self.encoder.grid
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)


class MaskedImageModel(nn.Module):
    """SimMIM (Xie et al. 2022, https://arxiv.org/abs/2111.09886): a ViT learns by filling in patches.

    A random ``mask_ratio`` of the patches of each image is replaced by a
    learned mask token; the encoder's outputs at those positions predict their
    pixels through a linear ``head``; the loss is the MSE on the masked patches
    only. What the encoder learns (context, shapes) is what a pretrained
    encoder brings to VQ on frozen features, at the scale of a notebook.

    ``forward(x, generator=None)`` -> ``(loss, patches [B, N, C p p] predicted)``.
    """

    def __init__(self, image_size=32, patch=4, dim=128, depth=2, heads=4, in_channels=3,
                 mask_ratio=0.5):
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.encoder = ViTEncoder(image_size, patch, dim, depth, heads, in_channels)
        ph, pw = _pair(patch)
        self.head = nn.Linear(dim, in_channels * ph * pw)
        self.mask_ratio = mask_ratio

    def random_mask(self, batch, device, generator=None):
        """``[B, N]`` bool: ``round(mask_ratio * N)`` patches of each row, chosen at random."""
        n = self.encoder.num_patches
        ranks = torch.rand(batch, n, generator=generator).argsort(1).argsort(1).to(device)
        return ranks < max(1, round(self.mask_ratio * n))

    def forward(self, x, generator=None):
        mask = self.random_mask(x.shape[0], x.device, generator)
        pred = self.head(self.encoder(x - SHIFT, mask))
        target = patchify(x - SHIFT, self.encoder.patch)
        return F.mse_loss(pred[mask], target[mask]), pred

    def features(self) -> PatchFeatures:
        """The encoder as a feature map (share its weights), to freeze."""
        return PatchFeatures(self.encoder)


def mim_step(model: MaskedImageModel, batch) -> dict:
    """Training step of :class:`MaskedImageModel` for ``dvl.train``: ``loss`` on the masked patches."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    loss, _ = model(x)
    return {"loss": loss}


class HubPatchFeatures(nn.Module):
    """A DINOv2 model from ``torch.hub`` as a feature map ``[B, D, h, w]``.

    Images in ``[0, 1]`` (1 or 3 channels) are resized to ``size`` (a multiple
    of the model's 14-pixel patches), normalised with ImageNet's statistics,
    and the normalised patch tokens (``x_norm_patchtokens``) are returned as a
    channel-first map.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, model: nn.Module, size: int = 224, patch: int = 14):
        super().__init__()
        if size % patch:
            raise ValueError(f"size must be a multiple of the patch size {patch}, got {size}")
        self.model, self.size, self.patch = model, size, patch
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        tokens = self.model.forward_features((x - self.mean) / self.std)["x_norm_patchtokens"]
        side = self.size // self.patch
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, side, side)


def pretrained_encoder(name: str = "dinov2_vits14", size: int = 224) -> HubPatchFeatures | None:
    """DINOv2 (Oquab et al. 2023) through ``torch.hub``, as a :class:`HubPatchFeatures`; ``None`` offline.

    Needs the network the first time (the code and about 90 MB of weights for
    ``dinov2_vits14``, cached by torch.hub). Any failure (no network, no cache)
    returns ``None``, so the caller can fall back to an encoder it trains.
    """
    try:
        model = torch.hub.load("facebookresearch/dinov2", name, verbose=False)
    except Exception:           # offline, blocked, or an incompatible hub repo
        return None
    return HubPatchFeatures(model.eval(), size=size)


# ----------------------------------------------------------------------------- what a token encodes


def _num_codes(model) -> int:
    """``K``: ``model.num_codes``, else ``model.quantizer.num_codes``."""
    k = getattr(model, "num_codes", None)
    return int(k if k is not None else model.quantizer.num_codes)


def _model_device(model):
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def encode_indices(model, x: torch.Tensor) -> torch.Tensor:
    """``model.encode(x)`` (or ``encode_to_indices``) in eval mode, without gradient."""
    encode = getattr(model, "encode_to_indices", None) or model.encode
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return encode(x.to(_model_device(model)))
    finally:
        model.train(was_training)


def decode_indices(model, indices: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` (clamped, CPU) from indices, in eval mode, without gradient."""
    decode = getattr(model, "decode_from_indices", None) or model.decode_indices
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return decode(indices.to(_model_device(model))).float().clamp(0, 1).cpu()
    finally:
        model.train(was_training)


def replace_token(indices: torch.Tensor, position: int, code) -> torch.Tensor:
    """A copy of ``indices`` ``[B, ...]`` with token ``position`` (flat, raster order) set to ``code``.

    ``code`` is an int or a ``[B]`` tensor (one code per image).
    """
    flat = indices.reshape(indices.shape[0], -1).clone()
    if not 0 <= position < flat.shape[1]:
        raise ValueError(f"position must lie in [0, {flat.shape[1] - 1}], got {position}")
    flat[:, position] = torch.as_tensor(code, dtype=flat.dtype, device=flat.device)
    return flat.reshape(indices.shape)


@torch.no_grad()
def token_influence(model, images: torch.Tensor, generator: torch.Generator | None = None,
                    batch_size: int = 256) -> torch.Tensor:
    """Where each token acts: ``[L, H, W]`` mean absolute change of the decoded image.

    For every token position ``l`` (of ``L``), each image's code at ``l`` is
    replaced by a random other code and the image decoded again; the map is the
    mean over images and channels of ``|decoded - decoded with the swap|``. A
    grid token's map is bright over its region; a 1-D latent token's may cover
    the whole image.
    """
    indices = encode_indices(model, images)                                  # [B, ...]
    b = indices.shape[0]
    flat = indices.reshape(b, -1).cpu()
    length = flat.shape[1]
    k = _num_codes(model)
    base = decode_indices(model, indices)                                     # [B, C, H, W]
    shift = torch.randint(1, max(k, 2), (length, b), generator=generator)
    swapped = flat[None].repeat(length, 1, 1)                                 # [L, B, L]
    pos = torch.arange(length)
    swapped[pos, :, pos] = (flat.T + shift) % k                               # a different code
    decoded = torch.cat([decode_indices(model, chunk.reshape(-1, *indices.shape[1:]))
                         for chunk in swapped.reshape(length * b, length).split(batch_size)])
    diff = (decoded.reshape(length, b, *base.shape[1:]) - base[None]).abs()
    return diff.mean(dim=(1, 2))                                              # [L, H, W]


@torch.no_grad()
def evaluate_tokenizer(model, images: torch.Tensor, batch_size: int = 256) -> dict:
    """Reconstruction quality and codebook usage of a tokenizer on ``images`` ``[N, C, H, W]``.

    Each image is encoded to indices and decoded back (eval mode, no codebook
    update), so the numbers are those of the discrete round trip.

    Returns:
        ``{"psnr", "ssim"}`` (dB and SSIM of the clamped reconstructions, means over
        the images), ``"tokens"`` (per image), ``"used"`` (distinct codes),
        ``"perplexity"`` (of the code frequencies), ``"counts"`` (``[K]``),
        ``"indices"`` ``[N, ...]`` and ``"reconstructions"`` ``[N, C, H, W]`` (CPU).
    """
    from .metrics import psnr, ssim
    from .quantizers import perplexity

    indices = torch.cat([encode_indices(model, chunk).cpu() for chunk in images.split(batch_size)])
    recon = torch.cat([decode_indices(model, chunk) for chunk in indices.split(batch_size)])
    images = images.float().cpu()
    counts = torch.bincount(indices.reshape(-1), minlength=_num_codes(model)).float()
    return {"psnr": psnr(recon, images).item(), "ssim": ssim(recon, images).item(),
            "tokens": int(indices[0].numel()), "used": int((counts > 0).sum()),
            "perplexity": float(perplexity(counts)), "counts": counts, "indices": indices,
            "reconstructions": recon}
