"""Many codebooks: residual, product and two-level (VQ-VAE-2) quantization.

What the learner builds in ``04_hierarchical_vq``, as reference code for
later phases and benchmarks:

- :func:`residual_quantize`: ``L`` codebooks in sequence, each quantizing what
  the previous ones left over (RQ-VAE, Lee et al. 2022, arXiv:2203.01941;
  SoundStream, Zeghidour et al. 2021, arXiv:2107.03312).
- :func:`product_quantize`: ``M`` codebooks side by side, one per contiguous
  chunk of the vector (Jégou et al. 2011).
- :class:`ResidualVectorQuantizer` (alias :data:`ResidualVQ`) and
  :class:`ProductVectorQuantizer` (alias :data:`ProductVQ`): the layers,
  trained through straight-through with a codebook and a commitment loss per
  stage or chunk; the residual one optionally with EMA codebooks and
  dead-code restarts.
- :class:`VQVAE2`: the two-level model of Razavi et al. 2019 (arXiv:1906.00446).
- :func:`residual_step`, :func:`make_residual_step`, :func:`vqvae2_step`,
  :func:`evaluate_depths`, :func:`evaluate_model`, :func:`bits_per_image`,
  :func:`stage_reconstructions`: what the notebook trains and plots.

Shapes follow the course: latents ``[B, D, H, W]``, vectors ``[N, D]``,
codebooks ``[K, D]``; stacked indices carry a leading stage (or chunk) axis,
``[L, B, H, W]``. Nearest codes come from
:func:`dvl_helpers.quantizers.nearest_code` (float32, chunked: never an
``[N, K]`` matrix for more than ``chunk_size`` rows, never ``[N, K, D]``).

Used in: ``04_hierarchical_vq``; ``08_priors`` (rate: the number of tokens a
prior must model).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dvl_helpers import metrics
from dvl_helpers.nn import Decoder, Encoder, check_shape
from dvl_helpers.quantizers import (
    DEFAULT_CHUNK_SIZE, EMAVectorQuantizer, dead_codes, ema_update, nearest_code, perplexity,
    reset_dead_codes,
)

__all__ = [
    "residual_quantize", "product_quantize",
    "ResidualVectorQuantizer", "ResidualVQ", "ProductVectorQuantizer", "ProductVQ", "VQVAE2",
    "residual_step", "make_residual_step", "vqvae2_step", "bits_per_image",
    "evaluate_depths", "evaluate_model", "decode_top_only", "stage_reconstructions",
]

#: Images enter the models as ``x - SHIFT`` and leave as ``decoder(...) + SHIFT`` (as in ``models.VQVAE``).
SHIFT = 0.5


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_codebooks(z, codebooks, dim, what):
    """Validate ``z [N, D]`` and a non-empty sequence of 2-D codebooks whose width is ``dim``."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z must be a tensor [N, D], got {_describe(z)}")
    if isinstance(codebooks, torch.Tensor):
        if codebooks.dim() != 3:
            raise ValueError(f"codebooks must be a list of [K, {what}] tensors or a tensor "
                             f"[L, K, {what}], got {_describe(codebooks)}")
    elif not isinstance(codebooks, (list, tuple)):
        raise ValueError(f"codebooks must be a list of [K, {what}] tensors, got {_describe(codebooks)}")
    if len(codebooks) == 0:
        raise ValueError("codebooks must hold at least one codebook, got none")
    for i, cb in enumerate(codebooks):
        if not isinstance(cb, torch.Tensor) or cb.dim() != 2 or cb.shape[1] != dim or cb.shape[0] == 0:
            raise ValueError(f"codebooks[{i}] must be a tensor [K, {what}] with {what} = {dim}, "
                             f"got {_describe(cb)}")


