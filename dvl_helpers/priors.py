"""Priors over discrete codes: sampling and training (notebook ``08_priors``).

A tokenizer (a VQ-VAE) turns an image into ``h x w`` codes; a prior learns
their distribution, and generating an image is sampling codes from the prior
and decoding them. Two priors, two ways of sampling:

- autoregressive (Esser et al. 2021, https://arxiv.org/abs/2012.09841): one
  code at a time in raster order, each drawn from
  ``p(x_i | x_<i)`` (:func:`causal_mask`, :func:`top_k_filter`,
  :func:`sample_logits`, :func:`sample_autoregressive`);
- MaskGIT (Chang et al. 2022, https://arxiv.org/abs/2202.04200): start from
  all positions masked, and at each of a few steps sample every masked
  position in parallel and keep only the most confident samples
  (:func:`maskgit_schedule`, :func:`maskgit_num_masked`,
  :func:`maskgit_decode_step`, :func:`maskgit_generate`).

Models follow :mod:`dvl_helpers.transformer`: an autoregressive model maps
codes ``[B, t]`` to logits ``[B, t, K]`` with ``logits[:, i]`` scoring code
``i`` given ``codes[:, :i]`` (it prepends its own BOS token); a MaskGIT model
maps tokens ``[B, L]`` whose unknown positions hold ``model.mask_id`` to logits
``[B, L, K]``.

Also here: the training steps of both priors (:func:`ar_step`,
:func:`make_maskgit_step`), bits per code on held-out codes
(:func:`bits_per_code`), turning images into code sequences and back
(:func:`encode_codes`, :func:`decode_codes`) and the small classifier whose
feature space scores samples (:class:`DigitClassifier`,
:func:`classifier_features`, :func:`frechet_distance`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "causal_mask", "top_k_filter", "sample_logits", "sample_autoregressive", "maskgit_schedule",
    "maskgit_num_masked", "maskgit_decode_step", "maskgit_generate", "ar_step",
    "make_maskgit_step", "bits_per_code", "encode_codes", "decode_codes", "DigitClassifier",
    "classifier_step", "classifier_features", "frechet_distance",
]

SCHEDULES = ("cosine", "linear", "square")


def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


def _model_device(model):
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- autoregressive


def causal_mask(T: int, device=None) -> torch.Tensor:
    """Boolean ``[T, T]``, True where query ``i`` may attend key ``j``, i.e. ``j <= i``.

    The diagonal is True: a position sees itself (its own input token), never the future.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 0:
        raise ValueError(f"T must be a non-negative int, got {T!r}")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``logits`` ``[B, V]`` with all but the ``k`` largest of each row set to ``-inf``.

    A logit equal to the k-th largest is kept (as in nanoGPT), so a row with
    ties at the boundary keeps more than ``k``; ``k >= V`` keeps everything.
    Returns a new tensor.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {_shape(logits)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k >= logits.shape[1]:
        return logits.clone()
    kth = logits.topk(k, dim=1).values[:, -1:]                     # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``logits`` ``[B, V]``, drawn from ``softmax(logits / temperature)``.

    With ``top_k`` the logits are first filtered by :func:`top_k_filter`.
    Returns a ``torch.long`` tensor ``[B]`` on ``logits``' device. The draw
    uses ``generator`` (a CPU generator with CUDA logits draws on the CPU).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {_shape(logits)}")
    _check_temperature(temperature)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits, dim=1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_autoregressive(model, batch_size: int, length: int, temperature: float = 1.0,
                          top_k: int | None = None, generator: torch.Generator | None = None
                          ) -> torch.Tensor:
    """Codes ``[batch_size, length]`` sampled one position at a time from ``model``.

    At step ``i`` the model sees ``codes[:, :i + 1]`` (the codes sampled so
    far and a placeholder at ``i``, which a causal model with BOS does not
    read) and position ``i`` is drawn from ``logits[:, i]`` with
    :func:`sample_logits`.
    """
    codes = torch.zeros(batch_size, length, dtype=torch.long, device=_model_device(model))
    for i in range(length):
        logits = model(codes[:, :i + 1])[:, i]                       # [B, K]
        codes[:, i] = sample_logits(logits, temperature, top_k, generator)
    return codes


# ----------------------------------------------------------------------------- MaskGIT


def maskgit_schedule(r, kind: str = "cosine"):
    """The fraction of positions still masked at progress ``r`` in ``[0, 1]``.

    ``cosine``: ``cos(pi r / 2)``; ``linear``: ``1 - r``; ``square``: ``1 - r**2``.
    Each falls from 1 at ``r = 0`` to 0 at ``r = 1``. ``r`` is a number (returns a
    float) or a tensor (returns a tensor of its shape).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"kind must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    tensor = isinstance(r, torch.Tensor)
    cos = torch.cos if tensor else math.cos
    if kind == "cosine":
        return cos(math.pi / 2 * r)
    if kind == "linear":
        return 1 - r
    return 1 - r ** 2


def maskgit_num_masked(length: int, step: int, steps: int, kind: str = "cosine",
                       previous: int | None = None) -> int:
    """How many of ``length`` positions stay masked after step ``step`` (1..``steps``).

    ``floor(length * maskgit_schedule(step / steps, kind))``, at most
    ``previous - 1`` (every step decodes at least one position) and at least 0.
    """
    n = math.floor(length * maskgit_schedule(step / steps, kind))
    if previous is not None:
        n = min(n, previous - 1)
    return max(n, 0)


def maskgit_decode_step(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor,
                        num_to_mask: int, temperature: float = 1.0,
                        generator: torch.Generator | None = None, choice_noise: float = 0.0):
    """One MaskGIT step: sample every masked position, re-mask the least confident.

    Args:
        logits: ``[B, L, K]`` the model's scores for every position.
        tokens: ``[B, L]`` long, the current tokens (decoded codes where ``masked`` is False).
        masked: ``[B, L]`` bool, the positions still unknown.
        num_to_mask: how many positions of each row stay masked after this step.
        temperature: sampling temperature.
        generator: random generator of the draws.
        choice_noise: scale of the Gumbel noise added to the log-confidences before
            choosing what to re-mask (MaskGIT's randomised selection; 0: none, the
            notebook's contract). Without it the most confident codes, the plain
            background, are always kept first.

    Returns:
        ``(tokens, masked)``: each masked position gets a code drawn from
        ``softmax(logits / temperature)``; its confidence is the probability of
        that draw under the same distribution; the ``num_to_mask`` sampled
        positions with the lowest confidence are masked again (their entries of
        ``tokens`` stay as they were). Decoded positions never change.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be [B, L, K], got {_shape(logits)}")
    b, length, k = logits.shape
    if not isinstance(tokens, torch.Tensor) or tuple(tokens.shape) != (b, length):
        raise ValueError(f"tokens must be [B, L] = {(b, length)}, got {_shape(tokens)}")
    if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool \
            or tuple(masked.shape) != (b, length):
        raise ValueError(f"masked must be a torch.bool [B, L] = {(b, length)}, got {_shape(masked)}")
    fewest = int(masked.sum(1).min()) if b else 0
    if not 0 <= num_to_mask <= fewest:
        raise ValueError(f"num_to_mask must be in [0, {fewest}] (the fewest masked positions "
                         f"of a row), got {num_to_mask}")
    _check_temperature(temperature)
    probs = torch.softmax(logits.float() / temperature, dim=-1).reshape(-1, k)
    if generator is not None and generator.device != probs.device:
        sampled = torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    else:
        sampled = torch.multinomial(probs, 1, generator=generator)
    confidence = probs.gather(1, sampled).view(b, length)
    sampled = sampled.view(b, length)
    if choice_noise:
        u = torch.rand(b, length, generator=generator,
                       device=generator.device if generator is not None else probs.device).to(probs.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        confidence = confidence.clamp_min(1e-30).log() + choice_noise * gumbel
    confidence = confidence.masked_fill(~masked, float("inf"))   # decoded: never re-masked
    remask = torch.zeros_like(masked)
    if num_to_mask:
        lowest = confidence.topk(num_to_mask, dim=1, largest=False).indices
        remask.scatter_(1, lowest, True)
    new = torch.where(masked & ~remask, sampled, tokens)
    return new, remask


@torch.no_grad()
def maskgit_generate(model, batch_size: int, length: int, steps: int, kind: str = "cosine",
                     temperature: float = 1.0, generator: torch.Generator | None = None,
                     choice_temperature: float = 0.0) -> torch.Tensor:
    """Codes ``[batch_size, length]`` decoded by MaskGIT in ``steps`` parallel steps.

    Starts from all positions holding ``model.mask_id``; after step ``s`` the
    number still masked is :func:`maskgit_num_masked` ``(length, s, steps, kind,
    previous)``, which is 0 after the last step. ``choice_temperature`` (MaskGIT
    uses 4.5) scales the Gumbel noise on the confidences, annealed as
    ``choice_temperature * (1 - s / steps)``; 0 keeps the most confident codes.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = _model_device(model)
    tokens = torch.full((batch_size, length), model.mask_id, dtype=torch.long, device=device)
    masked = torch.ones(batch_size, length, dtype=torch.bool, device=device)
    n = length
    for step in range(1, steps + 1):
        if n == 0:
            break
        n = maskgit_num_masked(length, step, steps, kind, previous=n)
        noise = choice_temperature * (1 - step / steps)
        tokens, masked = maskgit_decode_step(model(tokens), tokens, masked, n, temperature, generator, noise)
        tokens = tokens.masked_fill(masked, model.mask_id)
    return tokens


# ----------------------------------------------------------------------------- training


def _codes(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def ar_step(model, batch) -> dict:
    """Training step of an autoregressive prior for ``dvl.train``.

    ``batch``: codes ``[B, L]`` (or ``(codes, ...)``). Returns ``loss``, the mean
    cross-entropy of every code given the previous ones (nats), and
    ``bits_per_code`` (the same in bits).
    """
    codes = _codes(batch)
    logits = model(codes)                                            # [B, L, K]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))
    return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}


def make_maskgit_step(kind: str = "cosine", generator: torch.Generator | None = None):
    """Training step of a MaskGIT prior for ``dvl.train``.

    Each row draws ``r ~ U(0, 1)`` and masks ``ceil(L * maskgit_schedule(r))``
    random positions (at least one) with ``model.mask_id``; ``loss`` is the
    cross-entropy of the true codes at the masked positions.
    """
    maskgit_schedule(0.0, kind)                                      # validates kind

    def step_fn(model, batch):
        codes = _codes(batch)
        b, length = codes.shape
        r = torch.rand(b, generator=generator).to(codes.device)
        count = torch.ceil(maskgit_schedule(r, kind) * length).clamp(1, length)   # [B]
        ranks = torch.rand(b, length, generator=generator).to(codes.device).argsort(1).argsort(1)
        mask = ranks < count[:, None]
        logits = model(codes.masked_fill(mask, model.mask_id))
        loss = F.cross_entropy(logits[mask], codes[mask])
        return {"loss": loss, "masked_fraction": mask.float().mean()}

    return step_fn


@torch.no_grad()
def bits_per_code(model, codes: torch.Tensor, batch_size: int = 256) -> float:
    """Mean negative log2-likelihood per code of held-out ``codes`` ``[N, L]`` under an autoregressive ``model``.

    ``log2(K)`` is the cost of a uniform guess; lower is better.
    """
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError(f"codes must be [N, L], got {_shape(codes)}")
    was_training = model.training
    model.eval()
    device = _model_device(model)
    total = 0.0
    try:
        for chunk in codes.split(batch_size):
            chunk = chunk.to(device)
            logits = model(chunk)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                     chunk.reshape(-1), reduction="sum").item()
    finally:
        model.train(was_training)
    return total / max(codes.numel(), 1) / math.log(2)


@torch.no_grad()
def encode_codes(tokenizer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Code sequences ``[N, h * w]`` (raster order) of ``images`` ``[N, C, H, W]``.

    ``tokenizer`` is a :class:`~dvl_helpers.models.VQVAE`; it runs in eval mode
    (an EMA codebook is not updated).
    """
    was_training = tokenizer.training
    tokenizer.eval()
    device = _model_device(tokenizer)
    try:
        out = [tokenizer.encode(x.to(device)).flatten(1).cpu() for x in images.split(batch_size)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def decode_codes(tokenizer, codes: torch.Tensor, grid: tuple[int, int],
                 batch_size: int = 256) -> torch.Tensor:
    """Images ``[N, C, H, W]`` in ``[0, 1]`` (CPU) from code sequences ``[N, h * w]``."""
    h, w = grid
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != h * w:
        raise ValueError(f"codes must be [N, h * w] = [N, {h * w}], got {_shape(codes)}")
    was_training = tokenizer.training
    tokenizer.eval()
    device = _model_device(tokenizer)
    try:
        out = [tokenizer.decode_indices(c.to(device).view(-1, h, w)).clamp(0, 1).cpu()
               for c in codes.split(batch_size)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(out)


# ----------------------------------------------------------------------------- sample quality


class DigitClassifier(nn.Module):
    """A small conv net for grey digits ``[B, 1, H, W]``; its penultimate layer is a feature space.

    ``features(x)`` ``[B, 64]`` (after global average pooling), ``forward(x)``
    logits ``[B, num_classes]``. Trained on the real images of the notebook, it
    plays the part Inception plays for FID.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 1):
        super().__init__()
        # three stride-2 convs: 32x32 (or 28x28) digits become 4x4 maps, cheap on a CPU
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_step(model, batch) -> dict:
    """Training step of :class:`DigitClassifier` for ``dvl.train``: ``loss`` and ``accuracy``."""
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits, y),
            "accuracy": (logits.argmax(1) == y).float().mean()}


@torch.no_grad()
def classifier_features(model, images: torch.Tensor, batch_size: int = 512):
    """``(features [N, 64], probabilities [N, classes])`` of ``images`` as float64 NumPy arrays."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    feats, probs = [], []
    try:
        for x in images.split(batch_size):
            f = model.features(x.to(device))
            feats.append(f.double().cpu())
            probs.append(torch.softmax(model.head(f), 1).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(values.clip(0))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features ``a`` ``[N, F]`` and ``b`` ``[M, F]``.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, the FID
    formula (Heusel et al. 2017) in whatever feature space ``a`` and ``b`` come from.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"a and b must be [N, F] and [M, F] with N, M >= 2, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _sqrt_psd(sa)
    cross = np.sqrt(np.linalg.eigvalsh(root @ sb @ root).clip(0)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)
