"""dvl_helpers.data: offline datasets, the torchvision path on tiny files in the
datasets' own formats, clear errors, and reproducible loaders. Nothing downloads."""
from __future__ import annotations

import pickle
import socket
import struct

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets
from torchvision.datasets import utils as tv_utils

from dvl_helpers import data


def _closed_port() -> int:
    """A localhost port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def data_no_network(monkeypatch):
    """Every download URL points at a closed local port, so a download attempt fails fast."""
    url = f"http://127.0.0.1:{_closed_port()}/"
    monkeypatch.setattr(tv_datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(tv_datasets.FashionMNIST, "mirrors", [url])
    monkeypatch.setattr(tv_datasets.CIFAR10, "url", url + "cifar-10-python.tar.gz")
    monkeypatch.delenv("DVL_DATA_DIR", raising=False)


def _write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of MNIST (big-endian header, then the bytes)."""
    magic = 0x0800 | array.ndim          # 0x08: unsigned byte, last byte: number of dims
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, folder: str, n_train: int = 10, n_test: int = 6, seed: int = 0):
    """Tiny MNIST-format files in ``root/folder/raw``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def _write_cifar10(root, per_batch: int = 2, n_test: int = 3, seed: int = 0):
    """Tiny CIFAR-10 python batches in ``root/cifar-10-batches-py``; returns what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    files = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for file, split, n in files:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)   # R plane, G plane, B plane
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / file, "wb") as f:
            pickle.dump({"batch_label": file, "data": rows, "labels": labels, "filenames": []}, f)
        written[split][0].append(rows)
        written[split][1].extend(labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return {s: (np.concatenate(rows), labels) for s, (rows, labels) in written.items()}, names


# ---------------------------------------------------------------- names and arguments

def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        data.load("imagenet")
    for name in ("mnist", "fashion_mnist", "cifar10", "digits", "photos"):
        assert name in str(err.value)
    assert set(data.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "digits", "photos"}


def test_bad_split_names_both():
    with pytest.raises(ValueError, match="'train' or 'test'.*'val'"):
        data.load("digits", "val")


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"image_size": 32.0}, {"max_images": 0},
                                    {"max_images": -3}])