def residual_quantize(z, codebooks, chunk_size=DEFAULT_CHUNK_SIZE):
    """Quantize ``z`` with ``L`` codebooks in sequence, each on what the previous left.

    ``r_0 = z``; stage ``l`` picks the code of ``codebooks[l]`` nearest to
    ``r_{l-1}`` and leaves ``r_l = r_{l-1} - e_l``. The quantized vector is the
    sum of the picks, ``z_q = e_1 + ... + e_L = z - r_L``. Each stage picks the
    nearest code to its residual, so ``||r_l|| <= ||r_{l-1}||`` for every row
    when a codebook holds the zero vector, and in practice (trained
    codebooks) the residual norms fall with depth.

    Args:
        z: ``[N, D]`` vectors.
        codebooks: ``L`` codebooks ``[K, D]`` (a list, or a tensor ``[L, K, D]``).
        chunk_size: rows per distance block (see :func:`~dvl_helpers.quantizers.nearest_code`).

    Returns:
        ``(z_q, indices, residual_norms)``: ``z_q`` ``[N, D]`` the sum of the
        picks (differentiable in the codebooks, not in ``z``), ``indices``
        ``[L, N]`` torch.long, and ``residual_norms`` ``[L]``, the mean over
        rows of ``||r_l||`` after each stage (detached). ``z`` is not modified.
    """
    _check_codebooks(z, codebooks, z.shape[1] if isinstance(z, torch.Tensor) and z.dim() == 2 else -1,
                     "D")
    residual = z.detach()
    z_q = None
    indices, norms = [], []
    for codebook in codebooks:
        idx = nearest_code(residual, codebook, chunk_size=chunk_size)          # [N]
        pick = F.embedding(idx, codebook)                                     # [N, D]
        residual = residual - pick.detach()                                   # a new tensor
        z_q = pick if z_q is None else z_q + pick
        indices.append(idx)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(indices), torch.stack(norms)


