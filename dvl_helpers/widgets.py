"""Interactive explorers used in the notebooks (ipywidgets + matplotlib).

Each explorer is an ``ipywidgets.VBox``: the last value of a cell displays it in
JupyterLab and Notebook 7. The picture is a matplotlib figure rendered to PNG
into an ``ipywidgets.Image``, so it needs no interactive matplotlib backend and
a redraw costs one Agg render (tens of milliseconds). The controls are plain
attributes, so code (and the tests) can drive them: ``explorer.slider.value = 500``.

- :func:`codebook_explorer`: codebook usage over training, one panel per run
  (phase 1: VQ-VAE; phase 2: vanilla against EMA, k-means and restarts).
- :func:`latent_interpolation`: decode the path between the codes of two
  images, with image pickers and a slider (phase 0: VAE).
- :func:`quantizer_playground`: a codebook trained live on a 2-D toy, with the
  Voronoi cells, usage and the cures for dead codes (phases 1 and 2).
- :func:`gumbel_explorer`: soft and hard Gumbel-softmax samples against the
  temperature (phase 3).
- :func:`fsq_grid_explorer`: FSQ's bound and round, one dimension at a time, and
  its implicit grid in 2-D and 3-D (phase 6).
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from . import _playground as _pg

__all__ = ["CodebookExplorer", "codebook_explorer", "usage_summary",
           "LatentInterpolation", "latent_interpolation", "slerp",
           "QuantizerPlayground", "quantizer_playground", "GumbelExplorer", "gumbel_explorer",
           "FSQGridExplorer", "fsq_grid_explorer"]


def usage_summary(counts: np.ndarray, dead_threshold: float = 0) -> dict:
    """Perplexity and dead codes of one usage vector.

    Args:
        counts: ``[K]`` non-negative counts of each code.
        dead_threshold: a code with ``count <= dead_threshold`` is dead.

    Returns:
        ``{"perplexity": exp(-sum p log p), "dead": number of dead codes,
        "used": number of codes with a non-zero count, "num_codes": K}``.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 1:
        raise ValueError(f"counts must be [K], got shape {counts.shape}")
    total = counts.sum()
    p = counts[counts > 0] / total if total > 0 else np.ones(1)
    return {
        "perplexity": float(np.exp(-(p * np.log(p)).sum())),
        "dead": int((counts <= dead_threshold).sum()),
        "used": int((counts > 0).sum()),
        "num_codes": int(counts.size),
    }


