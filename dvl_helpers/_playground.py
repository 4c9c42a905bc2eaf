"""The math behind :func:`dvl_helpers.widgets.quantizer_playground`: vector quantization in the plane.

A miniature of the VQ-VAE bottleneck small enough to train live on a CPU (NumPy,
a few hundred steps in tens of milliseconds):

- ``x`` ``[N, 2]``: points drawn from a mixture of Gaussians (the "images");
- ``z`` ``[N, 2]``: their encoder outputs. There is no network: each output is a
  free point that starts at its ``x`` and takes gradient steps on its own loss
  ``||z - x||^2 + beta ||z - sg[e]||^2``. The first term stands in for the
  reconstruction loss (the output must stay informative about its input), the
  second is the commitment loss, so ``beta`` sets how hard outputs are pulled
  onto their codes;
- ``codebook`` ``[K, 2]``: trained on minibatches of ``z`` either by gradient
  (the codebook loss ``||sg[z] - e||^2`` with Adam, as in the VQ-VAE paper) or
  by exponential moving averages with Laplace smoothing (its appendix), with
  optional dead-code restarts (Jukebox) and a random or k-means start.

The rules are those of :mod:`dvl_helpers.quantizers` (``ema_update``,
``dead_codes``, ``reset_dead_codes``, ``kmeans_init``) written again in NumPy for
``D = 2``, where a PyTorch call costs more than the arithmetic.
"""
from __future__ import annotations

import numpy as np

INITS = ("random", "k-means")


def mixture_of_gaussians(num_points: int, num_components: int, rng: np.random.Generator) -> np.ndarray:
    """``[num_points, 2]`` points from ``num_components`` anisotropic Gaussians around the origin.

    The centres lie on a ring of radius 1.5 to 3.5, spread over all angles, so no
    cluster sits on the origin, where a small random codebook starts.
    """
    angles = 2 * np.pi * (np.arange(num_components) + rng.uniform(-0.3, 0.3, num_components)) / num_components
    radii = rng.uniform(1.5, 3.5, num_components)
    centres = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)   # [M, 2]
    weights = rng.dirichlet(np.full(num_components, 5.0))
    which = rng.choice(num_components, size=num_points, p=weights)
    scales = rng.uniform(0.12, 0.45, size=(num_components, 2))                     # std per axis
    rotations = rng.uniform(0, np.pi, num_components)
    cos, sin = np.cos(rotations), np.sin(rotations)
    rot = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)         # [M, 2, 2]
    noise = rng.standard_normal((num_points, 2)) * scales[which]
    return centres[which] + np.einsum("nij,nj->ni", rot[which], noise)


