"""VQGAN: a VQ-VAE trained with a perceptual loss and a PatchGAN discriminator.

What the learner builds in ``05_vqgan`` (Esser, Rombach, Ommer, *Taming
Transformers for High-Resolution Image Synthesis*, 2021,
https://arxiv.org/abs/2012.09841), plus what the notebook needs around it:

- GAN losses on discriminator logits: :func:`hinge_d_loss`, :func:`hinge_g_loss`,
  :func:`non_saturating_d_loss`, :func:`non_saturating_g_loss`;
- :func:`adaptive_weight`, the paper's
  ``lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta)``;
- :func:`perceptual_distance`, the LPIPS distance (Zhang et al. 2018,
  https://arxiv.org/abs/1801.03924) with unit layer weights, on the feature
  maps of a :class:`FeatureNet`;
- :func:`disc_weight` (the discriminator warm-up) and
  :func:`patchgan_receptive_field`;
- :class:`PatchDiscriminator` (pix2pix's PatchGAN, as in taming-transformers);
- :class:`FeatureNet`: VGG16 features when their weights are on disk, else a
  fixed random conv net built from a seed (never a silent download);
- :func:`frechet_distance` and :func:`frechet_feature_distance`: an FID-style
  distance between two sets of images in that feature space;
- :func:`train_vqgan`: the two-optimiser training loop, returning a
  :class:`~dvl_helpers.training.History` like :func:`~dvl_helpers.training.train`.

Logits are any shape (``[B, 1, h, w]`` for a PatchGAN); every loss is a mean
over all of them. Images are ``[B, C, H, W]`` in ``[0, 1]``.

Used in: ``05_vqgan`` (the reference behind its checks' examples and its training cells).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .models import SHIFT, VQVAE
from .nn import check_shape
from .training import History, _forever, to_device

__all__ = [
    "hinge_d_loss", "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss",
    "adaptive_weight", "perceptual_distance", "disc_weight", "patchgan_receptive_field",
    "PatchDiscriminator", "FeatureNet", "VGG16_WEIGHTS", "vgg16_weights_path",
    "pooled_features", "frechet_distance", "frechet_feature_distance", "train_vqgan",
]


def _check_logits(x, name):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a non-empty floating-point tensor of logits, got {got}")


# --------------------------------------------------------------------------- GAN losses


def hinge_d_loss(logits_real, logits_fake):
    """The discriminator's hinge loss, ``½ (mean relu(1 - real) + mean relu(1 + fake))``.

    Real logits are pushed above +1 and fake ones below -1; beyond those margins
    a logit costs nothing (and gets no gradient). The ½ is taming-transformers'.

    Args:
        logits_real: ``D(x)`` for real images, any shape (``[B, 1, h, w]``).
        logits_fake: ``D(x_rec)`` for reconstructions, any shape.

    Returns:
        A scalar tensor.
    """
    _check_logits(logits_real, "logits_real")
    _check_logits(logits_fake, "logits_fake")
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake):
    """The generator's loss with a hinge discriminator, ``-mean D(x_rec)``: raise the fake logits."""
    _check_logits(logits_fake, "logits_fake")
    return -logits_fake.mean()


def non_saturating_d_loss(logits_real, logits_fake):
    """The discriminator's logistic loss, ``½ (mean softplus(-real) + mean softplus(fake))``.

    ``softplus(-l) = -log sigmoid(l)`` is the binary cross-entropy of a "real"
    label, ``softplus(l) = -log(1 - sigmoid(l))`` that of a "fake" one;
    softplus stays finite for logits of any size, where ``log(sigmoid(l))``
    underflows to ``-inf``. The ½ matches :func:`hinge_d_loss` (taming's
    ``vanilla_d_loss``).
    """
    _check_logits(logits_real, "logits_real")
    _check_logits(logits_fake, "logits_fake")
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def non_saturating_g_loss(logits_fake):
    """The non-saturating generator loss, ``mean softplus(-fake) = -mean log sigmoid(D(x_rec))``.

    Goodfellow et al.'s fix of the minimax loss ``mean log(1 - sigmoid(fake))``,
    whose gradient vanishes exactly when the discriminator wins easily.
    """
    _check_logits(logits_fake, "logits_fake")
    return F.softplus(-logits_fake).mean()


# --------------------------------------------------------------------------- loss balancing


