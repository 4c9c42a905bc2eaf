"""Reference vector quantization: what the learner builds in ``01_vqvae``.

Later phases import these instead of the learner's earlier answers, so a
mistake in one notebook never breaks the next one. Shapes follow the course
conventions: latents are channel-first ``[B, D, H, W]``, the quantizer math
works on flattened vectors ``[N, D]``, codebooks are ``[K, D]`` and indices
are ``torch.long``.

Distances and indices are always computed in float32 (autocast is switched
off around them): in bfloat16 two codes a few percent apart already look
equally near, and the argmin would pick among them at random.

Phase ``02_stable_vq`` adds what keeps every code in use: :func:`ema_update`
(the EMA codebook with Laplace smoothing), :func:`kmeans_init`,
:func:`dead_codes` and :func:`reset_dead_codes` (restarts), the entropy
regulariser :func:`codebook_entropy_loss`, and :class:`EMAVectorQuantizer`,
the quantizer later phases and the benchmarks train with.

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
    "ema_update", "kmeans_init", "dead_codes", "reset_dead_codes", "codebook_entropy_loss",
    "EMAVectorQuantizer",
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


# --------------------------------------------------------------------------
# 02_stable_vq: EMA codebook updates, k-means initialisation, dead-code
# restarts and the entropy regulariser. Used by ``EMAVectorQuantizer`` and by
# every later phase that needs a quantizer whose codes all stay in use.

def _check_number(value, name, low=None, high=None):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number != number or (low is not None and number < low) or \
            (high is not None and number > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return number


def _check_statistics(cluster_size, embed_sum):
    if not isinstance(cluster_size, torch.Tensor) or cluster_size.dim() != 1:
        raise ValueError(f"cluster_size must be a tensor [K], got {_describe(cluster_size)}")
    if not isinstance(embed_sum, torch.Tensor) or embed_sum.dim() != 2 or \
            embed_sum.shape[0] != cluster_size.shape[0]:
        raise ValueError(
            f"embed_sum must be a tensor [K, D] with K={cluster_size.shape[0]} (the length of "
            f"cluster_size), got {_describe(embed_sum)}")


def _check_flat_indices(indices, n):
    if not isinstance(indices, torch.Tensor) or indices.dim() != 1 or indices.shape[0] != n:
        raise ValueError(f"indices must be a tensor [N] with N={n} (one per row of z), "
                         f"got {_describe(indices)}")
    if indices.dtype != torch.long:
        raise ValueError(f"indices must be torch.long, got {indices.dtype}")


def _stat_dtype(*tensors):
    """float32, or float64 when an input is float64: the precision of codebook statistics."""
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _randperm(n, generator, device):
    """``torch.randperm(n)`` drawn from ``generator`` (on its own device), moved to ``device``."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


