"""Codebook-free quantization: what the learner builds in ``06_fsq_lfq``.

- **FSQ**, finite scalar quantization (Mentzer et al. 2023, arXiv:2309.15505):
  bound each of ``d`` dimensions to ``L_i`` levels, round, rescale to
  ``[-1, 1]``. The codebook is the implicit grid of ``prod(L_i)`` points.
- **LFQ**, lookup-free quantization (MAGVIT-2, Yu et al. 2023, arXiv:2310.05737):
  the sign of each of ``d`` dimensions; the codebook is ``{-1, +1}^d``, kept in
  use by an entropy penalty.

Conventions (the same as vector-quantize-pytorch's ``FSQ`` and ``LFQ``, so
indices can be exchanged with it):

- ``levels`` is a list of ints ``>= 2``, one per dimension of the last axis.
  With ``h = (L - 1)(1 + 1e-3) / 2``, ``offset = 1/2`` for even ``L`` (0 for
  odd) and ``shift = atanh(offset / h)``, :func:`fsq_bound` is
  ``tanh(z + shift) * h - offset``; rounding it gives the ``L`` integers
  ``-(L // 2) .. L - L // 2 - 1``, and :func:`fsq_quantize` divides them by
  ``L // 2``: ``L = 5`` gives ``{-1, -1/2, 0, 1/2, 1}``, ``L = 4`` gives
  ``{-1, -1/2, 0, 1/2}``.
- FSQ indices are mixed-radix with the **first dimension least significant**:
  digit ``q_i = code_i * (L_i // 2) + L_i // 2`` in ``[0, L_i)`` and
  ``index = sum_i q_i * basis_i`` with ``basis = cumprod([1] + levels[:-1])``.
- LFQ indices are binary with the **first dimension most significant**:
  ``index = sum_i 2^(d - 1 - i) [c_i > 0]``.

The quantizer math runs in float32 (float64 for float64 input) with autocast
off: in bfloat16 the rounding boundaries of FSQ move, and codes would change
with the precision of the surrounding model.

:class:`FSQ` and :class:`LFQ` are drop-in bottlenecks for
:class:`dvl_helpers.models.VQVAE`: ``forward(z_e)`` maps channel-first
``[B, D, ...]`` to ``(z_q, loss, info)`` like
:class:`dvl_helpers.quantizers.VectorQuantizer`, with ``info["indices"]``,
``info["perplexity"]`` and ``info["usage"]``.

Used in: ``06_fsq_lfq`` (the reference behind the checks' examples and the
benchmarks), ``07_modern_tokenizers`` and ``08_priors`` (codebook-free tokenizers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import perplexity

__all__ = [
    "fsq_bound", "round_ste", "fsq_quantize", "fsq_codes_to_indices", "fsq_indices_to_codes",
    "fsq_basis", "lfq_quantize", "lfq_codes_to_indices", "lfq_indices_to_codes",
    "lfq_entropy_loss", "FSQ", "LFQ", "Standardized",
]

#: The paper's levels for codebooks of about ``2^bits`` codes (Mentzer et al. 2023, Table 1).
RECOMMENDED_LEVELS = {
    8: (8, 6, 5), 10: (8, 5, 5, 5), 12: (7, 5, 5, 5, 5), 14: (8, 8, 8, 6, 5), 16: (8, 8, 8, 5, 5, 5),
}

#: Largest ``d`` for LFQ indices (they must fit a signed 64-bit integer).
MAX_LFQ_BITS = 62


# --------------------------------------------------------------------------- validation

def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_levels(levels):
    """``levels`` as a tuple of ints >= 2 (a list, tuple or 1-D integer tensor)."""
    if isinstance(levels, torch.Tensor):
        if levels.dim() != 1 or levels.is_floating_point():
            raise ValueError(f"levels must be a list of ints, got {_describe(levels)} "
                             f"of dtype {levels.dtype}")
        levels = levels.tolist()
    try:
        values = tuple(int(n) for n in levels)
    except (TypeError, ValueError):
        raise ValueError(f"levels must be a list of ints, got {levels!r}") from None
    if not values or any(n < 2 or n != m for n, m in zip(values, levels)):
        raise ValueError(f"levels must be a non-empty list of ints >= 2, got {list(levels)}")
    return values


def _check_last_dim(x, name, d, what):
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"{name} must be a tensor [..., {what}], got {_describe(x)}")
    if x.shape[-1] != d:
        raise ValueError(f"{name} must have {what} = {d} entries in its last dimension, "
                         f"got shape {tuple(x.shape)}")


def _check_float(x, name):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {_describe(x)}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))


def _check_indices(indices):
    if not isinstance(indices, torch.Tensor):
        raise ValueError(f"indices must be a torch.long tensor, got {_describe(indices)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor (torch.long), got {indices.dtype}")


def _work_dtype(x):
    """float32, or float64 for float64 input: the precision of the quantizer math."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _level_tensors(levels, device):
    """``(L, basis)`` as int64 tensors ``[d]`` on ``device``."""
    lv = torch.tensor(levels, dtype=torch.long, device=device)
    return lv, fsq_basis(levels, device=device)