def _runs(histories, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (steps [T], usage [T, K])}`` from a History (named ``""``) or a mapping of them."""
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    if not histories:
        raise ValueError("histories is empty: pass a History or a dict name -> History")
    runs = {}
    for name, history in histories.items():
        if metric not in history:
            raise KeyError(f"history {name!r} has no {metric!r} metric; log the code counts [K] "
                           f"under {metric!r} during training (e.g. with dvl.models.make_vqvae_step)")
        usage = np.asarray(history[metric], dtype=float)
        if usage.ndim != 2:
            raise ValueError(f"{metric!r} of history {name!r} must be [T, K] counts, got shape {usage.shape}")
        runs[str(name)] = (np.asarray(history.steps(metric)), usage)
    return runs


def _png(figure: Figure) -> bytes:
    """The figure rendered to PNG bytes (one Agg render)."""
    buffer = io.BytesIO()
    # the fastest zlib level: a third of the encoding time for a slightly larger image
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _frame(steps: np.ndarray, step: int) -> int:
    """Index of the last frame logged at or before ``step`` (the first frame if none)."""
    return max(int(np.searchsorted(steps, step, side="right")) - 1, 0)


class CodebookExplorer(widgets.VBox):
    """Sorted codebook usage of one or more runs at a chosen training step.

    Controls (attributes): ``slider`` (the training step), ``play`` (animates the
    slider in the browser), ``threshold`` (a code is dead if its count is at most
    this), ``log_toggle`` (symlog y axis). ``figure`` is the matplotlib figure,
    ``image`` the widget showing it, :meth:`state` what the panels show.
    With ``timeline``, ``timeline_figure`` (shown by ``timeline_image``) draws the
    perplexity and the dead codes of every run against the step, with the slider's
    step marked. Build it with :func:`codebook_explorer`.
    """

    def __init__(self, histories, dead_threshold: int = 0, log_scale: bool = False,
                 metric: str = "usage", panel_size: tuple[float, float] = (4.2, 3.0), dpi: int = 90,
                 timeline: bool = True):
        self.runs = _runs(histories, metric)
        all_steps = np.unique(np.concatenate([s for s, _ in self.runs.values()]))
        stride = int(np.gcd.reduce(np.diff(all_steps))) if len(all_steps) > 1 else 1
        mean_count = max(u.sum(1).max() / u.shape[1] for _, u in self.runs.values())
        self.slider = widgets.IntSlider(
            value=int(all_steps[-1]), min=int(all_steps[0]), max=int(all_steps[-1]), step=max(stride, 1),
            description="step", continuous_update=True, layout=widgets.Layout(width="420px"))
        self.play = widgets.Play(value=self.slider.value, min=self.slider.min, max=self.slider.max,
                                 step=self.slider.step, interval=250, description="play")
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.threshold = widgets.IntSlider(
            value=int(dead_threshold), min=0, max=max(int(dead_threshold), math.ceil(mean_count), 1),
            description="dead if count ≤", continuous_update=True, layout=widgets.Layout(width="360px"),
            style={"description_width": "initial"})
        self.log_toggle = widgets.ToggleButton(value=bool(log_scale), description="log scale",
                                               icon="signal", tooltip="symlog y axis")
        self.image = widgets.Image(format="png")
        self.figure, self._artists = self._build_figure(panel_size, dpi)
        self.timeline_image = widgets.Image(format="png")
        self.timeline_figure, self._timeline = (self._build_timeline(panel_size, dpi) if timeline
                                                else (None, None))
        super().__init__([widgets.HBox([self.play, self.slider]),
                          widgets.HBox([self.threshold, self.log_toggle]), self.image]
                         + ([self.timeline_image] if timeline else []))
        self.add_class("dvl-codebook-explorer")
        for control in (self.slider, self.threshold, self.log_toggle):
            control.observe(self._on_change, names="value")
        self.redraw()

    def _build_figure(self, panel_size, dpi):
        """One axis per run with the artists a redraw updates in place."""
        n = len(self.runs)
        fig = Figure(figsize=(panel_size[0] * n, panel_size[1]), dpi=dpi)
        # fixed margins: a layout engine would re-measure every text on each redraw
        fig.subplots_adjust(left=0.9 / (panel_size[0] * n), right=1 - 0.15 / (panel_size[0] * n),
                            bottom=0.17, top=0.82, wspace=0.25)
        axes = fig.subplots(1, n, squeeze=False)[0]
        artists = {}
        for ax, (name, (_, usage)) in zip(axes, self.runs.items()):
            k = usage.shape[1]
            edges = np.arange(k + 1)
            dead_span = Rectangle((k, 0), 0, 1, transform=ax.get_xaxis_transform(),
                                  color="C3", alpha=0.12, linewidth=0)
            ax.add_patch(dead_span)
            artists[name] = {
                "ax": ax,
                "bars": ax.stairs(np.zeros(k), edges, fill=True, color="C0"),
                "dead_bars": ax.stairs(np.zeros(k), edges, fill=True, color="C3"),
                "dead_span": dead_span,
                "line": ax.axhline(0, color="C3", linestyle="--", linewidth=1),
                "ymax": max(float(usage.max()), 1.0),
            }
            ax.set_xlim(0, k)
            ax.set_xlabel("code (sorted by use)")
            ax.set_ylabel("count")
        return fig, artists

    def _build_timeline(self, panel_size, dpi):
        """Perplexity and dead codes against the step, one line per run, and a cursor."""
        width = max(panel_size[0] * len(self.runs), 8.4)
        fig = Figure(figsize=(width, 2.3), dpi=dpi)
        fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.2, top=0.86, wspace=0.18)
        ppl_ax, dead_ax = fig.subplots(1, 2)
        artists = {"perplexity": {}, "dead": {}, "cursors": []}
        num_codes = 1
        for i, (name, (steps, usage)) in enumerate(self.runs.items()):
            ppl = [usage_summary(u)["perplexity"] for u in usage]
            (artists["perplexity"][name],) = ppl_ax.plot(steps, ppl, color=f"C{i}", label=name or None)
            (artists["dead"][name],) = dead_ax.plot(steps, np.zeros(len(steps)), color=f"C{i}")
            num_codes = max(num_codes, usage.shape[1])
        first = min(s[0] for s, _ in self.runs.values())
        last = max(s[-1] for s, _ in self.runs.values())
        for ax, title in ((ppl_ax, "perplexity"), (dead_ax, "dead codes")):
            artists["cursors"].append(ax.axvline(first, color="0.3", linestyle=":", linewidth=1))
            ax.axhline(num_codes, color="0.6", linestyle="--", linewidth=1)
            ax.set_xlim(first, max(last, first + 1))
            ax.set_ylim(0, num_codes * 1.06)
            ax.text(0.01, 1.03, title + " by step (dashed: K)", transform=ax.transAxes, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
        if len(self.runs) > 1:
            ppl_ax.legend(fontsize=8, loc="lower right")
        return fig, artists

    def _redraw_timeline(self, state: dict) -> None:
        for name, (_, usage) in self.runs.items():
            self._timeline["dead"][name].set_ydata((usage <= state["threshold"]).sum(1))
        for cursor in self._timeline["cursors"]:
            cursor.set_xdata([state["step"]] * 2)
        self.timeline_image.value = _png(self.timeline_figure)

    def _on_change(self, _change=None) -> None:
        self.redraw()

    def state(self) -> dict:
        """What the panels show now.

        Returns:
            ``{"step", "threshold", "log_scale", "runs": {name: {"step": the logged
            step shown, "perplexity", "dead", "used", "num_codes"}}}``.
        """
        runs = {}
        for name, (steps, usage) in self.runs.items():
            i = _frame(steps, self.slider.value)
            runs[name] = {"step": int(steps[i]), **usage_summary(usage[i], self.threshold.value)}
        return {"step": int(self.slider.value), "threshold": int(self.threshold.value),
                "log_scale": bool(self.log_toggle.value), "runs": runs}

    def redraw(self) -> None:
        """Update every panel to the controls' values and re-render the image."""
        state = self.state()
        for name, (steps, usage) in self.runs.items():
            a, s = self._artists[name], state["runs"][name]
            counts = np.sort(usage[_frame(steps, state["step"])])[::-1]
            alive = counts > state["threshold"]
            a["bars"].set_data(np.where(alive, counts, 0))
            a["dead_bars"].set_data(np.where(alive, 0, counts))
            a["dead_span"].set_x(int(alive.sum()))
            a["dead_span"].set_width(s["dead"])
            a["line"].set_ydata([state["threshold"]] * 2)
            ax = a["ax"]
            if state["log_scale"]:
                ax.set_yscale("symlog", linthresh=1)
                ax.set_ylim(0, a["ymax"] * 2)
            else:
                ax.set_yscale("linear")
                ax.set_ylim(0, a["ymax"] * 1.05)
            ax.set_title(f"{name + ' · ' if name else ''}step {s['step']}\nperplexity {s['perplexity']:.1f} / {s['num_codes']}"
                         f" · {s['dead']} dead", fontsize=10)
        self.image.value = _png(self.figure)
        if self.timeline_figure is not None:
            self._redraw_timeline(state)


