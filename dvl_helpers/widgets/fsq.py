"""FSQ's bound and round, one dimension at a time, and its implicit grid (phase 6).

The explorer computes FSQ with its own few lines, not with the learner's phase-6
answer nor with a reference the grader would compare against.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._render import _png


def _fsq_bound(z: np.ndarray, levels: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """``h * tanh(z + shift) - offset`` with ``h = (L - 1)(1 + eps)/2`` (Mentzer et al. 2023).

    An even ``L`` has no level at 0: the bound range is moved down by
    ``offset = 1/2`` so that rounding yields the ``L`` integers ``-L/2 .. L/2 - 1``;
    the input is shifted by ``atanh(offset / h)`` so that ``z = 0`` still lands on
    level 0. The factor ``1 + eps`` lets the ends reach their levels (``tanh`` never
    reaches 1) without adding another one.
    """
    half = (levels - 1) * (1 + eps) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half)
    return np.tanh(z + shift) * half - offset


def _fsq_normalise(q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Integer levels divided by ``L // 2``: codes in ``[-1, 1]``."""
    return q / (levels // 2)


def _fsq_index(q: np.ndarray, levels: np.ndarray) -> int:
    """Mixed-radix index of the integer code ``q`` (first dimension fastest)."""
    digits = (q + levels // 2).astype(int)                        # 0 .. L-1 per dimension
    basis = np.cumprod(np.r_[1, levels[:-1]]).astype(int)
    return int((digits * basis).sum())


def _fsq_grid(levels: np.ndarray) -> np.ndarray:
    """``[prod(L), d]`` every normalised code of the implicit codebook."""
    axes = [_fsq_normalise(np.arange(-(n // 2), n - n // 2, dtype=float), np.array(n)) for n in levels]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(levels))


class FSQGridExplorer(widgets.VBox):
    """Finite scalar quantization of one point, dimension by dimension, and the implicit grid.

    Controls (attributes): ``dims`` (2 or 3), ``level_sliders`` (``L`` of each of the three
    dimensions; the third is used in 3-D only) and ``z_sliders`` (the point ``z``). ``figure``
    is the matplotlib figure, ``image`` the widget showing it, ``status`` the line above it
    (the point's path in numbers), :meth:`state` what both show.
    Build it with :func:`fsq_grid_explorer`.
    """

    def __init__(self, levels=(8, 5, 5), z=None, dpi: int = 80):
        levels = [int(n) for n in levels]
        if len(levels) not in (2, 3) or any(not 2 <= n <= 12 for n in levels):
            raise ValueError(f"levels must be 2 or 3 integers in [2, 12], got {levels}")
        z = [0.7, -0.4, 1.2][:len(levels)] if z is None else [float(v) for v in z]
        if len(z) != len(levels) or any(not -3 <= v <= 3 for v in z):
            raise ValueError(f"z must hold one number in [-3, 3] per level ({len(levels)}), got {z}")
        full_levels, full_z = (levels + [5])[:3], (z + [0.0])[:3]
        self.dims = widgets.ToggleButtons(options=[("2-D", 2), ("3-D", 3)], value=len(levels),
                                          description="grid", style={"button_width": "60px"})
        self.level_sliders = [widgets.IntSlider(value=n, min=2, max=12, description=f"L{i + 1}",
                                                continuous_update=True, layout=widgets.Layout(width="260px"))
                              for i, n in enumerate(full_levels)]
        self.z_sliders = [widgets.FloatSlider(value=v, min=-3.0, max=3.0, step=0.05, description=f"z{i + 1}",
                                              continuous_update=True, layout=widgets.Layout(width="260px"))
                          for i, v in enumerate(full_z)]
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png")
        legend = widgets.HTML(
            "<small>Left, per dimension: the bound (L − 1)/2 · tanh(z) (blue; half a step lower for "
            "even L) and after rounding (orange), both divided by L // 2; the dotted path goes from "
            "z up to the bound and across; red dots: bounded and rounded values; grid lines: the L "
            "levels. Right: the implicit codebook (grey), the bounded point (blue) and its code "
            "(red).</small>")
        self.figure, self._artists = self._build_figure(dpi)
        super().__init__([self.dims,
                          widgets.HBox([widgets.VBox(self.level_sliders), widgets.VBox(self.z_sliders)]),
                          self.status, self.image, legend])
        self.add_class("dvl-fsq-grid-explorer")
        self._grid_key = None
        for control in (self.dims, *self.level_sliders, *self.z_sliders):
            control.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    def state(self) -> dict:
        """What the figure shows now.

        Returns:
            ``{"dims", "levels", "z", "bounded", "rounded", "normalised" (each a list per
            dimension), "index" (of the code in the implicit codebook), "codebook_size"}``.
        """
        d = int(self.dims.value)
        levels = np.array([s.value for s in self.level_sliders[:d]])
        z = np.array([s.value for s in self.z_sliders[:d]], dtype=float)
        bounded = _fsq_bound(z, levels)
        rounded = np.round(bounded)
        return {"dims": d, "levels": levels.tolist(), "z": z.tolist(), "bounded": bounded.tolist(),
                "rounded": rounded.astype(int).tolist(),
                "normalised": _fsq_normalise(rounded, levels).tolist(),
                "index": _fsq_index(rounded, levels), "codebook_size": int(np.prod(levels))}

    def _build_figure(self, dpi):
        fig = Figure(figsize=(10.0, 4.4), dpi=dpi)
        a = {"dim_axes": [], "curves": [], "stairs": [], "z_marks": [], "paths": [], "labels": []}
        zs = np.linspace(-3, 3, 301)
        for _ in range(3):
            ax = fig.add_axes((0.05, 0.1, 0.42, 0.2))
            a["curves"].append(ax.plot(zs, 0 * zs, color="C0", linewidth=1.5)[0])
            a["stairs"].append(ax.plot(zs, 0 * zs, color="C1", linewidth=1.2)[0])
            a["paths"].append(ax.plot([], [], color="C3", linewidth=1.2, linestyle=":")[0])
            a["z_marks"].append(ax.plot([], [], "o", color="C3", markersize=5)[0])
            a["labels"].append(ax.text(0.01, 0.97, "", transform=ax.transAxes, va="top", fontsize=8))
            ax.set_xlim(-3, 3)
            ax.set_ylim(-1.25, 1.25)
            ax.tick_params(labelsize=7, left=False, labelleft=False)
            ax.xaxis.set_major_locator(MaxNLocator(7, integer=True))
            a["dim_axes"].append(ax)
        a["ax2"] = fig.add_axes((0.58, 0.08, 0.38, 0.84))
        a["ax3"] = fig.add_axes((0.52, 0.02, 0.48, 0.92), projection="3d")
        a["caption"] = fig.text(0.58, 0.95, "", fontsize=9)
        return fig, a

    def _layout(self, d: int) -> None:
        """Stack one panel per dimension on the left; show the 2-D or the 3-D grid."""
        a = self._artists
        height, gap, bottom = (0.4, 0.07, 0.07) if d == 2 else (0.27, 0.045, 0.07)
        for i, ax in enumerate(a["dim_axes"]):
            ax.set_visible(i < d)
            ax.set_position((0.05, bottom + (d - 1 - i) * (height + gap), 0.42, height))
            ax.tick_params(labelbottom=i == d - 1)
        a["ax2"].set_visible(d == 2)
        a["ax3"].set_visible(d == 3)

    def _draw_grid(self, s: dict) -> None:
        """The grid panel: rebuilt when dims or levels change; the point moves every time."""
        a, d, levels = self._artists, s["dims"], np.array(s["levels"])
        key = (d, tuple(s["levels"]))
        ax = a["ax2"] if d == 2 else a["ax3"]
        if key != self._grid_key:
            self._grid_key = key
            ax.cla()
            grid = _fsq_grid(levels)
            if d == 2:
                ax.scatter(grid[:, 0], grid[:, 1], s=12, color="0.55")
                ax.set_xlim(-1.15, 1.15)
                ax.set_ylim(-1.15, 1.15)
                ax.set_aspect("equal")
                (a["p_path"],) = ax.plot([], [], color="C3", linewidth=1.2)
                (a["p_bound"],) = ax.plot([], [], "o", color="C0", markersize=7)
                (a["p_code"],) = ax.plot([], [], "s", color="C3", markersize=9, markerfacecolor="none",
                                         markeredgewidth=2)
                ax.tick_params(labelsize=7)
            else:
                ax.scatter(grid[:, 0], grid[:, 1], grid[:, 2], s=5, color="0.55", alpha=0.5, depthshade=False)
                (a["p_path"],) = ax.plot([], [], [], color="C3", linewidth=1.5)
                (a["p_bound"],) = ax.plot([], [], [], "o", color="C0", markersize=6)
                (a["p_code"],) = ax.plot([], [], [], "s", color="C3", markersize=8)
                for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                    setter(-1.1, 1.1)
                ax.tick_params(labelsize=6)
                for set_ticks in (ax.set_xticks, ax.set_yticks, ax.set_zticks):
                    set_ticks([-1, 0, 1])
            a["caption"].set_text(f"the implicit codebook: {' × '.join(map(str, s['levels']))} = "
                                  f"{s['codebook_size']} codes in [-1, 1]^{d}")
        b = np.array(s["bounded"]) / (levels // 2)
        c = np.array(s["normalised"])
        if d == 2:
            a["p_bound"].set_data([b[0]], [b[1]])
            a["p_code"].set_data([c[0]], [c[1]])
            a["p_path"].set_data([b[0], c[0]], [b[1], c[1]])
        else:
            a["p_bound"].set_data_3d([b[0]], [b[1]], [b[2]])
            a["p_code"].set_data_3d([c[0]], [c[1]], [c[2]])
            a["p_path"].set_data_3d([b[0], c[0]], [b[1], c[1]], [b[2], c[2]])

    def redraw(self) -> None:
        """Update the panels and the status line to the sliders and re-render the image."""
        s, a = self.state(), self._artists
        d = s["dims"]
        self.level_sliders[2].disabled = self.z_sliders[2].disabled = d == 2
        self._layout(d)
        zs = np.linspace(-3, 3, 301)
        for i in range(d):
            level = np.array(s["levels"][i])
            curve = _fsq_bound(zs, level)
            a["curves"][i].set_ydata(curve / (level // 2))
            a["stairs"][i].set_ydata(np.round(curve) / (level // 2))
            z, b, n = s["z"][i], s["bounded"][i] / (level // 2), s["normalised"][i]
            a["z_marks"][i].set_data([z, z], [b, n])
            a["paths"][i].set_data([z, z, -3], [-1.25, b, b])
            ax = a["dim_axes"][i]
            ax.set_yticks(_fsq_normalise(np.arange(-(level // 2), level - level // 2), level))
            ax.grid(axis="y", linewidth=0.5, alpha=0.6)
            a["labels"][i].set_text(f"dim {i + 1}, L = {level}")
        self._draw_grid(s)

        def vec(values, fmt="+.2f"):
            return "(" + ", ".join(format(v, fmt) for v in values) + ")"
        self.status.value = (
            f"z = {vec(s['z'])} → bound {vec(s['bounded'])} → round {vec(s['rounded'], '+d')} → "
            f"÷ L // 2 = <b>{vec(s['normalised'])}</b> · code <b>{s['index']}</b> of {s['codebook_size']}")
        self.image.value = _png(self.figure)


def fsq_grid_explorer(levels=(8, 5, 5), z=None) -> FSQGridExplorer:
    """An interactive look at finite scalar quantization (Mentzer et al. 2023, arXiv:2309.15505).

    FSQ quantizes each of ``d`` dimensions on its own: bound ``z`` to
    ``(L - 1)/2 * tanh(z)`` (shifted by half a step when ``L`` is even), round to the
    nearest integer, divide by ``L // 2``. The codes form an implicit grid of
    ``prod(L)`` points in ``[-1, 1]^d``; no codebook is stored or learned. On the left,
    one panel per dimension draws the bound curve, the rounding staircase and the
    point's path through them (dotted); on the right, the grid in 2-D or 3-D with the
    bounded point and its code, and above the picture the point's path in numbers and
    its code's index in the implicit codebook (first dimension fastest). The widget
    computes FSQ with its own few lines, independent of the notebook's answers.

    Used in ``06_fsq_lfq``.

    Args:
        levels: ``L`` per dimension, 2 or 3 integers in ``[2, 12]`` (their number sets
            the starting view; the third slider is used in 3-D).
        z: the starting point, one number in ``[-3, 3]`` per level.

    Returns:
        A :class:`FSQGridExplorer` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return FSQGridExplorer(levels=levels, z=z)