def fsq_basis(levels, device=None):
    """The mixed-radix place values ``cumprod([1] + levels[:-1])`` (int64 ``[d]``).

    The first dimension is the least significant digit: with ``levels = [4, 3, 5]``
    the basis is ``[1, 4, 12]``.
    """
    levels = _check_levels(levels)
    return torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], dtype=torch.long,
                        device=device)


# --------------------------------------------------------------------------- FSQ

def _bound(z, lv, eps):
    """:func:`fsq_bound` with the levels as a tensor ``lv`` [d] already on ``z``'s device."""
    lvf = lv.to(z.dtype)
    half = (lvf - 1) * (1 + eps) / 2
    offset = (lv % 2 == 0).to(z.dtype) * 0.5
    shift = torch.atanh(offset / half)
    return torch.tanh(z + shift) * half - offset


def _quantize(z, lv, eps):
    half_width = (lv // 2).to(z.dtype)
    return round_ste(_bound(z, lv, eps)) / half_width


def _codes_to_indices(codes, lv, basis):
    half_width = lv // 2
    # float32 first: bfloat16 codes such as 1/3 are off by 2^-9, rounding absorbs it
    digits = torch.round(codes.to(_work_dtype(codes)) * half_width + half_width).long()
    return (digits * basis).sum(dim=-1)


def _indices_to_codes(indices, lv, basis, dtype=torch.float32):
    half_width = lv // 2
    digits = torch.div(indices.long().unsqueeze(-1), basis, rounding_mode="floor") % lv
    return (digits - half_width).to(dtype) / half_width.to(dtype)


def fsq_bound(z, levels, eps=1e-3):
    """Squash every dimension so that rounding yields exactly ``L`` values.

    ``tanh(z + shift) * h - offset`` with ``h = (L - 1)(1 + eps) / 2``,
    ``offset = 1/2`` for even ``L`` and 0 for odd ``L``, ``shift = atanh(offset / h)``
    (so that ``z = 0`` maps to 0). The range is ``(-h - offset, h - offset)``: for odd
    ``L`` rounding gives ``-(L-1)/2 .. (L-1)/2``; for even ``L`` the range is moved down
    half a step and rounding gives ``-L/2 .. L/2 - 1``. The factor ``1 + eps`` lets the
    end levels be reached at a finite ``z`` and keeps ``atanh`` finite for ``L = 2``.

    Args:
        z: float tensor ``[..., d]``.
        levels: ``d`` ints ``>= 2``.
        eps: the margin ``1e-3`` of the paper's code.

    Returns:
        Float32 (float64 for float64 ``z``) tensor ``[..., d]``, differentiable.
    """
    levels = _check_levels(levels)
    _check_float(z, "z")
    _check_last_dim(z, "z", len(levels), "d = len(levels)")
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(_work_dtype(z))
        return _bound(z, torch.tensor(levels, device=z.device), eps)


def round_ste(z):
    """``round(z)`` forward, identity gradient (straight-through).

    Args:
        z: float tensor, any shape.

    Returns:
        A tensor of ``z``'s shape holding ``torch.round(z)`` whose gradient with respect
        to ``z`` is the incoming gradient unchanged.
    """
    _check_float(z, "z")
    return z + (torch.round(z) - z).detach()


def fsq_quantize(z, levels, eps=1e-3):
    """FSQ codes: ``round_ste(fsq_bound(z, levels)) / (L // 2)``.

    ``L = 5`` gives values in ``{-1, -1/2, 0, 1/2, 1}``; ``L = 4`` in
    ``{-1, -1/2, 0, 1/2}``. The gradient passes straight through the rounding.

    Args:
        z: float tensor ``[..., d]``.
        levels: ``d`` ints ``>= 2``.

    Returns:
        Float32 (float64 for float64 ``z``) codes ``[..., d]`` in ``[-1, 1]``.
    """
    levels = _check_levels(levels)
    _check_float(z, "z")
    _check_last_dim(z, "z", len(levels), "d = len(levels)")
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(_work_dtype(z))
        return _quantize(z, torch.tensor(levels, device=z.device), eps)


def fsq_codes_to_indices(codes, levels):
    """Indices of FSQ codes in the implicit codebook (mixed radix, first dimension least significant).

    ``q_i = code_i * (L_i // 2) + L_i // 2`` is the digit of dimension ``i`` in
    ``[0, L_i)``; ``index = sum_i q_i * prod_{j < i} L_j``. Exact for every code, also for
    bfloat16 codes (they are converted to float32 and rounded to the nearest digit).
    The same numbering as vector-quantize-pytorch's ``FSQ.codes_to_indices``.

    Args:
        codes: float tensor ``[..., d]`` of values produced by :func:`fsq_quantize`.
        levels: ``d`` ints ``>= 2``.

    Returns:
        ``[...]`` torch.long indices in ``[0, prod(levels))``.
    """
    levels = _check_levels(levels)
    _check_float(codes, "codes")
    _check_last_dim(codes, "codes", len(levels), "d = len(levels)")
    lv, basis = _level_tensors(levels, codes.device)
    with torch.autocast(codes.device.type, enabled=False):
        return _codes_to_indices(codes.detach(), lv, basis)


def fsq_indices_to_codes(indices, levels):
    """The FSQ codes ``[..., d]`` (float32) of indices ``[...]``: the inverse of :func:`fsq_codes_to_indices`.

    Digit ``q_i = (index // prod_{j < i} L_j) % L_i``, code ``(q_i - L_i // 2) / (L_i // 2)``.

    Args:
        indices: integer tensor ``[...]`` with values in ``[0, prod(levels))``.
        levels: ``d`` ints ``>= 2``.
    """
    levels = _check_levels(levels)
    _check_indices(indices)
    lv, basis = _level_tensors(levels, indices.device)
    return _indices_to_codes(indices, lv, basis)


# --------------------------------------------------------------------------- LFQ

def lfq_quantize(z):
    """``+1`` where ``z > 0``, ``-1`` elsewhere (zero included), with a straight-through gradient.

    ``torch.sign`` would map 0 to 0, a value outside the codebook ``{-1, +1}^d``.

    Args:
        z: float tensor, any shape.

    Returns:
        A tensor of ``z``'s shape and dtype with values ``+-1``; its gradient with
        respect to ``z`` is the incoming gradient unchanged.
    """
    _check_float(z, "z")
    codes = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    return z + (codes - z).detach()


def _bit_weights(d, device):
    return 2 ** torch.arange(d - 1, -1, -1, device=device, dtype=torch.long)


def lfq_codes_to_indices(codes):
    """``sum_i 2^(d-1-i) [c_i > 0]``: the index of LFQ codes (first dimension most significant).

    Args:
        codes: tensor ``[..., d]`` (``d <= 62``) of ``+-1`` (only the sign is read).

    Returns:
        ``[...]`` torch.long indices in ``[0, 2^d)``.
    """
    if not isinstance(codes, torch.Tensor) or codes.dim() < 1:
        raise ValueError(f"codes must be a tensor [..., d], got {_describe(codes)}")
    d = codes.shape[-1]
    if not 1 <= d <= MAX_LFQ_BITS:
        raise ValueError(f"codes must have 1 to {MAX_LFQ_BITS} entries in the last dimension, "
                         f"got shape {tuple(codes.shape)}")
    return ((codes.detach() > 0).long() * _bit_weights(d, codes.device)).sum(dim=-1)


def lfq_indices_to_codes(indices, dim):
    """The LFQ codes ``[..., dim]`` (float32 ``+-1``) of indices ``[...]``: the inverse of :func:`lfq_codes_to_indices`.

    Args:
        indices: integer tensor ``[...]`` with values in ``[0, 2^dim)``.
        dim: ``d``, the number of bits.
    """
    _check_indices(indices)
    if int(dim) != dim or not 1 <= dim <= MAX_LFQ_BITS:
        raise ValueError(f"dim must be an integer in [1, {MAX_LFQ_BITS}], got {dim!r}")
    shifts = torch.arange(int(dim) - 1, -1, -1, device=indices.device, dtype=torch.long)
    bits = (indices.long().unsqueeze(-1) >> shifts) & 1
    return bits.float() * 2 - 1


def _bit_products(p0, p1):
    """``[N, 2^k]`` products ``prod_i p_{n,i}(c_i)`` over all sign patterns, first bit most significant.

    ``p0``, ``p1``: ``[N, k]`` probabilities of ``-1`` and ``+1`` per bit. Built one bit at a
    time by outer products (k steps, not a loop over codes or rows).
    """
    out = p0.new_ones(p0.shape[0], 1)
    for i in range(p0.shape[1]):
        out = torch.stack((out * p0[:, i:i + 1], out * p1[:, i:i + 1]), dim=2).flatten(1)
    return out


def lfq_entropy_loss(z, tau=0.01, gamma=1.0):
    """The LFQ entropy penalty ``mean_n H(p_n) - gamma * H(mean_n p_n)``.

    ``p_n`` is the softmax over all ``2^d`` codes ``c in {-1, +1}^d`` of
    ``-||z_n - c||^2 / tau``. The first term asks every vector to be confidently
    near one code; the second asks the batch to spread over all codes.

    Computed without the ``[N, 2^d]`` matrix: ``-||z - c||^2`` is a sum over
    dimensions, so ``p_n`` is a product of independent bits with
    ``P(c_i = +1) = sigmoid(4 z_i / tau)``. ``H(p_n)`` is then the sum of the bits'
    entropies (``[N, d]``), and ``mean_n p_n``, reshaped ``[2^a, 2^b]`` (``a + b = d``,
    the first ``a`` bits most significant), is the matrix product ``P_a^T P_b / N`` of
    the per-row probabilities of the first ``a`` and the last ``b`` bits
    (``[N, 2^a]`` and ``[N, 2^b]``). Memory ``O(N 2^(d/2) + 2^d)``, exact.

    Args:
        z: float tensor ``[N, d]`` (the values before :func:`lfq_quantize`), ``N >= 1``.
        tau: softmax temperature (0.01: the ``inv_temperature = 100`` of MAGVIT-2 ports).
        gamma: weight of the codebook entropy.

    Returns:
        A scalar float32 (float64 for float64 ``z``) tensor, differentiable in ``z``;
        its minimum is ``-gamma * d * log 2`` (confident and uniform).
    """
    _check_float(z, "z")
    if z.dim() != 2 or z.shape[0] == 0 or not 1 <= z.shape[1] <= 30:
        raise ValueError(f"z must be a tensor [N, d] with N >= 1 and 1 <= d <= 30, "
                         f"got {_describe(z)}")
    if not float(tau) > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(_work_dtype(z))
        logit = 4.0 * z / tau                                   # log P(+1) - log P(-1) per bit
        log_p1, log_p0 = F.logsigmoid(logit), F.logsigmoid(-logit)
        p1, p0 = log_p1.exp(), log_p0.exp()
        per_sample = -(p1 * log_p1 + p0 * log_p0).sum(dim=1).mean()
        a = z.shape[1] // 2
        hi, lo = _bit_products(p0[:, :a], p1[:, :a]), _bit_products(p0[:, a:], p1[:, a:])
        avg = (hi.t() @ lo) / z.shape[0]                        # [2^a, 2^b]: mean_n p_n
        tiny = torch.finfo(avg.dtype).tiny
        codebook = -(avg * avg.clamp_min(tiny).log()).sum()     # finite gradient where avg = 0
        return per_sample - gamma * codebook


# --------------------------------------------------------------------------- modules

class _RoundSTE(torch.autograd.Function):
    """:func:`round_ste` as one autograd node: round forward, the gradient passed on as it came."""

    @staticmethod
    def forward(ctx, z):
        return torch.round(z)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _to_channels_last(z_e, name, channels):
    if not isinstance(z_e, torch.Tensor) or z_e.dim() < 2 or z_e.shape[1] != channels:
        raise ValueError(f"{name} must be a channel-first tensor [B, {channels}, ...] "
                         f"(e.g. [B, D, H, W] latents or [N, D] vectors), got {_describe(z_e)}")
    return z_e.movedim(1, -1)


def _projections(dim, d):
    if dim is None or dim == d:
        return nn.Identity(), nn.Identity(), d
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
    return nn.Linear(int(dim), d), nn.Linear(d, int(dim)), int(dim)


class FSQ(nn.Module):
    """Finite scalar quantization as a VQ-VAE bottleneck (Mentzer et al. 2023).

    ``z_q = project_out(fsq_quantize(project_in(z_e), levels))``: no codebook, no
    codebook loss, no commitment loss; the gradient passes straight through the
    rounding. The projections are ``nn.Linear`` over the channels when ``dim`` differs
    from ``len(levels)`` (as in vector-quantize-pytorch), the identity otherwise.

    Args:
        levels: ``L_i`` per code dimension; the implicit codebook has ``prod(levels)``
            codes (see :data:`RECOMMENDED_LEVELS`).
        dim: channels of ``z_e`` (default ``len(levels)``: no projection).
        eps: the margin of :func:`fsq_bound`.

    Shapes:
        ``forward(z_e)``: channel-first ``[B, dim, ...]`` (``[B, dim, H, W]`` latents or
        ``[N, dim]`` vectors) -> ``(z_q, loss, info)`` with ``z_q`` shaped like ``z_e``,
        ``loss`` a zero scalar and ``info`` a dict of ``indices`` ``[B, ...]``
        (torch.long), ``perplexity`` (scalar), ``usage`` (``[K]`` counts) and
        ``codes`` (``[B, ..., d]`` the grid points, before ``project_out``).
    """

    def __init__(self, levels, dim=None, eps=1e-3):
        super().__init__()
        self.levels = _check_levels(levels)
        self.code_dim = len(self.levels)
        self.num_codes = math.prod(self.levels)
        self.eps = float(eps)
        self.project_in, self.project_out, self.dim = _projections(dim, self.code_dim)
        lv, basis = _level_tensors(self.levels, None)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        # fsq_bound's constants, computed once (float64, cast to the input's precision per call)
        lvd = lv.double()
        half = (lvd - 1) * (1 + self.eps) / 2
        offset = (lv % 2 == 0).double() * 0.5
        constants = torch.stack([half, offset, torch.atanh(offset / half), (lv // 2).double(),
                                 basis.double()])
        self.register_buffer("_constants", constants, persistent=False)   # [5, d]

    def extra_repr(self):
        return f"levels={list(self.levels)}, dim={self.dim}, num_codes={self.num_codes}"

    def forward(self, z_e):
        z = _to_channels_last(z_e, "z_e", self.dim)
        projected = self.dim != self.code_dim
        # without projections the math runs channel-first on z_e itself: no strided copies
        z, axis = (self.project_in(z), -1) if projected else (z_e, 1)
        with torch.autocast(z.device.type, enabled=False):
            codes, indices = self._quantize(z.to(_work_dtype(z)), axis)
        usage = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        info = {"indices": indices, "perplexity": perplexity(usage), "usage": usage,
                "codes": codes.detach().movedim(axis, -1)}
        if projected:
            codes = self.project_out(codes.to(z.dtype)).movedim(-1, 1)
        return codes, z_e.new_zeros(()), info

    def _quantize(self, z, axis):
        """``fsq_quantize`` and ``fsq_codes_to_indices`` along ``axis`` of ``z``, in few passes.

        The same numbers as the functions (tests compare them), computed for speed: one
        straight-through round that costs nothing in the backward pass, and the indices
        from the rounded digits instead of from the rescaled codes.
        """
        shape = [1] * z.dim()
        shape[axis] = self.code_dim
        half, offset, shift, half_width, basis = (c.to(z.dtype).view(shape) for c in self._constants)
        bounded = torch.tanh(z + shift) * half - offset
        digits = _RoundSTE.apply(bounded)                # in -(L//2) .. L - L//2 - 1
        codes = digits / half_width
        with torch.no_grad():
            if self.num_codes <= 2 ** 24:                # float32 sums of integers are exact here
                indices = ((digits + half_width) * basis).sum(dim=axis).long()
            else:
                indices = ((digits + half_width).long() * basis.long()).sum(dim=axis)
        return codes, indices

    @property
    def implicit_codebook(self):
        """All ``prod(levels)`` codes ``[K, d]`` (float32), in index order."""
        return self.indices_to_codes(torch.arange(self.num_codes, device=self._levels.device))

    def indices_to_codes(self, indices):
        """Grid points ``[..., d]`` (float32) of indices ``[...]`` (no projection)."""
        _check_indices(indices)
        return _indices_to_codes(indices, self._levels, self._basis)

    def codes_to_indices(self, codes):
        """Indices ``[...]`` of grid points ``[..., d]``."""
        _check_last_dim(codes, "codes", self.code_dim, "d = len(levels)")
        return _codes_to_indices(codes.detach(), self._levels, self._basis)

    def lookup(self, indices):
        """``[B, h, w]`` indices -> ``[B, dim, h, w]`` quantized latents (to decode sampled codes)."""
        _check_indices(indices)
        codes = self.indices_to_codes(indices)
        if self.dim != self.code_dim:
            codes = codes.to(self.project_out.weight.dtype)
        return self.project_out(codes).movedim(-1, 1)


class LFQ(nn.Module):
    """Lookup-free quantization as a VQ-VAE bottleneck (MAGVIT-2, Yu et al. 2023).

    ``z_q = project_out(lfq_quantize(z))`` with ``z = project_in(z_e)`` and the loss
    ``entropy_weight * lfq_entropy_loss(z, tau, gamma) + commitment_weight * mean (z - sg(z_q))^2``
    (the defaults of vector-quantize-pytorch's ``LFQ``: 0.1, 0.25, ``tau = 0.01``,
    ``gamma = 1``). The loss is computed in training and in eval mode.

    Args:
        bits: ``d``, the code dimension; the implicit codebook has ``2^d`` codes.
        dim: channels of ``z_e`` (default ``bits``: no projection).
        entropy_weight, commitment_weight, tau, gamma: see above.

    Shapes:
        ``forward(z_e)``: channel-first ``[B, dim, ...]`` -> ``(z_q, loss, info)`` with
        ``z_q`` shaped like ``z_e``, ``loss`` a scalar and ``info`` a dict of ``indices``
        ``[B, ...]`` (torch.long), ``perplexity``, ``usage`` (``[2^d]`` counts),
        ``entropy_loss`` and ``commitment_loss`` (detached scalars, for logging).
    """

    def __init__(self, bits, dim=None, entropy_weight=0.1, commitment_weight=0.25, tau=0.01,
                 gamma=1.0):
        super().__init__()
        if int(bits) != bits or not 1 <= bits <= 30:
            raise ValueError(f"bits must be an integer in [1, 30], got {bits!r}")
        self.bits = self.code_dim = int(bits)
        self.num_codes = 2 ** self.bits
        self.entropy_weight = float(entropy_weight)
        self.commitment_weight = float(commitment_weight)
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.project_in, self.project_out, self.dim = _projections(dim, self.bits)
        self.register_buffer("_weights", _bit_weights(self.bits, None), persistent=False)

    def extra_repr(self):
        return (f"bits={self.bits}, dim={self.dim}, entropy_weight={self.entropy_weight}, "
                f"commitment_weight={self.commitment_weight}, tau={self.tau}, gamma={self.gamma}")

    def forward(self, z_e):
        z = self.project_in(_to_channels_last(z_e, "z_e", self.dim))
        with torch.autocast(z.device.type, enabled=False):
            z = z.to(_work_dtype(z))
            codes = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
            z_q = z + (codes - z).detach()                       # straight-through
            indices = ((z.detach() > 0).long() * self._weights).sum(dim=-1)
            entropy = (lfq_entropy_loss(z.reshape(-1, self.bits), self.tau, self.gamma)
                       if self.entropy_weight else z.new_zeros(()))
            commitment = F.mse_loss(z, codes)
            loss = self.entropy_weight * entropy + self.commitment_weight * commitment
        usage = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        info = {"indices": indices, "perplexity": perplexity(usage), "usage": usage,
                "entropy_loss": entropy.detach(), "commitment_loss": commitment.detach()}
        return self.project_out(z_q).movedim(-1, 1), loss, info

    def indices_to_codes(self, indices):
        """Codes ``[..., bits]`` (float32 ``+-1``) of indices ``[...]`` (no projection)."""
        return lfq_indices_to_codes(indices, self.bits)

    def lookup(self, indices):
        """``[B, h, w]`` indices -> ``[B, dim, h, w]`` quantized latents."""
        codes = self.indices_to_codes(indices)
        if self.dim != self.bits:
            codes = codes.to(self.project_out.weight.dtype)
        return self.project_out(codes).movedim(-1, 1)


class Standardized(nn.Module):
    """A codebook-free quantizer behind a per-channel standardisation of its input.

    ``quantizer(scale * BatchNorm(z_e))`` with a batch norm without learned scale and
    shift: each channel enters the quantizer with zero mean and standard deviation
    ``scale`` (batch statistics in training, running averages in eval mode). FSQ's bound ``tanh(z) * h`` reaches its
    outer levels only for ``|z|`` of order 1; a fresh encoder outputs much smaller
    values, so without this the grid's middle levels take nearly every vector and the
    encoder must first learn the scale. Standardised, every level of every channel is
    visited from the first steps.

    Args:
        quantizer: ``forward(z_e) -> (z_q, loss, info)`` on channel-first latents
            (:class:`FSQ`, :class:`LFQ`, or a learner's own).
        channels: channels of ``z_e`` (``len(levels)`` for FSQ without projection).
        scale: the standard deviation each channel gets. With ``L = 8`` levels the outer
            ones need ``|z| > 1.28``: a larger scale visits them more often, at some cost in
            reconstruction (``06_fsq_lfq`` uses 1.5; ``docs/results.md`` has the numbers).

    Shapes:
        ``forward(z_e)``: ``[B, channels, ...]`` -> what ``quantizer`` returns for the
        standardised ``z_e``. ``lookup(indices)`` and ``num_codes`` are the quantizer's.
    """

    def __init__(self, quantizer: nn.Module, channels: int, scale: float = 1.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.quantizer = quantizer
        self.norm = nn.BatchNorm1d(channels, affine=False)
        self.scale = float(scale)
        self.num_codes = quantizer.num_codes

    def extra_repr(self):
        return f"scale={self.scale}"

    def forward(self, z_e):
        if z_e.dim() < 2 or z_e.shape[1] != self.norm.num_features:
            raise ValueError(f"z_e must be channel-first [B, {self.norm.num_features}, ...], "
                             f"got {_describe(z_e)}")
        z = self.norm(z_e.flatten(2) if z_e.dim() > 2 else z_e).view_as(z_e)
        return self.quantizer(self.scale * z)

    def lookup(self, indices):
        """The quantizer's ``lookup``: codes do not depend on the standardisation."""
        return self.quantizer.lookup(indices)
