"""The one place that decides where tensors live and how many threads torch uses."""

from __future__ import annotations

import os

import torch


def pick_device(gpu_fraction: float | None = None) -> torch.device:
    """`cuda:0` when a GPU is visible and this process may use it, else the CPU.

    `gpu_fraction` is the GPU share Ray gave this process: 0 means none (Ray ≥ 2.60 leaves
    CUDA_VISIBLE_DEVICES alone for such a process, so a visible GPU is not ours to use); None
    means no scheduler is involved (tests, scripts): use a visible GPU.

    Inside a Ray worker that holds a (fraction of a) GPU, Ray sets CUDA_VISIBLE_DEVICES to that
    GPU alone, so it is always `cuda:0` from the worker's point of view. Ray's fractions are
    bookkeeping only: with `gpu_fraction` below 1 this process's CUDA allocator is capped to that
    share of the GPU's memory, so that processes packed onto one GPU cannot starve each other.
    """
    if gpu_fraction == 0 or not torch.cuda.is_available():
        return torch.device("cpu")
    # Same seed, same result: cuDNN's autotuner and non-deterministic kernels would break that.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if gpu_fraction is not None and 0 < gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction, 0)
    return torch.device("cuda:0")


def configure_threads() -> int:
    """Match torch's intra-op threads to the CPUs this process was given.

    Ray exports OMP_NUM_THREADS equal to a task's CPU count; without this, every concurrent
    trial would spawn one thread per core and they would fight over the same cores.
    """
    wanted = os.environ.get("OMP_NUM_THREADS")
    threads = max(1, int(wanted)) if wanted and wanted.isdigit() else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads
