"""Reference models assembled from the course's pieces.

- :class:`VQVAE`: conv encoder -> a quantizer -> conv decoder (van den Oord et al. 2017,
  https://arxiv.org/abs/1711.00937). Phase 1 trains it with the learner's
  ``VectorQuantizer``; later phases plug in the reference quantizers of
  :mod:`dvl_helpers.quantizers` (EMA, residual, FSQ, ...).
- :func:`vqvae_step` / :func:`make_vqvae_step`: the step function ``dvl.train`` calls.
- :func:`reconstruct`, :func:`evaluate_vqvae`, :func:`code_images`: what the
  "Look" cells of the notebooks show.

A quantizer here is any module whose ``forward(z_e)`` maps ``[B, D, h, w]`` to
``(z_q [B, D, h, w], loss scalar, info)`` with ``info["indices"]`` ``[B, h, w]``;
decoding indices needs a ``codebook`` ``[K, D]`` attribute.

Used in: phase 1 (VQ-VAE), 2 (stable VQ), 4 (hierarchical VQ), 5 (VQGAN), 8 (priors).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .nn import Decoder, Encoder, check_shape
from .quantizers import perplexity

#: Images enter the model as ``x - SHIFT`` and leave as ``decoder(...) + SHIFT``.
SHIFT = 0.5


class VQVAE(nn.Module):
    """A VQ-VAE: ``x -> Encoder -> z_e -> quantizer -> z_q -> Decoder -> x_rec``.

    Images are ``[B, C, H, W]`` in ``[0, 1]``. The model sees ``x - 0.5`` and its
    decoder output is shifted back by ``+ 0.5``, as in the VQ-VAE Sonnet example:
    centring helps the first conv, and keeping the pixel scale (rather than
    mapping to ``[-1, 1]``) means the reconstruction error is measured in the
    units of the data, so its MSE is the MSE the metrics and the paper report.
    ``x_rec`` is not clamped (training needs its gradient); :func:`reconstruct`
    clamps it for display.

    Args:
        quantizer: the bottleneck, e.g. ``VectorQuantizer(num_codes, code_dim)``.
        in_channels: image channels (1 or 3).
        hidden, res_hidden, num_res_blocks: width and depth of
            :class:`~dvl_helpers.nn.Encoder` / :class:`~dvl_helpers.nn.Decoder`
            (128, 32, 2 in the paper).
        downsample: side of the image patch one code stands for (4 in the paper:
            32x32 images become 8x8 grids of codes).
        code_dim: ``D``, channels of ``z_e`` and of each code.
    """

    def __init__(self, quantizer: nn.Module, in_channels: int = 3, hidden: int = 128,
                 res_hidden: int = 32, num_res_blocks: int = 2, downsample: int = 4,
                 code_dim: int = 64):
        super().__init__()
        codebook = getattr(quantizer, "codebook", None)
        if isinstance(codebook, torch.Tensor) and (codebook.dim() != 2 or codebook.shape[1] != code_dim):
            raise ValueError(f"quantizer.codebook must be [K, code_dim={code_dim}], "
                             f"got shape {tuple(codebook.shape)}")
        self.in_channels = in_channels
        self.code_dim = code_dim
        self.downsample = downsample
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample,
                               out_channels=code_dim)
        self.quantizer = quantizer
        self.decoder = Decoder(code_dim, in_channels, hidden, res_hidden, num_res_blocks, downsample)

    @property
    def num_codes(self) -> int:
        """``K``, the codebook size (from ``quantizer.num_codes`` or ``quantizer.codebook``)."""
        k = getattr(self.quantizer, "num_codes", None)
        if k is None:
            k = self._codebook().shape[0]
        return int(k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Reconstruct ``x``.

        Args:
            x: images ``[B, C, H, W]`` in ``[0, 1]``, ``H`` and ``W`` multiples of ``downsample``.

        Returns:
            ``x_rec`` ``[B, C, H, W]`` (unclamped), the quantizer's loss (a scalar)
            and its ``info`` dict (``indices`` ``[B, H/ds, W/ds]``, ``perplexity``, ...).
        """
        z_q, vq_loss, info = self.quantizer(self.encode_latents(x))
        return self.decode(z_q), vq_loss, info

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous encoder output ``z_e`` ``[B, D, H/ds, W/ds]`` of images ``x`` in ``[0, 1]``."""
        check_shape(x, "x", 4, self.in_channels, f"[B, {self.in_channels}, H, W] images in [0, 1]")
        return self.encoder(x - SHIFT)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, h*ds, w*ds]`` (unclamped) from quantized latents ``z_q`` ``[B, D, h, w]``."""
        return self.decoder(z_q) + SHIFT

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices ``[B, H/ds, W/ds]`` (``torch.long``) of images ``x``.

        The quantizer runs in eval mode, so encoding never updates a codebook
        (EMA quantizers of phase 2 update theirs in train mode).
        """
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            _, _, info = self.quantizer(self.encode_latents(x))
        finally:
            self.quantizer.train(was_training)
        return info["indices"]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Quantized latents ``z_q`` ``[B, D, h, w]``: the codebook rows named by ``indices`` ``[B, h, w]``.

        Uses ``quantizer.lookup`` when the quantizer has one (the reference quantizers
        do), else indexes ``quantizer.codebook``.
        """
        if callable(getattr(self.quantizer, "lookup", None)):
            return self.quantizer.lookup(indices)
        check_shape(indices, "indices", 3, what="[B, h, w] code indices")
        if indices.dtype != torch.long:
            raise TypeError(f"indices must be torch.long, got {indices.dtype}")
        codebook = self._codebook()
        if indices.numel() and (indices.min() < 0 or indices.max() >= codebook.shape[0]):
            raise ValueError(f"indices must lie in [0, {codebook.shape[0] - 1}], "
                             f"got values in [{indices.min().item()}, {indices.max().item()}]")
        return codebook[indices].permute(0, 3, 1, 2).contiguous()

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, h*ds, w*ds]`` (unclamped) from code indices ``[B, h, w]``.

        ``model.decode_indices(model.encode(x))`` equals ``model(x)[0]`` in eval mode.
        """
        return self.decode(self.lookup(indices))

    def _codebook(self) -> torch.Tensor:
        codebook = getattr(self.quantizer, "codebook", None)
        if not isinstance(codebook, torch.Tensor):
            raise AttributeError(f"{type(self.quantizer).__name__} has no `codebook` tensor [K, D]; "
                                 "decoding indices needs one")
        return codebook


def from_preset(cfg, quantizer: nn.Module, in_channels: int = 3, downsample: int = 4) -> VQVAE:
    """A :class:`VQVAE` sized by a preset (``cfg.hidden``, ``cfg.res_hidden``, ``cfg.num_res_blocks``, ``cfg.code_dim``).

    Example::

        model = dvl.models.from_preset(cfg, VectorQuantizer(cfg.num_codes, cfg.code_dim))
    """
    return VQVAE(quantizer, in_channels=in_channels, hidden=cfg.hidden, res_hidden=cfg.res_hidden,
                 num_res_blocks=cfg.num_res_blocks, downsample=downsample, code_dim=cfg.code_dim)


# --------------------------------------------------------------------------- training


def _images(batch) -> torch.Tensor:
    """The images of a batch: ``x`` itself or the first entry of ``(x, label)``."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _usage(info: Mapping, num_codes: int) -> torch.Tensor:
    """Float counts ``[K]`` of each code in ``info`` (its ``usage``, else a bincount of ``indices``)."""
    if "usage" in info:
        return info["usage"].detach().float()
    indices = info["indices"].detach().reshape(-1)
    return torch.bincount(indices, minlength=num_codes).float()


