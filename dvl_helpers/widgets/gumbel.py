"""Soft and hard Gumbel-softmax samples against the temperature (phase 3)."""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._render import _png


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
