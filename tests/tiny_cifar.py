"""Tiny CIFAR-10/100 folders in the official on-disk format (pickled batches), written by tests so
that data loads through torchvision's own classes, as users' data does. Each class gets its own
mean colour plus noise, so that a model can learn something in an epoch."""

import pickle
from pathlib import Path

import numpy as np


def _images(rng, labels, classes):
    colours = np.random.default_rng(1234).integers(30, 225, size=(classes, 3))
    base = colours[labels][:, :, None, None]  # (n, 3, 1, 1)
    noise = rng.normal(0, 25, size=(len(labels), 3, 32, 32))
    return np.clip(base + noise, 0, 255).astype(np.uint8).reshape(len(labels), -1)  # CHW rows


def write_cifar10(root: Path, train: int = 250, test: int = 100, seed: int = 0) -> Path:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=train)
    data = _images(rng, labels, 10)
    for i, chunk in enumerate(np.array_split(np.arange(train), 5), start=1):
        _dump(folder / f"data_batch_{i}", {"data": data[chunk], "labels": labels[chunk].tolist()})
    test_labels = rng.integers(0, 10, size=test)
    _dump(folder / "test_batch", {"data": _images(rng, test_labels, 10), "labels": test_labels.tolist()})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return Path(root)


def write_cifar100(root: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", train), ("test", test)):
        labels = rng.integers(0, 100, size=n)
        _dump(folder / name, {"data": _images(rng, labels, 100), "fine_labels": labels.tolist()})
    _dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return Path(root)


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)