def codebook_explorer(histories, dead_threshold: int = 0, log_scale: bool = False,
                      metric: str = "usage", timeline: bool = True) -> CodebookExplorer:
    """An interactive view of codebook usage over training.

    Per run, side by side: the code counts sorted from most to least used (dead
    codes in red, the dead threshold as a dashed line), with the perplexity and
    the number of dead codes in the title. Below, all runs together: the
    perplexity and the dead codes against the step, the chosen step dotted. A
    slider (or the play button) picks the training step, a second slider the dead
    threshold, a toggle the log scale.

    Args:
        histories: a :class:`~dvl_helpers.training.History`, or a dict
            ``name -> History`` to compare runs (e.g. ``{"vanilla": h1, "EMA": h2}``),
            whose ``metric`` holds code counts ``[T, K]``
            (:func:`dvl_helpers.models.make_vqvae_step` logs them).
        dead_threshold: initial threshold: codes used at most this often are dead.
        log_scale: start with a symlog y axis.
        metric: the history entry holding the counts.
        timeline: draw the perplexity and dead codes over training below the panels.

    Returns:
        A :class:`CodebookExplorer` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return CodebookExplorer(histories, dead_threshold=dead_threshold, log_scale=log_scale, metric=metric,
                            timeline=timeline)


# --------------------------------------------------------------------------
# Latent interpolation (phase 0: VAE)

def _codes_of(model, x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` codes of images ``x``: the posterior mean when ``encode`` returns ``(mu, logvar)``."""
    out = model.encode(x)
    z = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"model.encode(x) must return mu [B, D] (or (mu, logvar)), got {got}")
    return z.detach().float().cpu()


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two codes ``[D]`` (White 2016, arXiv:1609.04468).

    Follows the great circle from ``z_a`` to ``z_b`` with the norm interpolated
    linearly, so the path stays as far from the origin as its ends (a straight line
    between two Gaussian samples dips towards 0, where the prior has few codes).
    Falls back to the straight line when the codes are (anti)parallel or zero.
    """
    na, nb = z_a.norm(), z_b.norm()
    if na < 1e-8 or nb < 1e-8:
        return (1 - alpha) * z_a + alpha * z_b
    cos = torch.clamp(torch.dot(z_a / na, z_b / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega) < 1e-6:
        return (1 - alpha) * z_a + alpha * z_b
    direction = (torch.sin((1 - alpha) * omega) * z_a / na + torch.sin(alpha * omega) * z_b / nb) \
        / torch.sin(omega)
    return direction / direction.norm() * ((1 - alpha) * na + alpha * nb)


class LatentInterpolation(widgets.VBox):
    """Decode the path between the codes of two images.

    Controls (attributes): ``picker_a`` and ``picker_b`` (indices of the two images),
    ``slider`` (the position ``alpha`` on the path, 0 at image A, 1 at image B),
    ``spherical`` (a great-circle path instead of a straight line) and
    ``random_pair`` (a button that picks two new images). ``figure`` is the matplotlib
    figure, ``image`` the widget showing it, ``decoded`` the images last decoded
    (``[num_steps + 1, C, H, W]``: the path, then the one at ``alpha``), :meth:`state`
    what the figure shows. Build it with :func:`latent_interpolation`.
    """

    def __init__(self, model, images, labels=None, index_a: int = 0, index_b: int = 1,
                 alpha: float = 0.5, num_steps: int = 9, spherical: bool = False,
                 to_image=torch.sigmoid, max_points: int = 2000, seed: int = 0, dpi: int = 90):
        if labels is None and hasattr(images, "labels"):
            labels = images.labels
        images = getattr(images, "images", images)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a dataset or a tensor [N, C, H, W] with C = 1 or 3, got {got}")
        n = images.shape[0]
        if n < 2:
            raise ValueError(f"images must hold at least 2 images to interpolate, got {n}")
        if labels is not None:
            labels = np.asarray(torch.as_tensor(labels).cpu())
            if labels.shape != (n,):
                raise ValueError(f"labels must be [N] = ({n},), got shape {labels.shape}")
        if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))):
            raise TypeError(f"model must have encode(x) -> (mu, logvar) and decode(z) -> logits, "
                            f"got {type(model).__name__}")
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2 (the two ends), got {num_steps}")
        for name, index in (("index_a", index_a), ("index_b", index_b)):
            if not 0 <= index < n:
                raise ValueError(f"{name} must lie in [0, {n - 1}], got {index}")
        self.model, self.images, self.labels = model, images, labels
        self.to_image, self.num_steps = to_image, int(num_steps)
        self._rng = np.random.default_rng(seed)
        self._holding = False
        self._codes: dict[int, torch.Tensor] = {}
        params = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.device = params.device if params is not None else torch.device("cpu")
        self.latent_dim = int(self.code(index_a).shape[0])
        self.cloud = None
        if self.latent_dim == 2:
            # the background of the latent panel: the codes of the first max_points images
            m = min(n, max_points)
            self.cloud = torch.cat([self._encode(images[i:i + 512]) for i in range(0, m, 512)]).numpy()

        picker = dict(min=0, max=n - 1, layout=widgets.Layout(width="170px"))
        self.picker_a = widgets.BoundedIntText(value=int(index_a), description="image A", **picker)
        self.picker_b = widgets.BoundedIntText(value=int(index_b), description="image B", **picker)
        self.random_pair = widgets.Button(description="random pair", icon="random",
                                          tooltip="pick two images at random")
        self.slider = widgets.FloatSlider(value=float(alpha), min=0.0, max=1.0, step=0.01,
                                          description="alpha", continuous_update=True,
                                          readout_format=".2f", layout=widgets.Layout(width="420px"))
        self.spherical = widgets.ToggleButton(value=bool(spherical), description="spherical path",
                                              tooltip="great circle (slerp) instead of a straight line")
        self.image = widgets.Image(format="png")
        self.figure, self._artists = self._build_figure(dpi)
        super().__init__([widgets.HBox([self.picker_a, self.picker_b, self.random_pair]),
                          widgets.HBox([self.slider, self.spherical]), self.image])
        for control in (self.picker_a, self.picker_b, self.slider, self.spherical):
            control.observe(self._on_change, names="value")
        self.random_pair.on_click(self._on_random)
        self.redraw()

    # ---------------------------------------------------------------- model
    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        was_training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            return _codes_of(self.model, x.to(self.device))
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)

    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        was_training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            out = self.to_image(self.model.decode(z.to(self.device)))
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)
        return out.detach().float().cpu().clamp(0, 1)

    def code(self, index: int) -> torch.Tensor:
        """The code ``[D]`` (posterior mean) of image ``index``, encoded once and cached."""
        index = int(index)
        if index not in self._codes:
            self._codes[index] = self._encode(self.images[index:index + 1])[0]
        return self._codes[index]

    def point(self, alpha: float) -> torch.Tensor:
        """The code ``[D]`` at ``alpha`` on the current path (0: image A, 1: image B)."""
        z_a, z_b = self.code(self.picker_a.value), self.code(self.picker_b.value)
        if self.spherical.value:
            return slerp(z_a, z_b, float(alpha))
        return (1 - alpha) * z_a + alpha * z_b

    # ---------------------------------------------------------------- figure
    def _build_figure(self, dpi):
        latent = self.latent_dim == 2
        fig = Figure(figsize=(9.6 if latent else 6.6, 3.9), dpi=dpi)
        grid = fig.add_gridspec(2, 4 if latent else 3, height_ratios=(2.2, 1), hspace=0.35,
                                wspace=0.25, left=0.03, right=0.97, top=0.9, bottom=0.04)
        gray = self.images.shape[1] == 1
        blank = np.zeros(tuple(self.images.shape[2:]) + (() if gray else (3,)))
        style = dict(cmap="gray" if gray else None, vmin=0, vmax=1)
        artists = {}
        for col, key in enumerate(("a", "current", "b")):
            ax = fig.add_subplot(grid[0, col])
            ax.set_axis_off()
            artists[key] = ax.imshow(blank, **style)
            artists[key + "_ax"] = ax
        ax = fig.add_subplot(grid[1, :3])
        ax.set_axis_off()
        h, w = self.images.shape[2:]
        artists["strip"] = ax.imshow(np.concatenate([blank] * self.num_steps, axis=1), **style)
        artists["marker"] = Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="C3", linewidth=2)
        ax.add_patch(artists["marker"])
        ax.set_title("the path, decoded", fontsize=9)
        if latent:
            ax = fig.add_subplot(grid[:, 3])
            colors = dict(c=self.labels[:len(self.cloud)], cmap="tab10", vmin=-0.5, vmax=9.5) \
                if self.labels is not None else dict(color="0.6")
            ax.scatter(self.cloud[:, 0], self.cloud[:, 1], s=4, alpha=0.5, linewidths=0, **colors)
            (artists["path"],) = ax.plot([], [], color="black", linewidth=1.5)
            (artists["ends"],) = ax.plot([], [], "o", color="black", markersize=6)
            (artists["here"],) = ax.plot([], [], "*", color="C3", markersize=14)
            ax.set_title("latent plane (codes = means)", fontsize=9)
            ax.tick_params(labelsize=7)
            artists["latent_ax"] = ax
        return fig, artists

    def _on_change(self, _change=None) -> None:
        if not self._holding:
            self.redraw()

    def _on_random(self, _button=None) -> None:
        a, b = self._rng.choice(self.images.shape[0], size=2, replace=False)
        self._holding = True          # one redraw for the two pickers, not two
        try:
            self.picker_a.value, self.picker_b.value = int(a), int(b)
        finally:
            self._holding = False
        self.redraw()

    def _label(self, index: int) -> str:
        return f" (label {self.labels[index]})" if self.labels is not None else ""

    def state(self) -> dict:
        """What the figure shows now.

        Returns:
            ``{"index_a", "index_b", "label_a", "label_b" (None without labels),
            "alpha", "spherical", "z_a", "z_b", "z"}``; the codes as lists of floats.
        """
        a, b = int(self.picker_a.value), int(self.picker_b.value)
        label = (lambda i: self.labels[i].item()) if self.labels is not None else (lambda i: None)
        return {"index_a": a, "index_b": b, "label_a": label(a), "label_b": label(b),
                "alpha": float(self.slider.value), "spherical": bool(self.spherical.value),
                "z_a": self.code(a).tolist(), "z_b": self.code(b).tolist(),
                "z": self.point(self.slider.value).tolist()}

    def redraw(self) -> None:
        """Decode the path and the point at ``alpha``, update the figure and re-render the image."""
        s = self.state()
        alphas = np.linspace(0.0, 1.0, self.num_steps)
        z = torch.stack([self.point(float(t)) for t in alphas] + [torch.tensor(s["z"])])
        self.decoded = self._decode(z)                                   # [num_steps + 1, C, H, W]
        pictures = self.decoded.permute(0, 2, 3, 1).numpy()
        if pictures.shape[-1] == 1:
            pictures = pictures[..., 0]
        originals = self.images[[s["index_a"], s["index_b"]]].float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        if originals.shape[-1] == 1:
            originals = originals[..., 0]
        a = self._artists
        a["a"].set_data(originals[0])
        a["b"].set_data(originals[1])
        a["current"].set_data(pictures[-1])
        a["strip"].set_data(np.concatenate(list(pictures[:-1]), axis=1))
        w = self.images.shape[3]
        a["marker"].set_x(int(np.argmin(np.abs(alphas - s["alpha"]))) * w - 0.5)
        a["a_ax"].set_title(f"A: #{s['index_a']}{self._label(s['index_a'])}", fontsize=9)
        a["b_ax"].set_title(f"B: #{s['index_b']}{self._label(s['index_b'])}", fontsize=9)
        path = "spherical" if s["spherical"] else "linear"
        a["current_ax"].set_title(f"decoded at alpha = {s['alpha']:.2f} ({path})", fontsize=9)
        if self.latent_dim == 2:
            line = torch.stack([self.point(float(t)) for t in np.linspace(0, 1, 50)]).numpy()
            a["path"].set_data(line[:, 0], line[:, 1])
            a["ends"].set_data([s["z_a"][0], s["z_b"][0]], [s["z_a"][1], s["z_b"][1]])
            a["here"].set_data([s["z"][0]], [s["z"][1]])
            ax = a["latent_ax"]
            pts = np.concatenate([self.cloud, line])
            lo, hi = pts.min(0), pts.max(0)
            pad = 0.05 * (hi - lo) + 1e-3
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        self.image.value = buffer.getvalue()


def latent_interpolation(model, images, labels=None, index_a: int = 0, index_b: int = 1,
                         alpha: float = 0.5, num_steps: int = 9, spherical: bool = False,
                         to_image=torch.sigmoid, max_points: int = 2000) -> LatentInterpolation:
    """An interactive walk between the latent codes of two images.

    Encodes two images (their codes are the posterior means ``mu``), decodes
    ``num_steps`` evenly spaced points on the path between the codes (bottom
    strip, the point nearest ``alpha`` outlined) and, large, the point at
    ``alpha``, next to the two originals. With a 2-D latent a panel shows the
    latent plane: the codes of the images coloured by label, the path and the
    current point. A smooth decoded path means a latent space without holes,
    which is what the KL term buys.

    Args:
        model: has ``encode(x [B, C, H, W]) -> (mu, logvar)`` (or ``mu``) and
            ``decode(z [B, D]) -> logits [B, C, H, W]`` (e.g. the notebook's ``VAE``);
            used in eval mode without gradient.
        images: a dataset with ``.images`` ``[N, C, H, W]`` in ``[0, 1]`` (and
            ``.labels``), or such a tensor.
        labels: ``[N]`` labels, for titles and colours (default: ``images.labels``).
        index_a, index_b: the two images to start with.
        alpha: the starting position on the path (0: image A, 1: image B).
        num_steps: decoded images along the path (at least 2).
        spherical: start with the great-circle path (:func:`slerp`).
        to_image: maps the decoder's output to pixels in ``[0, 1]`` (``torch.sigmoid``
            for logits; ``lambda out: out`` for a decoder that outputs images).
        max_points: images encoded for the latent panel's background.

    Returns:
        A :class:`LatentInterpolation` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return LatentInterpolation(model, images, labels=labels, index_a=index_a, index_b=index_b,
                               alpha=alpha, num_steps=num_steps, spherical=spherical,
                               to_image=to_image, max_points=max_points)


