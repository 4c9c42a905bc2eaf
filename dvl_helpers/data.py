"""Datasets of the course and the loaders that feed them to a training loop.

    ds = dvl.data.load(cfg.dataset, "train", max_images=cfg.max_train_images)
    images, labels = next(iter(dvl.data.loader(ds, cfg.batch_size)))   # [B, C, H, W], [B]

Every dataset is a :class:`TensorImageDataset`: all images in memory as one float
tensor ``[N, C, H, W]`` in ``[0, 1]`` plus labels ``[N]`` (``torch.long``). At these
sizes (at most 60,000 small images) that is simpler and faster than decoding files
on every step.

Two kinds of datasets:

- online, downloaded once through torchvision into ``$DVL_DATA_DIR`` (default
  ``~/.cache/dvl``): ``mnist``, ``fashion_mnist`` (28x28 gray) and ``cifar10``
  (32x32 RGB). The gpu preset uses them.
- offline, built from files inside installed packages, so they work without a
  network: ``digits`` (scikit-learn's 8x8 handwritten digits, upsampled to 32x32)
  and ``photos`` (32x32 RGB crops of the photographs scikit-image ships). The
  smoke and cpu presets use them.
"""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "DATASETS", "DatasetUnavailableError", "PHOTOS_TEST", "PHOTOS_TRAIN",
    "TensorImageDataset", "data_dir", "load", "loader", "resize",
]

DATASETS = {
    "mnist": "MNIST handwritten digits, 1x28x28, 60,000 train / 10,000 test (download)",
    "fashion_mnist": "Fashion-MNIST clothing, 1x28x28, 60,000 train / 10,000 test (download)",
    "cifar10": "CIFAR-10 objects, 3x32x32, 50,000 train / 10,000 test (download)",
    "digits": "scikit-learn handwritten digits, 8x8 upsampled to 1x32x32, 1,437 train / 360 test (offline)",
    "photos": "crops of scikit-image's photographs, 3x32x32, split by photograph (offline)",
}
"""The names :func:`load` knows, each with a one-line description."""

SPLITS = ("train", "test")
OFFLINE = ("digits", "photos")
DEFAULT_DATA_DIR = "~/.cache/dvl"

