"""A codebook trained live on a 2-D toy, with the cures for dead codes (phases 1 and 2).

The toy model itself is :mod:`dvl_helpers._playground`; this module draws it and wires the controls.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .. import _playground as _pg
from ._render import _png


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