@torch.no_grad()
def ema_update(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    """One exponential-moving-average step of the codebook (VQ-VAE appendix; Razavi et al. 2019).

    Each code keeps two running statistics: ``N_k``, how many vectors it was
    assigned (a moving average of the per-batch counts ``n_k``), and ``M_k``,
    the sum of those vectors. The code is their ratio, the running mean of
    its vectors: an online k-means step that needs no gradient and no
    learning rate::

        N_k <- decay * N_k + (1 - decay) * n_k
        M_k <- decay * M_k + (1 - decay) * sum_{i: indices_i = k} z_i
        e_k  = M_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j

    ``N~`` is ``N`` with Laplace (add-``eps``) smoothing, rescaled to the same
    total: it keeps ``e_k`` finite for a code whose count has decayed to 0.

    The inputs are left untouched; the results are new tensors without
    gradient, in float32 (float64 if a statistic is float64) even under
    autocast. ``sum_j N_j`` must be positive (it is, once one batch has been
    counted or when the counts start at 1).

    Args:
        cluster_size: ``[K]`` running counts ``N``.
        embed_sum: ``[K, D]`` running sums ``M``.
        z: ``[N, D]`` this batch's encoder outputs.
        indices: ``[N]`` torch.long, the code assigned to each row of ``z``.
        decay: ``gamma`` in ``[0, 1]`` (0.99 in the paper): the weight of the past.
        eps: Laplace smoothing ``epsilon >= 0``.

    Returns:
        ``(cluster_size [K], embed_sum [K, D], codebook [K, D])``, the updated
        statistics and the codebook they define.
    """
    _check_statistics(cluster_size, embed_sum)
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z must be a tensor [N, D], got {_describe(z)}")
    if z.shape[1] != embed_sum.shape[1]:
        raise ValueError(f"z [N, D] and embed_sum [K, D] must share D, got z {_shape(z)} "
                         f"and embed_sum {_shape(embed_sum)}")
    _check_flat_indices(indices, z.shape[0])
    decay = _check_number(decay, "decay", 0.0, 1.0)
    eps = _check_number(eps, "eps", 0.0)
    k = cluster_size.shape[0]
    dtype = _stat_dtype(cluster_size, embed_sum, z)
    with torch.autocast(z.device.type, enabled=False):
        counts = torch.bincount(indices, minlength=k)
        if counts.shape[0] != k:
            raise ValueError(f"indices must lie in [0, K) = [0, {k}), got values up to "
                             f"{counts.shape[0] - 1}")
        sums = torch.zeros(k, z.shape[1], dtype=dtype, device=z.device)
        sums.index_add_(0, indices, z.detach().to(dtype))                # sum of z_i per code
        new_size = cluster_size.to(dtype) * decay + counts.to(dtype) * (1.0 - decay)
        new_sum = embed_sum.to(dtype) * decay + sums * (1.0 - decay)
        total = new_size.sum()
        smoothed = (new_size + eps) / (total + k * eps) * total
        codebook = new_sum / smoothed.clamp_min(torch.finfo(dtype).tiny).unsqueeze(1)
    return new_size, new_sum, codebook


@torch.no_grad()
def kmeans_init(z, num_codes, iters=10, generator=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """A codebook fitted by k-means to a sample of encoder outputs.

    Starts with k-means++ (Arthur and Vassilvitskii, 2007: each new code is a
    row of ``z`` drawn with probability proportional to its squared distance
    to the nearest code already chosen), then runs ``iters`` Lloyd iterations
    (assign every row to its nearest code, move every code to the mean of its
    rows). A code left with no row is re-seeded with a random row of ``z``,
    so no code starts dead. With fewer distinct rows than codes some codes
    repeat. Distances are float32 and chunked (:func:`nearest_code`).

    Args:
        z: ``[N, D]`` vectors, e.g. the flattened encoder outputs of a batch.
        num_codes: ``K``.
        iters: Lloyd iterations (0: the k-means++ start alone).
        generator: a ``torch.Generator`` for the random draws (default: the
            global generator).
        chunk_size: rows per distance block.

    Returns:
        ``[K, D]`` codebook, float32 (float64 for float64 ``z``), on ``z``'s device.
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] == 0:
        raise ValueError(f"z must be a non-empty tensor [N, D], got {_describe(z)}")
    if int(num_codes) != num_codes or num_codes < 1:
        raise ValueError(f"num_codes must be a positive integer, got {num_codes!r}")
    if int(iters) != iters or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    _check_chunk_size(chunk_size)
    k, n = int(num_codes), z.shape[0]
    with torch.autocast(z.device.type, enabled=False):
        z = z.detach().to(_stat_dtype(z))
        codebook = _kmeans_plus_plus(z, k, generator)
        for _ in range(int(iters)):
            indices = nearest_code(z, codebook, chunk_size=chunk_size)
            counts = torch.bincount(indices, minlength=k).to(z.dtype)
            sums = torch.zeros_like(codebook).index_add_(0, indices, z)
            empty = counts == 0
            codebook = torch.where(empty[:, None], codebook, sums / counts.clamp_min(1)[:, None])
            n_empty = int(empty.sum())
            if n_empty:
                rows = _randperm(n, generator, z.device)
                rows = rows[:n_empty] if n_empty <= n else rows[torch.arange(n_empty, device=rows.device) % n]
                codebook[empty] = z[rows]
    return codebook


def _kmeans_plus_plus(z, k, generator):
    """``[k, D]`` rows of ``z`` picked by D^2 sampling (uniform once every distance is 0)."""
    device = generator.device if generator is not None else z.device
    n = z.shape[0]
    picks = torch.empty(k, dtype=torch.long, device=z.device)
    first = torch.randint(n, (1,), generator=generator, device=device)
    picks[0] = first.to(z.device)[0]
    nearest = (z - z[picks[0]]).pow(2).sum(1)                       # [N] d^2 to the chosen codes
    for j in range(1, k):
        weights = nearest.to(device)
        if not bool(weights.sum() > 0):            # every row is already a code: repeat some
            weights = torch.ones_like(weights)
        picks[j] = torch.multinomial(weights, 1, generator=generator).to(z.device)[0]
        nearest = torch.minimum(nearest, (z - z[picks[j]]).pow(2).sum(1))
    return z[picks].clone()


def dead_codes(cluster_size, threshold):
    """Which codes are dead: those whose (moving-average) count is below ``threshold``.

    Args:
        cluster_size: ``[K]`` counts, e.g. the EMA counts ``N`` of :func:`ema_update`.
        threshold: a number; a code with ``cluster_size < threshold`` is dead.

    Returns:
        ``[K]`` torch.bool mask.
    """
    if not isinstance(cluster_size, torch.Tensor) or cluster_size.dim() != 1:
        raise ValueError(f"cluster_size must be a tensor [K], got {_describe(cluster_size)}")
    return cluster_size < _check_number(threshold, "threshold")


@torch.no_grad()
def reset_dead_codes(codebook, cluster_size, embed_sum, dead, z, generator=None):
    """Restart dead codes on random encoder outputs (Jukebox, Dhariwal et al. 2020).

    Each dead code takes a different row of ``z``, drawn at random without
    replacement (with more dead codes than rows, a random subset of the dead
    codes takes every row once). Its statistics restart with it: count 1 and
    sum equal to its new vector, so the next :func:`ema_update` keeps it there
    instead of dragging it back to its old mean. Live codes, and dead codes
    left without a row, are untouched. The inputs are not modified.

    Args:
        codebook: ``[K, D]`` codes.
        cluster_size: ``[K]`` EMA counts.
        embed_sum: ``[K, D]`` EMA sums.
        dead: ``[K]`` torch.bool, True for the codes to restart (:func:`dead_codes`).
        z: ``[N, D]`` candidate vectors (the batch's encoder outputs).
        generator: a ``torch.Generator`` for the draws (default: the global one).

    Returns:
        New ``(codebook [K, D], cluster_size [K], embed_sum [K, D])``.
    """
    _check_vectors(z, codebook)
    _check_statistics(cluster_size, embed_sum)
    if cluster_size.shape[0] != codebook.shape[0] or embed_sum.shape != codebook.shape:
        raise ValueError(
            f"codebook [K, D], cluster_size [K] and embed_sum [K, D] must agree, got "
            f"{_shape(codebook)}, {_shape(cluster_size)} and {_shape(embed_sum)}")
    if not isinstance(dead, torch.Tensor) or dead.dtype != torch.bool or \
            _shape(dead) != _shape(cluster_size):
        raise ValueError(f"dead must be a torch.bool tensor [K] with K={codebook.shape[0]}, "
                         f"got {_describe(dead)}" + (f" of dtype {dead.dtype}"
                                                      if isinstance(dead, torch.Tensor) else ""))
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().squeeze(1)
    n = min(which.shape[0], z.shape[0])
    if n == 0:
        return codebook, cluster_size, embed_sum
    if n < which.shape[0]:
        which = which[_randperm(which.shape[0], generator, which.device)[:n]]
    rows = z.detach()[_randperm(z.shape[0], generator, z.device)[:n]]
    codebook[which] = rows.to(codebook.dtype)
    cluster_size[which] = 1.0
    embed_sum[which] = rows.to(embed_sum.dtype)
    return codebook, cluster_size, embed_sum


def codebook_entropy_loss(distances, tau=1.0):
    """Entropy regulariser of the codebook: confident assignments, every code used.

    With soft assignments ``p_n = softmax(-d_n / tau)`` over the ``K`` codes,
    the loss is ``mean_n H(p_n) - H(mean_n p_n)`` (entropies in nats). The
    first term is low when each vector is clearly nearest to one code; the
    second is high when, over the batch, all codes are used equally. Its
    minimum, ``-log K``, is reached by confident assignments spread evenly
    over the codes. Computed in float32 under autocast, stable for large
    distances (log-softmax, ``0 log 0 = 0``), differentiable in ``distances``.

    Args:
        distances: ``[N, K]`` squared distances (:func:`pairwise_sq_distances`).
        tau: temperature ``> 0`` of the soft assignment.

    Returns:
        A scalar tensor in ``[-log K, log K]``.
    """
    if not isinstance(distances, torch.Tensor) or distances.dim() != 2 or \
            distances.shape[0] == 0 or distances.shape[1] == 0:
        raise ValueError(f"distances must be a non-empty tensor [N, K], got {_describe(distances)}")
    tau = _check_number(tau, "tau", 0.0)
    if tau == 0:
        raise ValueError("tau must be > 0, got 0")
    with torch.autocast(distances.device.type, enabled=False):
        logits = -distances.to(_stat_dtype(distances)) / tau
        log_p = F.log_softmax(logits, dim=1)                                # [N, K]
        p = log_p.exp()
        sample_entropy = -(p * log_p).sum(dim=1).mean()
        avg = p.mean(dim=0)                                                 # [K]
        codebook_entropy = -(avg * avg.clamp_min(torch.finfo(avg.dtype).tiny).log()).sum()
        return sample_entropy - codebook_entropy


class EMAVectorQuantizer(nn.Module):
    """The VQ-VAE bottleneck with an EMA codebook and, optionally, dead-code restarts.

    The codebook is not trained by gradient: in training mode each forward
    pass moves every code to the running mean of the encoder outputs assigned
    to it (:func:`ema_update`, VQ-VAE appendix; Razavi et al. 2019), then,
    with ``dead_threshold`` set, restarts the codes whose running count fell
    below it on random outputs of the batch (:func:`reset_dead_codes`; the
    Jukebox recipe). With ``kmeans_init`` the first training batch also fits
    the codebook by k-means (:func:`kmeans_init`). In eval mode nothing
    changes. The only loss is ``beta * commitment_loss``; the returned ``z_q``
    is quantized with the codebook as it was before this call's update.

    The codebook and its statistics are buffers (saved in ``state_dict``, no
    gradient, no optimizer state): ``codebook`` ``[K, D]`` (initialised from a
    standard normal), ``cluster_size`` ``[K]`` (starts at 1) and ``embed_sum``
    ``[K, D]`` (starts equal to the codebook), so ``embed_sum / cluster_size``
    is the codebook from the start and codes unused early on stay in place.

    Args:
        num_codes: ``K``.
        code_dim: ``D``.
        beta: weight of the commitment loss.
        decay: EMA decay ``gamma`` (0.99 in the paper).
        eps: Laplace smoothing of the counts.
        dead_threshold: restart codes whose EMA count (uses per batch) falls
            below this; ``None`` never restarts.
        kmeans_init: fit the codebook by k-means to the first training batch.
        kmeans_iters: Lloyd iterations of that fit.
        chunk_size: rows per distance block when finding the nearest codes.

    Shapes:
        ``forward(z_e)``: ``z_e`` ``[B, D, H, W]`` -> ``(z_q, loss, info)``:
        ``z_q`` ``[B, D, H, W]`` (straight-through), ``loss`` a scalar, ``info``
        with ``indices`` ``[B, H, W]``, ``perplexity``, ``usage`` ``[K]``
        counts, ``commitment_loss`` (detached) and ``restarted``, the number
        of codes restarted by this call (0 in eval mode).
    """

    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None,
                 kmeans_init=False, kmeans_iters=10, chunk_size=DEFAULT_CHUNK_SIZE):
        super().__init__()
        if int(num_codes) != num_codes or num_codes < 1:
            raise ValueError(f"num_codes must be a positive integer, got {num_codes!r}")
        if int(code_dim) != code_dim or code_dim < 1:
            raise ValueError(f"code_dim must be a positive integer, got {code_dim!r}")
        if int(kmeans_iters) != kmeans_iters or kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be a non-negative integer, got {kmeans_iters!r}")
        _check_chunk_size(chunk_size)
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.beta = _check_number(beta, "beta", 0.0)
        self.decay = _check_number(decay, "decay", 0.0, 1.0)
        self.eps = _check_number(eps, "eps", 0.0)
        self.dead_threshold = (None if dead_threshold is None
                               else _check_number(dead_threshold, "dead_threshold", 0.0))
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = int(kmeans_iters)
        self.chunk_size = int(chunk_size)
        codebook = torch.randn(self.num_codes, self.code_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(self.num_codes))
        self.register_buffer("embed_sum", codebook.clone())
        # saved with the model, so a restored checkpoint is not re-initialised
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))

    def extra_repr(self):
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, "
                f"decay={self.decay}, eps={self.eps}, dead_threshold={self.dead_threshold}, "
                f"kmeans_init={self.kmeans_init}")

    @torch.no_grad()
    def init_codebook(self, codebook):
        """Set the codebook ``[K, D]`` and restart its statistics (count 1, sum = the code)."""
        if not isinstance(codebook, torch.Tensor) or _shape(codebook) != _shape(self.codebook):
            raise ValueError(f"codebook must be a tensor [K, D] = {_shape(self.codebook)}, "
                             f"got {_describe(codebook)}")
        self.codebook.copy_(codebook)
        self.cluster_size.fill_(1.0)
        self.embed_sum.copy_(self.codebook)
        self.initialized.fill_(True)

    def forward(self, z_e):
        _check_latents(z_e, self.codebook)
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)                     # [N, D], channels last
        if self.kmeans_init and self.training and not bool(self.initialized):
            self.init_codebook(kmeans_init(flat, self.num_codes, self.kmeans_iters,
                                           chunk_size=self.chunk_size))
        indices = nearest_code(flat, self.codebook, chunk_size=self.chunk_size)   # [N]
        z_q = F.embedding(indices, self.codebook).view(b, h, w, d).permute(0, 3, 1, 2)
        z_q = z_q.to(torch.promote_types(z_q.dtype, z_e.dtype))          # float32 under autocast
        commitment_loss = F.mse_loss(z_e.to(z_q.dtype), z_q)
        usage = torch.bincount(indices, minlength=self.num_codes).float()
        restarted = torch.zeros((), dtype=torch.long, device=z_e.device)
        if self.training:
            restarted = self._update(flat, indices)
        info = {
            "indices": indices.view(b, h, w),
            "perplexity": perplexity(usage),
            "usage": usage,
            "commitment_loss": commitment_loss.detach(),
            "restarted": restarted,
        }
        return straight_through(z_e, z_q), self.beta * commitment_loss, info

    @torch.no_grad()
    def _update(self, flat, indices):
        """EMA step on this batch, then restarts; returns how many codes restarted."""
        flat = flat.detach()
        cluster_size, embed_sum, codebook = ema_update(
            self.cluster_size, self.embed_sum, flat, indices, self.decay, self.eps)
        restarted = torch.zeros((), dtype=torch.long, device=flat.device)
        if self.dead_threshold is not None:
            dead = dead_codes(cluster_size, self.dead_threshold)
            restarted = dead.sum().clamp(max=flat.shape[0])
            codebook, cluster_size, embed_sum = reset_dead_codes(
                codebook, cluster_size, embed_sum, dead, flat)
        self.cluster_size.copy_(cluster_size)
        self.embed_sum.copy_(embed_sum)
        self.codebook.copy_(codebook)
        return restarted

    def lookup(self, indices):
        """``[B, H, W]`` indices -> ``[B, D, H, W]`` codes (to decode sampled codes)."""
        return embed_codes(indices, self.codebook)

    embed_codes = lookup