# The colour photographs inside the scikit-image wheel (no download needed), as
# name -> loader. Gray ones (camera, coins, moon, ...) are left out so that the
# dataset is colour throughout; so are the synthetic images (colorwheel, logo) and
# the right half of the stereo pair, which shows the same scene as the left one.
_PHOTO_LOADERS = {
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "hubble_deep_field": lambda d: d.hubble_deep_field(),
    "immunohistochemistry": lambda d: d.immunohistochemistry(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
    "retina": lambda d: d.retina(),
    "rocket": lambda d: d.rocket(),
}
PHOTOS = tuple(_PHOTO_LOADERS)
"""Source photographs of ``photos``; a crop's label is its photograph's index here."""
PHOTOS_TEST = ("chelsea", "coffee")
"""Photographs whose crops form the test split: no photograph is in both splits."""
PHOTOS_TRAIN = tuple(p for p in PHOTOS if p not in PHOTOS_TEST)
"""Photographs whose crops form the train split."""

PHOTO_CROP = 32
PHOTO_MAX_SIDE = 512       # larger photographs are first shrunk so their short side is 512
PHOTO_SCALES = (1, 1.5, 2, 3, 4)   # downscale factors; each gives a grid of crops
PHOTO_MIN_STD = 0.02       # crops flatter than this (black borders, empty sky) are dropped


class DatasetUnavailableError(RuntimeError):
    """An online dataset is not on disk and could not be downloaded."""


class TensorImageDataset(Dataset):
    """Images and labels held in memory; item ``i`` is ``(images[i], int(labels[i]))``.

    Args:
        images: float tensor ``[N, C, H, W]`` with values in ``[0, 1]``.
        labels: integer tensor ``[N]`` (stored as ``torch.long``).
        classes: the name of each label value (``classes[label]``).
        name: the dataset's name, e.g. ``"photos"``.
        split: ``"train"`` or ``"test"``.

    Attributes:
        images (Tensor): ``[N, C, H, W]`` float32, the whole split at once (handy for plots).
        labels (Tensor): ``[N]`` long.
        classes (list[str]), name (str), split (str).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, classes=(), name: str = "",
                 split: str = ""):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor [N, C, H, W], got {got}")
        labels = torch.as_tensor(labels)
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be [N] with N = {images.shape[0]} (one per image), got shape {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image [C, H, W] float in [0, 1], label int)``."""
        return self.images[index], int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"TensorImageDataset(name={self.name!r}, split={self.split!r}, "
                f"n={len(self)}, image=[{c}, {h}, {w}], classes={len(self.classes)})")


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of the downloaded datasets: ``root`` if given, else ``$DVL_DATA_DIR``, else ``~/.cache/dvl``."""
    if root is None:
        root = os.environ.get("DVL_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(root).expanduser()


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` images to ``[N, C, size, size]``.

    Bilinear, antialiased when shrinking, clamped to ``[0, 1]``; returns ``images``
    itself when it already has that size.
    """
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def load(name: str, split: str = "train", *, root: str | os.PathLike | None = None, download: bool = True,
         image_size: int | None = None, max_images: int | None = None) -> TensorImageDataset:
    """One split of a dataset, in memory.

    Args:
        name: one of ``mnist``, ``fashion_mnist``, ``cifar10`` (downloaded through
            torchvision into :func:`data_dir`) or ``digits``, ``photos`` (offline).
        split: ``"train"`` or ``"test"``.
        root: folder of the downloaded datasets (overrides ``$DVL_DATA_DIR``).
        download: download a missing online dataset; with ``False`` a missing one is an error.
        image_size: side of the returned square images; ``None`` keeps the native
            size (28 for MNIST, 32 for the others, including the upsampled ``digits``).
        max_images: keep only the first ``max_images`` images (the same ones on
            every call; the order of every dataset already mixes its classes).

    Returns:
        A :class:`TensorImageDataset`: ``images`` ``[N, C, H, W]`` float32 in
        ``[0, 1]`` (C = 1 for mnist, fashion_mnist, digits; 3 for cifar10, photos),
        ``labels`` ``[N]`` long, ``classes``.

    The offline datasets, built in about a second and then cached in memory:

    - ``digits``: scikit-learn's 1,797 digits, values 0..16 scaled to [0, 1] and
      upsampled bilinearly from 8x8 (``image_size=8`` gives the originals); a
      stratified 80/20 split with a fixed seed (1,437 train, 360 test).
    - ``photos``: non-overlapping 32x32 crops of the colour photographs in
      :data:`PHOTOS` (short side first shrunk to at most 512 pixels), taken at the
      downscales :data:`PHOTO_SCALES` (area averaging); nearly flat crops are dropped.
      The split is by photograph (:data:`PHOTOS_TRAIN`, :data:`PHOTOS_TEST`), so no
      test crop comes from a photograph seen in training; crops are in a fixed
      shuffled order and labelled with their photograph's index in :data:`PHOTOS`.

    Raises:
        ValueError: unknown ``name`` or ``split``, or a bad ``image_size`` / ``max_images``.
        DatasetUnavailableError: an online dataset is missing and cannot be downloaded;
            the message says how to point at the files or switch to ``digits`` / ``photos``.
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")

    if key == "digits":
        images, labels, classes = _digits(split)
        image_size = 32 if image_size is None else image_size
    elif key == "photos":
        images, labels, classes = _photos(split)
    else:
        images, labels, classes = _torchvision(key, split, data_dir(root), root is not None, download)

    if max_images is not None:
        images, labels = images[:max_images], labels[:max_images]
    if image_size is not None:
        images = resize(images, image_size)
    if key in OFFLINE:
        # the offline tensors are cached: copies keep the cache safe from in-place edits
        cached = _photos_split(split) if key == "photos" else _digits_all()[split]
        if images.untyped_storage().data_ptr() == cached[0].untyped_storage().data_ptr():
            images = images.clone()
        labels = labels.clone()
    return TensorImageDataset(images, labels, classes=classes, name=key, split=split)


def loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = True, *, drop_last: bool | None = None,
           seed: int | None = 0, num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` whose shuffling is reproducible.

    Args:
        dataset: e.g. from :func:`load`; batches are ``(images [B, C, H, W], labels [B])``.
        batch_size: images per batch.
        shuffle: draw a new random order every epoch (from a generator seeded with ``seed``).
        drop_last: drop the last, smaller batch; defaults to ``shuffle`` (training
            wants equal batches, evaluation wants every image).
        seed: seed of the shuffling generator; the same seed gives the same order.
            ``None`` draws from torch's global generator.
        num_workers: worker processes (0: load in the main process, right for in-memory data).

    Raises:
        ValueError: ``batch_size`` not positive, or ``drop_last`` with fewer images than one batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    drop_last = shuffle if drop_last is None else drop_last
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the dataset has {len(dataset)} images, fewer than batch_size={batch_size}, so drop_last=True "
            f"leaves no batch; use a smaller batch_size or drop_last=False"
        )
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=generator, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


# ---------------------------------------------------------------- offline datasets

@functools.lru_cache(maxsize=None)
def _digits_all() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)   # [1797, 1, 8, 8], 0..16 -> [0, 1]
    labels = torch.from_numpy(bunch.target).long()
    # stratified 80/20; the split's order is the shuffled one, so any prefix mixes digits and writers
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=bunch.target,
                                   random_state=0)
    return {s: (images[idx], labels[idx]) for s, idx in (("train", train), ("test", test))}


def _digits(split: str):
    """8x8 digits of ``split`` (``load`` upsamples them to 32x32 bilinearly)."""
    images, labels = _digits_all()[split]
    return images, labels, [str(d) for d in range(10)]


def _photo(name: str) -> torch.Tensor:
    """Photograph ``name`` as ``[3, H, W]`` float in [0, 1], short side at most ``PHOTO_MAX_SIDE``."""
    import skimage.data

    image = np.ascontiguousarray(_PHOTO_LOADERS[name](skimage.data))
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)[None]
    short = min(x.shape[-2:])
    if short > PHOTO_MAX_SIDE:
        h, w = (round(s * PHOTO_MAX_SIDE / short) for s in x.shape[-2:])
        x = F.interpolate(x, size=(h, w), mode="area")
    return x[0]


def _crops(photo: torch.Tensor) -> torch.Tensor:
    """Non-overlapping ``PHOTO_CROP`` crops of ``photo`` at every scale of ``PHOTO_SCALES``: ``[M, 3, 32, 32]``."""
    out = []
    for factor in PHOTO_SCALES:
        h, w = (int(s / factor) for s in photo.shape[-2:])
        x = photo if factor == 1 else F.interpolate(photo[None], size=(h, w), mode="area")[0]
        rows, cols = h // PHOTO_CROP, w // PHOTO_CROP
        top, left = (h - rows * PHOTO_CROP) // 2, (w - cols * PHOTO_CROP) // 2   # centre the grid
        x = x[:, top:top + rows * PHOTO_CROP, left:left + cols * PHOTO_CROP]
        tiles = x.unfold(1, PHOTO_CROP, PHOTO_CROP).unfold(2, PHOTO_CROP, PHOTO_CROP)   # [3, rows, cols, 32, 32]
        out.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, PHOTO_CROP, PHOTO_CROP))
    crops = torch.cat(out)
    return crops[crops.flatten(1).std(dim=1) >= PHOTO_MIN_STD].contiguous()


@functools.lru_cache(maxsize=None)
def _photos_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    sources = PHOTOS_TRAIN if split == "train" else PHOTOS_TEST
    images, labels = [], []
    for name in sources:
        crops = _crops(_photo(name))
        images.append(crops)
        labels.append(torch.full((len(crops),), PHOTOS.index(name), dtype=torch.long))
    images, labels = torch.cat(images), torch.cat(labels)
    # a fixed shuffle, so that the first max_images crops come from every photograph
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images[order], labels[order]


def _photos(split: str):
    images, labels = _photos_split(split)
    return images, labels, list(PHOTOS)


# ---------------------------------------------------------------- online datasets

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _unavailable(name: str, root: Path, explicit_root: bool, err: Exception | None) -> DatasetUnavailableError:
    env = os.environ.get("DVL_DATA_DIR")
    if explicit_root:
        where = f"here root={str(root)!r} replaced it; DVL_DATA_DIR is {repr(env) if env else 'not set'}"
    elif env:
        where = f"the folder comes from DVL_DATA_DIR={env!r}"
    else:
        where = f"DVL_DATA_DIR is not set, so the default {DEFAULT_DATA_DIR} is used"
    if err is None:
        problem, fix = "download=False", "pass download=True"
    else:
        reason = " ".join(str(err).split())   # torchvision's messages span lines
        problem, fix = f"the download failed ({type(err).__name__}: {reason})", "connect to the internet"
    return DatasetUnavailableError(
        f"dataset {name!r} is not in {root} and {problem}. Online datasets live in DVL_DATA_DIR ({where}). "
        f"Point DVL_DATA_DIR at a folder that holds {name!r}, {fix}, or use a dataset that needs no "
        f"download: 'digits' (gray) or 'photos' (RGB); DVL_PRESET=cpu or DVL_PRESET=smoke select them."
    )


def _torchvision(name: str, split: str, root: Path, explicit_root: bool, download: bool):
    from torchvision import datasets

    if name == "cifar10":
        folder = root / _CIFAR_FOLDER
        needed = [folder / f for f in _CIFAR_FILES[split] + ["batches.meta"]]
        if not all(p.is_file() for p in needed):
            if not download:
                raise _unavailable(name, root, explicit_root, None)
            try:
                cls = datasets.CIFAR10
                datasets.utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename,
                                                            md5=cls.tgz_md5)
            except Exception as err:   # no network, proxy, full disk, truncated archive, ...
                raise _unavailable(name, root, explicit_root, err) from err
        return _read_cifar10(folder, split)

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"
    present = all((raw / Path(f).stem).is_file() for f, _ in cls.resources)
    if not present:
        if not download:
            raise _unavailable(name, root, explicit_root, None)
        try:
            cls(str(root), train=split == "train", download=True)
        except Exception as err:
            raise _unavailable(name, root, explicit_root, err) from err
    ds = cls(str(root), train=split == "train", download=False)
    images = ds.data.unsqueeze(1).float().div_(255.0)   # [N, 1, 28, 28]
    return images, ds.targets.long(), list(ds.classes)


def _read_cifar10(folder: Path, split: str):
    """Read CIFAR-10's python batches (the format torchvision's ``CIFAR10`` reads), without its md5 check."""
    data, labels = [], []
    for file in _CIFAR_FILES[split]:
        with open(folder / file, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    with open(folder / "batches.meta", "rb") as f:
        classes = pickle.load(f, encoding="latin1")["label_names"]
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32)).float().div_(255.0)
    return images, torch.tensor(labels, dtype=torch.long), list(classes)