def sq_distances(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``[N, K]`` squared distances between rows of ``z`` ``[N, 2]`` and codes ``[K, 2]``."""
    d = (z * z).sum(1)[:, None] - 2 * z @ codebook.T + (codebook * codebook).sum(1)[None, :]
    return np.maximum(d, 0.0)


def nearest(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``[N]`` index of the nearest code of every row of ``z`` (ties: the lowest index)."""
    return sq_distances(z, codebook).argmin(1)


def kmeans(z: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """``[k, 2]`` codebook: k-means++ seeding, then ``iters`` Lloyd steps; empty codes re-seeded."""
    codebook = np.empty((k, z.shape[1]))
    codebook[0] = z[rng.integers(len(z))]
    d2 = ((z - codebook[0]) ** 2).sum(1)
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        codebook[j] = z[rng.choice(len(z), p=p)]
        d2 = np.minimum(d2, ((z - codebook[j]) ** 2).sum(1))
    for _ in range(iters):
        idx = nearest(z, codebook)
        counts = np.bincount(idx, minlength=k)
        sums = np.zeros_like(codebook)
        np.add.at(sums, idx, z)
        empty = counts == 0
        codebook[~empty] = sums[~empty] / counts[~empty, None]
        codebook[empty] = z[rng.choice(len(z), size=int(empty.sum()), replace=False)]
    return codebook


def perplexity(counts: np.ndarray) -> float:
    """``exp`` of the entropy of the usage distribution ``counts / counts.sum()``."""
    total = counts.sum()
    if total <= 0:
        return 1.0
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


class ToyVQ:
    """A codebook of ``K`` points trained on 2-D encoder outputs (see the module docstring).

    The settings are plain attributes read at every step, so they can change
    between calls to :meth:`train`: ``beta``, ``ema``, ``decay``, ``dead_threshold``.
    ``num_codes`` and ``init`` take effect at :meth:`restart`.

    Attributes:
        x, z: ``[N, 2]`` data points and their encoder outputs.
        codebook: ``[K, 2]``.
        cluster_size: ``[K]`` moving average of each code's uses per batch (starts at 1);
            the EMA codebook's ``N`` and what the dead-code test reads, in both modes.
        embed_sum: ``[K, 2]`` moving average of the sums of assigned outputs (``M``).
        step: training steps since the last restart.
        log: ``[(step, perplexity, dead)]`` measured on all ``N`` outputs every ``log_every`` steps.
        restarted: codes restarted since the last restart of the codebook.
    """

    def __init__(self, num_codes: int = 32, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 dead_threshold: float = 0.0, init: str = "random", lr: float = 0.05,
                 encoder_lr: float = 0.1, batch_size: int = 256, num_points: int = 1000,
                 num_components: int = 8, eps: float = 1e-5, log_every: int = 10, seed: int = 0):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        self.num_codes, self.beta, self.ema, self.decay = int(num_codes), float(beta), bool(ema), float(decay)
        self.dead_threshold, self.init, self.lr, self.encoder_lr = float(dead_threshold), init, lr, encoder_lr
        self.batch_size, self.eps, self.log_every = int(batch_size), eps, int(log_every)
        self.num_points, self.num_components = int(num_points), int(num_components)
        self.data_seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.new_data(seed)

    # ------------------------------------------------------------------ setup
    def new_data(self, seed: int | None = None) -> None:
        """Draw a new mixture (``seed``: default, the next one) and restart."""
        self.data_seed = self.data_seed + 1 if seed is None else int(seed)
        self.x = mixture_of_gaussians(self.num_points, self.num_components,
                                      np.random.default_rng(self.data_seed))
        self.restart()

    def restart(self) -> None:
        """Encoder outputs back on the data, a fresh codebook (``init``, ``num_codes``), step 0."""
        k = self.num_codes
        self.z = self.x.copy()
        if self.init == "k-means":
            self.codebook = kmeans(self.z, k, self.rng)
        else:   # the VQ-VAE's usual start: uniform in (-1/K, 1/K), a tiny cloud at the origin
            self.codebook = self.rng.uniform(-1 / k, 1 / k, size=(k, 2))
        self.cluster_size = np.ones(k)
        self.embed_sum = self.codebook.copy()
        self._m = np.zeros_like(self.codebook)        # Adam's moments of the gradient codebook
        self._v = np.zeros_like(self.codebook)
        self._adam_t = np.zeros(k)                     # per code, so a restarted code restarts Adam too
        self.step, self.restarted = 0, 0
        self.log: list[tuple[int, float, int]] = []
        self._record()

    # ------------------------------------------------------------------ measuring
    def assign(self) -> np.ndarray:
        """``[N]`` code of every encoder output."""
        return nearest(self.z, self.codebook)

    def usage(self) -> np.ndarray:
        """``[K]`` how many of the ``N`` outputs each code quantizes."""
        return np.bincount(self.assign(), minlength=self.num_codes).astype(float)

    def summary(self, idx: np.ndarray | None = None) -> dict:
        """``{"step", "perplexity", "dead" (codes no output uses), "used", "num_codes",
        "distortion" (mean ||z - e||^2), "drift" (mean ||z - x||^2), "restarted"}``.

        ``idx``: the :meth:`assign` result when the caller has it already.
        """
        idx = self.assign() if idx is None else idx
        counts = np.bincount(idx, minlength=self.num_codes)
        return {
            "step": self.step,
            "perplexity": perplexity(counts),
            "dead": int((counts == 0).sum()),
            "used": int((counts > 0).sum()),
            "num_codes": self.num_codes,
            "distortion": float(((self.z - self.codebook[idx]) ** 2).sum(1).mean()),
            "drift": float(((self.z - self.x) ** 2).sum(1).mean()),
            "restarted": self.restarted,
        }

    def _record(self) -> None:
        counts = self.usage()
        self.log.append((self.step, perplexity(counts), int((counts == 0).sum())))

    # ------------------------------------------------------------------ training
    def train(self, steps: int) -> None:
        """``steps`` minibatch steps with the current settings."""
        for _ in range(int(steps)):
            self._step()
            if self.step % self.log_every == 0:
                self._record()

    def _step(self) -> None:
        k, b = self.num_codes, min(self.batch_size, len(self.z))
        rows = self.rng.choice(len(self.z), size=b, replace=False)
        zb = self.z[rows]                                              # [B, 2]
        idx = nearest(zb, self.codebook)                               # [B]
        counts = np.bincount(idx, minlength=k).astype(float)           # [K]
        sums = np.zeros((k, 2))
        np.add.at(sums, idx, zb)
        e = self.codebook[idx]                                         # the codes before this update
        # encoder outputs: gradient of ||z - x||^2 + beta ||z - sg[e]||^2 (halved)
        self.z[rows] = zb - self.encoder_lr * ((zb - self.x[rows]) + self.beta * (zb - e))

        self.cluster_size = self.decay * self.cluster_size + (1 - self.decay) * counts
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + k * self.eps) * total
        if self.ema:
            self.embed_sum = self.decay * self.embed_sum + (1 - self.decay) * sums
            self.codebook = self.embed_sum / smoothed[:, None]
        else:
            # codebook loss mean((sg[z] - e)^2) over the B x 2 numbers, one Adam step
            grad = (counts[:, None] * self.codebook - sums) / b
            self._adam(grad, counts > 0)
            self.embed_sum = smoothed[:, None] * self.codebook         # EMA can take over from here
        if self.dead_threshold > 0:
            self._restart_dead(zb)
        self.step += 1

    def _adam(self, grad: np.ndarray, touched: np.ndarray, b1: float = 0.9, b2: float = 0.999) -> None:
        """One Adam step; a code that never had a gradient does not move (its moments are 0)."""
        self._adam_t += touched | (self._adam_t > 0)
        t = np.maximum(self._adam_t, 1)[:, None]
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad * grad
        m_hat = self._m / (1 - b1 ** t)
        v_hat = self._v / (1 - b2 ** t)
        self.codebook = self.codebook - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)

    def _restart_dead(self, zb: np.ndarray) -> None:
        """Codes used less than ``dead_threshold`` times per batch move onto random outputs of the batch."""
        dead = np.flatnonzero(self.cluster_size < self.dead_threshold)
        if dead.size == 0:
            return
        dead = dead[:len(zb)]
        new = zb[self.rng.choice(len(zb), size=dead.size, replace=False)]
        self.codebook[dead] = new
        self.cluster_size[dead] = 1.0
        self.embed_sum[dead] = new
        self._m[dead] = self._v[dead] = 0.0
        self._adam_t[dead] = 0
        self.restarted += int(dead.size)

    def cells(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``[len(ys), len(xs)]`` nearest code of every point of the grid ``xs x ys`` (the Voronoi cells)."""
        gx, gy = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        grid = np.stack([gx.ravel(), gy.ravel()], 1)
        # float32 halves the work; a pixel that rounding gives to the neighbouring code is invisible
        return nearest(grid, self.codebook.astype(np.float32)).reshape(len(ys), len(xs))