def adaptive_weight(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    """VQGAN's adaptive weight of the GAN loss (Esser et al. 2021, eq. 7).

    ``lambda = ||grad_w rec_loss|| / (||grad_w g_loss|| + delta)``, with ``w`` the
    weight of the decoder's last layer, clamped to ``[0, max_weight]`` and
    detached: it rescales the GAN gradient to the size of the reconstruction
    gradient where both meet the image. The graph is kept
    (``retain_graph=True``) so the caller can still backpropagate through both
    losses, and no ``.grad`` is touched.

    Args:
        rec_loss: scalar tensor, the reconstruction (+ perceptual) loss.
        g_loss: scalar tensor, the generator's GAN loss.
        last_layer_weight: the parameter both losses are differentiated by.
        delta: keeps the ratio finite when the GAN gradient vanishes.
        max_weight: upper clamp.

    Returns:
        A detached scalar tensor.
    """
    for name, value in (("rec_loss", rec_loss), ("g_loss", g_loss)):
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a scalar tensor, got {got}")
    if not isinstance(last_layer_weight, torch.Tensor) or not last_layer_weight.requires_grad:
        raise ValueError("last_layer_weight must be a tensor that requires grad (a parameter)")
    rec_grad, = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True, allow_unused=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True, allow_unused=True)
    rec_norm = rec_grad.norm() if rec_grad is not None else last_layer_weight.new_zeros(())
    g_norm = g_grad.norm() if g_grad is not None else last_layer_weight.new_zeros(())
    return (rec_norm / (g_norm + delta)).clamp(0.0, max_weight).detach()


def perceptual_distance(features_x, features_y):
    """The LPIPS distance with unit layer weights between two lists of feature maps.

    For each layer ``l``: unit-normalise every feature vector along the channels
    (``f / (||f||_2 + 1e-10)``, so only the direction of a feature vector counts,
    not the layer's scale), take the squared difference summed over channels,
    and average over the ``H_l x W_l`` positions. Sum over layers.

    Args:
        features_x, features_y: sequences of ``[B, C_l, H_l, W_l]`` tensors, layer by layer.

    Returns:
        ``[B]``, one distance per image (differentiable).
    """
    if len(features_x) != len(features_y) or len(features_x) == 0:
        raise ValueError(f"features_x and features_y must be equally long, non-empty lists of feature "
                         f"maps, got {len(features_x)} and {len(features_y)}")
    total = 0.0
    for layer, (fx, fy) in enumerate(zip(features_x, features_y)):
        check_shape(fx, f"features_x[{layer}]", 4, what="[B, C, H, W]")
        if fx.shape != fy.shape:
            raise ValueError(f"features_x[{layer}] and features_y[{layer}] must have the same shape, "
                             f"got {tuple(fx.shape)} and {tuple(fy.shape)}")
        nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (nx - ny).pow(2).sum(dim=1).mean(dim=(1, 2))     # [B]
    return total


def disc_weight(step, disc_start):
    """The discriminator warm-up: ``0.0`` for ``step < disc_start``, ``1.0`` from ``disc_start`` on.

    Until ``disc_start`` the autoencoder trains on reconstruction alone and the
    discriminator does not train; from that step both GAN losses count.
    """
    return 1.0 if step >= disc_start else 0.0


def patchgan_receptive_field(kernel_sizes, strides):
    """The side, in input pixels, of the patch one output logit of a conv stack sees.

    Going forward, layer ``i`` widens the field by ``(k_i - 1) * j_i`` pixels,
    where ``j_i`` (the "jump") is the product of the strides before it:
    ``r = 1 + sum_i (k_i - 1) prod_{m<i} s_m``. The pix2pix PatchGAN
    (kernels 4, strides 2, 2, 2, 1, 1) sees 70 x 70 pixels.

    Args:
        kernel_sizes: kernel side of each conv, input to output.
        strides: stride of each conv.

    Returns:
        An int.
    """
    kernel_sizes, strides = list(kernel_sizes), list(strides)
    if len(kernel_sizes) != len(strides):
        raise ValueError(f"kernel_sizes and strides must have one entry per layer, got "
                         f"{len(kernel_sizes)} and {len(strides)}")
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides):
        field += (int(k) - 1) * jump
        jump *= int(s)
    return field