def vqvae_step(model: VQVAE, batch, data_variance: float | None = None) -> dict:
    """One training step's metrics for ``dvl.train``: ``loss = rec + vq_loss``.

    Args:
        model: a :class:`VQVAE`.
        batch: images ``[B, C, H, W]`` or ``(images, labels)``.
        data_variance: if given, ``rec`` is the MSE divided by it (the Sonnet
            example's normalised MSE, which weighs reconstruction up against the
            VQ loss); default: the plain MSE.

    Returns:
        ``{"loss", "rec", "vq_loss", "perplexity"}`` scalar tensors (``loss`` with
        gradient) and ``"usage"``, the counts ``[K]`` of each code in the batch.
    """
    x = _images(batch)
    x_rec, vq_loss, info = model(x)
    rec = F.mse_loss(x_rec, x)
    if data_variance is not None:
        rec = rec / data_variance
    usage = _usage(info, model.num_codes)
    ppl = info["perplexity"] if "perplexity" in info else perplexity(usage)
    return {"loss": rec + vq_loss, "rec": rec.detach(), "vq_loss": vq_loss.detach(),
            "perplexity": torch.as_tensor(ppl).detach(), "usage": usage}


def make_vqvae_step(usage_every: int = 1, data_variance: float | None = None):
    """A :func:`vqvae_step` that reports ``usage`` summed over windows of ``usage_every`` steps.

    Per-batch counts are noisy (a batch of 32 images of 8x8 codes holds 2048
    indices); summing them over a window shows which codes the window never
    used, and logging one ``[K]`` array per window instead of per step keeps
    the history small. The codebook explorer widget shows one frame per window.

    Args:
        usage_every: window length in steps; ``"usage"`` is returned only on the
            last step of each window (use a multiple of ``dvl.train``'s ``log_every``).
        data_variance: passed to :func:`vqvae_step`.

    Returns:
        ``step_fn(model, batch) -> metrics`` for ``dvl.train``.
    """
    if usage_every < 1:
        raise ValueError(f"usage_every must be >= 1, got {usage_every}")
    window = {"calls": 0, "counts": None}

    def step_fn(model, batch):
        out = vqvae_step(model, batch, data_variance)
        usage = out.pop("usage")
        window["counts"] = usage if window["counts"] is None else window["counts"] + usage
        window["calls"] += 1
        if window["calls"] % usage_every == 0:
            out["usage"], window["counts"] = window["counts"], None
        return out

    return step_fn


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def reconstruct(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """Reconstructions of ``x`` ``[B, C, H, W]`` in ``[0, 1]`` (eval mode, no gradient, clamped), on ``x``'s device."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x_rec, _, _ = model(x.to(device))
    finally:
        model.train(was_training)
    return x_rec.clamp(0, 1).to(x.device)


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, loader: Iterable, max_batches: int | None = None,
                   data_variance: float | None = None) -> dict:
    """Reconstruction quality and codebook use of ``model`` over (up to ``max_batches`` of) ``loader``.

    Args:
        model: a :class:`VQVAE`.
        loader: yields images or ``(images, labels)``.
        max_batches: stop after this many batches (``None``: the whole loader).
        data_variance: divides the MSE in ``nmse`` (default: the variance of the
            evaluated images, so 1.0 means "as good as the mean image").

    Returns:
        Floats ``mse``, ``nmse``, ``psnr`` (dB), ``ssim``, ``perplexity`` (of the
        pooled code counts), ``codes_used`` (share of the ``K`` codes used at
        least once), and ``usage``, the pooled counts ``[K]`` (NumPy).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0}
    n, moments = 0, np.zeros(3)  # pixel count, sum, sum of squares
    counts = torch.zeros(model.num_codes, device=device)
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = _images(batch).to(device)
            x_rec, _, info = model(x)
            x_rec = x_rec.clamp(0, 1)
            b = x.shape[0]
            sums["mse"] += metrics.mse(x_rec, x).item() * b
            sums["psnr"] += metrics.psnr(x_rec, x).item() * b
            sums["ssim"] += metrics.ssim(x_rec, x).item() * b
            moments += _moments(x)
            counts += _usage(info, model.num_codes).to(device)
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the loader yielded no batch to evaluate")
    out = {k: v / n for k, v in sums.items()}
    if data_variance is None:
        data_variance = _variance(moments)
    out["nmse"] = out["mse"] / data_variance
    out["perplexity"] = perplexity(counts).item()
    out["codes_used"] = (counts > 0).float().mean().item()
    out["usage"] = counts.cpu().numpy()
    return out


