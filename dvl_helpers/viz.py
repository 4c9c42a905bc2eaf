"""Pictures: image grids, originals against reconstructions, training curves.

Every function returns a matplotlib ``Figure`` and never calls ``plt.show``.
In a notebook, end the cell with ``plt.show()``: the inline backend then draws
each figure once (returning the figure as the cell's value would draw it twice).
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.figure import Figure

from .nn import check_shape


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``[B, C, H, W]`` images in ``[0, 1]`` into one ``[rows*(H+pad), nrow*(W+pad), C]`` array."""
    check_shape(images, "images", 4, what="[B, C, H, W]")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if images.shape[0] == 0:
        raise ValueError(f"images must hold at least one image, got shape {tuple(images.shape)}")
    if nrow < 1 or pad < 0:
        raise ValueError(f"nrow must be >= 1 and pad >= 0, got nrow={nrow}, pad={pad}")
    x = images.detach().float().cpu().clamp(0, 1)
    b = x.shape[0]
    rows = -(-b // nrow)
    fill = torch.full((rows * nrow - b, *x.shape[1:]), pad_value)
    x = torch.nn.functional.pad(torch.cat([x, fill]), (0, pad, 0, pad), value=pad_value)
    grid = rearrange(x, "(r n) c h w -> (r h) (n w) c", n=nrow)
    return grid.numpy()


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None,
                ax: plt.Axes | None = None) -> Figure:
    """One image grid; returns its figure."""
    grid = make_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(grid.shape[1] / 32 + 0.5, grid.shape[0] / 32 + 0.5))
    gray = grid.shape[-1] == 1
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax.figure


def show_reconstructions(x: torch.Tensor, x_rec: torch.Tensor, n: int = 8,
                         title: str | None = None) -> Figure:
    """Originals (top row) above their reconstructions (bottom row), ``n`` of each."""
    if x.shape != x_rec.shape:
        raise ValueError(f"x and x_rec must have the same shape, got {tuple(x.shape)} and {tuple(x_rec.shape)}")
    n = min(n, x.shape[0])
    fig, axes = plt.subplots(2, 1, figsize=(n * 0.9 + 0.5, 2.3))
    show_images(x[:n], nrow=n, title="original", ax=axes[0])
    show_images(x_rec[:n], nrow=n, title="reconstruction", ax=axes[1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, names: Sequence[str] | None = None, smooth: int = 1,
                 logy: Sequence[str] = ()) -> Figure:
    """One panel per metric of a :class:`~dvl_helpers.training.History` against the step.

    Args:
        names: the scalar metric(s) to plot, a name or a list (default: every scalar one).
        smooth: width of a moving average drawn over the raw curve (1: none).
        logy: names whose panel uses a log scale.
    """
    if names is None:
        names = [k for k in history.keys() if history[k].ndim == 1]
    # a single name is one metric, not a sequence of letters
    names = [names] if isinstance(names, str) else list(names)
    logy = [logy] if isinstance(logy, str) else list(logy)
    if not names:
        raise ValueError("nothing to plot: the history holds no scalar metric")
    for name in names:  # check before a figure is opened, so a bad name leaves no empty figure
        if history[name].ndim != 1:
            raise ValueError(f"{name!r} is not a scalar metric (shape {history[name].shape[1:]} per step)")
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps, values = history.steps(name), history[name]
        ax.plot(steps, values, alpha=0.35 if smooth > 1 else 1.0)
        if smooth > 1 and len(values) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1:], np.convolve(values, kernel, mode="valid"))
        ax.set_title(name)
        ax.set_xlabel("step")
        if name in logy:
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_usage(counts: torch.Tensor | np.ndarray, log: bool = False, title: str | None = None,
               ax: plt.Axes | None = None) -> Figure:
    """Codebook usage ``[K]`` as a histogram sorted from most to least used, dead codes in red."""
    counts = np.asarray(torch.as_tensor(counts).detach().cpu(), dtype=float)
    if counts.ndim != 1:
        raise ValueError(f"counts must be [K], got shape {counts.shape}")
    order = np.sort(counts)[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.8))
    colors = np.where(order > 0, "C0", "C3")
    ax.bar(np.arange(len(order)), order, width=1.0, color=colors)
    ax.set_xlabel("code (sorted by use)")
    ax.set_ylabel("count")
    if log:
        ax.set_yscale("symlog")
    ax.set_title(title or f"{int((counts > 0).sum())} of {len(counts)} codes used")
    return ax.figure
