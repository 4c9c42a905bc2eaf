"""Reference vector quantization: what the learner builds in ``01_vqvae``.

Later phases import these instead of the learner's earlier answers, so a
mistake in one notebook never breaks the next one. Shapes follow the course
conventions: latents are channel-first ``[B, D, H, W]``, the quantizer math
works on flattened vectors ``[N, D]``, codebooks are ``[K, D]`` and indices
are ``torch.long``.

Distances and indices are always computed in float32 (autocast is switched
off around them): in bfloat16 two codes a few percent apart already look
equally near, and the argmin would pick among them at random.

Used in: ``01_vqvae`` (the reference behind the checks' examples),
``02_stable_vq`` (EMA and k-means start from these), ``04_hierarchical_vq``
(residual and product VQ stack them), ``05_vqgan`` and ``08_priors``
(the tokenizer's quantizer and ``lookup`` to decode sampled codes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "pairwise_sq_distances", "nearest_code", "quantize", "vq_losses",
    "straight_through", "code_usage", "perplexity", "embed_codes",
    "VectorQuantizer",
]

#: Rows of ``z`` per distance block in :func:`nearest_code`. A block holds
#: ``chunk_size x K`` float32 distances: 4096 x 16384 codes is 256 MiB.
DEFAULT_CHUNK_SIZE = 4096


def _shape(t):
    return tuple(t.shape)


def _check_vectors(z, codebook):
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z must be a tensor [N, D], got {_describe(z)}")
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2:
        raise ValueError(f"codebook must be a tensor [K, D], got {_describe(codebook)}")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"z [N, D] and codebook [K, D] must share D, got z {_shape(z)} "
            f"and codebook {_shape(codebook)}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must have at least one code, got shape "
                         f"{_shape(codebook)}")


def _check_latents(z_e, codebook):
    if not isinstance(z_e, torch.Tensor) or z_e.dim() != 4:
        raise ValueError(f"z_e must be a tensor [B, D, H, W], got {_describe(z_e)}")
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2:
        raise ValueError(f"codebook must be a tensor [K, D], got {_describe(codebook)}")
    if z_e.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"z_e [B, D, H, W] has D={z_e.shape[1]} channels but the codebook "
            f"[K, D] has D={codebook.shape[1]} (z_e {_shape(z_e)}, codebook "
            f"{_shape(codebook)})")


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"shape {_shape(x)}"
    return type(x).__name__


def _check_chunk_size(chunk_size):
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def pairwise_sq_distances(z, codebook):
    """Squared Euclidean distances between every vector and every code.

    Uses ``||z||^2 - 2 z e^T + ||e||^2``: one matrix product instead of an
    ``[N, K, D]`` difference tensor (which for 65k vectors and 1024 codes of
    dimension 64 would be 17 GB). The expansion can round a tiny distance
    below zero, so it is clamped at 0. Computed in float32 even under
    autocast; differentiable in both arguments.

    Args:
        z: ``[N, D]`` vectors.
        codebook: ``[K, D]`` codes.

    Returns:
        ``[N, K]`` float32 (float64 if an input is float64) distances.
    """
    _check_vectors(z, codebook)
    dtype = torch.promote_types(torch.promote_types(z.dtype, codebook.dtype), torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(dtype)
        codebook = codebook.to(dtype)
        z_sq = z.pow(2).sum(dim=1, keepdim=True)                 # [N, 1]
        e_sq = codebook.pow(2).sum(dim=1)                        # [K]
        d = torch.addmm(z_sq + e_sq, z, codebook.t(), alpha=-2.0)  # [N, K]
        return d.clamp_min(0.0)


@torch.no_grad()
def nearest_code(z, codebook, chunk_size=DEFAULT_CHUNK_SIZE):
    """Index of the nearest code for every vector.

    The distances are computed ``chunk_size`` rows at a time so that no
    ``[N, K]`` matrix is held at once; ``||z||^2`` is dropped because it does
    not change the argmin. Float32 even under autocast. Ties go to the lowest
    index.

    Args:
        z: ``[N, D]`` vectors.
        codebook: ``[K, D]`` codes.
        chunk_size: rows of ``z`` per distance block.

    Returns:
        ``[N]`` torch.long indices in ``[0, K)``.
    """
    _check_vectors(z, codebook)
    _check_chunk_size(chunk_size)
    dtype = torch.promote_types(torch.promote_types(z.dtype, codebook.dtype), torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        codebook = codebook.detach().to(dtype)
        e_sq = codebook.pow(2).sum(dim=1)                        # [K]
        codebook_t = codebook.t()
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, z.shape[0], int(chunk_size)):
            block = z[start:start + int(chunk_size)].detach().to(dtype)
            d = torch.addmm(e_sq, block, codebook_t, alpha=-2.0)   # [n, K]
            out[start:start + block.shape[0]] = d.argmin(dim=1)
    return out


def embed_codes(indices, codebook):
    """Codebook rows for a grid of indices, channel-first.

    Args:
        indices: ``[B, H, W]`` torch.long codes.
        codebook: ``[K, D]`` codes.

    Returns:
        ``[B, D, H, W]`` rows of the codebook (differentiable in the codebook).
    """
    if not isinstance(indices, torch.Tensor) or indices.dim() != 3:
        raise ValueError(f"indices must be a tensor [B, H, W], got {_describe(indices)}")
    if indices.dtype != torch.long:
        raise ValueError(f"indices must be torch.long, got {indices.dtype}")
    if not isinstance(codebook, torch.Tensor) or codebook.dim() != 2:
        raise ValueError(f"codebook must be a tensor [K, D], got {_describe(codebook)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= codebook.shape[0]):
        raise ValueError(
            f"indices must lie in [0, {codebook.shape[0]}), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]")
    return F.embedding(indices, codebook).permute(0, 3, 1, 2)   # [B, H, W, D] -> [B, D, H, W]


def quantize(z_e, codebook, chunk_size=DEFAULT_CHUNK_SIZE):
    """Replace every latent vector by its nearest code.

    Args:
        z_e: ``[B, D, H, W]`` encoder output.
        codebook: ``[K, D]`` codes.
        chunk_size: rows per distance block (see :func:`nearest_code`).

    Returns:
        ``(z_q, indices)``: ``z_q`` ``[B, D, H, W]`` whose every vector is a
        codebook row (gradient reaches the codebook, not ``z_e``), and
        ``indices`` ``[B, H, W]`` torch.long.
    """
    _check_latents(z_e, codebook)
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)                # channels last, then [N, D]
    indices = nearest_code(flat, codebook, chunk_size=chunk_size).view(b, h, w)
    # F.embedding directly: argmin indices are valid by construction, and the
    # range check in embed_codes would cost a device sync every step.
    return F.embedding(indices, codebook).permute(0, 3, 1, 2), indices


def vq_losses(z_e, z_q):
    """The two VQ-VAE loss terms, each a mean over all elements.

    ``codebook_loss = mean ||sg(z_e) - z_q||^2`` moves the codes towards the
    encoder outputs; ``commitment_loss = mean ||z_e - sg(z_q)||^2`` keeps the
    encoder close to its codes. Their values are equal; their gradients go to
    different places. The weight ``beta`` is applied by the caller.

    Args:
        z_e: encoder output, any shape.
        z_q: quantized latents, same shape (not yet passed through
            :func:`straight_through`).

    Returns:
        ``(codebook_loss, commitment_loss)``: two scalar tensors.
    """
    if not isinstance(z_e, torch.Tensor) or not isinstance(z_q, torch.Tensor):
        raise ValueError(f"z_e and z_q must be tensors, got {type(z_e).__name__} "
                         f"and {type(z_q).__name__}")
    if z_e.shape != z_q.shape:
        raise ValueError(f"z_e and z_q must have the same shape, got {_shape(z_e)} "
                         f"and {_shape(z_q)}")
    codebook_loss = F.mse_loss(z_q, z_e.detach())
    commitment_loss = F.mse_loss(z_e, z_q.detach())
    return codebook_loss, commitment_loss


def straight_through(z_e, z_q):
    """Forward the value of ``z_q``, backward the gradient to ``z_e`` unchanged.

    The argmin has no useful gradient, so the decoder's gradient with respect
    to ``z_q`` is copied onto ``z_e`` (Bengio et al., 2013; van den Oord et
    al., 2017). The result equals ``z_q`` up to float round-off.

    Args:
        z_e: encoder output, any shape.
        z_q: quantized latents, same shape.

    Returns:
        A tensor shaped like ``z_q``.
    """
    if not isinstance(z_e, torch.Tensor) or not isinstance(z_q, torch.Tensor):
        raise ValueError(f"z_e and z_q must be tensors, got {type(z_e).__name__} "
                         f"and {type(z_q).__name__}")
    if z_e.shape != z_q.shape:
        raise ValueError(f"z_e and z_q must have the same shape, got {_shape(z_e)} "
                         f"and {_shape(z_q)}")
    return z_e + (z_q - z_e).detach()


def code_usage(indices, num_codes):
    """How often each code is used.

    Args:
        indices: torch.long codes of any shape, values in ``[0, num_codes)``.
        num_codes: ``K``.

    Returns:
        ``[K]`` float32 counts (unused codes count 0).
    """
    if not isinstance(indices, torch.Tensor):
        raise ValueError(f"indices must be a tensor, got {type(indices).__name__}")
    if indices.dtype not in (torch.long, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"indices must be an integer tensor (torch.long), got {indices.dtype}")
    if int(num_codes) != num_codes or num_codes < 1:
        raise ValueError(f"num_codes must be a positive integer, got {num_codes!r}")
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_codes):
        raise ValueError(f"indices must lie in [0, {num_codes}), got values in "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    return torch.bincount(flat, minlength=int(num_codes)).float()


def perplexity(counts):
    """Effective number of codes in use: ``exp(-sum p log p)``, ``p = counts / sum``.

    Equals ``K`` when all codes are used equally and 1 when a single code is
    used. Unused codes contribute 0 (``0 log 0 = 0``); all-zero counts give 1.

    Args:
        counts: ``[K]`` non-negative counts (e.g. from :func:`code_usage`).

    Returns:
        A scalar float tensor.
    """
    if not isinstance(counts, torch.Tensor) or counts.dim() != 1:
        raise ValueError(f"counts must be a tensor [K], got {_describe(counts)}")
    counts = counts.float() if not counts.is_floating_point() else counts
    p = counts / counts.sum().clamp_min(torch.finfo(counts.dtype).tiny)
    entropy = -torch.special.xlogy(p, p).sum()
    return entropy.exp()


class VectorQuantizer(nn.Module):
    """The VQ-VAE bottleneck (van den Oord et al., 2017).

    ``z_q = straight_through(z_e, quantize(z_e, codebook))`` with the loss
    ``codebook_loss + beta * commitment_loss``.

    The codebook starts uniform in ``(-1/K, 1/K)``, the initialisation of the
    widely used PyTorch port of the paper's Sonnet example: codes start close
    together near the origin, so early encoder outputs spread over many of
    them.

    Args:
        num_codes: ``K``, the number of codes.
        code_dim: ``D``, the size of each code (the encoder's channels).
        beta: weight of the commitment loss (0.25 in the paper).
        chunk_size: rows per distance block when finding the nearest codes.

    Shapes:
        ``forward(z_e)``: ``z_e`` ``[B, D, H, W]`` -> ``(z_q, loss, info)`` with
        ``z_q`` ``[B, D, H, W]``, ``loss`` a scalar and ``info`` a dict of
        ``indices`` ``[B, H, W]``, ``perplexity`` (scalar), ``usage``
        (``[K]`` counts), ``codebook_loss`` and ``commitment_loss``
        (detached scalars, for logging).
    """

    def __init__(self, num_codes, code_dim, beta=0.25, chunk_size=DEFAULT_CHUNK_SIZE):
        super().__init__()
        if int(num_codes) != num_codes or num_codes < 1:
            raise ValueError(f"num_codes must be a positive integer, got {num_codes!r}")
        if int(code_dim) != code_dim or code_dim < 1:
            raise ValueError(f"code_dim must be a positive integer, got {code_dim!r}")
        _check_chunk_size(chunk_size)
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.chunk_size = int(chunk_size)
        self.codebook = nn.Parameter(
            torch.empty(self.num_codes, self.code_dim).uniform_(-1.0 / self.num_codes,
                                                                1.0 / self.num_codes))

    def extra_repr(self):
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}"

    def forward(self, z_e):
        z_q, indices = quantize(z_e, self.codebook, chunk_size=self.chunk_size)
        codebook_loss, commitment_loss = vq_losses(z_e, z_q)
        loss = codebook_loss + self.beta * commitment_loss
        usage = code_usage(indices, self.num_codes)
        info = {
            "indices": indices,
            "perplexity": perplexity(usage),
            "usage": usage,
            "codebook_loss": codebook_loss.detach(),
            "commitment_loss": commitment_loss.detach(),
        }
        return straight_through(z_e, z_q), loss, info

    def lookup(self, indices):
        """``[B, H, W]`` indices -> ``[B, D, H, W]`` codes (to decode sampled codes)."""
        return embed_codes(indices, self.codebook)

    embed_codes = lookup
