"""Wrong answers to 03_gumbel_dvae: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make (uniform or exponential noise instead of Gumbel noise, noise
added after dividing by tau, tau ignored, the softmax on the wrong dim, hard
samples without a gradient, an unclamped schedule, a KL averaged over
positions or with the wrong direction, a quantizer that mixes logits instead
of probabilities, ...); a few are shortcuts the grader must refuse (the global
random generator instead of the one given, the course's reference code).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers.gumbel as ref_g
from dvl_helpers.gumbel import GumbelQuantizer as RefGumbelQuantizer

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _gumbel(shape, generator=None, eps=1e-10):
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u + eps) + eps)


def _one_hot_like(y, dim):
    return torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)


def _soft(logits, tau, dim, generator):
    return torch.softmax((logits + _gumbel(logits.shape, generator)) / tau, dim=dim)


def _kl(logits):
    log_q = torch.log_softmax(logits, dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).sum((1, 2))


def _perplexity(indices, k):
    counts = torch.bincount(indices.reshape(-1), minlength=k).float()
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


# ---------------------------------------------------------------- sample_gumbel

@wrong("sample_gumbel", "uniform noise instead of Gumbel noise")
def gumbel_uniform(shape, generator=None, eps=1e-10):
    return torch.rand(shape, generator=generator)


@wrong("sample_gumbel", "-log(u): exponential noise instead of -log(-log u)")
def gumbel_exponential(shape, generator=None, eps=1e-10):
    return -torch.log(torch.rand(shape, generator=generator) + eps)


@wrong("sample_gumbel", "log(-log u): the sign is flipped (a reversed Gumbel)")
def gumbel_negated(shape, generator=None, eps=1e-10):
    return torch.log(-torch.log(torch.rand(shape, generator=generator) + eps) + eps)


@wrong("sample_gumbel", "standard normal noise")
def gumbel_normal(shape, generator=None, eps=1e-10):
    return torch.randn(shape, generator=generator)


@wrong("sample_gumbel", "ignores the generator: draws from the global one")
def gumbel_global(shape, generator=None, eps=1e-10):
    u = torch.rand(shape)
    return -torch.log(-torch.log(u + eps) + eps)


@wrong("sample_gumbel", "returns a flat tensor")
def gumbel_flat(shape, generator=None, eps=1e-10):
    return _gumbel(shape, generator, eps).reshape(-1)


@wrong("sample_gumbel", "eps added outside the inner log and far too large: a shifted distribution")
def gumbel_eps_outside(shape, generator=None, eps=1e-10):
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u) + eps * 1e9)


@wrong("sample_gumbel", "calls the course's reference implementation")
def gumbel_reference(shape, generator=None, eps=1e-10):
    return ref_g.sample_gumbel(shape, generator, eps)


# ---------------------------------------------------------------- gumbel_softmax

@wrong("gumbel_softmax", "uniform noise instead of Gumbel noise")
def gs_uniform_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax((logits + torch.rand(logits.shape, generator=generator)) / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "exponential noise -log(u) instead of -log(-log u)")
def gs_exponential_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    g = -torch.log(torch.rand(logits.shape, generator=generator) + 1e-10)
    y = torch.softmax((logits + g) / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "noise added after dividing by tau")
def gs_noise_after_tau(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax(logits / tau + _gumbel(logits.shape, generator), dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "tau ignored")
def gs_tau_ignored(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax(logits + _gumbel(logits.shape, generator), dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "multiplies by tau instead of dividing")
def gs_times_tau(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax((logits + _gumbel(logits.shape, generator)) * tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "softmax always over the last dim")
def gs_wrong_dim(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax((logits + _gumbel(logits.shape, generator)) / tau, dim=-1)
    return _one_hot_like(y, -1) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "hard without straight-through: a one-hot with no gradient")
def gs_hard_no_gradient(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits, tau, dim, generator)
    return _one_hot_like(y, dim) if hard else y


@wrong("gumbel_softmax", "hard returns the soft sample")
def gs_hard_is_soft(logits, tau=1.0, hard=False, dim=-1, generator=None):
    return _soft(logits, tau, dim, generator)


@wrong("gumbel_softmax", "hard takes the argmax of the logits, without the noise")
def gs_hard_noise_free(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits, tau, dim, generator)
    if not hard:
        return y
    return _one_hot_like(logits, dim) - y.detach() + y


@wrong("gumbel_softmax", "straight-through with the wrong sign: y_hard - y + y.detach()")
def gs_hard_wrong_sign(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits, tau, dim, generator)
    return _one_hot_like(y, dim) - y + y.detach() if hard else y


@wrong("gumbel_softmax", "hard one-hot along the last dim whatever dim is")
def gs_hard_wrong_dim(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits, tau, dim, generator)
    return _one_hot_like(y, -1) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "one noise value per row, broadcast over the categories")
def gs_noise_per_row(logits, tau=1.0, hard=False, dim=-1, generator=None):
    shape = list(logits.shape)
    shape[dim] = 1
    y = torch.softmax((logits + _gumbel(shape, generator)) / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "one noise vector shared by every row")
def gs_shared_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    k = logits.shape[dim]
    shape = [1] * logits.dim()
    shape[dim] = k
    y = torch.softmax((logits + _gumbel(shape, generator)) / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "subtracts the Gumbel noise")
def gs_minus_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax((logits - _gumbel(logits.shape, generator)) / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "F.gumbel_softmax: ignores the generator")
def gs_torch_builtin(logits, tau=1.0, hard=False, dim=-1, generator=None):
    return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)


@wrong("gumbel_softmax", "no noise at all: softmax(logits / tau)")
def gs_no_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = torch.softmax(logits / tau, dim=dim)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "adds the noise to the logits in place")
def gs_in_place(logits, tau=1.0, hard=False, dim=-1, generator=None):
    with torch.no_grad():
        logits += 0.0 * _gumbel(logits.shape, generator) + 0.01
    y = _soft(logits, tau, dim, generator)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "the soft sample is detached from the logits")
def gs_detached(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits.detach(), tau, dim, generator)
    return _one_hot_like(y, dim) - y.detach() + y if hard else y


@wrong("gumbel_softmax", "hard draws fresh noise for the one-hot")
def gs_hard_fresh_noise(logits, tau=1.0, hard=False, dim=-1, generator=None):
    y = _soft(logits, tau, dim, generator)
    if not hard:
        return y
    other = _soft(logits, tau, dim, generator)
    return _one_hot_like(other, dim) - y.detach() + y


@wrong("gumbel_softmax", "calls the course's reference implementation")
def gs_reference(logits, tau=1.0, hard=False, dim=-1, generator=None):
    return ref_g.gumbel_softmax(logits, tau, hard, dim, generator)


# ---------------------------------------------------------------- temperature_schedule

@wrong("temperature_schedule", "f not clamped: the temperature keeps falling after anneal_steps")
def sched_unclamped(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = step / anneal_steps
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "linear and exp swapped")
def sched_swapped(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = min(step / anneal_steps, 1.0)
    if kind == "linear":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "the default kind is linear")
def sched_default_linear(step, tau_start, tau_end, anneal_steps, kind="linear"):
    f = min(step / anneal_steps, 1.0)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "integer division: f is 0 until the end")
def sched_integer_division(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = min(step // anneal_steps, 1)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "exp as tau_start * exp(-f)")
def sched_exp_wrong(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = min(step / anneal_steps, 1.0)
    if kind == "exp":
        return max(tau_start * math.exp(-5 * f), tau_end)
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "linear runs from tau_end to tau_start")
def sched_linear_reversed(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = min(step / anneal_steps, 1.0)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_end + (tau_start - tau_end) * f


@wrong("temperature_schedule", "returns a tensor")
def sched_tensor(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = torch.tensor(min(step / anneal_steps, 1.0))
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "clamped with max: tau never goes below tau_start")
def sched_clamp_wrong(step, tau_start, tau_end, anneal_steps, kind="exp"):
    f = max(step / anneal_steps, 1.0)
    if kind == "exp":
        return tau_start * (tau_end / tau_start) ** f
    return tau_start + (tau_end - tau_start) * f


@wrong("temperature_schedule", "calls the course's reference implementation")
def sched_reference(step, tau_start, tau_end, anneal_steps, kind="exp"):
    return ref_g.temperature_schedule(step, tau_start, tau_end, anneal_steps, kind)


# ---------------------------------------------------------------- kl_to_uniform

@wrong("kl_to_uniform", "averaged over positions instead of summed")
def kl_mean_positions(logits):
    log_q = torch.log_softmax(logits, dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).mean((1, 2))


@wrong("kl_to_uniform", "the sign is flipped: H(q) - log K")
def kl_wrong_sign(logits):
    return -_kl(logits)


@wrong("kl_to_uniform", "the reverse direction KL(U || q)")
def kl_reverse(logits):
    k = logits.shape[1]
    log_q = torch.log_softmax(logits, dim=1)
    return (-(math.log(k) + log_q).sum(1) / k).sum((1, 2))


@wrong("kl_to_uniform", "softmax over the last (spatial) dim")
def kl_wrong_dim(logits):
    log_q = torch.log_softmax(logits, dim=-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).sum((1, 2))


@wrong("kl_to_uniform", "log K missing: the negative entropy")
def kl_no_log_k(logits):
    log_q = torch.log_softmax(logits, dim=1)
    return (log_q.exp() * log_q).sum(1).sum((1, 2))


@wrong("kl_to_uniform", "log(softmax): NaN for very confident logits")
def kl_naive_log(logits):
    q = torch.softmax(logits, dim=1)
    return (q * torch.log(q * logits.shape[1])).sum(1).sum((1, 2))


@wrong("kl_to_uniform", "xlogy: finite values but a NaN gradient where q = 0")
def kl_xlogy(logits):
    q = torch.softmax(logits, dim=1)
    return (torch.special.xlogy(q, q) + q * math.log(logits.shape[1])).sum(1).sum((1, 2))


@wrong("kl_to_uniform", "a scalar: averaged over the batch too")
def kl_scalar(logits):
    return _kl(logits).mean()


@wrong("kl_to_uniform", "in bits (log2) instead of nats")
def kl_bits(logits):
    return _kl(logits) / math.log(2)


@wrong("kl_to_uniform", "the entropy of the logits, not of softmax(logits)")
def kl_of_logits(logits):
    p = logits.abs() / logits.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return (torch.special.xlogy(p, p) + p * math.log(logits.shape[1])).sum(1).sum((1, 2))


@wrong("kl_to_uniform", "detached: no gradient")
def kl_detached(logits):
    return _kl(logits.detach())


@wrong("kl_to_uniform", "calls the course's reference implementation")
def kl_reference(logits):
    return ref_g.kl_to_uniform(logits)


# ---------------------------------------------------------------- GumbelQuantizer

class _Base(nn.Module):
    """A correct dVAE layer with hooks the wrong ones override."""

    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.num_codes = num_codes
        self.proj = nn.Conv2d(in_channels, num_codes, 1)
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.tau = 1.0

    def sample(self, logits):
        return _soft(logits, self.tau, 1, None)

    def mix(self, y):
        return torch.einsum("bkhw,kd->bdhw", y, self.codebook)

    def kl(self, logits):
        return _kl(logits).mean()

    def forward(self, z):
        logits = self.proj(z)
        if self.training:
            y = self.sample(logits)
        else:
            y = F.one_hot(logits.argmax(1), self.num_codes).permute(0, 3, 1, 2).float()
        indices = y.detach().argmax(1)
        info = {"indices": indices, "perplexity": _perplexity(indices, self.num_codes),
                "logits": logits}
        return self.mix(y), self.kl(logits), info


@wrong("GumbelQuantizer", "mixes the codes with the logits instead of the probabilities")
class GQSumLogits(_Base):
    def mix(self, y):
        return torch.einsum("bkhw,kd->bdhw", self._logits, self.codebook)

    def sample(self, logits):
        self._logits = logits
        return super().sample(logits)


@wrong("GumbelQuantizer", "hard one-hot samples in training mode")
class GQHard(_Base):
    def sample(self, logits):
        y = _soft(logits, self.tau, 1, None)
        return _one_hot_like(y, 1) - y.detach() + y


@wrong("GumbelQuantizer", "tau ignored")
class GQTauIgnored(_Base):
    def sample(self, logits):
        return _soft(logits, 1.0, 1, None)


@wrong("GumbelQuantizer", "noise added after dividing by tau")
class GQNoiseAfterTau(_Base):
    def sample(self, logits):
        return torch.softmax(logits / self.tau + _gumbel(logits.shape), dim=1)


@wrong("GumbelQuantizer", "no noise in training: softmax(logits / tau)")
class GQNoNoise(_Base):
    def sample(self, logits):
        return torch.softmax(logits / self.tau, dim=1)


@wrong("GumbelQuantizer", "softmax over the last (spatial) dim")
class GQWrongDim(_Base):
    def sample(self, logits):
        return torch.softmax((logits + _gumbel(logits.shape)) / self.tau, dim=-1)


@wrong("GumbelQuantizer", "kl averaged over positions")
class GQKLMeanPositions(_Base):
    def kl(self, logits):
        return _kl(logits).mean() / (logits.shape[2] * logits.shape[3])


@wrong("GumbelQuantizer", "kl summed over the batch")
class GQKLSumBatch(_Base):
    def kl(self, logits):
        return _kl(logits).sum()


@wrong("GumbelQuantizer", "kl with the wrong sign")
class GQKLSign(_Base):
    def kl(self, logits):
        return -_kl(logits).mean()


@wrong("GumbelQuantizer", "indices are the argmax of the logits, not of the sample")
class GQIndicesFromLogits(_Base):
    def forward(self, z):
        z_q, kl, info = super().forward(z)
        info["indices"] = info["logits"].argmax(1)
        info["perplexity"] = _perplexity(info["indices"], self.num_codes)
        return z_q, kl, info


@wrong("GumbelQuantizer", "keeps sampling in eval mode")
class GQNoisyEval(_Base):
    def forward(self, z):
        logits = self.proj(z)
        y = self.sample(logits)
        indices = y.detach().argmax(1)
        info = {"indices": indices, "perplexity": _perplexity(indices, self.num_codes),
                "logits": logits}
        return self.mix(y), self.kl(logits), info


@wrong("GumbelQuantizer", "the codebook is a buffer, not a parameter")
class GQBufferCodebook(_Base):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__(num_codes, code_dim, in_channels)
        del self.codebook
        self.register_buffer("codebook", torch.randn(num_codes, code_dim))


@wrong("GumbelQuantizer", "the sample is detached: no gradient reaches the logits")
class GQDetached(_Base):
    def sample(self, logits):
        return _soft(logits.detach(), self.tau, 1, None)


@wrong("GumbelQuantizer", "the temperature attribute is called temperature, tau missing")
class GQNoTau(_Base):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__(num_codes, code_dim, in_channels)
        del self.tau
        self.temperature = 1.0

    def sample(self, logits):
        return _soft(logits, self.temperature, 1, None)


@wrong("GumbelQuantizer", "the perplexity is K whatever the counts")
class GQPerplexityK(_Base):
    def forward(self, z):
        z_q, kl, info = super().forward(z)
        info["perplexity"] = torch.tensor(float(self.num_codes))
        return z_q, kl, info


@wrong("GumbelQuantizer", "no logits in info")
class GQNoLogits(_Base):
    def forward(self, z):
        z_q, kl, info = super().forward(z)
        del info["logits"]
        return z_q, kl, info


@wrong("GumbelQuantizer", "subclasses the course's reference implementation")
class GQSubclassReference(RefGumbelQuantizer):
    pass


@wrong("GumbelQuantizer", "delegates to the course's reference implementation")
class GQDelegates(nn.Module):
    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.inner = ref_g.GumbelQuantizer(num_codes, code_dim, in_channels)
        self.codebook = self.inner.codebook
        self.tau = 1.0

    def forward(self, z):
        self.inner.tau = self.tau
        self.inner.train(self.training)
        return self.inner(z)