# --------------------------------------------------------------------------- networks


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix and taming-transformers (``NLayerDiscriminator``).

    ``num_layers`` 4x4 stride-2 convs (widths ``hidden, 2 hidden, 4 hidden, ...``,
    capped at ``8 hidden``), one 4x4 stride-1 conv, and a 4x4 stride-1 conv to one
    channel: a map of logits, each judging one patch of the image (see
    :attr:`receptive_field`). LeakyReLU(0.2), batch norm after every conv but the
    first and the last, weights ``N(0, 0.02)`` as in DCGAN.

    Shapes: ``[B, in_channels, H, W]`` images in ``[0, 1]`` ->
    ``[B, 1, h, w]`` logits (``h = H / 2^num_layers - 2`` with padding 1).

    Args:
        in_channels: image channels.
        hidden: channels of the first conv (64 in pix2pix).
        num_layers: stride-2 convs (3 in pix2pix; 2 suits 32x32 images).
    """

    def __init__(self, in_channels: int = 3, hidden: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.in_channels = in_channels
        self.kernel_sizes = [4] * (num_layers + 2)
        self.strides = [2] * num_layers + [1, 1]
        widths = [in_channels] + [hidden * min(2 ** i, 8) for i in range(num_layers + 1)] + [1]
        layers: list[nn.Module] = []
        for i, stride in enumerate(self.strides):
            last = i == len(self.strides) - 1
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=stride, padding=1,
                                    bias=i == 0 or last))
            if not last:
                if i > 0:
                    layers.append(nn.BatchNorm2d(widths[i + 1]))
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the patch each output logit sees."""
        return patchgan_receptive_field(self.kernel_sizes, self.strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "x", 4, self.in_channels, f"[B, {self.in_channels}, H, W] images in [0, 1]")
        return self.net(x - SHIFT)


#: torchvision's ImageNet VGG16 weights, as ``torch.hub`` stores them.
VGG16_WEIGHTS = "vgg16-397923af.pth"
_VGG_LAYERS = (3, 8, 15, 22, 29)     # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (as LPIPS)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_RANDOM_WIDTHS = (16, 32, 64, 128)


