"""Different but correct answers to 06_fsq_lfq: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: per-dimension Python
loops (over dimensions, never over elements), custom autograd functions,
Horner's scheme for the indices, bit operations, float64 internals, the
brute-force and the factorised entropy, and layers built on the phase-1
reference pieces of ``dvl_helpers.quantizers`` (allowed).
"""
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from dvl_helpers.quantizers import code_usage, perplexity

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- fsq_bound

@right("fsq_bound", "a tensor of levels, torch.where for the offset")
def bound_where(z, levels):
    lv = torch.tensor(levels, dtype=z.dtype)
    h = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(z.dtype)
    return torch.tanh(z + torch.atanh(offset / h)) * h - offset


@right("fsq_bound", "one dimension at a time with math.atanh, stacked, in float64")
def bound_per_dim(z, levels):
    out = []
    for i, n in enumerate(levels):
        h = (n - 1) * 1.001 / 2
        off = 0.5 if n % 2 == 0 else 0.0
        out.append(torch.tanh(z[..., i].double() + math.atanh(off / h)) * h - off)
    return torch.stack(out, dim=-1).to(z.dtype)


@right("fsq_bound", "the shift as 0.5 * log((1 + x) / (1 - x))")
def bound_log_shift(z, levels):
    lv = torch.as_tensor(levels, dtype=torch.float32)
    h = (lv - 1) * 1.001 * 0.5
    offset = (1 - lv.remainder(2)) * 0.5
    x = offset / h
    shift = 0.5 * torch.log((1 + x) / (1 - x))
    return (torch.tanh(z + shift) * h - offset).to(z.dtype)


# ---------------------------------------------------------------- round_ste

@right("round_ste", "z + (round(z) - z).detach()")
def ste_detach(z):
    return z + (torch.round(z) - z).detach()


