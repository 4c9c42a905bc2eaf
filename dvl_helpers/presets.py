"""Presets: one object that sizes every notebook of the course.

``DVL_PRESET`` picks one of ``smoke`` (offline data, a whole notebook in under a
minute on 2 CPU cores; tests and grading), ``cpu`` (minutes on a laptop, results
that still teach) and ``gpu`` (the full models of the papers). Without the
variable, ``gpu`` is chosen when CUDA is present, else ``cpu``.
"""
from __future__ import annotations

import dataclasses
import os

import torch

PRESET_NAMES = ("smoke", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a notebook reads to size its data, models and training.

    Attributes:
        name: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        dataset: RGB dataset of the image phases (``cifar10`` or ``photos``).
        dataset_gray: grayscale dataset of the VAE and dVAE phases (``mnist`` or ``digits``).
        image_size: side of the square images fed to the models, in pixels.
        batch_size: images per training step.
        steps: optimisation steps of a training cell.
        lr: Adam learning rate.
        hidden: channels of the conv encoder/decoder (128 in the VQ-VAE paper).
        res_hidden: channels inside a residual block (32 in the VQ-VAE paper).
        num_res_blocks: residual blocks in the encoder and in the decoder.
        num_codes: codebook size ``K``.
        code_dim: code dimension ``D``.
        eval_every: steps between evaluations during training (0: never).
        eval_batches: batches of the test split used by one evaluation.
        max_train_images: cap on training images (``None``: the whole split).
        device: ``"cuda"`` or ``"cpu"``.
    """

    name: str
    dataset: str
    dataset_gray: str
    image_size: int
    batch_size: int
    steps: int
    lr: float
    hidden: int
    res_hidden: int
    num_res_blocks: int
    num_codes: int
    code_dim: int
    eval_every: int
    eval_batches: int
    max_train_images: int | None
    device: str

    def replace(self, **changes) -> "Preset":
        """A copy with some fields changed: ``cfg.replace(steps=100)``."""
        return dataclasses.replace(self, **changes)


def _presets(device: str) -> dict[str, Preset]:
    return {
        "smoke": Preset(
            name="smoke", dataset="photos", dataset_gray="digits", image_size=32,
            batch_size=32, steps=30, lr=2e-3, hidden=32, res_hidden=8, num_res_blocks=1,
            num_codes=64, code_dim=16, eval_every=0, eval_batches=1,
            max_train_images=512, device=device,
        ),
        "cpu": Preset(
            name="cpu", dataset="photos", dataset_gray="digits", image_size=32,
            batch_size=64, steps=1500, lr=1e-3, hidden=64, res_hidden=16, num_res_blocks=2,
            num_codes=128, code_dim=32, eval_every=250, eval_batches=4,
            max_train_images=None, device=device,
        ),
        "gpu": Preset(
            name="gpu", dataset="cifar10", dataset_gray="mnist", image_size=32,
            batch_size=32, steps=10_000, lr=3e-4, hidden=128, res_hidden=32, num_res_blocks=2,
            num_codes=512, code_dim=64, eval_every=1000, eval_batches=20,
            max_train_images=None, device=device,
        ),
    }


def default_preset_name() -> str:
    """``$DVL_PRESET`` if set, else ``gpu`` when CUDA is available, else ``cpu``."""
    name = os.environ.get("DVL_PRESET", "").strip().lower()
    if name:
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_preset(name: str | None = None, device: str | None = None) -> Preset:
    """The preset called ``name`` (default: :func:`default_preset_name`).

    Raises:
        ValueError: for a name that is not one of ``smoke``, ``cpu``, ``gpu``.
    """
    name = default_preset_name() if name is None else name.strip().lower()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    presets = _presets(device)
    if name not in presets:
        raise ValueError(
            f"unknown preset {name!r} (from DVL_PRESET or the argument); "
            f"expected one of {', '.join(PRESET_NAMES)}"
        )
    return presets[name]
