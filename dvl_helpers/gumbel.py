"""Gumbel-softmax relaxations and the dVAE bottleneck (reference for notebook ``03_gumbel_dvae``).

- :func:`sample_gumbel`: standard Gumbel(0, 1) noise ``-log(-log u)``.
- :func:`gumbel_softmax`: the Gumbel-softmax / Concrete sample
  ``softmax((logits + g) / tau)`` (Jang et al. 2016, https://arxiv.org/abs/1611.01144;
  Maddison et al. 2016, https://arxiv.org/abs/1611.00712), soft or straight-through hard.
- :func:`temperature_schedule`: exponential or linear annealing of ``tau``.
- :func:`kl_to_uniform`: ``KL(softmax(logits) || Uniform(K))`` summed over latent positions.
- :class:`GumbelQuantizer`: the dVAE bottleneck of DALL-E's first stage (Ramesh et al. 2021,
  https://arxiv.org/abs/2102.12092, section 3): features -> logits over ``K`` codes ->
  a relaxed one-hot sample -> the convex combination of the codes.
- :func:`dvae_step` / :func:`make_dvae_step`: the step function ``dvl.train`` calls for a
  :class:`~dvl_helpers.models.VQVAE` built around a :class:`GumbelQuantizer`.

Used in: phase 3 (the dVAE) and later phases that need a relaxed categorical sample.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import perplexity

__all__ = ["sample_gumbel", "gumbel_softmax", "temperature_schedule", "kl_to_uniform",
           "GumbelQuantizer", "dvae_step", "make_dvae_step"]


def _check_logits(logits, name="logits", ndim=None):
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if ndim is not None and logits.dim() != ndim:
        raise ValueError(f"{name} must be [B, K, H, W], got shape {tuple(logits.shape)}")


def _check_tau(tau):
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1:
            raise ValueError(f"tau must be a positive number, got a tensor of shape {tuple(tau.shape)}")
        tau = tau.item()
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0 or math.isinf(tau):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    return float(tau)


def sample_gumbel(shape, generator=None, eps=1e-10, *, device=None, dtype=None):
    """Standard Gumbel(0, 1) samples, ``g = -log(-log u)`` with ``u ~ Uniform(0, 1)``.

    ``eps`` keeps both logarithms finite when ``u`` is 0 or rounds to 1.

    Args:
        shape: the output shape (tuple, list or ``torch.Size``).
        generator: a ``torch.Generator`` to draw ``u`` from (default: the global one).
        eps: the small constant inside both logarithms.
        device, dtype: of the output (default: the generator's device, else CPU; float32).

    Returns:
        Float tensor of ``shape``.
    """
    if device is None and generator is not None:
        device = generator.device
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u + eps) + eps)


def gumbel_softmax(logits, tau=1.0, hard=False, dim=-1, generator=None):
    """A Gumbel-softmax sample ``y = softmax((logits + g) / tau)`` along ``dim``.

    With ``hard=True`` the value is the one-hot vector of ``argmax(logits + g)`` (an exact
    sample of ``Categorical(softmax(logits))``, the Gumbel-max trick) while the gradient is
    that of the soft ``y`` (straight-through: ``y_hard - y.detach() + y``).

    Args:
        logits: float tensor of any shape, unnormalised log-probabilities along ``dim``.
        tau: the temperature, > 0 (low: nearly one-hot; high: nearly uniform).
        hard: return straight-through one-hot samples.
        dim: the category axis.
        generator: a ``torch.Generator`` for the noise (on the logits' device).

    Returns:
        Float tensor shaped like ``logits``, summing to 1 along ``dim``.
    """
    _check_logits(logits)
    tau = _check_tau(tau)
    g = sample_gumbel(logits.shape, generator, device=logits.device, dtype=logits.dtype)
    y = torch.softmax((logits + g) / tau, dim=dim)
    if not hard:
        return y
    index = y.argmax(dim=dim, keepdim=True)
    y_hard = torch.zeros_like(y).scatter_(dim, index, 1.0)
    return y_hard - y.detach() + y


def temperature_schedule(step, tau_start, tau_end, anneal_steps, kind="exp"):
    """The temperature at ``step``: from ``tau_start`` to ``tau_end`` over ``anneal_steps``, then constant.

    With ``f = min(step / anneal_steps, 1)``:
    ``"exp"``: ``tau_start * (tau_end / tau_start) ** f`` (geometric, as in DALL-E);
    ``"linear"``: ``tau_start + (tau_end - tau_start) * f``.

    Returns:
        A Python float.
    """
    if anneal_steps <= 0:
        raise ValueError(f"anneal_steps must be > 0, got {anneal_steps}")
    if tau_start <= 0 or tau_end <= 0:
        raise ValueError(f"temperatures must be > 0, got tau_start={tau_start}, tau_end={tau_end}")
    f = min(max(float(step), 0.0) / anneal_steps, 1.0)
    if kind == "exp":
        return float(tau_start * (tau_end / tau_start) ** f)
    if kind == "linear":
        return float(tau_start + (tau_end - tau_start) * f)
    raise ValueError(f"kind must be 'exp' or 'linear', got {kind!r}")


def kl_to_uniform(logits):
    """``KL(q || Uniform(K))`` per image, ``q = softmax(logits)`` over the codes, summed over positions.

    ``KL(q || U) = sum_k q_k log(K q_k) = log K - H(q)`` at each position, computed from
    ``log_softmax`` so that ``q_k = 0`` contributes 0 (not NaN).

    Args:
        logits: float tensor ``[B, K, H, W]``, codes along dim 1.

    Returns:
        Float tensor ``[B]`` (nats), differentiable in ``logits``.
    """
    _check_logits(logits, ndim=4)
    log_q = torch.log_softmax(logits, dim=1)
    kl = (log_q.exp() * log_q).sum(1) + math.log(logits.shape[1])       # [B, H, W]
    return kl.sum(dim=(1, 2))


class GumbelQuantizer(nn.Module):
    """The dVAE bottleneck: features -> logits over ``K`` codes -> ``z_q = sum_k y_k e_k``.

    In training mode ``y`` is a Gumbel-softmax sample at the temperature ``tau`` (an
    attribute the training loop sets), soft unless ``hard`` is True (then straight-through
    one-hot). In eval mode ``y`` is the one-hot of ``argmax(logits)``: no noise, so
    ``z_q`` is the codebook row of ``indices``.

    Args:
        num_codes: ``K``.
        code_dim: ``D``, size of each code (the decoder's input channels).
        in_channels: channels of the encoder features (a 1x1 conv maps them to ``K`` logits).

    Attributes:
        codebook: ``nn.Parameter`` ``[K, D]`` (standard normal, as ``nn.Embedding``).
        tau: the temperature (float, default 1.0). hard: straight-through samples (default False).

    forward(z): ``z`` ``[B, in_channels, H, W]`` ->
        ``(z_q [B, D, H, W], kl, info)``: ``kl`` the scalar mean over the batch of
        :func:`kl_to_uniform` of the logits; ``info`` holds ``indices`` (``[B, H, W]``, the
        argmax of the sample), ``perplexity`` of those indices, ``usage`` (counts ``[K]``)
        and ``logits`` ``[B, K, H, W]``.
    """

    def __init__(self, num_codes, code_dim, in_channels):
        super().__init__()
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.in_channels = int(in_channels)
        self.proj = nn.Conv2d(in_channels, num_codes, kernel_size=1)
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.tau = 1.0
        self.hard = False

    def extra_repr(self):
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, "
                f"in_channels={self.in_channels}, tau={self.tau:.4g}, hard={self.hard}")

    def forward(self, z):
        if not isinstance(z, torch.Tensor) or z.dim() != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"z must be [B, {self.in_channels}, H, W], got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        logits = self.proj(z)                                             # [B, K, H, W]
        if self.training:
            y = gumbel_softmax(logits, self.tau, hard=self.hard, dim=1)
        else:
            y = F.one_hot(logits.argmax(1), self.num_codes).permute(0, 3, 1, 2).to(logits.dtype)
        z_q = torch.einsum("bkhw,kd->bdhw", y, self.codebook)
        indices = y.detach().argmax(1)                                    # [B, H, W]
        usage = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        kl = kl_to_uniform(logits).mean()
        info = {"indices": indices, "perplexity": perplexity(usage), "usage": usage, "logits": logits}
        return z_q, kl, info

    def lookup(self, indices):
        """``z_q`` ``[B, D, h, w]``: the codebook rows named by ``indices`` ``[B, h, w]`` (torch.long)."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError("indices must be a torch.long tensor [B, h, w]")
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- training


def dvae_step(model, batch, kl_weight=1.0):
    """One dVAE training step's metrics for ``dvl.train``: ``loss = mse + kl_weight * kl / pixels``.

    The KL (nats per image) is divided by the number of values of an image (``C*H*W``)
    so that both terms are per pixel, like the mean squared error.

    Args:
        model: a :class:`~dvl_helpers.models.VQVAE` whose quantizer returns
            ``(z_q, kl, info)`` (a :class:`GumbelQuantizer`).
        batch: images ``[B, C, H, W]`` or ``(images, labels)``.
        kl_weight: weight of the KL to the uniform prior.

    Returns:
        ``{"loss", "rec", "kl", "perplexity"}`` scalar tensors (``loss`` with gradient)
        and ``"usage"`` (counts ``[K]``).
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    x_rec, kl, info = model(x)
    rec = F.mse_loss(x_rec, x)
    loss = rec + kl_weight * kl / x[0].numel()
    usage = info["usage"].detach().float() if "usage" in info else torch.bincount(
        info["indices"].reshape(-1), minlength=model.num_codes).float()
    return {"loss": loss, "rec": rec.detach(), "kl": kl.detach(),
            "perplexity": torch.as_tensor(info["perplexity"]).detach(), "usage": usage}


def make_dvae_step(schedule: Callable[[int], float] | None = None, kl_weight: float = 1.0,
                   usage_every: int = 1, tau_start: float = 1.0, tau_end: float = 1 / 16,
                   anneal_steps: int = 1000):
    """A :func:`dvae_step` that sets ``model.quantizer.tau`` from a schedule before each step.

    Args:
        schedule: ``step -> tau`` (step counts calls from 0); default
            ``temperature_schedule(step, tau_start, tau_end, anneal_steps, "exp")``.
        kl_weight: passed to :func:`dvae_step`.
        usage_every: ``"usage"`` (code counts ``[K]``) is returned summed over windows of
            this many steps, on the last step of each window.

    Returns:
        ``step_fn(model, batch) -> metrics`` for ``dvl.train``; its metrics add ``"tau"``.
    """
    if usage_every < 1:
        raise ValueError(f"usage_every must be >= 1, got {usage_every}")
    if schedule is None:
        def schedule(step):
            return temperature_schedule(step, tau_start, tau_end, anneal_steps, "exp")
    state = {"calls": 0, "counts": None}

    def step_fn(model, batch):
        tau = float(schedule(state["calls"]))
        model.quantizer.tau = tau
        out = dvae_step(model, batch, kl_weight)
        usage = out.pop("usage")
        state["counts"] = usage if state["counts"] is None else state["counts"] + usage
        state["calls"] += 1
        if state["calls"] % usage_every == 0:
            out["usage"], state["counts"] = state["counts"], None
        out["tau"] = torch.tensor(tau)
        return out

    return step_fn