class _Round(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return torch.round(z)

    @staticmethod
    def backward(ctx, grad):
        return grad


@right("round_ste", "a custom autograd.Function")
def ste_function(z):
    return _Round.apply(z)


@right("round_ste", "round(z).detach() + z - z.detach()")
def ste_difference(z):
    return z.round().detach() + z - z.detach()


# ---------------------------------------------------------------- fsq_quantize

def _bound(z, levels):
    lv = torch.tensor(levels, dtype=z.dtype)
    h = (lv - 1) * (1 + 1e-3) / 2
    offset = (lv % 2 == 0).to(z.dtype) / 2
    return torch.tanh(z + torch.atanh(offset / h)) * h - offset


@right("fsq_quantize", "straight-through rounding, then division by L // 2")
def quantize_plain(z, levels):
    b = _bound(z, levels)
    q = b + (b.round() - b).detach()
    return q / torch.tensor([n // 2 for n in levels], dtype=z.dtype)


@right("fsq_quantize", "floor(b + 0.5) with the straight-through trick applied to the codes")
def quantize_floor(z, levels):
    half = torch.tensor(levels) // 2
    b = _bound(z, levels) / half
    codes = torch.floor(_bound(z, levels) + 0.5) / half
    return b + (codes - b).detach()


# ---------------------------------------------------------------- fsq_codes_to_indices

@right("fsq_codes_to_indices", "Horner's scheme from the last dimension, float64 digits")
def codes_horner(codes, levels):
    index = torch.zeros(codes.shape[:-1], dtype=torch.long)
    for i in reversed(range(len(levels))):
        half = levels[i] // 2
        digit = torch.round(codes[..., i].double() * half + half).long()
        index = index * levels[i] + digit
    return index


@right("fsq_codes_to_indices", "a basis tensor from torch.cumprod")
def codes_cumprod(codes, levels):
    lv = torch.tensor(levels)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), lv[:-1]]), 0)
    digits = (codes.float() * (lv // 2) + lv // 2).round().long()
    return (digits * basis).sum(-1)


# ---------------------------------------------------------------- fsq_indices_to_codes

@right("fsq_indices_to_codes", "repeated divmod, first dimension first")
def indices_divmod(indices, levels):
    rest = indices.clone()
    codes = []
    for n in levels:
        digit = rest % n
        rest = rest // n
        codes.append((digit - n // 2).float() / (n // 2))
    return torch.stack(codes, dim=-1)


@right("fsq_indices_to_codes", "a lookup in the enumerated grid")
def indices_table(indices, levels):
    axes = [[(q - n // 2) / (n // 2) for q in range(n)] for n in levels]
    grid = torch.tensor([tuple(reversed(c)) for c in itertools.product(*reversed(axes))])
    return grid[indices]


# ---------------------------------------------------------------- lfq_quantize

@right("lfq_quantize", "torch.where and a detached difference")
def lfq_where(z):
    q = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
    return z + (q - z).detach()


@right("lfq_quantize", "2 * (z > 0) - 1")
def lfq_bits(z):
    q = 2 * (z > 0).to(z.dtype) - 1
    return (q - z).detach() + z


class _Sign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return torch.where(z > 0, 1.0, -1.0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


@right("lfq_quantize", "a custom autograd.Function")
def lfq_function(z):
    return _Sign.apply(z)


# ---------------------------------------------------------------- lfq index maps

@right("lfq_codes_to_indices", "Horner's scheme, first bit first")
def lfq_horner(codes):
    index = torch.zeros(codes.shape[:-1], dtype=torch.long)
    for i in range(codes.shape[-1]):
        index = index * 2 + (codes[..., i] > 0).long()
    return index


@right("lfq_codes_to_indices", "bit shifts")
def lfq_shifts(codes):
    d = codes.shape[-1]
    shifts = torch.arange(d - 1, -1, -1)
    return ((codes > 0).long() << shifts).sum(-1)


@right("lfq_indices_to_codes", "bitwise_and with powers of two")
def lfq_and(indices, dim):
    mask = 2 ** torch.arange(dim - 1, -1, -1)
    return ((indices[..., None] & mask) != 0).float() * 2 - 1


@right("lfq_indices_to_codes", "repeated halving from the last bit")
def lfq_halving(indices, dim):
    rest, bits = indices.clone(), []
    for _ in range(dim):
        bits.append(rest % 2)
        rest = rest // 2
    return torch.stack(bits[::-1], dim=-1).float() * 2 - 1


# ---------------------------------------------------------------- lfq_entropy_loss

def _all_codes(d):
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)))


@right("lfq_entropy_loss", "brute force with log_softmax")
def entropy_log_softmax(z, tau=0.01, gamma=1.0):
    codes = _all_codes(z.shape[1]).to(z.dtype)
    log_p = torch.log_softmax(-torch.cdist(z, codes).pow(2) / tau, dim=1)
    p = log_p.exp()
    avg = p.mean(0)
    return -(p * log_p).sum(1).mean() + gamma * (avg * avg.clamp_min(1e-30).log()).sum()


@right("lfq_entropy_loss", "softmax of 2 z.c / tau (the same up to per-row constants), clamped logs")
def entropy_dot(z, tau=0.01, gamma=1.0):
    codes = _all_codes(z.shape[1]).to(z.dtype)
    p = torch.softmax(2 * z @ codes.T / tau, dim=1)

    def entropy(q):
        return -(q * q.clamp_min(1e-12).log()).sum(-1)
    return entropy(p).mean() - gamma * entropy(p.mean(0))


@right("lfq_entropy_loss", "factorised over bits: sigmoid(4z / tau), products of bit probabilities")
def entropy_factorised(z, tau=0.01, gamma=1.0):
    a = 4 * z / tau
    lp1, lp0 = F.logsigmoid(a), F.logsigmoid(-a)
    sample = -(lp1.exp() * lp1 + lp0.exp() * lp0).sum(1).mean()
    codes = _all_codes(z.shape[1]).to(z.dtype)                     # [K, d]
    log_p = lp1 @ (codes > 0).to(z.dtype).T + lp0 @ (codes < 0).to(z.dtype).T
    avg = log_p.exp().mean(0)
    return sample + gamma * torch.special.xlogy(avg, avg.clamp_min(1e-30)).sum()


# ---------------------------------------------------------------- FSQ

@right("FSQ", "a plain module: permute, bound, round, rescale, mixed-radix indices")
class FSQPlain(nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.levels = list(levels)
        self.num_codes = math.prod(self.levels)
        self.register_buffer("lv", torch.tensor(self.levels), persistent=False)
        self.register_buffer("basis", torch.tensor(
            [math.prod(self.levels[:i]) for i in range(len(self.levels))]), persistent=False)

    def forward(self, z_e):
        z = z_e.permute(0, 2, 3, 1)
        h = (self.lv - 1) * 1.001 / 2
        offset = (self.lv % 2 == 0) * 0.5
        b = torch.tanh(z + torch.atanh(offset / h)) * h - offset
        codes = (b + (b.round() - b).detach()) / (self.lv // 2)
        digits = (codes.detach() * (self.lv // 2) + self.lv // 2).round().long()
        indices = (digits * self.basis).sum(-1)
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
        p = counts / counts.sum()
        ppl = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        return codes.permute(0, 3, 1, 2), torch.zeros(()), {"indices": indices, "perplexity": ppl}


@right("FSQ", "reshape to rows, the phase-1 code_usage and perplexity, a Python float loss")
class FSQRows(nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.levels = tuple(levels)
        self.num_codes = int(math.prod(levels))

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        rows = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        codes = torch.stack([self._one(rows[:, i], n) for i, n in enumerate(self.levels)], 1)
        index = torch.zeros(rows.shape[0], dtype=torch.long)
        for i in reversed(range(d)):
            n = self.levels[i]
            index = index * n + (codes[:, i].detach() * (n // 2) + n // 2).round().long()
        indices = index.reshape(b, h, w)
        usage = code_usage(indices, self.num_codes)
        z_q = codes.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_q, 0.0, {"indices": indices, "perplexity": perplexity(usage), "usage": usage}

    @staticmethod
    def _one(x, n):
        h = (n - 1) * (1 + 1e-3) / 2
        off = 0.5 * (n % 2 == 0)
        b = torch.tanh(x + math.atanh(off / h)) * h - off
        return (b + (torch.round(b) - b).detach()) / (n // 2)


# ---------------------------------------------------------------- LFQ

@right("LFQ", "brute-force entropy over all codes, F.mse_loss for the commitment")
class LFQPlain(nn.Module):
    def __init__(self, bits, entropy_weight=0.1, commitment_weight=0.25, tau=0.01, gamma=1.0):
        super().__init__()
        self.bits, self.num_codes = bits, 2 ** bits
        self.ew, self.cw, self.tau, self.gamma = entropy_weight, commitment_weight, tau, gamma
        self.register_buffer("codes", _all_codes(bits), persistent=False)

    def forward(self, z_e):
        z = z_e.permute(0, 2, 3, 1)
        q = torch.where(z > 0, 1.0, -1.0)
        z_q = z + (q - z).detach()
        indices = ((q > 0).long() * 2 ** torch.arange(self.bits - 1, -1, -1)).sum(-1)
        rows = z.reshape(-1, self.bits)
        log_p = torch.log_softmax(-torch.cdist(rows, self.codes).pow(2) / self.tau, 1)
        p = log_p.exp()
        avg = p.mean(0)
        entropy = -(p * log_p).sum(1).mean() + self.gamma * (avg * avg.clamp_min(1e-30).log()).sum()
        loss = self.ew * entropy + self.cw * F.mse_loss(z, q)
        usage = code_usage(indices, self.num_codes)
        return z_q.permute(0, 3, 1, 2), loss, {"indices": indices, "perplexity": perplexity(usage)}


@right("LFQ", "einsum distances, its own perplexity, a usage entry")
class LFQEinsum(nn.Module):
    def __init__(self, bits, entropy_weight=0.1, commitment_weight=0.25, tau=0.01, gamma=1.0):
        super().__init__()
        self.bits = bits
        self.num_codes = 1 << bits
        self.weights = (entropy_weight, commitment_weight)
        self.tau, self.gamma = tau, gamma

    def forward(self, z_e):
        rows = z_e.movedim(1, -1).reshape(-1, self.bits)
        codes = _all_codes(self.bits)
        logits = 2 * torch.einsum("nd,kd->nk", rows, codes) / self.tau
        log_p = logits - torch.logsumexp(logits, 1, keepdim=True)
        p = log_p.exp()
        avg = p.mean(0)
        entropy = -(p * log_p).sum(1).mean() + self.gamma * torch.special.xlogy(
            avg, avg.clamp_min(1e-30)).sum()
        signs = 2 * (rows > 0).float() - 1
        commit = ((rows - signs) ** 2).mean()
        loss = self.weights[0] * entropy + self.weights[1] * commit
        index = torch.zeros(rows.shape[0], dtype=torch.long)
        for i in range(self.bits):
            index = 2 * index + (signs[:, i] > 0).long()
        counts = torch.bincount(index, minlength=self.num_codes).float()
        pc = counts / counts.sum()
        ppl = torch.exp(-torch.special.xlogy(pc, pc).sum())
        z_q = (rows + (signs - rows).detach()).reshape(z_e.shape[0], *z_e.shape[2:], self.bits)
        return (z_q.movedim(-1, 1), loss,
                {"indices": index.reshape(z_e.shape[0], *z_e.shape[2:]), "perplexity": ppl,
                 "usage": counts})
