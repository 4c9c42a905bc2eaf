"""Reference variational autoencoder: what the learner builds in ``00_vae``.

A VAE (Kingma & Welling 2013, https://arxiv.org/abs/1312.6114) encodes an image
into the mean ``mu`` and log-variance ``logvar`` of a diagonal Gaussian
``q(z | x)``, samples ``z`` from it with the reparameterization trick, and
decodes ``z`` into the logits of a Bernoulli distribution over the pixels.
Training minimises the negative ELBO: the reconstruction negative
log-likelihood plus the KL divergence from ``q(z | x)`` to the prior ``N(0, I)``.

- :func:`reparameterize`, :func:`gaussian_kl`, :func:`negative_elbo`: the pieces.
- :class:`VAE`: the paper's conv network of :mod:`dvl_helpers.nn` around a
  vector latent ``[B, latent_dim]``.
- :func:`vae_step`: the step function ``dvl.train`` calls.
- :func:`encode_dataset`, :func:`active_units`: posterior collapse, measured
  as in Burda et al. 2015 (https://arxiv.org/abs/1509.00519).

Shapes: images ``[B, C, H, W]`` in ``[0, 1]``; ``mu``, ``logvar`` and ``z``
``[B, D]`` (any ``[B, ...]`` works in the functions: every dimension but the
batch one is summed).

Used in: ``00_vae`` (the reference behind the checks' examples) and
``03_gumbel_dvae`` (the continuous baseline its discrete relaxation replaces).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# absolute, so that the module's source also runs outside the package
from dvl_helpers.nn import Decoder, Encoder, check_shape

__all__ = [
    "reparameterize", "gaussian_kl", "negative_elbo", "VAE", "vae_step",
    "encode_dataset", "active_units",
]

#: Burda et al.'s threshold: unit ``u`` is active if ``Cov_x(E_q[z_u]) > 0.01``.
ACTIVE_THRESHOLD = 0.01


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}"
    return type(x).__name__


def _check_gaussian(mu, logvar):
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor [B, D], got {_describe(t)}")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape [B, D], got mu {tuple(mu.shape)} "
                         f"and logvar {tuple(logvar.shape)}")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample ``z ~ N(mu, diag(exp(logvar)))`` that is differentiable in ``mu`` and ``logvar``.

    ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn from
    ``generator`` (torch's global generator when ``None``): the randomness sits
    in ``eps``, outside the graph, so ``dz/dmu = 1`` and
    ``dz/dlogvar = eps * exp(logvar / 2) / 2``.

    Args:
        mu: ``[B, D]`` (or any shape) means.
        logvar: log-variances, shaped like ``mu``.
        generator: source of ``eps``; two calls with generators in the same
            state give the same ``z``. ``eps`` is drawn on the generator's device.

    Returns:
        ``z``, shaped like ``mu``.
    """
    _check_gaussian(mu, logvar)
    device = mu.device if generator is None else generator.device
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=device).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` of every item of a batch.

    In closed form, per latent unit, ``(mu^2 + exp(logvar) - 1 - logvar) / 2``
    (Kingma & Welling 2013, appendix B), summed over every dimension but the
    first.

    Args:
        mu: ``[B, D]`` (or ``[B, ...]``) means.
        logvar: log-variances, shaped like ``mu``.

    Returns:
        ``[B]`` non-negative KL divergences, in nats.
    """
    _check_gaussian(mu, logvar)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1) if kl.dim() > 1 else kl


def negative_elbo(x: torch.Tensor, x_logits: torch.Tensor, mu: torch.Tensor,
                  logvar: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative evidence lower bound of a Bernoulli-decoder VAE, averaged over the batch.

    ``recon`` is the Bernoulli negative log-likelihood of ``x`` under the
    decoder's logits, ``softplus(l) - x * l`` per pixel (stable for any logit),
    summed over every non-batch dimension; ``kl`` is :func:`gaussian_kl`. Both
    are averaged over the batch, and ``loss = recon + beta * kl`` (``beta = 1``:
    the ELBO; other values: the beta-VAE of Higgins et al. 2017).

    Args:
        x: ``[B, C, H, W]`` targets in ``[0, 1]`` (grey levels act as soft labels).
        x_logits: the decoder's logits, shaped like ``x``.
        mu, logvar: ``[B, D]`` parameters of ``q(z | x)``.
        beta: weight of the KL term.

    Returns:
        ``(loss, recon, kl)``, three scalar tensors (nats per image).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_logits, torch.Tensor) or x.shape != x_logits.shape:
        raise ValueError(f"x and x_logits must be tensors of the same shape [B, C, H, W], got "
                         f"x {_describe(x)} and x_logits {_describe(x_logits)}")
    _check_gaussian(mu, logvar)
    if x.dim() < 1 or mu.shape[0] != x.shape[0]:
        raise ValueError(f"x and mu must share the batch dimension, got x {tuple(x.shape)} "
                         f"and mu {tuple(mu.shape)}")
    nll = F.binary_cross_entropy_with_logits(x_logits, x.to(x_logits.dtype), reduction="none")
    recon = nll.flatten(1).sum(dim=1).mean() if nll.dim() > 1 else nll.mean()
    kl = gaussian_kl(mu, logvar).mean()
    return recon + beta * kl, recon, kl


class VAE(nn.Module):
    """A conv VAE with a vector latent: ``x -> Encoder -> (mu, logvar) -> z -> Decoder -> logits``.

    The encoder and decoder are :class:`~dvl_helpers.nn.Encoder` /
    :class:`~dvl_helpers.nn.Decoder` (the VQ-VAE paper's network, downsampling
    by 4). Between them, linear layers map the ``[hidden, image_size / 4,
    image_size / 4]`` feature map to ``2 * latent_dim`` numbers (``mu`` and
    ``logvar``) and ``z`` back to a feature map.

    Args:
        in_channels: image channels (1 for digits and MNIST).
        latent_dim: ``D``, the size of ``z`` (2 for pictures of the latent plane).
        hidden, res_hidden, num_res_blocks: width and depth of the conv trunk.
        image_size: side of the square input images, a multiple of 4.
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 2, hidden: int = 32,
                 res_hidden: int = 8, num_res_blocks: int = 1, image_size: int = 32):
        super().__init__()
        if image_size % 4 or image_size < 4:
            raise ValueError(f"image_size must be a positive multiple of 4, got {image_size}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.feature_shape = (hidden, image_size // 4, image_size // 4)
        features = hidden * (image_size // 4) ** 2
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4)
        self.to_stats = nn.Linear(features, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, features)
        self.decoder = Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``[B, latent_dim]``, of images ``x`` ``[B, C, H, W]`` in ``[0, 1]``."""
        size = self.image_size
        check_shape(x, "x", 4, self.in_channels, f"[B, {self.in_channels}, {size}, {size}] images")
        if x.shape[-2:] != (size, size):
            raise ValueError(f"x must be [B, {self.in_channels}, {size}, {size}] images, got shape {tuple(x.shape)}")
        stats = self.to_stats(self.encoder(x).flatten(1))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``[B, C, H, W]`` from latents ``z`` ``[B, latent_dim]`` (``sigmoid`` gives the image)."""
        check_shape(z, "z", 2, self.latent_dim, f"[B, {self.latent_dim}]")
        return self.decoder(self.from_latent(z).view(-1, *self.feature_shape))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """``(x_logits [B, C, H, W], mu [B, D], logvar [B, D])``: a reconstruction through a sampled ``z``."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)
        return self.decode(z), mu, logvar


def vae_step(model: nn.Module, batch, beta: float = 1.0) -> dict:
    """One training step's metrics for ``dvl.train``: the negative ELBO and its two terms.

    Args:
        model: returns ``(x_logits, mu, logvar)`` for images ``x`` (e.g. :class:`VAE`).
        batch: images ``[B, C, H, W]`` or ``(images, labels)``.
        beta: weight of the KL term.

    Returns:
        ``{"loss", "recon", "kl"}`` scalar tensors (``loss`` with gradient).
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    x_logits, mu, logvar = model(x)
    loss, recon, kl = negative_elbo(x, x_logits, mu, logvar, beta)
    return {"loss": loss, "recon": recon.detach(), "kl": kl.detach()}


@torch.no_grad()
def encode_dataset(model: nn.Module, images: torch.Tensor, batch_size: int = 512):
    """``(mu, logvar)`` ``[N, D]`` of every image, on the CPU (eval mode, no gradient).

    Args:
        model: has ``encode(x) -> (mu, logvar)`` (e.g. :class:`VAE`).
        images: ``[N, C, H, W]`` in ``[0, 1]`` (a dataset's ``.images``).
        batch_size: images per forward pass.
    """
    check_shape(images, "images", 4, what="[N, C, H, W]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = [model.encode(images[i:i + batch_size].to(device))
                 for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    mu = torch.cat([p[0].float().cpu() for p in parts])
    logvar = torch.cat([p[1].float().cpu() for p in parts])
    return mu, logvar


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Which latent units the encoder uses (Burda et al. 2015, section 5.2).

    Unit ``u`` is active when ``Cov_x(E_{q(z|x)}[z_u]) > threshold``: its mean
    ``mu_u`` varies across the data. A collapsed unit has ``q(z_u | x)`` equal to
    the prior for every ``x``: its mean is the same for every image.

    Args:
        mu: ``[N, D]`` posterior means of ``N`` images (:func:`encode_dataset`).
        threshold: variance above which a unit counts as active (0.01).

    Returns:
        ``[D]`` bool mask; ``.sum()`` is the number of active units.
    """
    check_shape(mu, "mu", 2, what="[N, D] posterior means")
    if mu.shape[0] < 2:
        raise ValueError(f"mu must hold at least 2 images to measure a variance, got shape {tuple(mu.shape)}")
    return mu.detach().double().var(dim=0, unbiased=True) > threshold
