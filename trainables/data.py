"""Datasets by name, held as tensors on the training device (no loader workers inside trials).

A dataset is split three ways: `train` (fitting), `val` (carved from the training set, used only
to pick the best epoch) and `test` (the accuracy every result reports). Under the papers'
protocol (`protocol = "paper"`) the whole training set trains and `val` is the test set, as the
reference code picks its best epoch: optimistic, but comparable with the papers' tables.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from undistill.errors import ConfigError

# name -> fn(spec, cache_dir, data_root) -> arrays {x, y, x_test, y_test}
_DATASETS: dict[str, Callable[[DatasetSpec, Path | None, Path | None], dict[str, np.ndarray]]] = {}
_SHAPES: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (classes, input shape)
_FROM_ROOT: set[str] = set()  # datasets read from a local folder (--data-root) rather than generated
# name -> the most memory a process takes per generated sample while it makes and holds the
# dataset (`check_fits_memory`)
_PEAK_BYTES: dict[str, int] = {}


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "mnist1d"
    num_samples: int = 10_000  # generated samples before the train/test split (MNIST-1D)
    val_fraction: float = 0.1  # share of the training split held out for model selection
    seed: int = 42  # the generator's seed: the same seed gives the same samples everywhere
    protocol: str = "validation"  # or "paper": train on every training sample, select on test

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.protocol == "validation":  # the default is left out: keys made before it existed hold
            del out["protocol"]
        return out


@dataclass
class DeviceData:
    """Train/val/test tensors already on `device`. x is (N, *input_shape): float32 signals
    (MNIST-1D) or uint8 images (CIFAR, turned into model inputs by `augment`/`prepare`); y is
    (N,) int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    # Batched, on-device augmentation (x, generator) -> model input, or None when the data has
    # none; a dataset without augmentation lets distillation precompute teacher logits once.
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    # Stored x -> model input (CIFAR keeps uint8 on the device and normalises per batch).
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    # Of epochs equally good on `val`, keep the latest (the reference code's `>=`, under the
    # papers' protocol) rather than the first.
    latest_best: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def register_dataset(name: str, num_classes: int, input_shape: tuple[int, ...], from_root: bool = False,
                     peak_bytes_per_sample: int | None = None):
    def wrap(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = fn
        _SHAPES[name] = (num_classes, input_shape)
        if from_root:
            _FROM_ROOT.add(name)
        if peak_bytes_per_sample is not None:
            _PEAK_BYTES[name] = peak_bytes_per_sample
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def check_data_root(name: str, root: str | Path | None) -> None:
    """A ConfigError, before any compute, when a dataset read from a folder is not there."""
    if name in _FROM_ROOT:
        from . import cifar_data

        cifar_data.check_root(name, root)


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system, or no such names
        return None


def show_bytes(n: float) -> str:
    """Bytes as people read them: 4.0 TB, 125 GB (decimal units, as memory is sold)."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.{1 if n < 10 * size else 0}f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_fits_memory(name: str, num_samples: int, where: str = "dataset.num_samples") -> None:
    """A ConfigError, before anything is generated, when making `num_samples` samples of a
    generated dataset takes more memory than this machine has (each process of a trial makes,
    or reads from the cache, and holds its own copy: one at least must fit)."""
    need, have = _PEAK_BYTES.get(name, 0) * num_samples, machine_memory()
    if have is not None and need > have:
        raise ConfigError(f"{where} {num_samples}: its arrays need {show_bytes(need)} while they are made, "
                          f"this machine has {show_bytes(have)} of memory; give fewer samples")


def training_split_size(spec: DatasetSpec) -> int:
    """How many samples `load_dataset` puts in the training split of `spec`, without making them."""
    if spec.name in _FROM_ROOT:
        total = 50_000  # CIFAR-10's and CIFAR-100's training sets
    else:  # MNIST-1D: as many per class as fit, then the generator's own train/test split
        from mnist1d.data import get_dataset_args

        total = int((spec.num_samples // 10) * 10 * get_dataset_args().train_split)
    return total - (0 if spec.protocol == "paper" else int(round(total * spec.val_fraction)))


def dataset_shape(name: str) -> tuple[int, tuple[int, ...]]:
    """(number of classes, input shape of one sample) of a registered dataset."""
    if name not in _SHAPES:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _SHAPES[name]


# 1.6 kB a sample at most: the generator's float64 arrays and their intermediates (1.2-1.3 kB a
# sample, measured with tracemalloc at 2,000 and 8,000 samples), then the float32 arrays and the
# tensors made of them (168 bytes a sample each)
@register_dataset("mnist1d", num_classes=10, input_shape=(1, 40), peak_bytes_per_sample=1_600)
def _make_mnist1d(spec: DatasetSpec, cache_dir: Path | None, data_root: Path | None) -> dict[str, np.ndarray]:
    """MNIST-1D, generated offline by the `mnist1d` package (about 4 s for 10,000 samples).

    The generated arrays are cached as .npz under `cache_dir` so that every trial on a node does
    not pay the generation again.
    """
    generated = {k: v for k, v in spec.to_dict().items() if k != "protocol"}  # the same samples either way
    key = hashlib.sha256(json.dumps(generated, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = cache_dir / f"mnist1d-{key}.npz" if cache_dir else None
    if cache_file and cache_file.exists():
        try:
            with np.load(cache_file) as z:
                return {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: regenerate and overwrite it below
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = spec.num_samples
    args.seed = spec.seed
    raw = make_dataset(args)  # already centred and scaled to unit std by the generator
    arrays = {
        "x": raw["x"].astype(np.float32).reshape(len(raw["x"]), 1, -1),  # (N, channels=1, 40)
        "y": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32).reshape(len(raw["x_test"]), 1, -1),
        "y_test": raw["y_test"].astype(np.int64),
    }
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache_file)  # atomic: concurrent trials never read half a file
    return arrays


@register_dataset("cifar10", num_classes=10, input_shape=(3, 32, 32), from_root=True)
def _read_cifar10(spec: DatasetSpec, cache_dir: Path | None, data_root: Path | None) -> dict[str, np.ndarray]:
    from . import cifar_data

    return cifar_data.load_arrays("cifar10", data_root)


@register_dataset("cifar100", num_classes=100, input_shape=(3, 32, 32), from_root=True)
def _read_cifar100(spec: DatasetSpec, cache_dir: Path | None, data_root: Path | None) -> dict[str, np.ndarray]:
    from . import cifar_data

    return cifar_data.load_arrays("cifar100", data_root)


_MEMO: dict[tuple, dict[str, np.ndarray]] = {}


def load_dataset(spec: DatasetSpec, device: torch.device, cache_dir: Path | None = None,
                 data_root: Path | None = None) -> DeviceData:
    """The dataset named by `spec`, split into train/val/test and moved to `device` once."""
    if spec.name not in _DATASETS:
        raise ConfigError(f"unknown dataset {spec.name!r}; known: {', '.join(list_datasets())}")
    memo_key = (spec, str(cache_dir), str(data_root))
    if memo_key not in _MEMO:  # Ray reuses worker processes: generate once per process
        _MEMO[memo_key] = _DATASETS[spec.name](spec, Path(cache_dir) if cache_dir else None,
                                               Path(data_root) if data_root else None)
    arrays = _MEMO[memo_key]

    x, y = arrays["x"], arrays["y"]
    # The validation split is a fixed function of the dataset seed, so every phase and every
    # trial selects its best epoch on the same held-out samples.
    order = np.random.default_rng(spec.seed).permutation(len(y))
    n_val = 0 if spec.protocol == "paper" else int(round(len(y) * spec.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]

    def on_device(a: np.ndarray) -> torch.Tensor:
        # Copy into canonical strides. A view such as x[:, None, :] has stride 0 on its size-1
        # axis, and CPU convolutions pick another kernel for it: same values, other rounding, so
        # a run would depend on whether its data came from the cache or not.
        return torch.from_numpy(a).to(device).clone(memory_format=torch.contiguous_format)

    extra = {}
    if spec.name in _FROM_ROOT:  # CIFAR: uint8 on the device, crop/flip/normalise per batch
        from .cifar_data import REFERENCE_STATS, CropFlip, Normalise

        normalise = Normalise(spec.name, device, REFERENCE_STATS if spec.protocol == "paper" else None)
        extra = {"augment": CropFlip(normalise), "prepare": normalise}
    test_x, test_y = on_device(arrays["x_test"]), on_device(arrays["y_test"])
    paper = spec.protocol == "paper"  # the test split picks the best epoch: the same tensors, not a copy
    return DeviceData(
        train_x=on_device(x[train_idx]),
        train_y=on_device(y[train_idx]),
        val_x=test_x if paper else on_device(x[val_idx]),
        val_y=test_y if paper else on_device(y[val_idx]),
        test_x=test_x,
        test_y=test_y,
        num_classes=dataset_shape(spec.name)[0],
        latest_best=paper,
        **extra,
    )
