"""Codebook usage over training, one panel per run (phases 1 and 2)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ._render import _frame, _png


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