def product_quantize(z, codebooks, chunk_size=DEFAULT_CHUNK_SIZE):
    """Quantize each contiguous chunk of ``z`` with its own codebook.

    ``z`` ``[N, D]`` is cut into ``M`` chunks ``z[:, m*D/M:(m+1)*D/M]``;
    chunk ``m`` is replaced by its nearest code in ``codebooks[m]``. ``M``
    codebooks of ``K`` codes describe ``K^M`` different vectors with
    ``M*K`` stored codes.

    Args:
        z: ``[N, D]`` vectors, ``D`` a multiple of ``M``.
        codebooks: ``M`` codebooks ``[K, D/M]`` (a list, or a tensor ``[M, K, D/M]``).
        chunk_size: rows per distance block.

    Returns:
        ``(z_q, indices)``: ``z_q`` ``[N, D]`` (the chosen codes side by side,
        differentiable in the codebooks) and ``indices`` ``[M, N]`` torch.long.
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z must be a tensor [N, D], got {_describe(z)}")
    m = len(codebooks) if isinstance(codebooks, (list, tuple, torch.Tensor)) else 0
    if m == 0 or z.shape[1] % m:
        raise ValueError(f"z [N, D] must split into one chunk per codebook: D = {z.shape[1]} "
                         f"is not a multiple of M = {m} codebooks")
    _check_codebooks(z, codebooks, z.shape[1] // m, "D/M")
    chunks = z.detach().split(z.shape[1] // m, dim=1)                         # M x [N, D/M]
    indices = [nearest_code(c, cb, chunk_size=chunk_size) for c, cb in zip(chunks, codebooks)]
    z_q = torch.cat([F.embedding(i, cb) for i, cb in zip(indices, codebooks)], dim=1)
    return z_q, torch.stack(indices)


# --------------------------------------------------------------------------- layers

def _positive_int(value, name):
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _flatten(z_e, code_dim):
    """``[B, D, H, W]`` (or ``[N, D]``) -> ``([N, D]`` channels last, a function back to the input layout)."""
    if isinstance(z_e, torch.Tensor) and z_e.dim() == 4 and z_e.shape[1] == code_dim:
        b, d, h, w = z_e.shape
        return (z_e.permute(0, 2, 3, 1).reshape(-1, d),
                lambda t: t.reshape(b, h, w, d).permute(0, 3, 1, 2),
                (b, h, w))
    if isinstance(z_e, torch.Tensor) and z_e.dim() == 2 and z_e.shape[1] == code_dim:
        return z_e, lambda t: t, (z_e.shape[0],)
    raise ValueError(f"z_e must be a tensor [B, D, H, W] (or [N, D]) with D = {code_dim}, "
                     f"got {_describe(z_e)}")


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ: ``L`` codebooks in sequence, each quantizing the previous stages' error.

    Stage ``l`` picks ``e_l``, the code of codebook ``l`` nearest to the residual
    ``r_{l-1} = z_e - sg(e_1 + ... + e_{l-1})`` (``sg``: stop-gradient); the
    output is ``z_q = e_1 + ... + e_L`` passed straight through to ``z_e``.
    The loss sums, over stages, a codebook loss and a weighted commitment loss:

        loss = sum_l [ mean ||sg(r_{l-1}) - e_l||^2 + beta * mean ||z_e - sg(e_1 + ... + e_l)||^2 ]

    (the commitment term of RQ-VAE; it equals ``mean ||r_{l-1} - sg(e_l)||^2``,
    the per-stage commitment of SoundStream). With ``decay`` set the codebooks
    are EMA buffers instead (each stage's codes move to the running mean of
    the residuals assigned to them, :func:`~dvl_helpers.quantizers.ema_update`),
    and only the commitment terms remain; ``dead_threshold`` then restarts
    codes whose running count falls below it on residuals of the batch.

    Memory: per stage one chunked nearest-code search (``chunk_size x K``
    float32 distances at a time) and a few ``[N, D]`` tensors; nothing
    ``[N, K]`` for more than ``chunk_size`` rows and nothing ``[N, K, D]``.

    Args:
        num_quantizers: ``L``, the number of stages (codebooks).
        num_codes: ``K``, codes per codebook.
        code_dim: ``D``, the size of each code (the encoder's channels).
        beta: weight of the commitment terms (0.25 as in VQ-VAE).
        decay: ``None`` (default): codebooks are parameters trained by the
            codebook loss, initialised uniform in ``(-1/K, 1/K)`` like
            :class:`~dvl_helpers.quantizers.VectorQuantizer`. A float in
            ``[0, 1)``: EMA codebooks (buffers, standard normal start scaled by
            ``2^-l`` for stage ``l``, as residuals shrink with depth).
        eps: Laplace smoothing of the EMA counts.
        dead_threshold: with EMA, restart codes whose running count falls below it.
        chunk_size: rows per distance block when finding nearest codes.

    Shapes:
        ``forward(z_e, num_stages=None)``: ``z_e`` ``[B, D, H, W]`` (or ``[N, D]``) ->
        ``(z_q, loss, info)``, like :class:`~dvl_helpers.quantizers.VectorQuantizer`:
        ``z_q`` shaped like ``z_e``, ``loss`` a scalar, ``info`` with
        ``indices`` ``[L, B, H, W]`` (``[L, N]``) torch.long, ``usage`` ``[L, K]``
        counts, ``perplexity`` ``[L]``, ``residual_norms`` ``[L]`` (mean
        ``||r_l||`` after each stage), ``codebook_loss`` and ``commitment_loss``
        (detached sums over stages). ``num_stages=n`` uses only the first
        ``n`` stages (then ``L`` above is ``n``): the coarse codes alone.
    """

    def __init__(self, num_quantizers, num_codes, code_dim, beta=0.25, decay=None, eps=1e-5,
                 dead_threshold=None, chunk_size=DEFAULT_CHUNK_SIZE):
        super().__init__()
        self.num_quantizers = _positive_int(num_quantizers, "num_quantizers")
        self.num_codes = _positive_int(num_codes, "num_codes")
        self.code_dim = _positive_int(code_dim, "code_dim")
        self.chunk_size = _positive_int(chunk_size, "chunk_size")
        self.beta = float(beta)
        if decay is not None and not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be None or in [0, 1), got {decay!r}")
        if dead_threshold is not None and decay is None:
            raise ValueError("dead_threshold needs EMA codebooks: set decay too")
        self.decay = None if decay is None else float(decay)
        self.eps = float(eps)
        self.dead_threshold = None if dead_threshold is None else float(dead_threshold)
        shape = (self.num_quantizers, self.num_codes, self.code_dim)
        if self.decay is None:
            k = self.num_codes
            self.codebooks = nn.Parameter(torch.empty(shape).uniform_(-1.0 / k, 1.0 / k))
        else:
            scale = 0.5 ** torch.arange(self.num_quantizers, dtype=torch.float32)
            codebooks = torch.randn(shape) * scale[:, None, None]
            self.register_buffer("codebooks", codebooks)
            self.register_buffer("cluster_size", torch.ones(shape[:2]))
            self.register_buffer("embed_sum", codebooks.clone())

    def extra_repr(self):
        return (f"num_quantizers={self.num_quantizers}, num_codes={self.num_codes}, "
                f"code_dim={self.code_dim}, beta={self.beta}, decay={self.decay}")

    def forward(self, z_e, num_stages=None):
        flat, unflatten, grid = _flatten(z_e, self.code_dim)
        n = self.num_quantizers if num_stages is None else int(num_stages)
        if not 1 <= n <= self.num_quantizers:
            raise ValueError(f"num_stages must be in [1, {self.num_quantizers}], got {num_stages!r}")
        z = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
        z_sg = z.detach()
        residual = z_sg
        partial = None
        codebook_loss = z.new_zeros(())
        commitment_loss = z.new_zeros(())
        indices, usage, norms = [], [], []
        for l in range(n):
            codebook = self.codebooks[l]
            idx = nearest_code(residual, codebook, chunk_size=self.chunk_size)    # [N]
            pick = F.embedding(idx, codebook)                                    # [N, D]
            if self.decay is None:
                codebook_loss = codebook_loss + F.mse_loss(pick, residual)
            partial = pick if partial is None else partial + pick
            commitment_loss = commitment_loss + F.mse_loss(z, partial.detach())
            counts = torch.bincount(idx, minlength=self.num_codes).float()
            if self.decay is not None and self.training:
                self._update(l, residual, idx)
            residual = residual - pick.detach()
            indices.append(idx)
            usage.append(counts)
            norms.append(residual.norm(dim=1).mean())
        loss = codebook_loss + self.beta * commitment_loss
        z_q = z + (partial - z).detach()                                         # straight-through
        usage = torch.stack(usage)
        info = {
            "indices": torch.stack(indices).view(n, *grid),
            "usage": usage,
            "perplexity": torch.stack([perplexity(u) for u in usage]),
            "residual_norms": torch.stack(norms).detach(),
            "codebook_loss": codebook_loss.detach(),
            "commitment_loss": commitment_loss.detach(),
        }
        return unflatten(z_q.to(z_e.dtype) if z_e.dtype != z_q.dtype else z_q), loss, info

    @torch.no_grad()
    def _update(self, l, residual, idx):
        cluster_size, embed_sum, codebook = ema_update(
            self.cluster_size[l], self.embed_sum[l], residual, idx, self.decay, self.eps)
        if self.dead_threshold is not None:
            codebook, cluster_size, embed_sum = reset_dead_codes(
                codebook, cluster_size, embed_sum, dead_codes(cluster_size, self.dead_threshold),
                residual)
        self.cluster_size[l].copy_(cluster_size)
        self.embed_sum[l].copy_(embed_sum)
        self.codebooks[l].copy_(codebook)

    def lookup(self, indices):
        """``[n, B, H, W]`` indices of the first ``n`` stages -> ``[B, D, H, W]``, the sum of their codes."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 4 or indices.dtype != torch.long \
                or not 1 <= indices.shape[0] <= self.num_quantizers:
            raise ValueError(f"indices must be a torch.long tensor [n, B, H, W] with n <= "
                             f"{self.num_quantizers}, got {_describe(indices)}")
        z_q = sum(F.embedding(idx, self.codebooks[l]) for l, idx in enumerate(indices))
        return z_q.permute(0, 3, 1, 2)


class ProductVectorQuantizer(nn.Module):
    """Product VQ: ``M`` codebooks side by side, one per contiguous chunk of each vector.

    ``z_e``'s ``D`` channels are cut into ``M`` chunks of ``D/M``; chunk ``m``
    takes its nearest code in codebook ``m``; the chosen codes, side by side,
    form ``z_q``, passed straight through to ``z_e``. The loss sums, over
    chunks, a codebook loss and a weighted commitment loss, each a mean over
    that chunk's elements:

        loss = sum_m [ mean ||sg(z_m) - e_m||^2 + beta * mean ||z_m - sg(e_m)||^2 ]

    Args:
        num_chunks: ``M``, the number of chunks (codebooks).
        num_codes: ``K``, codes per codebook.
        code_dim: ``D``, a multiple of ``M``.
        beta: weight of the commitment terms.
        chunk_size: rows per distance block.

    Shapes:
        ``forward(z_e)``: ``z_e`` ``[B, D, H, W]`` (or ``[N, D]``) -> ``(z_q, loss, info)``:
        ``z_q`` shaped like ``z_e``, ``loss`` a scalar, ``info`` with ``indices``
        ``[M, B, H, W]`` torch.long, ``usage`` ``[M, K]`` and ``perplexity`` ``[M]``.
        ``codebooks`` is a parameter ``[M, K, D/M]`` (uniform in ``(-1/K, 1/K)``).
    """

    def __init__(self, num_chunks, num_codes, code_dim, beta=0.25, chunk_size=DEFAULT_CHUNK_SIZE):
        super().__init__()
        self.num_chunks = _positive_int(num_chunks, "num_chunks")
        self.num_codes = _positive_int(num_codes, "num_codes")
        self.code_dim = _positive_int(code_dim, "code_dim")
        if self.code_dim % self.num_chunks:
            raise ValueError(f"code_dim must be a multiple of num_chunks, got code_dim={code_dim} "
                             f"and num_chunks={num_chunks}")
        self.beta = float(beta)
        self.chunk_size = _positive_int(chunk_size, "chunk_size")
        k = self.num_codes
        self.codebooks = nn.Parameter(
            torch.empty(self.num_chunks, k, self.code_dim // self.num_chunks).uniform_(-1.0 / k, 1.0 / k))

    def extra_repr(self):
        return (f"num_chunks={self.num_chunks}, num_codes={self.num_codes}, "
                f"code_dim={self.code_dim}, beta={self.beta}")

    def forward(self, z_e):
        flat, unflatten, grid = _flatten(z_e, self.code_dim)
        z = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
        z_q, indices = product_quantize(z, self.codebooks, chunk_size=self.chunk_size)
        width = self.code_dim // self.num_chunks
        # the mean over one chunk's elements, summed over chunks
        sq = (z_q - z.detach()).pow(2).view(-1, self.num_chunks, width).mean(dim=(0, 2))    # [M]
        codebook_loss = sq.sum()
        commitment_loss = F.mse_loss(z, z_q.detach()) * self.num_chunks
        loss = codebook_loss + self.beta * commitment_loss
        usage = torch.stack([torch.bincount(i, minlength=self.num_codes).float() for i in indices])
        info = {
            "indices": indices.view(self.num_chunks, *grid),
            "usage": usage,
            "perplexity": torch.stack([perplexity(u) for u in usage]),
            "codebook_loss": codebook_loss.detach(),
            "commitment_loss": commitment_loss.detach(),
        }
        z_q = z + (z_q - z).detach()
        return unflatten(z_q.to(z_e.dtype) if z_e.dtype != z_q.dtype else z_q), loss, info

    def lookup(self, indices):
        """``[M, B, H, W]`` indices -> ``[B, D, H, W]`` codes."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 4 or indices.dtype != torch.long \
                or indices.shape[0] != self.num_chunks:
            raise ValueError(f"indices must be a torch.long tensor [M, B, H, W] with M = "
                             f"{self.num_chunks}, got {_describe(indices)}")
        z_q = torch.cat([F.embedding(i, cb) for i, cb in zip(indices, self.codebooks)], dim=-1)
        return z_q.permute(0, 3, 1, 2)


