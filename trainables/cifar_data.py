"""CIFAR-10 and CIFAR-100 from a local root, through torchvision's own dataset classes, kept on
the training device as uint8 and augmented there (random crop with 4-pixel padding and a
horizontal flip, then normalisation), batch by batch: no loader processes, so small models that
share a GPU are never waiting on CPU workers.

Nothing is downloaded at sweep time: `python cli.py data download cifar10 --root DIR` fetches
the official archives once (torchvision checks their MD5 there). Loading then checks that the
files are present, not their checksums, so that data written in CIFAR's format by tests (or a
subset a user prepares) loads through the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.datasets import CIFAR10, CIFAR100

from undistill.errors import ConfigError

# Per-channel mean and std of each training set (RGB, on [0, 1]).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# What the reference code normalises CIFAR-10 and CIFAR-100 alike with (VITA-Group/Nasty-Teacher
# data_loader.py): the papers' protocol uses it (`protocol = "paper"`)
REFERENCE_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
PAD = 4  # random crop: pad every side by 4, cut a 32×32 window back out


def _present_only(cls):
    """`cls` with every file's MD5 set to None: torchvision then checks presence only."""
    return type(f"Local{cls.__name__}", (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


_CLASSES = {"cifar10": _present_only(CIFAR10), "cifar100": _present_only(CIFAR100)}
_OFFICIAL = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def folder(name: str, root: str | Path) -> Path:
    return Path(root) / _OFFICIAL[name].base_folder


def check_root(name: str, root: str | Path | None) -> None:
    """A ConfigError, before any compute, when `root` does not hold the dataset's files."""
    hint = f"fetch it once with `python cli.py data download {name} --root DIR`, then pass --data-root DIR"
    if root is None:
        raise ConfigError(f"dataset {name} is read from a local folder: {hint}")
    cls = _OFFICIAL[name]
    missing = [f for f, _ in cls.train_list + cls.test_list + [[cls.meta["filename"], None]]
               if not (folder(name, root) / f).is_file()]
    if missing:
        raise ConfigError(f"--data-root {root}: {folder(name, root)} lacks {', '.join(missing)}; {hint}")


def download(name: str, root: str | Path) -> Path:
    """Fetch and verify the official archive into `root` (needs internet)."""
    _OFFICIAL[name](root, train=True, download=True)
    _OFFICIAL[name](root, train=False, download=True)
    return folder(name, root)


def load_arrays(name: str, root: str | Path) -> dict[str, np.ndarray]:
    """Train and test images as uint8 (N, 3, 32, 32) and labels as int64."""
    check_root(name, root)
    out = {}
    for split, train in (("", True), ("_test", False)):
        ds = _CLASSES[name](str(root), train=train, download=False)
        out[f"x{split}"] = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # HWC -> CHW
        out[f"y{split}"] = np.asarray(ds.targets, dtype=np.int64)
    return out


class Normalise:
    """uint8 images on the device -> normalised float32."""

    def __init__(self, name: str, device: torch.device, stats: tuple | None = None):
        """`stats`: (mean, std) to use instead of the dataset's own."""
        mean, std = stats or _STATS[name]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class CropFlip:
    """Random crop (pad 4) and horizontal flip of a uint8 batch on its device, then normalise.
    The random draws come from the loop's CPU generator, so a seed fixes the augmentation."""

    def __init__(self, normalise: Normalise):
        self.normalise = normalise

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        draws = torch.stack([torch.randint(0, 2 * PAD + 1, (n,), generator=gen),
                             torch.randint(0, 2 * PAD + 1, (n,), generator=gen),
                             (torch.rand(n, generator=gen) < 0.5).long()])
        # one asynchronous copy: a blocking one would make the CPU wait for the GPU every batch
        dy, dx, flip = draws.to(x.device, non_blocking=True).unbind(0)
        flip = flip.bool()
        padded = F.pad(x, (PAD, PAD, PAD, PAD))  # zeros, as torchvision's RandomCrop(padding=4)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped window reads right to left
        batch = torch.arange(n, device=x.device)[:, None, None]
        # (n, h, w, c) by advanced indexing, back to (n, c, h, w): already channels-last, which
        # CUDA wants; on the CPU, the contiguous layout evaluation batches have (kernels differ)
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return self.normalise(out if out.device.type == "cuda" else out.contiguous())
