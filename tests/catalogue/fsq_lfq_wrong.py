"""Wrong answers to 06_fsq_lfq: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make (no offset for even levels, an offset for odd levels too, the
paper's ``1 - eps`` or no ``eps`` at all, no ``atanh`` shift, rounding without
straight-through, codes divided by ``L`` or not rescaled, index digits in the
wrong order or truncated, ``torch.sign`` for LFQ, an entropy with swapped signs,
per-bit instead of whole-codebook entropy, averages taken in the wrong order,
log 0, ...); a few are shortcuts the grader must refuse (calling the course's
reference implementation of this phase).
"""
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers
from dvl_helpers.fsq import FSQ as RefFSQ

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _lv(levels, dtype=torch.float32):
    return torch.tensor(levels, dtype=dtype)


def _bound(z, levels, eps=1e-3, offset_even=0.5, offset_odd=0.0, shift=torch.atanh):
    lv = _lv(levels, z.dtype)
    h = (lv - 1) * (1 + eps) / 2
    offset = torch.where(lv % 2 == 0, offset_even, offset_odd).to(z.dtype)
    return torch.tanh(z + shift(offset / h)) * h - offset


def _half(levels, dtype=torch.float32):
    return torch.tensor([n // 2 for n in levels], dtype=dtype)


def _ste(x):
    return x + (x.round() - x).detach()


def _quantize(z, levels):
    return _ste(_bound(z, levels)) / _half(levels, z.dtype)


def _basis(levels):
    return torch.tensor([math.prod(levels[:i]) for i in range(len(levels))])


def _fsq_indices(codes, levels):
    half = torch.tensor([n // 2 for n in levels])
    return ((codes.float() * half + half).round().long() * _basis(levels)).sum(-1)


def _all_codes(d, dtype=torch.float32):
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=dtype)


def _entropy(p):
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def _lfq_probs(z, tau):
    codes = _all_codes(z.shape[1], z.dtype)
    return torch.softmax(-((z[:, None] - codes[None]) ** 2).sum(-1) / tau, dim=1)


def _lfq_entropy(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    return _entropy(p).mean() - gamma * _entropy(p.mean(0))


def _ppl(indices, k):
    counts = torch.bincount(indices.flatten(), minlength=k).float()
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


# ---------------------------------------------------------------- fsq_bound

@wrong("fsq_bound", "no offset for even levels: L = 4 rounds to 5 values")
def bound_no_offset(z, levels):
    return _bound(z, levels, offset_even=0.0)


@wrong("fsq_bound", "the offset 1/2 for odd levels too")
def bound_offset_odd(z, levels):
    return _bound(z, levels, offset_odd=0.5)


@wrong("fsq_bound", "h without the factor 1 + 1e-3")
def bound_no_eps(z, levels):
    lv = _lv(levels, z.dtype)
    h = (lv - 1) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(z.dtype)
    return torch.tanh(z + torch.atanh((offset / h).clamp(max=0.999))) * h - offset


@wrong("fsq_bound", "the paper's original code: (1 - 1e-3) and tan for the shift")
def bound_paper_jax(z, levels):
    return _bound(z, levels, eps=-1e-3, shift=torch.tan)


@wrong("fsq_bound", "no atanh shift: z = 0 lands half a step below 0 for even L")
def bound_no_shift(z, levels):
    return _bound(z, levels, shift=lambda x: 0 * x)


@wrong("fsq_bound", "tan instead of atanh for the shift")
def bound_tan_shift(z, levels):
    return _bound(z, levels, shift=torch.tan)


@wrong("fsq_bound", "already divided by L // 2 (that is fsq_quantize's job)")
def bound_normalised(z, levels):
    return _bound(z, levels) / _half(levels, z.dtype)


@wrong("fsq_bound", "a hard clamp instead of tanh")
def bound_clamp(z, levels):
    lv = _lv(levels, z.dtype)
    h = (lv - 1) * 1.001 / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(z.dtype)
    return torch.maximum(torch.minimum(z, h - offset), -h - offset)


@wrong("fsq_bound", "the shift added after tanh instead of inside it")
def bound_shift_outside(z, levels):
    lv = _lv(levels, z.dtype)
    h = (lv - 1) * 1.001 / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(z.dtype)
    return torch.tanh(z) * h - offset + torch.atanh(offset / h)


@wrong("fsq_bound", "detached: no gradient")
def bound_detached(z, levels):
    return _bound(z, levels).detach()


@wrong("fsq_bound", "calls the course's reference implementation")
def bound_reference(z, levels):
    return dvl_helpers.fsq.fsq_bound(z, levels)


# ---------------------------------------------------------------- round_ste

@wrong("round_ste", "torch.round alone: zero gradient")
def ste_plain_round(z):
    return torch.round(z)


@wrong("round_ste", "the difference is not detached: the gradient cancels")
def ste_not_detached(z):
    return z + (torch.round(z) - z)


@wrong("round_ste", "floor instead of round")
def ste_floor(z):
    return z + (torch.floor(z) - z).detach()


@wrong("round_ste", "rounds z in place through a detached view")
def ste_in_place(z):
    r = z.detach().round_()
    return z + (r - z).detach()


@wrong("round_ste", "returns integer dtype")
def ste_long(z):
    return torch.round(z).long()


@wrong("round_ste", "the gradient is doubled")
def ste_double_grad(z):
    return 2 * z + (torch.round(z) - 2 * z).detach()


# ---------------------------------------------------------------- fsq_quantize

@wrong("fsq_quantize", "rounding without straight-through: no gradient")
def quantize_no_ste(z, levels):
    return torch.round(_bound(z, levels)) / _half(levels, z.dtype)


@wrong("fsq_quantize", "divides by L instead of L // 2")
def quantize_by_l(z, levels):
    return _ste(_bound(z, levels)) / _lv(levels, z.dtype)


@wrong("fsq_quantize", "divides by (L - 1) / 2 (right for odd L only)")
def quantize_by_half_l_minus_one(z, levels):
    return _ste(_bound(z, levels)) / ((_lv(levels, z.dtype) - 1) / 2)


@wrong("fsq_quantize", "codes not rescaled: integers")
def quantize_integers(z, levels):
    return _ste(_bound(z, levels))


@wrong("fsq_quantize", "no offset for even levels")
def quantize_no_offset(z, levels):
    return _ste(_bound(z, levels, offset_even=0.0)) / _half(levels, z.dtype)


@wrong("fsq_quantize", "rounds z before bounding it")
def quantize_round_first(z, levels):
    return _bound(_ste(z), levels) / _half(levels, z.dtype)


@wrong("fsq_quantize", "calls the course's reference implementation")
def quantize_reference(z, levels):
    from dvl_helpers.fsq import fsq_quantize
    return fsq_quantize(z, levels)


# ---------------------------------------------------------------- fsq_codes_to_indices

@wrong("fsq_codes_to_indices", "index basis reversed: the first dimension most significant")
def codes_reversed(codes, levels):
    half = torch.tensor([n // 2 for n in levels])
    digits = (codes.float() * half + half).round().long()
    basis = torch.tensor([math.prod(levels[i + 1:]) for i in range(len(levels))])
    return (digits * basis).sum(-1)


@wrong("fsq_codes_to_indices", "digits truncated with .long() instead of rounded (bfloat16 1/3)")
def codes_truncated(codes, levels):
    half = torch.tensor([n // 2 for n in levels])
    return ((codes.float() * half + half).long() * _basis(levels)).sum(-1)


@wrong("fsq_codes_to_indices", "digits not shifted by L // 2: negative digits")
def codes_unshifted(codes, levels):
    half = torch.tensor([n // 2 for n in levels])
    return ((codes.float() * half).round().long() * _basis(levels)).sum(-1)


@wrong("fsq_codes_to_indices", "basis cumprod(levels) instead of cumprod([1] + levels[:-1])")
def codes_basis_cumprod(codes, levels):
    half = torch.tensor([n // 2 for n in levels])
    digits = (codes.float() * half + half).round().long()
    return (digits * torch.cumprod(torch.tensor(levels), 0)).sum(-1)


@wrong("fsq_codes_to_indices", "float indices")
def codes_float(codes, levels):
    return _fsq_indices(codes, levels).float()


@wrong("fsq_codes_to_indices", "L / 2 as a float for the half width (wrong for odd L)")
def codes_float_half(codes, levels):
    half = torch.tensor(levels, dtype=torch.float32) / 2
    return ((codes.float() * half + half).round().long() * _basis(levels)).sum(-1)


@wrong("fsq_codes_to_indices", "does not invert indices_to_codes: digits scaled by L - 1")
def codes_scaled_l_minus_one(codes, levels):
    lv = torch.tensor(levels)
    digits = ((codes.float() + 1) / 2 * (lv - 1)).round().long()
    return (digits * _basis(levels)).sum(-1)


# ---------------------------------------------------------------- fsq_indices_to_codes

@wrong("fsq_indices_to_codes", "index basis reversed")
def indices_reversed(indices, levels):
    lv = torch.tensor(levels)
    basis = torch.tensor([math.prod(levels[i + 1:]) for i in range(len(levels))])
    digits = (indices[..., None] // basis) % lv
    return (digits - lv // 2).float() / (lv // 2)


@wrong("fsq_indices_to_codes", "divides by L instead of L // 2")
def indices_by_l(indices, levels):
    lv = torch.tensor(levels)
    digits = (indices[..., None] // _basis(levels)) % lv
    return (digits - lv // 2).float() / lv


@wrong("fsq_indices_to_codes", "no modulo L: digits overflow")
def indices_no_mod(indices, levels):
    lv = torch.tensor(levels)
    digits = indices[..., None] // _basis(levels)
    return (digits - lv // 2).float() / (lv // 2)


@wrong("fsq_indices_to_codes", "integer division for the codes")
def indices_int_div(indices, levels):
    lv = torch.tensor(levels)
    digits = (indices[..., None] // _basis(levels)) % lv
    return ((digits - lv // 2) // (lv // 2)).float()


# ---------------------------------------------------------------- lfq_quantize

@wrong("lfq_quantize", "torch.sign: zero maps to 0")
def lfq_sign(z):
    return z + (torch.sign(z) - z).detach()


@wrong("lfq_quantize", "z >= 0 maps to +1 (zero to +1)")
def lfq_ge(z):
    q = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    return z + (q - z).detach()


@wrong("lfq_quantize", "no straight-through gradient")
def lfq_no_ste(z):
    return torch.where(z > 0, 1.0, -1.0).to(z.dtype)


@wrong("lfq_quantize", "bits 0/1 instead of -1/+1")
def lfq_bits01(z):
    q = (z > 0).to(z.dtype)
    return z + (q - z).detach()


# ---------------------------------------------------------------- lfq_codes_to_indices

@wrong("lfq_codes_to_indices", "first dimension least significant")
def lfq_lsb_first(codes):
    d = codes.shape[-1]
    return ((codes > 0).long() * 2 ** torch.arange(d)).sum(-1)


@wrong("lfq_codes_to_indices", "float indices")
def lfq_float_index(codes):
    d = codes.shape[-1]
    return ((codes > 0).float() * 2.0 ** torch.arange(d - 1, -1, -1)).sum(-1)


@wrong("lfq_codes_to_indices", "weights 2^(d - i) instead of 2^(d - 1 - i)")
def lfq_weights_off_by_one(codes):
    d = codes.shape[-1]
    return ((codes > 0).long() * 2 ** torch.arange(d, 0, -1)).sum(-1)


# ---------------------------------------------------------------- lfq_indices_to_codes

@wrong("lfq_indices_to_codes", "bits in the wrong order")
def lfq_codes_reversed(indices, dim):
    mask = 2 ** torch.arange(dim)
    return ((indices[..., None] & mask) != 0).float() * 2 - 1


@wrong("lfq_indices_to_codes", "bits 0/1 instead of -1/+1")
def lfq_codes_01(indices, dim):
    mask = 2 ** torch.arange(dim - 1, -1, -1)
    return ((indices[..., None] & mask) != 0).float()


# ---------------------------------------------------------------- lfq_entropy_loss

@wrong("lfq_entropy_loss", "signs swapped")
def entropy_swapped(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    return gamma * _entropy(p.mean(0)) - _entropy(p).mean()


@wrong("lfq_entropy_loss", "per-bit instead of whole-codebook entropy for the average")
def entropy_per_bit(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    p1 = torch.sigmoid(4 * z / tau).mean(0)
    per_bit = -(p1 * p1.clamp_min(1e-30).log() + (1 - p1) * (1 - p1).clamp_min(1e-30).log())
    return _entropy(p).mean() - gamma * per_bit.sum()


@wrong("lfq_entropy_loss", "averaged wrongly: the mean of the entropies in both terms")
def entropy_mean_of_entropies(z, tau=0.01, gamma=1.0):
    h = _entropy(_lfq_probs(z, tau)).mean()
    return h - gamma * h


@wrong("lfq_entropy_loss", "the codebook entropy of the summed (not averaged) probabilities")
def entropy_summed(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    return _entropy(p).mean() - gamma * _entropy(p.sum(0))


@wrong("lfq_entropy_loss", "softmax of -||z - c|| / tau: the distance not squared")
def entropy_unsquared(z, tau=0.01, gamma=1.0):
    codes = _all_codes(z.shape[1], z.dtype)
    p = torch.softmax(-torch.cdist(z, codes) / tau, dim=1)
    return _entropy(p).mean() - gamma * _entropy(p.mean(0))


@wrong("lfq_entropy_loss", "multiplies by tau instead of dividing")
def entropy_times_tau(z, tau=0.01, gamma=1.0):
    codes = _all_codes(z.shape[1], z.dtype)
    p = torch.softmax(-((z[:, None] - codes[None]) ** 2).sum(-1) * tau, dim=1)
    return _entropy(p).mean() - gamma * _entropy(p.mean(0))


@wrong("lfq_entropy_loss", "softmax of z.c / tau: the distance expansion misses the factor 2")
def entropy_half_logits(z, tau=0.01, gamma=1.0):
    codes = _all_codes(z.shape[1], z.dtype)
    p = torch.softmax(z @ codes.T / tau, dim=1)
    return _entropy(p).mean() - gamma * _entropy(p.mean(0))


@wrong("lfq_entropy_loss", "naive p * log p: NaN when probabilities underflow to 0")
def entropy_naive_log(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    avg = p.mean(0)
    return -(p * p.log()).sum(1).mean() + gamma * (avg * avg.log()).sum()


@wrong("lfq_entropy_loss", "gamma on the per-sample term")
def entropy_gamma_wrong_term(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    return gamma * _entropy(p).mean() - _entropy(p.mean(0))


@wrong("lfq_entropy_loss", "per-sample entropies summed over the batch, not averaged")
def entropy_sum_over_batch(z, tau=0.01, gamma=1.0):
    p = _lfq_probs(z, tau)
    return _entropy(p).sum() - gamma * _entropy(p.mean(0))


@wrong("lfq_entropy_loss", "detached: no gradient")
def entropy_detached(z, tau=0.01, gamma=1.0):
    return _lfq_entropy(z.detach(), tau, gamma)


@wrong("lfq_entropy_loss", "entropies in log base 2")
def entropy_bits(z, tau=0.01, gamma=1.0):
    return _lfq_entropy(z, tau, gamma) / math.log(2)


# ---------------------------------------------------------------- FSQ

class _FSQBase(nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.levels = list(levels)
        self.num_codes = math.prod(self.levels)

    def codes(self, z):
        return _quantize(z, self.levels)

    def forward(self, z_e):
        z = z_e.permute(0, 2, 3, 1)
        codes = self.codes(z)
        indices = _fsq_indices(codes.detach(), self.levels)
        return codes.permute(0, 3, 1, 2), torch.zeros(()), {
            "indices": indices, "perplexity": _ppl(indices, self.num_codes)}


@wrong("FSQ", "quantizes the flattened tensor without moving channels last")
class FSQWrongAxis(_FSQBase):
    def forward(self, z_e):
        b, d, h, w = z_e.shape
        codes = self.codes(z_e.reshape(-1, d))
        indices = _fsq_indices(codes.detach(), self.levels).reshape(b, h, w)
        return codes.reshape(b, d, h, w), torch.zeros(()), {
            "indices": indices, "perplexity": _ppl(indices, self.num_codes)}


@wrong("FSQ", "torch.round without straight-through")
class FSQNoSTE(_FSQBase):
    def codes(self, z):
        return torch.round(_bound(z, self.levels)) / _half(self.levels)


@wrong("FSQ", "adds a commitment loss")
class FSQCommitment(_FSQBase):
    def forward(self, z_e):
        z_q, _, info = super().forward(z_e)
        return z_q, 0.25 * F.mse_loss(z_e, z_q.detach()), info


@wrong("FSQ", "a learnable scale: FSQ has nothing to learn")
class FSQLearnedScale(_FSQBase):
    def __init__(self, levels):
        super().__init__(levels)
        self.scale = nn.Parameter(torch.ones(len(levels)))

    def codes(self, z):
        return _quantize(z * self.scale, self.levels)


@wrong("FSQ", "index basis reversed")
class FSQReversedIndex(_FSQBase):
    def forward(self, z_e):
        z_q, loss, info = super().forward(z_e)
        indices = codes_reversed(z_q.detach().permute(0, 2, 3, 1), self.levels)
        return z_q, loss, {"indices": indices, "perplexity": _ppl(indices, self.num_codes)}


@wrong("FSQ", "no num_codes attribute")
class FSQNoNumCodes(_FSQBase):
    def __init__(self, levels):
        super().__init__(levels)
        del self.num_codes
        self.size = math.prod(levels)

    def forward(self, z_e):
        self.num_codes = self.size
        try:
            return super().forward(z_e)
        finally:
            del self.num_codes


@wrong("FSQ", "perplexity in bits (2 ** entropy in nats)")
class FSQWrongPerplexity(_FSQBase):
    def forward(self, z_e):
        z_q, loss, info = super().forward(z_e)
        counts = torch.bincount(info["indices"].flatten(), minlength=self.num_codes).float()
        p = counts / counts.sum()
        info["perplexity"] = 2 ** (-torch.special.xlogy(p, p).sum())
        return z_q, loss, info


@wrong("FSQ", "subclasses the course's reference FSQ")
class FSQSubclass(RefFSQ):
    pass


# ---------------------------------------------------------------- LFQ

class _LFQBase(nn.Module):
    def __init__(self, bits, entropy_weight=0.1, commitment_weight=0.25, tau=0.01, gamma=1.0):
        super().__init__()
        self.bits, self.num_codes = bits, 2 ** bits
        self.ew, self.cw, self.tau, self.gamma = entropy_weight, commitment_weight, tau, gamma

    def signs(self, z):
        return torch.where(z > 0, 1.0, -1.0)

    def commitment(self, z, z_q, q):
        return F.mse_loss(z, q)

    def entropy(self, rows):
        return _lfq_entropy(rows, self.tau, self.gamma)

    def forward(self, z_e):
        z = z_e.permute(0, 2, 3, 1)
        q = self.signs(z)
        z_q = z + (q - z).detach()
        indices = ((q > 0).long() * 2 ** torch.arange(self.bits - 1, -1, -1)).sum(-1)
        loss = self.ew * self.entropy(z.reshape(-1, self.bits)) + self.cw * self.commitment(z, z_q, q)
        return z_q.permute(0, 3, 1, 2), loss, {"indices": indices,
                                               "perplexity": _ppl(indices, self.num_codes)}


@wrong("LFQ", "torch.sign: zero maps to 0")
class LFQSign(_LFQBase):
    def signs(self, z):
        return torch.sign(z)


@wrong("LFQ", "commitment with the stop-gradient on the wrong side")
class LFQCommitWrongSide(_LFQBase):
    def commitment(self, z, z_q, q):
        return F.mse_loss(z_q, z.detach())


@wrong("LFQ", "entropy and commitment weights swapped")
class LFQWeightsSwapped(_LFQBase):
    def __init__(self, bits, entropy_weight=0.1, commitment_weight=0.25, tau=0.01, gamma=1.0):
        super().__init__(bits, commitment_weight, entropy_weight, tau, gamma)


@wrong("LFQ", "indices with the first dimension least significant")
class LFQReversedIndex(_LFQBase):
    def forward(self, z_e):
        z_q, loss, info = super().forward(z_e)
        indices = lfq_lsb_first(z_q.detach().permute(0, 2, 3, 1))
        return z_q, loss, {"indices": indices, "perplexity": _ppl(indices, self.num_codes)}


@wrong("LFQ", "entropy over rows of the channel-first tensor (no permute)")
class LFQWrongRows(_LFQBase):
    def forward(self, z_e):
        z_q, _, info = super().forward(z_e)
        z = z_e.permute(0, 2, 3, 1)
        q = self.signs(z)
        rows = z_e.reshape(-1, self.bits)
        loss = self.ew * self.entropy(rows) + self.cw * F.mse_loss(z, q)
        return z_q, loss, info


@wrong("LFQ", "tau ignored (always 0.01)")
class LFQIgnoresTau(_LFQBase):
    def entropy(self, rows):
        return _lfq_entropy(rows, 0.01, self.gamma)


@wrong("LFQ", "the per-bit codebook entropy")
class LFQPerBit(_LFQBase):
    def entropy(self, rows):
        return entropy_per_bit(rows, self.tau, self.gamma)
