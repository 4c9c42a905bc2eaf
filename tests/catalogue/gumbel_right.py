"""Different but correct answers to 03_gumbel_dvae: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: Gumbel noise from
``exponential_``, from ``1 - u`` or by clamping ``u``; float64 internals;
``log_softmax`` then ``exp``; ``movedim`` to the last axis and back; one-hot
samples from ``F.one_hot`` or ``scatter``; straight-through written
``(y_hard - y).detach() + y``; schedules in ``math.exp`` / ``numpy`` form; KLs
from ``F.kl_div`` or ``torch.distributions``; dVAE layers with a linear
projection on channels-last features, matrix products instead of ``einsum``,
and the phase-1 reference ``perplexity`` (allowed: later phases reuse earlier ones).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dvl_helpers.quantizers import perplexity

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- sample_gumbel

@right("sample_gumbel", "the reference formula")
def gumbel_plain(shape, generator=None, eps=1e-10):
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u + eps) + eps)


@right("sample_gumbel", "-log of an exponential variable, drawn with exponential_")
def gumbel_from_exponential(shape, generator=None, eps=1e-10):
    e = torch.empty(shape).exponential_(generator=generator)
    return -torch.log(e + eps)


@right("sample_gumbel", "u clamped to [eps, 1 - eps], from 1 - rand, in float64")
def gumbel_clamped64(shape, generator=None, eps=1e-10):
    u = (1 - torch.rand(tuple(shape), generator=generator, dtype=torch.float64)).clamp(eps, 1 - eps)
    return (-torch.log(-torch.log(u))).float()


@right("sample_gumbel", "uniform_ on an empty tensor")
def gumbel_uniform_(shape, generator=None, eps=1e-10):
    u = torch.empty(*shape).uniform_(0, 1, generator=generator)
    return -(-(u + eps).log() + eps).log()


# ---------------------------------------------------------------- gumbel_softmax

def _g(shape, generator, eps=1e-10):
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u + eps) + eps)


@right("gumbel_softmax", "the reference: scatter one-hot, y_hard - y.detach() + y")
def gs_plain(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax((logits + _g(logits.shape, generator)) / tau, dim=dim)
    if not hard:
        return y
    y_hard = torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)
    return y_hard - y.detach() + y


@right("gumbel_softmax", "movedim to the last axis, log_softmax then exp, F.one_hot")
def gs_movedim(logits, tau=1.0, hard=False, dim=-1, generator=None):
    x = logits.movedim(dim, -1)
    g = _g(x.shape, generator)
    y = torch.exp(torch.log_softmax((x + g) / tau, dim=-1))
    if hard:
        y_hard = F.one_hot((x + g).argmax(-1), x.shape[-1]).to(y.dtype)
        y = (y_hard - y).detach() + y
    return y.movedim(-1, dim)


@right("gumbel_softmax", "float64 internals with the max subtracted by hand, exponential_ noise")
def gs_float64(logits, tau=1.0, hard=False, dim=-1, generator=None):
    e = torch.empty(logits.shape, dtype=torch.float64).exponential_(generator=generator)
    x = (logits.double() - torch.log(e)) / tau
    x = x - x.max(dim, keepdim=True).values.detach()
    y = x.exp() / x.exp().sum(dim, keepdim=True)
    if hard:
        y_hard = (y == y.max(dim, keepdim=True).values).to(y.dtype)
        y = y_hard + y - y.detach()
    return y.to(logits.dtype)


@right("gumbel_softmax", "noise drawn with a helper that uses the generator's own shape list")
def gs_helper(logits, tau=1.0, hard=False, dim=-1, generator=None):
    def sample_gumbel(shape, generator=None, eps=1e-10):
        u = torch.rand(list(shape), generator=generator)
        return -torch.log((-torch.log(u.clamp(eps, 1.0))).clamp_min(eps))

    soft = F.softmax((logits + sample_gumbel(logits.shape, generator)) / tau, dim)
    if hard:
        index = soft.argmax(dim, keepdim=True)
        return torch.zeros_like(soft).scatter(dim, index, 1.0) - soft.detach() + soft
    return soft


# ---------------------------------------------------------------- temperature_schedule

@right("temperature_schedule", "the reference formula")
def sched_plain(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = min(step / anneal_steps, 1.0)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@right("temperature_schedule", "exp and log form, if/else on kind")
def sched_math(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = 1.0 if step >= anneal_steps else step / anneal_steps
    if kind == "linear":
        return (1 - f) * tau_start + f * tau_end
    return math.exp(math.log(tau_start) + f * (math.log(tau_end) - math.log(tau_start)))


@right("temperature_schedule", "numpy: np.clip, np.interp in log space, a numpy float")
def sched_numpy(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = np.clip(step / anneal_steps, 0.0, 1.0)
    if kind == "exp":
        return np.float64(np.exp(np.interp(f, [0, 1], [np.log(tau_start), np.log(tau_end)])))
    return float(np.interp(f, [0, 1], [tau_start, tau_end]))


# ---------------------------------------------------------------- kl_to_uniform

@right("kl_to_uniform", "the reference: log_softmax, q (log q + log K)")
def kl_plain(logits):
    log_q = torch.log_softmax(logits, dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).sum((1, 2))


@right("kl_to_uniform", "log K - entropy, with torch.distributions.Categorical on channels-last logits")
def kl_categorical(logits):
    k = logits.shape[1]
    entropy = torch.distributions.Categorical(logits=logits.permute(0, 2, 3, 1)).entropy()
    return (math.log(k) - entropy).flatten(1).sum(1)


@right("kl_to_uniform", "F.kl_div with log targets, flattened positions")
def kl_div(logits):
    b, k = logits.shape[:2]
    log_q = F.log_softmax(logits.reshape(b, k, -1), dim=1)
    log_u = torch.full_like(log_q, -math.log(k))
    return F.kl_div(log_u, log_q, log_target=True, reduction="none").sum((1, 2))


@right("kl_to_uniform", "a loop over the batch in float64")
def kl_loop(logits):
    out = []
    for x in logits.double():
        log_q = x.log_softmax(0)
        out.append((log_q.exp() * log_q).sum() + x.shape[1] * x.shape[2] * math.log(x.shape[0]))
    return torch.stack(out).to(logits.dtype)


# ---------------------------------------------------------------- GumbelQuantizer

def _kl(logits):
    log_q = torch.log_softmax(logits, dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).sum((1, 2))


@right("GumbelQuantizer", "the reference: 1x1 conv, einsum, hard codes in eval")
class GQPlain(nn.Module):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.num_codes = num_codes
        self.proj = nn.Conv2d(in_channels, num_codes, 1)
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.tau = 1.0

    def forward(self, z):
        logits = self.proj(z)
        if self.training:
            g = -torch.log(-torch.log(torch.rand_like(logits) + 1e-10) + 1e-10)
            y = torch.softmax((logits + g) / self.tau, dim=1)
        else:
            y = F.one_hot(logits.argmax(1), self.num_codes).permute(0, 3, 1, 2).float()
        indices = y.argmax(1)
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
        p = counts / counts.sum()
        info = {"indices": indices, "perplexity": torch.exp(-torch.special.xlogy(p, p).sum()),
                "logits": logits}
        return torch.einsum("bkhw,kd->bdhw", y, self.codebook), _kl(logits).mean(), info


@right("GumbelQuantizer", "nn.Linear on channels-last features, matrix products, "
                          "the phase-1 reference perplexity, lookup in eval")
class GQLinear(nn.Module):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.k = num_codes
        self.to_logits = nn.Linear(in_channels, num_codes)
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1, 1))
        self.tau = 1.0
        self.hard = False

    def forward(self, z):
        b, _, h, w = z.shape
        logits_last = self.to_logits(z.permute(0, 2, 3, 1))                  # [B, H, W, K]
        logits = logits_last.permute(0, 3, 1, 2)
        if self.training:
            e = torch.empty_like(logits_last).exponential_()
            y = F.softmax((logits_last - e.log()) / self.tau, dim=-1)
            indices = y.argmax(-1)
            z_q = (y.reshape(-1, self.k) @ self.codebook).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        else:
            indices = logits_last.argmax(-1)
            z_q = self.codebook[indices].permute(0, 3, 1, 2)
        counts = torch.bincount(indices.flatten(), minlength=self.k)
        log_q = logits_last.log_softmax(-1)
        kl = (log_q.exp() * log_q).sum(-1).sum((1, 2)).mean() + h * w * math.log(self.k)
        return z_q, kl, {"indices": indices, "perplexity": perplexity(counts), "logits": logits}


@right("GumbelQuantizer", "noise from a float64 helper, KL by F.kl_div, an nn.ParameterDict-free "
                          "codebook set after other parameters")
class GQKLDiv(nn.Module):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, num_codes, 1))
        self.tau = 1.0
        self.codebook = nn.Parameter(0.1 * torch.randn(num_codes, code_dim))
        self.num_codes = num_codes

    def forward(self, z):
        logits = self.net(z)
        k = self.num_codes
        if self.training:
            u = torch.rand(logits.shape, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
            y = ((logits + (-(-u.log()).log()).float()) / self.tau).softmax(1)
        else:
            y = F.one_hot(logits.argmax(1), k).movedim(-1, 1).to(logits.dtype)
        z_q = (y.unsqueeze(2) * self.codebook.t()[None, :, :, None, None].transpose(1, 2)).sum(1)
        log_q = F.log_softmax(logits, 1)
        kl = F.kl_div(torch.full_like(log_q, -math.log(k)), log_q, log_target=True,
                      reduction="none").sum((1, 2, 3)).mean()
        indices = y.detach().argmax(1)
        return z_q, kl, {"indices": indices, "logits": logits,
                         "perplexity": perplexity(torch.bincount(indices.flatten(), minlength=k))}
