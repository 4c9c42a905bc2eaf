"""Decode the path between the codes of two images (phase 0: VAE)."""
from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


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