def vgg16_weights_path() -> Path:
    """Where ``torch.hub`` keeps the VGG16 weights (``$TORCH_HOME/hub/checkpoints/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS


class FeatureNet(nn.Module):
    """A frozen feature extractor for perceptual distances: ``images -> [feature maps]``.

    ``kind="vgg16"`` uses torchvision's VGG16 trained on ImageNet, cut after
    relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (LPIPS's layers), with
    ImageNet normalisation. It never downloads unless ``download=True``.

    ``kind="random"`` is a fixed conv net with weights drawn from ``seed``:
    four stages of one 3x3 conv + ReLU (16, 32, 64, 128 channels), 2x2
    average pooling between stages, a feature map after each stage. Random conv
    features still respond to edges, colours and textures at several scales,
    so distances in their space track structure better than pixel MSE, though
    less faithfully than trained features.

    ``kind="auto"`` picks VGG16 when its weights are on disk (or, with
    ``download=True``, can be fetched), else the random net. ``self.kind``
    says which one was built.

    Shapes: ``[B, 3, H, W]`` in ``[0, 1]`` -> a list of ``[B, C_l, H_l, W_l]``.
    """

    def __init__(self, kind: str = "auto", seed: int = 0, download: bool = False):
        super().__init__()
        if kind not in ("auto", "vgg16", "random"):
            raise ValueError(f"kind must be 'auto', 'vgg16' or 'random', got {kind!r}")
        state = None
        if kind in ("auto", "vgg16"):
            state = _vgg16_state(download, required=kind == "vgg16")
        if state is not None:
            from torchvision.models import vgg16
            vgg = vgg16(weights=None)
            vgg.load_state_dict(state)
            features = vgg.features[:_VGG_LAYERS[-1] + 1]
            bounds = [0, *(i + 1 for i in _VGG_LAYERS)]
            self.stages = nn.ModuleList(features[a:b] for a, b in zip(bounds, bounds[1:]))
            self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
            self.kind = "vgg16"
        else:
            self.stages = _random_stages(seed)
            # centre and scale like ImageNet inputs, so both kinds see similar ranges
            self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
            self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
            self.kind = "random"
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureNet":
        return super().train(False)     # frozen: always in eval mode

    @property
    def channels(self) -> list[int]:
        """Channels ``C_l`` of each returned feature map."""
        return [[m for m in stage if isinstance(m, nn.Conv2d)][-1].out_channels for stage in self.stages]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_shape(x, "x", 4, 3, "[B, 3, H, W] images in [0, 1]")
        h = (x - self.mean) / self.std
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out


def _vgg16_state(download: bool, required: bool):
    path = vgg16_weights_path()
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if download:
        try:
            from torchvision.models import VGG16_Weights
            return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as err:   # no network: fall back (or explain)
            if required:
                raise RuntimeError(f"could not download the VGG16 weights to {path}: {err}") from err
            return None
    if required:
        raise FileNotFoundError(f"VGG16 weights not found at {path}; pass download=True or use "
                                "kind='random'")
    return None


def _random_stages(seed: int) -> nn.ModuleList:
    gen = torch.Generator().manual_seed(int(seed))
    stages, c = [], 3
    for i, width in enumerate(_RANDOM_WIDTHS):
        conv = nn.Conv2d(c, width, 3, padding=1)
        with torch.no_grad():   # He init from the seed: features keep their scale with depth
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (c * 9)) ** 0.5)
            conv.bias.zero_()
        stages.append(nn.Sequential(*([nn.AvgPool2d(2)] if i else []), conv, nn.ReLU()))
        c = width
    return nn.ModuleList(stages)


# --------------------------------------------------------------------------- FID-style distance


@torch.no_grad()
def pooled_features(feature_net: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The last feature map of ``feature_net``, averaged over space: ``[N, C_last]`` float64 (NumPy).

    This is what FID does with Inception's pool3 features.
    """
    check_shape(images, "images", 4, what="[N, C, H, W] images in [0, 1]")
    device = next(iter(feature_net.buffers()), torch.empty(0)).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        feats = feature_net(images[start:start + batch_size].to(device))[-1]
        out.append(feats.mean(dim=(2, 3)).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (the formula of FID).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, the squared
    2-Wasserstein distance between ``N(mu_a, S_a)`` and ``N(mu_b, S_b)``. The
    trace of the matrix square root is the sum of the square roots of the
    eigenvalues of ``S_a S_b`` (``scipy.linalg.eigvals``; torchmetrics' FID
    does the same): faster than ``scipy.linalg.sqrtm`` and exact for singular
    covariances.

    Args:
        features_a: ``[N, F]`` (NumPy or tensor), ``N >= 2``.
        features_b: ``[M, F]``.

    Returns:
        A float >= 0 (0 for identical statistics). With fewer samples than
        features the covariances are singular and the value is biased
        upwards: compare numbers computed on the same sample sizes.
    """
    from scipy import linalg

    a, b = (np.asarray(torch.as_tensor(f).detach().double().cpu()) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features_a and features_b must be [N, F] and [M, F] with N, M >= 2, "
                         f"got shapes {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr((S_a S_b)^{1/2}) is the sum of the square roots of the eigenvalues of S_a S_b (real and
    # >= 0: the product of two PSD matrices is similar to a PSD one), as torchmetrics computes it;
    # unlike a full matrix square root it stays exact when the covariances are singular
    eigenvalues = linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
    return max(value, 0.0)


def frechet_feature_distance(feature_net: nn.Module, images_a: torch.Tensor, images_b: torch.Tensor,
                             batch_size: int = 256) -> float:
    """:func:`frechet_distance` between the :func:`pooled_features` of two image sets (FID-style)."""
    return frechet_distance(pooled_features(feature_net, images_a, batch_size),
                            pooled_features(feature_net, images_b, batch_size))


# --------------------------------------------------------------------------- training


def train_vqgan(
    model: VQVAE,
    discriminator: nn.Module,
    loader: Iterable,
    *,
    steps: int,
    feature_net: nn.Module | None = None,
    lr: float = 2e-4,
    disc_lr: float | None = None,
    betas: tuple[float, float] = (0.5, 0.9),
    disc_start: int = 0,
    disc_factor: float = 1.0,
    perceptual_weight: float = 1.0,
    d_loss_fn: Callable = hinge_d_loss,
    g_loss_fn: Callable = hinge_g_loss,
    adaptive_weight_fn: Callable = adaptive_weight,
    perceptual_fn: Callable = perceptual_distance,
    disc_weight_fn: Callable = disc_weight,
    ckpt_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    log_every: int = 1,
    progress: bool = True,
    desc: str = "VQGAN",
) -> History:
    """Train a VQ-VAE as a VQGAN: two optimisers, one generator and one discriminator update per step.

    Generator (encoder, quantizer, decoder), with ``f = disc_factor * disc_weight_fn(step, disc_start)``::

        rec_loss = mean |x - x_rec| + perceptual_weight * mean perceptual_fn(F(x), F(x_rec))
        loss     = rec_loss + q_loss + f * lambda * g_loss_fn(D(x_rec))
        lambda   = adaptive_weight_fn(rec_loss, g_loss, decoder.last_layer.weight)

    Discriminator, once ``f > 0``: ``f * d_loss_fn(D(x), D(x_rec.detach()))``.
    Before ``disc_start`` the discriminator is not even run (nothing to learn
    from yet, and it saves time). The loss functions are arguments so the
    notebook can plug in the learner's own.

    Args:
        model: a :class:`~dvl_helpers.models.VQVAE` (its decoder has ``last_layer``).
        discriminator: e.g. :class:`PatchDiscriminator`.
        loader: yields images or ``(images, labels)`` in ``[0, 1]`` (cycled).
        steps: optimisation steps (each: one generator and one discriminator update).
        feature_net: the frozen network of the perceptual loss (``None`` or
            ``perceptual_weight=0``: no perceptual term).
        lr, disc_lr, betas: Adam for both (``disc_lr`` defaults to ``lr``);
            ``betas=(0.5, 0.9)`` as in taming-transformers.
        disc_start: first step (1-based, as logged) with the GAN losses on.
        disc_factor: overall weight of the GAN terms once on.
        ckpt_path: if the file exists, load model, discriminator and history
            from it and return; else train and save there.
        device: default CUDA if available, else CPU.
        log_every: log every this many steps (and the last one).
        progress: show a tqdm bar.

    Returns:
        A :class:`History` with ``loss``, ``rec`` (L1), ``perceptual``,
        ``q_loss``, ``perplexity`` and ``disc_factor`` every logged step, and,
        once the discriminator is on, ``g_loss``, ``adaptive_weight``,
        ``d_loss``, ``logits_real`` and ``logits_fake`` (means).
    """
    if steps < 0 or log_every < 1:
        raise ValueError(f"steps must be >= 0 and log_every >= 1, got {steps} and {log_every}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    discriminator.to(device)
    if feature_net is not None:
        feature_net.to(device)
    history = History()
    if ckpt_path is not None and Path(ckpt_path).exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        discriminator.load_state_dict(state["discriminator"])
        history.load_state_dict(state["history"])
        return history

    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=disc_lr or lr, betas=betas)
    last_layer = model.decoder.last_layer.weight
    use_perceptual = feature_net is not None and perceptual_weight > 0
    batches = _forever(loader)
    model.train()
    discriminator.train()
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=True):
        batch = to_device(next(batches), device)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        factor = float(disc_factor * disc_weight_fn(step, disc_start))

        # generator update
        x_rec, q_loss, info = model(x)
        l1 = (x - x_rec).abs().mean()
        rec_loss = l1
        metrics: dict[str, object] = {}
        if use_perceptual:
            p_loss = perceptual_fn(feature_net(x), feature_net(x_rec)).mean()
            rec_loss = l1 + perceptual_weight * p_loss
            metrics["perceptual"] = p_loss.detach()
        loss = rec_loss + q_loss
        if factor > 0:
            g_loss = g_loss_fn(discriminator(x_rec))
            weight = adaptive_weight_fn(rec_loss, g_loss, last_layer)
            loss = loss + factor * weight * g_loss
            metrics.update(g_loss=g_loss.detach(), adaptive_weight=torch.as_tensor(weight).detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; try a lower learning rate")
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

        # discriminator update (after the generator's, on the same reconstructions)
        if factor > 0:
            logits_real = discriminator(x.detach())
            logits_fake = discriminator(x_rec.detach())
            d_loss = factor * d_loss_fn(logits_real, logits_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            metrics.update(d_loss=d_loss.detach(), logits_real=logits_real.detach().mean(),
                           logits_fake=logits_fake.detach().mean())

        if step % log_every == 0 or step == steps:
            history.log(step, loss=loss.detach(), rec=l1.detach(), q_loss=q_loss.detach(),
                        perplexity=torch.as_tensor(info.get("perplexity", float("nan"))).detach(),
                        disc_factor=factor, **metrics)

    if ckpt_path is not None:
        Path(ckpt_path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "discriminator": discriminator.state_dict(),
                    "history": history.state_dict()}, ckpt_path)
    return history
