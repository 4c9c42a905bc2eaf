"""Conv building blocks shared by every image model of the course.

The defaults reproduce the CIFAR-10 network of the VQ-VAE paper (van den Oord
et al. 2017, section 4.1) as in its Sonnet example: two stride-2 4x4 convs, a
3x3 conv, two residual blocks (ReLU, 3x3 conv to 32 channels, ReLU, 1x1 conv
back to 128), and the mirror image in the decoder.

Used in: phase 0 (VAE), 1 (VQ-VAE) and every later image model.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def check_shape(x: torch.Tensor, name: str, ndim: int, channels: int | None = None, what: str = "") -> None:
    """Raise a ``ValueError`` that says what was expected unless ``x`` is ``ndim``-D with ``channels`` at dim 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim or (channels is not None and x.shape[1] != channels):
        expected = what or f"{ndim}-D" + (f" with {channels} channels at dim 1" if channels is not None else "")
        raise ValueError(f"{name} must be {expected}, got shape {tuple(x.shape)}")


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``: the VQ-VAE residual block.

    Shapes: ``[B, channels, H, W] -> [B, channels, H, W]``.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _num_halvings(downsample: int) -> int:
    n = int(round(math.log2(downsample))) if downsample > 0 else -1
    if n < 1 or 2**n != downsample:
        raise ValueError(f"downsample must be a power of two >= 2 (4 or 8 in the course), got {downsample}")
    return n


class Encoder(nn.Module):
    """Images to a latent map, downsampled ``downsample`` times.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H / downsample, W / downsample]``.

    Args:
        in_channels: image channels (1 or 3).
        hidden: channels of the conv trunk (128 in the paper).
        res_hidden: channels inside each residual block (32 in the paper).
        num_res_blocks: residual blocks after the strided convs (2 in the paper).
        downsample: total stride, a power of two (4 in the paper).
        out_channels: if given, a final 1x1 conv maps to this many channels
            (the code dimension ``D``); else the output has ``hidden`` channels.
    """

    def __init__(self, in_channels: int = 3, hidden: int = 128, res_hidden: int = 32,
                 num_res_blocks: int = 2, downsample: int = 4, out_channels: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.downsample = downsample
        n = _num_halvings(downsample)
        widths = [hidden // 2] * (n - 1) + [hidden]
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU()]
            c = w
        layers.append(nn.Conv2d(hidden, hidden, 3, padding=1))
        layers += [ResBlock(hidden, res_hidden) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        if out_channels is not None:
            layers.append(nn.Conv2d(hidden, out_channels, 1))
        self.net = nn.Sequential(*layers)
        self.out_channels = out_channels or hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "x", 4, self.in_channels, f"[B, {self.in_channels}, H, W]")
        if x.shape[-1] % self.downsample or x.shape[-2] % self.downsample:
            raise ValueError(f"image height and width must be multiples of {self.downsample}, got {tuple(x.shape[-2:])}")
        return self.net(x)


class Decoder(nn.Module):
    """A latent map back to an image, upsampled ``upsample`` times; the mirror of :class:`Encoder`.

    Shapes: ``[B, in_channels, h, w] -> [B, out_channels, h * upsample, w * upsample]``.
    The output is unbounded (logits or values); apply ``sigmoid`` or a loss on logits as needed.

    Args:
        in_channels: latent channels (the code dimension ``D``).
        out_channels: image channels (1 or 3).
        hidden, res_hidden, num_res_blocks: as in :class:`Encoder`.
        upsample: total stride of the transposed convs, a power of two.
    """

    def __init__(self, in_channels: int = 64, out_channels: int = 3, hidden: int = 128,
                 res_hidden: int = 32, num_res_blocks: int = 2, upsample: int = 4):
        super().__init__()
        self.in_channels = in_channels
        n = _num_halvings(upsample)
        layers = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
        layers += [ResBlock(hidden, res_hidden) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        widths = [hidden] + [hidden // 2] * (n - 1) + [out_channels]
        for i in range(n):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < n - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_shape(z, "z", 4, self.in_channels, f"[B, {self.in_channels}, h, w]")
        return self.net(z)

    @property
    def last_layer(self) -> nn.Module:
        """The final transposed conv (the VQGAN adaptive weight differentiates through its weight)."""
        return self.net[-1]