@torch.no_grad()
def code_images(model: VQVAE, side: int = 1, codes: torch.Tensor | None = None) -> torch.Tensor:
    """What each code draws: the decoded image of a ``side x side`` map filled with one code.

    Args:
        model: a :class:`VQVAE` whose quantizer has a ``codebook``.
        side: side of the constant code map (1: one code, a ``downsample``-pixel patch;
            the decoder's receptive field makes it spill over a few more pixels).
        codes: which code indices ``[n]`` (default: all ``K``).

    Returns:
        Images ``[n, C, side*ds, side*ds]`` in ``[0, 1]``.
    """
    device = next(model.parameters()).device
    if codes is None:
        codes = torch.arange(model.num_codes, device=device)
    codes = torch.as_tensor(codes, dtype=torch.long, device=device).reshape(-1)
    was_training = model.training
    model.eval()
    try:
        images = model.decode_indices(codes[:, None, None].expand(-1, side, side))
    finally:
        model.train(was_training)
    return images.clamp(0, 1)


def pixel_variance(loader: Iterable, max_batches: int | None = None) -> float:
    """The variance of every pixel value of (up to ``max_batches`` of) ``loader`` (the ``nmse`` denominator)."""
    moments = np.zeros(3)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        moments += _moments(_images(batch))
    return _variance(moments)


def _moments(x: torch.Tensor) -> np.ndarray:
    """``[count, sum, sum of squares]`` of every value of ``x`` (float64)."""
    x = x.detach().double()
    return np.array([x.numel(), x.sum().item(), x.pow(2).sum().item()])


def _variance(moments: np.ndarray) -> float:
    count, s, s2 = moments
    if count < 2:
        raise ValueError("the loader yielded fewer than two pixel values")
    return float((s2 - s * s / count) / (count - 1))