def test_bad_sizes_are_errors(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        data.load("digits", **kwargs)


def test_tensor_dataset_checks_shapes():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        data.TensorImageDataset(torch.rand(4, 8, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        data.TensorImageDataset(torch.rand(4, 1, 8, 8), torch.zeros(5))


# ---------------------------------------------------------------- digits

def test_digits_shapes_range_labels():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    for ds in (train, test):
        assert ds.images.shape[1:] == (1, 32, 32) and ds.images.dtype == torch.float32
        assert ds.images.min() == 0 and ds.images.max() == 1
        assert ds.labels.dtype == torch.long and set(ds.labels.tolist()) == set(range(10))
        assert ds.classes == [str(d) for d in range(10)] and ds.name == "digits"
    image, label = train[0]
    assert image.shape == (1, 32, 32) and isinstance(label, int)


def test_digits_split_is_stratified_and_a_partition():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = data.load("digits", "train", image_size=8), data.load("digits", "test", image_size=8)
    totals = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(test.labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1), test_counts
    # at native size the two splits are exactly the 1797 originals, each once, scaled 0..16 -> 0..1
    both = torch.cat([train.images, test.images]).flatten(1).numpy() * 16
    assert np.allclose(both, np.round(both))
    key = lambda rows: sorted(map(bytes, np.round(rows).astype(np.uint8)))
    assert key(both) == key(bunch.images.reshape(len(bunch.images), -1))


def test_digits_deterministic_and_cache_safe():
    a = data.load("digits", "test")
    a.images.zero_()                       # editing a loaded copy must not reach the cache
    b, c = data.load("digits", "test"), data.load("digits", "test")
    assert b.images.max() == 1
    assert torch.equal(b.images, c.images) and torch.equal(b.labels, c.labels)


# ---------------------------------------------------------------- photos

def test_photos_shapes_range_labels():
    train, test = data.load("photos", "train"), data.load("photos", "test")
    assert len(train) > 2000 and len(test) > 300
    for ds in (train, test):
        assert ds.images.shape[1:] == (3, 32, 32) and ds.images.dtype == torch.float32
        assert 0 <= ds.images.min() and ds.images.max() <= 1
        assert ds.labels.dtype == torch.long
        assert ds.classes == list(data.PHOTOS)
        # flat crops (black borders, empty sky) are left out
        assert ds.images.flatten(1).std(dim=1).min() >= data.PHOTO_MIN_STD


def test_photos_split_by_source_photograph():
    train, test = data.load("photos", "train"), data.load("photos", "test")
    sources = lambda ds: {data.PHOTOS[i] for i in ds.labels.unique().tolist()}
    assert sources(train) == set(data.PHOTOS_TRAIN)
    assert sources(test) == set(data.PHOTOS_TEST)
    assert not set(data.PHOTOS_TRAIN) & set(data.PHOTOS_TEST)
    assert set(data.PHOTOS_TRAIN) | set(data.PHOTOS_TEST) == set(data.PHOTOS)
    as_bytes = lambda ds: {bytes(row) for row in (ds.images * 255).round().to(torch.uint8).flatten(1).numpy()}
    assert not as_bytes(train) & as_bytes(test)


def test_photos_prefix_mixes_photographs_and_is_deterministic():
    few = data.load("photos", "train", max_images=100)
    assert len(few) == 100 and len(few.labels.unique()) == len(data.PHOTOS_TRAIN)
    full = data.load("photos", "train")
    assert torch.equal(few.images, full.images[:100]) and torch.equal(few.labels, full.labels[:100])


# ---------------------------------------------------------------- image_size and max_images

def test_image_size_resizes():
    small = data.load("photos", "test", image_size=16, max_images=50)
    native = data.load("photos", "test", max_images=50)
    assert small.images.shape == (50, 3, 16, 16)
    assert 0 <= small.images.min() and small.images.max() <= 1
    # shrinking keeps each crop's mean colour
    assert torch.allclose(small.images.mean(dim=(2, 3)), native.images.mean(dim=(2, 3)), atol=0.02)
    assert data.load("digits", "train", image_size=28, max_images=5).images.shape == (5, 1, 28, 28)


def test_max_images_takes_a_prefix():
    full = data.load("digits", "train")
    few = data.load("digits", "train", max_images=7)
    assert len(few) == 7 and torch.equal(few.images, full.images[:7])
    assert len(data.load("digits", "test", max_images=10_000)) == 360


# ---------------------------------------------------------------- the torchvision path, offline

@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_format_files_are_read(tmp_path, name, folder):
    written = _write_mnist(tmp_path, folder)
    train = data.load(name, "train", root=tmp_path)
    test = data.load(name, "test", root=tmp_path)
    images, labels = written["train"]
    assert train.images.shape == (10, 1, 28, 28) and train.images.dtype == torch.float32
    assert torch.equal(train.images[:, 0], torch.from_numpy(images).float() / 255)
    assert train.labels.tolist() == labels.tolist() and train.labels.dtype == torch.long
    assert len(test) == 6 and test.labels.tolist() == written["t10k"][1].tolist()
    assert len(train.classes) == 10 and train.name == name
    resized = data.load(name, "train", root=tmp_path, image_size=32, max_images=4)
    assert resized.images.shape == (4, 1, 32, 32)
    assert 0 <= resized.images.min() and resized.images.max() <= 1


def test_cifar10_batches_are_read(tmp_path):
    written, names = _write_cifar10(tmp_path)
    train = data.load("cifar10", "train", root=tmp_path)
    test = data.load("cifar10", "test", root=tmp_path)
    rows, labels = written["train"]
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.float32
    assert train.labels.tolist() == labels and len(test) == 3 and test.labels.tolist() == written["test"][1]
    # a row holds the red plane, then green, then blue, each row-major
    r, g, b = (torch.from_numpy(rows[3, k * 1024:(k + 1) * 1024]).float().view(32, 32) / 255 for k in range(3))
    assert torch.equal(train.images[3], torch.stack([r, g, b]))
    assert train.classes == names


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    _write_mnist(tmp_path, "MNIST")
    monkeypatch.setenv("DVL_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    assert data.data_dir(tmp_path / "other") == tmp_path / "other"
    assert len(data.load("mnist", "train")) == 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_failed_download_says_what_to_do(tmp_path, monkeypatch, name):
    monkeypatch.setenv("DVL_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load(name, "train")
    message = str(err.value)
    assert isinstance(err.value, RuntimeError)
    for needed in (repr(name), "DVL_DATA_DIR", str(tmp_path), "'digits'", "'photos'", "download failed"):
        assert needed in message, f"{needed!r} missing from: {message}"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_false_never_downloads(tmp_path, monkeypatch, name):
    calls = []
    monkeypatch.setattr(tv_utils, "download_url", lambda *a, **k: calls.append(a))
    with pytest.raises(data.DatasetUnavailableError, match="download=False.*DVL_DATA_DIR.*not set"):
        data.load(name, "test", root=tmp_path, download=False)
    assert calls == []


# ---------------------------------------------------------------- loader

def _toy(n=10):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4) / n
    return data.TensorImageDataset(images.contiguous(), torch.arange(n), name="toy")


def test_loader_batches_and_drop_last_default():
    ds = _toy(10)
    batches = list(data.loader(ds, batch_size=4))                    # shuffle=True -> drop_last
    assert [len(b[1]) for b in batches] == [4, 4]
    images, labels = batches[0]
    assert images.shape == (4, 1, 4, 4) and images.dtype == torch.float32 and labels.dtype == torch.long
    ordered = list(data.loader(ds, batch_size=4, shuffle=False))      # evaluation keeps every image
    assert torch.cat([b[1] for b in ordered]).tolist() == list(range(10))


def test_loader_shuffle_is_reproducible():
    ds = _toy(50)
    order = lambda seed: torch.cat([b[1] for b in data.loader(ds, batch_size=5, seed=seed)]).tolist()
    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(3)) == list(range(50)) and order(3) != list(range(50))
    # a second epoch is a new order, the same one on every run
    one, two = data.loader(ds, batch_size=5, seed=0), data.loader(ds, batch_size=5, seed=0)
    first = [[b[1].tolist() for b in dl] for dl in (one, one)]
    second = [[b[1].tolist() for b in dl] for dl in (two, two)]
    assert first == second and first[0] != first[1]


def test_loader_rejects_a_batch_that_cannot_fill():
    with pytest.raises(ValueError, match="batch_size=16"):
        data.loader(_toy(10), batch_size=16)
    assert len(list(data.loader(_toy(10), batch_size=16, drop_last=False))) == 1
    with pytest.raises(ValueError, match="batch_size"):
        data.loader(_toy(10), batch_size=0)