# --------------------------------------------------------------------------
# Quantizer playground (phases 1 and 2: a live 2-D toy)

def _code_colors(k: int) -> np.ndarray:
    """``[k, 3]`` RGB colours, one per code (tab20, repeated for more than 20 codes)."""
    from matplotlib import colormaps
    return np.asarray(colormaps["tab20"].colors)[np.arange(k) % 20]


class QuantizerPlayground(widgets.VBox):
    """Train a codebook of ``K`` points on 2-D encoder outputs, live, and watch it collapse or not.

    Controls (attributes): ``num_codes`` (K; restarts), ``init`` (``"random"`` or
    ``"k-means"``; restarts), ``beta`` (commitment weight), ``ema`` (EMA codebook instead
    of gradient), ``decay`` (EMA decay, also of the usage counts the dead-code test reads),
    ``dead_threshold`` (restart codes used less than this many times per batch; 0: never),
    ``steps`` (steps per click), and the buttons ``train_button``, ``restart_button``
    (a fresh codebook, same data) and ``data_button`` (a new mixture). ``toy`` is the
    model (:class:`dvl_helpers._playground.ToyVQ`), ``figure`` the matplotlib figure,
    ``image`` the widget showing it, ``status`` the line of numbers above it and
    :meth:`state` what both show. Build it with :func:`quantizer_playground`.
    """

    STEPS = (10, 50, 100, 200, 500, 1000)

    def __init__(self, num_codes: int = 32, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 dead_threshold: float = 0.0, init: str = "random", steps: int = 200,
                 num_points: int = 1000, num_components: int = 8, seed: int = 0, resolution: int = 128,
                 dpi: int = 80):
        for name, value, low, high in (("num_codes", num_codes, 2, 64), ("beta", beta, 0.0, 2.0),
                                       ("decay", decay, 0.8, 0.999), ("dead_threshold", dead_threshold, 0.0, 4.0)):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if steps not in self.STEPS:
            raise ValueError(f"steps must be one of {self.STEPS}, got {steps}")
        if num_points < 2 * 64 or num_components < 1:
            raise ValueError(f"need num_points >= 128 and num_components >= 1, "
                             f"got {num_points} and {num_components}")
        self.toy = _pg.ToyVQ(num_codes=num_codes, beta=beta, ema=ema, decay=decay,
                             dead_threshold=dead_threshold, init=init, num_points=num_points,
                             num_components=num_components, seed=seed)
        self.resolution = int(resolution)
        wide, style = widgets.Layout(width="300px"), {"description_width": "initial"}
        self.num_codes = widgets.IntSlider(value=int(num_codes), min=2, max=64, description="codes K",
                                           continuous_update=False, layout=wide, style=style)
        self.init = widgets.ToggleButtons(options=list(_pg.INITS), value=init, description="init",
                                          style={"button_width": "84px", "description_width": "30px"},
                                          tooltips=["uniform in (-1/K, 1/K): a tiny cloud at the origin",
                                                    "k-means++ and 10 Lloyd steps on the outputs"])
        self.beta = widgets.FloatSlider(value=float(beta), min=0.0, max=2.0, step=0.05,
                                        description="β (commitment)", continuous_update=False,
                                        layout=wide, style=style)
        self.ema = widgets.Checkbox(value=bool(ema), description="EMA codebook", indent=False,
                                    layout=widgets.Layout(width="130px"))
        self.decay = widgets.FloatSlider(value=float(decay), min=0.8, max=0.999, step=0.001, description="decay",
                                         readout_format=".3f", continuous_update=False, layout=wide, style=style)
        self.dead_threshold = widgets.FloatSlider(
            value=float(dead_threshold), min=0.0, max=4.0, step=0.1, description="restart if uses/batch <",
            continuous_update=False, layout=widgets.Layout(width="360px"), style=style)
        self.steps = widgets.Dropdown(options=list(self.STEPS), value=int(steps), description="steps",
                                      layout=widgets.Layout(width="150px"))
        self.train_button = widgets.Button(description=f"train {steps} steps", icon="play",
                                           button_style="primary", tooltip="train the codebook")
        self.restart_button = widgets.Button(description="restart", icon="refresh",
                                             tooltip="a fresh codebook (same data), step 0")
        self.data_button = widgets.Button(description="new data", icon="random",
                                          tooltip="draw a new mixture of Gaussians and restart")
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png")
        legend = widgets.HTML(
            "<small>Left: Voronoi cells of the codes (grey: no output falls in it), data <i>x</i> "
            "(light dots), encoder outputs <i>z</i> (dark dots), codes in use (circles, sized by use) "
            "and dead codes (red ✕). Right: outputs per code, sorted; perplexity (blue) and dead "
            "codes (red) over training.</small>")
        self.figure, self._artists = self._build_figure(dpi)
        self._view()
        super().__init__([
            widgets.HBox([self.num_codes, self.init, self.restart_button, self.data_button]),
            widgets.HBox([self.beta, self.ema, self.decay]),
            widgets.HBox([self.dead_threshold, self.steps, self.train_button]),
            self.status, self.image, legend])
        self.add_class("dvl-quantizer-playground")
        for control in (self.num_codes, self.init):
            control.observe(self._on_restart_setting, names="value")
        for control in (self.beta, self.ema, self.decay, self.dead_threshold):
            control.observe(self._on_setting, names="value")
        self.steps.observe(self._on_steps, names="value")
        self.train_button.on_click(self._on_train)
        self.restart_button.on_click(self._on_restart)
        self.data_button.on_click(self._on_data)
        self.redraw()

    # ---------------------------------------------------------------- callbacks
    def _on_setting(self, _change=None) -> None:
        toy = self.toy
        toy.beta, toy.ema = float(self.beta.value), bool(self.ema.value)
        toy.decay, toy.dead_threshold = float(self.decay.value), float(self.dead_threshold.value)
        self._update_status()          # the picture shows the model, which has not changed yet

    def _on_restart_setting(self, _change=None) -> None:
        self.toy.num_codes, self.toy.init = int(self.num_codes.value), self.init.value
        self._on_restart()

    def _on_steps(self, change) -> None:
        self.train_button.description = f"train {change['new']} steps"

    def _on_train(self, _button=None) -> None:
        self.toy.train(int(self.steps.value))
        self.redraw()

    def _on_restart(self, _button=None) -> None:
        self.toy.restart()
        self.redraw()

    def _on_data(self, _button=None) -> None:
        self.toy.new_data()
        self._view()
        self.redraw()

    # ---------------------------------------------------------------- figure
    def _build_figure(self, dpi):
        # few texts and fixed axes: text layout, not drawing, is what costs time in Agg
        fig = Figure(figsize=(10.0, 4.4), dpi=dpi)
        plane = fig.add_axes((0.01, 0.02, 0.45, 0.96))
        usage = fig.add_axes((0.54, 0.58, 0.44, 0.34))
        curve = fig.add_axes((0.54, 0.08, 0.44, 0.34))
        a = {"plane": plane, "usage": usage, "curve": curve}
        a["cells"] = plane.imshow(np.full((2, 2, 3), 255, np.uint8), origin="lower", interpolation="none",
                                  zorder=0)
        a["data"] = plane.scatter([], [], s=3, color="0.55", alpha=0.35, linewidths=0, zorder=1)
        a["outputs"] = plane.scatter([], [], s=4, color="0.1", alpha=0.6, linewidths=0, zorder=2)
        a["codes"] = plane.scatter([], [], marker="o", edgecolors="black", linewidths=0.8, zorder=4)
        a["dead"] = plane.scatter([], [], marker="x", color="C3", s=36, linewidths=1.5, zorder=5)
        plane.set_xticks([])
        plane.set_yticks([])
        a["bars"] = usage.stairs([0], [0, 1], fill=True, color="C0")
        a["dead_span"] = Rectangle((0, 0), 0, 1, transform=usage.get_xaxis_transform(),
                                   color="C3", alpha=0.15, linewidth=0)
        usage.add_patch(a["dead_span"])
        usage.set_xticks([])
        fig.text(0.54, 0.935, "outputs per code, sorted (red: dead codes)", fontsize=9)
        (a["ppl"],) = curve.plot([], [], color="C0")
        (a["dead_curve"],) = curve.plot([], [], color="C3")
        a["k_line"] = curve.axhline(0, color="0.5", linestyle="--", linewidth=1)
        fig.text(0.54, 0.435, "perplexity (blue), dead codes (red), K (dashed) by step", fontsize=9)
        for ax in (usage, curve):
            ax.tick_params(labelsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
        curve.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        return fig, a

    def _view(self) -> None:
        """The plotted region (square, around the data) and its pixel grid for the cells."""
        x = self.toy.x
        centre = (x.max(0) + x.min(0)) / 2
        half = (x.max(0) - x.min(0)).max() / 2 * 1.1
        lo, hi = centre - half, centre + half
        self._xs = np.linspace(lo[0], hi[0], self.resolution)
        self._ys = np.linspace(lo[1], hi[1], self.resolution)
        a = self._artists
        a["cells"].set_extent((lo[0], hi[0], lo[1], hi[1]))
        a["plane"].set_xlim(lo[0], hi[0])
        a["plane"].set_ylim(lo[1], hi[1])
        a["data"].set_offsets(x)

    def state(self) -> dict:
        """What the figure and the status line show now.

        Returns:
            the model's :meth:`~dvl_helpers._playground.ToyVQ.summary` (``step``, ``perplexity``,
            ``dead``, ``used``, ``num_codes``, ``distortion``, ``drift``, ``restarted``), the
            settings ``beta``, ``ema``, ``decay``, ``dead_threshold``, ``init``, ``steps`` and
            ``seed`` (of the data), and ``usage`` (``[K]`` outputs per code, a list).
        """
        toy = self.toy
        return {**toy.summary(), "beta": toy.beta, "ema": toy.ema, "decay": toy.decay,
                "dead_threshold": toy.dead_threshold, "init": toy.init, "steps": int(self.steps.value),
                "seed": toy.data_seed, "usage": toy.usage().tolist()}

    def _update_status(self, s: dict | None = None) -> None:
        toy = self.toy
        s = toy.summary() if s is None else s
        codebook = (f"EMA codebook (decay {toy.decay:.3f})" if toy.ema
                    else f"gradient codebook (Adam, lr {toy.lr:g})")
        restart = (f"restart if uses/batch &lt; {toy.dead_threshold:.1f}" if toy.dead_threshold > 0
                   else "no restarts")
        self.status.value = (
            f"<b>step {s['step']}</b> · perplexity <b>{s['perplexity']:.1f}</b> of {s['num_codes']} · "
            f"<b>{s['dead']}</b> dead · {s['restarted']} restarted · quantization error "
            f"{s['distortion']:.3f} · outputs moved {s['drift']:.3f}<br>"
            f"<small>{codebook} · β {toy.beta:.2f} · {restart} · init {toy.init}</small>")

    def redraw(self) -> None:
        """Update every panel and the status line to the model, and re-render the image."""
        toy, a = self.toy, self._artists
        k = toy.num_codes
        colors = _code_colors(k)
        idx = toy.assign()
        counts = np.bincount(idx, minlength=k).astype(float)
        alive = counts > 0
        s = toy.summary(idx)
        # Voronoi cells: each pixel takes its nearest code's colour, pale; cells of dead codes grey
        labels = toy.cells(self._xs, self._ys)                               # [H, W]
        pale = np.where(alive[:, None], 0.35 * colors + 0.65, 0.86)           # [K, 3]
        rgb = (pale * 255).astype(np.uint8)[labels]                            # uint8: no normalising
        edge = np.zeros(labels.shape, dtype=bool)
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        rgb[edge] = 115
        a["cells"].set_data(rgb)
        a["outputs"].set_offsets(toy.z)
        a["codes"].set_offsets(toy.codebook[alive] if alive.any() else np.empty((0, 2)))
        a["codes"].set_facecolors(colors[alive])
        a["codes"].set_sizes(20 + 180 * counts[alive] / max(counts.max(), 1))
        a["dead"].set_offsets(toy.codebook[~alive] if (~alive).any() else np.empty((0, 2)))
        ordered = np.sort(counts)[::-1]
        a["bars"].set_data(ordered, np.arange(k + 1))
        a["dead_span"].set_x(int(alive.sum()))
        a["dead_span"].set_width(s["dead"])
        a["usage"].set_xlim(0, k)
        a["usage"].set_ylim(0, max(ordered[0], 1) * 1.05)
        log = np.asarray(toy.log, dtype=float)
        a["ppl"].set_data(log[:, 0], log[:, 1])
        a["dead_curve"].set_data(log[:, 0], log[:, 2])
        a["k_line"].set_ydata([k, k])
        a["curve"].set_xlim(0, max(log[-1, 0], 10))
        a["curve"].set_ylim(0, k * 1.08)
        self._update_status(s)
        self.image.value = _png(self.figure)


def quantizer_playground(num_codes: int = 32, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                         dead_threshold: float = 0.0, init: str = "random", steps: int = 200,
                         num_points: int = 1000, num_components: int = 8,
                         seed: int = 0) -> QuantizerPlayground:
    """A live 2-D vector quantizer: watch codes die, and bring them back.

    ``num_points`` points from a mixture of ``num_components`` Gaussians are the data;
    their encoder outputs (free points that start on the data, pulled back to it by a
    stand-in for the reconstruction loss and onto their codes by ``beta`` times the
    commitment loss) are quantized by a codebook of ``K`` points. Each click of *train*
    runs ``steps`` minibatch steps (256 outputs) on the CPU in tens of milliseconds.
    The left panel shows the Voronoi cells of the codes (grey: cells no output falls
    in), the data, the outputs and the codes (sized by use; dead ones as red crosses);
    on the right, the sorted usage and the perplexity and dead codes over training.

    With the default random start (uniform in ``(-1/K, 1/K)``, as many VQ-VAE
    implementations do) only the codes on the rim of the tiny initial cloud ever win
    an output: the rest never receive a gradient and stay dead, and the perplexity
    stalls far below ``K``. Restarting dead codes (``dead_threshold > 0``) or a
    k-means start cures it; an EMA codebook alone does not.

    Every control answers within the course's budget of 300 ms on 2 cores (a click
    of 200 steps costs about 0.1 s of CPU; ``benchmarks/widgets.py`` measures it).
    Settings (``beta``, EMA, ``decay``, the restart threshold) apply from the next
    click on; changing ``K`` or the start restarts the codebook.

    Used in ``01_vqvae`` (why codes die) and ``02_stable_vq`` (the cures).

    Args:
        num_codes: ``K``, in ``[2, 64]``.
        beta: weight of the commitment loss, in ``[0, 2]``.
        ema: train the codebook by EMA (no gradient, no learning rate) instead of
            the codebook loss with Adam.
        decay: the EMA decay, in ``[0.8, 0.999]``; also the decay of the running
            usage counts that the dead-code test reads.
        dead_threshold: restart codes used fewer than this many times per batch
            (running average) on random outputs of the batch, in ``[0, 4]``; 0: never.
        init: ``"random"`` or ``"k-means"`` (k-means++ and 10 Lloyd steps).
        steps: training steps per click, one of 10, 50, 100, 200, 500, 1000.
        num_points, num_components, seed: the data (at least 128 points).

    Returns:
        A :class:`QuantizerPlayground` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return QuantizerPlayground(num_codes=num_codes, beta=beta, ema=ema, decay=decay,
                               dead_threshold=dead_threshold, init=init, steps=steps,
                               num_points=num_points, num_components=num_components, seed=seed)


# --------------------------------------------------------------------------
# Gumbel-softmax explorer (phase 3: soft relaxations)

def _as_logits(logits) -> np.ndarray:
    """``[K]`` float64 logits from a tensor, array or list, with a clear error otherwise."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().double().numpy()
    try:
        array = np.asarray(logits, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"logits must be numbers [K], got {type(logits).__name__}") from None
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(f"logits must be [K] with K >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("logits must be finite, got inf or nan")
    return array


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class GumbelExplorer(widgets.VBox):
    """Soft and hard Gumbel-softmax samples of one categorical distribution as the temperature moves.

    Controls (attributes): ``tau`` (the temperature, log scale) and ``resample`` (a button
    that draws new Gumbel noise; moving ``tau`` keeps the noise, so each sample changes
    smoothly). ``noise`` is the ``[num_samples, K]`` Gumbel noise, ``figure`` the
    matplotlib figure, ``image`` the widget showing it, ``status`` the line of numbers
    above it, :meth:`state` what both show. Build it with :func:`gumbel_explorer`.
    """

    def __init__(self, logits, tau: float = 1.0, num_samples: int = 1000, num_shown: int = 10,
                 seed: int = 0, dpi: int = 80):
        self.logits = _as_logits(logits)
        if not 0.01 <= tau <= 100:
            raise ValueError(f"tau must be in [0.01, 100], got {tau}")
        if num_samples < 2 or not 1 <= num_shown <= num_samples:
            raise ValueError(f"need num_samples >= 2 and 1 <= num_shown <= num_samples, "
                             f"got num_samples={num_samples}, num_shown={num_shown}")
        self.probs = _softmax(self.logits)
        self.num_samples, self.num_shown = int(num_samples), int(num_shown)
        self._rng = np.random.default_rng(seed)
        self.tau = widgets.FloatLogSlider(value=float(tau), base=10, min=-2, max=2, step=0.02,
                                          description="τ", readout_format=".3f", continuous_update=True,
                                          layout=widgets.Layout(width="460px"))
        self.resample = widgets.Button(description="new noise", icon="random",
                                       tooltip="draw new Gumbel noise g")
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png")
        legend = widgets.HTML(
            "<small>Left: soft samples softmax((logits + g) / τ), one per row, the hard sample "
            "argmax(logits + g) outlined in red. Middle: mean of the soft samples per category "
            "(bars) ± one standard deviation, π = softmax(logits) (red) and how often each category "
            "is the hard sample (green: π at every τ, the Gumbel-max trick). Right: the largest "
            "entry of each soft sample (1: one-hot, 1/K: uniform).</small>")
        self._draw_noise()
        self.figure, self._artists = self._build_figure(dpi)
        super().__init__([widgets.HBox([self.tau, self.resample]), self.status, self.image, legend])
        self.add_class("dvl-gumbel-explorer")
        self.tau.observe(lambda _change: self.redraw(), names="value")
        self.resample.on_click(self._on_resample)
        self.redraw()

    def _draw_noise(self) -> None:
        u = self._rng.uniform(np.finfo(float).tiny, 1.0, size=(self.num_samples, self.logits.shape[0]))
        self.noise = -np.log(-np.log(u))                                   # Gumbel(0, 1)

    def _on_resample(self, _button=None) -> None:
        self._draw_noise()
        self.redraw()

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """``(soft [num_samples, K], hard [num_samples])``: ``softmax((logits + g) / tau)``, ``argmax(logits + g)``."""
        perturbed = self.logits + self.noise
        return _softmax(perturbed / float(self.tau.value)), perturbed.argmax(1)

    def state(self) -> dict:
        """What the figure shows now.

        Returns:
            ``{"tau", "probs" [K], "soft" [num_samples, K], "hard" [num_samples],
            "mean" and "std" [K] (of the soft samples), "hard_freq" [K],
            "entropy" (mean entropy of a soft sample, nats), "max" (mean largest entry)}``;
            arrays are NumPy.
        """
        soft, hard = self.samples()
        k = self.logits.shape[0]
        entropy = -(soft * np.log(np.clip(soft, 1e-300, None))).sum(1)
        return {"tau": float(self.tau.value), "probs": self.probs, "soft": soft, "hard": hard,
                "mean": soft.mean(0), "std": soft.std(0),
                "hard_freq": np.bincount(hard, minlength=k) / len(hard),
                "entropy": float(entropy.mean()), "max": float(soft.max(1).mean())}

    def _build_figure(self, dpi):
        k = self.logits.shape[0]
        fig = Figure(figsize=(11.0, 3.4), dpi=dpi)
        heat = fig.add_axes((0.04, 0.12, 0.27, 0.76))
        spread = fig.add_axes((0.37, 0.12, 0.3, 0.76))
        peak = fig.add_axes((0.73, 0.12, 0.25, 0.76))
        a = {"heat": heat, "spread": spread, "peak": peak}
        a["rows"] = heat.imshow(np.zeros((self.num_shown, k)), vmin=0, vmax=1, cmap="viridis",
                                aspect="auto", interpolation="nearest")
        a["argmax"] = heat.scatter([], [], marker="s", s=40, facecolors="none", edgecolors="C3", linewidths=1.5)
        heat.set_yticks([])
        fig.text(0.04, 0.92, "soft samples (rows); hard sample outlined", fontsize=9)
        x = np.arange(k)
        a["mean"] = spread.bar(x, np.zeros(k), width=0.7, color="C0", alpha=0.8)
        a["err"] = spread.errorbar(x, np.zeros(k), yerr=np.zeros(k), fmt="none", ecolor="black",
                                   capsize=2, linewidth=1)
        spread.scatter(x, self.probs, marker="_", s=220, color="C3", linewidths=2, zorder=3)
        a["freq"] = spread.scatter(x, np.zeros(k), marker="D", s=18, color="C2", zorder=4)
        spread.set_ylim(0, 1.02)
        fig.text(0.37, 0.92, "mean ± std of soft samples; π (red); hard freq. (green)", fontsize=9)
        self._bins = np.linspace(0, 1, 41)
        a["hist"] = peak.stairs(np.zeros(40), self._bins, fill=True, color="C4")
        peak.axvline(1 / k, color="0.5", linestyle="--", linewidth=1)
        peak.set_xlim(0, 1)
        peak.set_yticks([])
        fig.text(0.73, 0.92, "largest entry of a soft sample", fontsize=9)
        for ax in (heat, spread, peak):
            ax.tick_params(labelsize=7)
        if k <= 20:
            heat.set_xticks(x)
            spread.set_xticks(x)
        else:
            for ax in (heat, spread):
                ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        spread.yaxis.set_major_locator(MaxNLocator(3))
        peak.xaxis.set_major_locator(MaxNLocator(5))
        return fig, a

    def redraw(self) -> None:
        """Recompute the samples at the slider's ``tau``, update the status line and re-render the image."""
        s, a = self.state(), self._artists
        a["rows"].set_data(s["soft"][:self.num_shown])
        a["argmax"].set_offsets(np.stack([s["hard"][:self.num_shown], np.arange(self.num_shown)], 1))
        for bar, height in zip(a["mean"], s["mean"]):
            bar.set_height(height)
        _, caps, (bars,) = a["err"].lines
        low, high = s["mean"] - s["std"], s["mean"] + s["std"]
        x = np.arange(len(low))
        bars.set_segments([np.array([[i, lo], [i, hi]]) for i, lo, hi in zip(x, low, high)])
        caps[0].set_ydata(low)
        caps[1].set_ydata(high)
        a["freq"].set_offsets(np.stack([x, s["hard_freq"]], 1))
        hist, _ = np.histogram(s["soft"].max(1), bins=self._bins)
        a["hist"].set_data(hist)
        a["peak"].set_ylim(0, hist.max() * 1.05)
        k = len(x)
        self.status.value = (
            f"<b>τ = {s['tau']:.3f}</b> · mean entropy of a soft sample <b>{s['entropy']:.2f}</b> nats "
            f"(uniform: {np.log(k):.2f}) · mean largest entry <b>{s['max']:.2f}</b> (one-hot: 1, "
            f"uniform: {1 / k:.2f}) · over {self.num_samples} draws of the noise")
        self.image.value = _png(self.figure)


def gumbel_explorer(logits, tau: float = 1.0, num_samples: int = 1000, num_shown: int = 10,
                    seed: int = 0) -> GumbelExplorer:
    """An interactive look at Gumbel-softmax samples as the temperature ``tau`` moves.

    With Gumbel noise ``g_k = -log(-log u_k)``, ``u_k ~ U(0, 1)``, drawn once per sample,
    the figure shows (left) a few soft samples ``softmax((logits + g) / tau)`` as rows with
    their hard sample ``argmax(logits + g)`` outlined, (middle) the mean and the standard
    deviation of the soft samples per category against ``pi = softmax(logits)`` and how
    often each category is the hard sample (``pi`` at every temperature: the Gumbel-max
    trick), and (right) the spread of the largest entry of the soft samples. Low ``tau``:
    soft samples become one-hot and their mean approaches ``pi`` (little bias, but
    high-variance gradients); high ``tau``: every sample approaches the uniform vector.

    Used in ``03_gumbel_dvae``.

    Args:
        logits: ``[K]`` unnormalised log-probabilities (tensor, array or list), ``K >= 2``.
        tau: the starting temperature, in ``[0.01, 100]`` (the slider is logarithmic).
        num_samples: samples behind the statistics.
        num_shown: samples drawn as rows.
        seed: seed of the Gumbel noise.

    Returns:
        A :class:`GumbelExplorer` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return GumbelExplorer(logits, tau=tau, num_samples=num_samples, num_shown=num_shown, seed=seed)


# --------------------------------------------------------------------------
# FSQ grid explorer (phase 6: codebook-free quantization)
#
# The explorer computes FSQ with its own few lines (below), not with the learner's
# phase-6 answer nor with a reference the grader would compare against.

def _fsq_bound(z: np.ndarray, levels: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """``(L - 1)/2 * tanh(z)``, shifted by half a step for even ``L`` (Mentzer et al. 2023).

    An even ``L`` has no level at 0: the bound range is moved down by 1/2 so that
    rounding yields the ``L`` integers ``-L/2 .. L/2 - 1``; the input is shifted by
    ``tan(1/2 / ((L - 1)/2))``, as in the paper's code, so that ``z = 0`` still lands
    on level 0 (``atanh`` would hit it exactly but is undefined for ``L = 2``). The
    factor ``1 - eps`` keeps the ends off the rounding boundary at half-integers.
    """
    half = (levels - 1) * (1 - eps) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.tan(offset / half)
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