#: The names of the notebook's answer cells.
ResidualVQ = ResidualVectorQuantizer
ProductVQ = ProductVectorQuantizer


# --------------------------------------------------------------------------- VQ-VAE-2

class VQVAE2(nn.Module):
    """The two-level VQ-VAE of Razavi et al. 2019: a coarse top grid of codes conditions a finer bottom one.

    ::

        x - 0.5 -> enc_b -> h_b [B, hidden, H/4, W/4]
        h_b -> enc_t -> quant_t -> z_t [B, D, H/8, W/8]                       (top codes)
        cat[h_b, dec_t(z_t)] -> pre_b -> quant_b -> z_b [B, D, H/4, W/4]      (bottom codes)
        cat[upsample_t(z_t), z_b] -> dec -> + 0.5 -> x_rec [B, C, H, W]

    The top level sees a wider context and carries the global structure; the
    bottom level, conditioned on what the top already says, adds local
    detail. Both quantizers are EMA quantizers with dead-code restarts
    (:class:`~dvl_helpers.quantizers.EMAVectorQuantizer`).

    Args:
        in_channels: image channels.
        hidden, res_hidden, num_res_blocks: width and depth of the conv blocks.
        num_codes: ``K`` of each level.
        code_dim: ``D`` of each level.
        beta: commitment weight.
        decay: EMA decay of both codebooks.
        dead_threshold: restart codes used less than this per batch (None: never).

    Shapes:
        ``forward(x)``: ``x`` ``[B, C, H, W]`` in ``[0, 1]``, ``H, W`` multiples of 8 ->
        ``(x_rec, loss, info)``: ``x_rec`` ``[B, C, H, W]`` (unclamped), ``loss``
        the sum of both quantizers' losses, ``info`` with ``indices_top``
        ``[B, H/8, W/8]``, ``indices_bottom`` ``[B, H/4, W/4]``, ``z_q_top``,
        ``z_q_bottom``, ``perplexity_top`` and ``perplexity_bottom``.
    """

    def __init__(self, in_channels=3, hidden=128, res_hidden=32, num_res_blocks=2, num_codes=512,
                 code_dim=64, beta=0.25, decay=0.99, dead_threshold=1.0):
        super().__init__()
        self.in_channels = in_channels
        self.num_codes = num_codes
        self.enc_b = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4)
        self.enc_t = Encoder(hidden, hidden, res_hidden, num_res_blocks, downsample=2,
                             out_channels=code_dim)
        self.quant_t = EMAVectorQuantizer(num_codes, code_dim, beta, decay, dead_threshold=dead_threshold)
        self.dec_t = Decoder(code_dim, code_dim, hidden, res_hidden, num_res_blocks, upsample=2)
        self.pre_b = nn.Conv2d(hidden + code_dim, code_dim, 1)
        self.quant_b = EMAVectorQuantizer(num_codes, code_dim, beta, decay, dead_threshold=dead_threshold)
        self.upsample_t = nn.ConvTranspose2d(code_dim, code_dim, 4, stride=2, padding=1)
        self.dec = Decoder(2 * code_dim, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def forward(self, x):
        check_shape(x, "x", 4, self.in_channels, f"[B, {self.in_channels}, H, W] images in [0, 1]")
        h_b = self.enc_b(x - SHIFT)
        z_t, loss_t, info_t = self.quant_t(self.enc_t(h_b))
        z_b, loss_b, info_b = self.quant_b(self.pre_b(torch.cat([h_b, self.dec_t(z_t)], dim=1)))
        info = {"indices_top": info_t["indices"], "indices_bottom": info_b["indices"],
                "z_q_top": z_t, "z_q_bottom": z_b,
                "perplexity_top": info_t["perplexity"], "perplexity_bottom": info_b["perplexity"]}
        return self.decode(z_t, z_b), loss_t + loss_b, info

    def decode(self, z_t, z_b):
        """Images (unclamped) from the top ``[B, D, H/8, W/8]`` and bottom ``[B, D, H/4, W/4]`` latents."""
        return self.dec(torch.cat([self.upsample_t(z_t), z_b], dim=1)) + SHIFT


# --------------------------------------------------------------------------- training and evaluation

def _images(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def residual_step(model, batch, num_stages=None):
    """One step's metrics for ``dvl.train`` of a ``models.VQVAE`` whose quantizer takes ``num_stages``.

    Returns ``{"loss", "rec", "vq_loss"}`` (``loss = mse + vq_loss``, with gradient).
    """
    x = _images(batch)
    z_q, vq_loss, _ = model.quantizer(model.encode_latents(x), num_stages=num_stages)
    rec = F.mse_loss(model.decode(z_q), x)
    return {"loss": rec + vq_loss, "rec": rec.detach(), "vq_loss": vq_loss.detach()}


def make_residual_step(num_quantizers, dropout=True, generator=None):
    """A step function that, with ``dropout``, trains on a random depth each step (SoundStream's quantizer dropout).

    Each step draws ``n`` uniformly from ``1 .. num_quantizers`` and uses the first
    ``n`` stages only, so that the decoder learns to decode every depth: one
    model then gives the whole rate-distortion curve. Without ``dropout`` every
    step uses all stages.
    """
    num_quantizers = _positive_int(num_quantizers, "num_quantizers")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def step_fn(model, batch):
        n = int(torch.randint(1, num_quantizers + 1, (1,), generator=gen)) if dropout else None
        return residual_step(model, batch, num_stages=n)

    return step_fn


def vqvae2_step(model, batch):
    """One step's metrics for ``dvl.train`` of a :class:`VQVAE2`, or of any model whose
    ``forward(x)`` returns ``(x_rec, vq_loss, info)`` (``models.VQVAE`` too).

    Returns ``{"loss", "rec", "vq_loss"}`` (``loss = mse + vq_loss``, with gradient).
    """
    x = _images(batch)
    x_rec, vq_loss, _ = model(x)
    rec = F.mse_loss(x_rec, x)
    return {"loss": rec + vq_loss, "rec": rec.detach(), "vq_loss": vq_loss.detach()}


def bits_per_image(positions, num_codes, codebooks_per_position=1):
    """Rate of a grid of codes, in bits per image: ``positions * codebooks_per_position * log2(num_codes)``.

    The cost of storing (or of a prior generating) the codes of one image with
    a uniform code: e.g. an 8x8 grid with 4 residual stages of 64 codes is
    ``64 * 4 * 6 = 1536`` bits. For several levels, add one call per level.
    """
    return float(positions) * float(codebooks_per_position) * math.log2(num_codes)


def _scores(x_rec, x, variance):
    x_rec = x_rec.clamp(0, 1)
    b = x.shape[0]
    return np.array([metrics.mse(x_rec, x).item() * b, metrics.psnr(x_rec, x).item() * b, b])


def _finish(sums, variance):
    mse, psnr, n = sums
    return {"mse": mse / n, "nmse": mse / n / variance, "psnr": psnr / n}


@torch.no_grad()
def evaluate_depths(model, loader, depths, data_variance, max_batches=None):
    """Quality of a residual-VQ ``models.VQVAE`` decoded from its first ``n`` stages, for each ``n`` in ``depths``.

    Returns:
        ``{n: {"mse", "nmse", "psnr", "bits", "codes_used"}}``: ``bits`` per image
        (``n * h * w * log2 K``), ``codes_used`` a list (one share per stage of the
        ``K`` codes used at least once).
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    depths = list(depths)
    sums = {n: np.zeros(3) for n in depths}
    counts = {n: torch.zeros(n, model.quantizer.num_codes) for n in depths}
    grid = None
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = _images(batch).to(device)
            z_e = model.encode_latents(x)
            grid = z_e.shape[-2:]
            for n in depths:
                z_q, _, info = model.quantizer(z_e, num_stages=n)
                sums[n] += _scores(model.decode(z_q), x, data_variance)
                idx = info["indices"].reshape(n, -1).cpu()
                counts[n] += torch.stack([torch.bincount(i, minlength=counts[n].shape[1]) for i in idx])
    finally:
        model.train(was)
    if grid is None:
        raise ValueError("the loader yielded no batch to evaluate")
    k = model.quantizer.num_codes
    out = {}
    for n in depths:
        out[n] = _finish(sums[n], data_variance)
        out[n]["bits"] = bits_per_image(grid[0] * grid[1], k, n)
        out[n]["codes_used"] = (counts[n] > 0).float().mean(dim=1).tolist()
    return out


def decode_top_only(model, indices_top, indices_bottom):
    """Images a :class:`VQVAE2` decodes from its top codes alone (the bottom latents set to zero).

    The decoder never saw zero bottom latents in training, so this shows what
    the top level carries (layout, colours), not a reconstruction it was trained for.
    """
    z_t = model.quant_t.lookup(indices_top)
    z_b = torch.zeros_like(model.quant_b.lookup(indices_bottom))
    return model.decode(z_t, z_b)


def _index_grids(info):
    """``{name: indices}`` of every codebook in a model's ``info`` (one or more leading axes)."""
    if "indices_top" in info:
        return {"top": info["indices_top"], "bottom": info["indices_bottom"]}
    idx = info["indices"]
    if idx.dim() == 3:
        return {"codebook": idx}
    return {f"{l + 1}": i for l, i in enumerate(idx)}


@torch.no_grad()
def evaluate_model(model, loader, data_variance, num_codes, max_batches=None, top_only=False):
    """Quality and codebook use of a model whose ``forward(x)`` returns ``(x_rec, loss, info)``.

    Works for ``models.VQVAE`` (with a plain, residual or product quantizer:
    ``info["indices"]`` ``[B, h, w]`` or ``[L, B, h, w]``) and for
    :class:`VQVAE2` (``info["indices_top"]`` and ``info["indices_bottom"]``).
    With ``top_only=True`` (a :class:`VQVAE2`) the image is decoded from the
    top level alone, the bottom latents replaced by zeros.

    Returns:
        ``{"mse", "nmse", "psnr", "codes_used"}``: averages over images, and
        ``codes_used`` ``{codebook name: share of its num_codes used at least once}``.
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = np.zeros(3)
    counts = {}
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = _images(batch).to(device)
            x_rec, _, info = model(x)
            if top_only:
                x_rec = decode_top_only(model, info["indices_top"], info["indices_bottom"])
            sums += _scores(x_rec, x, data_variance)
            for name, idx in _index_grids(info).items():
                c = torch.bincount(idx.reshape(-1).cpu(), minlength=num_codes)
                counts[name] = c if name not in counts else counts[name] + c
    finally:
        model.train(was)
    if sums[2] == 0:
        raise ValueError("the loader yielded no batch to evaluate")
    out = _finish(sums, data_variance)
    out["codes_used"] = {name: (c > 0).float().mean().item() for name, c in counts.items()}
    return out


@torch.no_grad()
def stage_reconstructions(model, x, depths=None):
    """Reconstructions of ``x`` decoded from the first ``n`` residual stages, for each ``n``.

    Args:
        model: a ``models.VQVAE`` with a residual quantizer (``num_stages`` argument).
        x: images ``[B, C, H, W]`` in ``[0, 1]``.
        depths: the ``n`` to show (default ``1 .. L``).

    Returns:
        ``[len(depths), B, C, H, W]`` images in ``[0, 1]``.
    """
    was = model.training
    model.eval()
    if depths is None:
        depths = range(1, model.quantizer.num_quantizers + 1)
    try:
        device = next(model.parameters()).device
        z_e = model.encode_latents(x.to(device))
        out = [model.decode(model.quantizer(z_e, num_stages=n)[0]).clamp(0, 1) for n in depths]
    finally:
        model.train(was)
    return torch.stack(out).to(x.device)
