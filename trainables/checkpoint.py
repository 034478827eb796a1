"""Mid-training checkpoints that prove their own integrity.

A checkpoint file is a header line, the SHA-256 of the payload, then the payload (what
`torch.save` writes). A torn or corrupted file fails the check and counts as absent: the phase
starts over rather than training on from damaged state. A payload that passes is read with
`weights_only=True`, so a checkpoint can hold tensors and plain data, never code. It is read
onto the CPU: `load_state_dict` moves what it needs to the device, and a CPU RNG state must stay
a CPU tensor.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from undistill.files import atomic_write

MAGIC = b"undistill checkpoint v1\n"
_DIGEST = 32  # bytes of SHA-256


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` atomically (see `undistill.files.atomic_write`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()

    def write(f):
        f.write(MAGIC)
        f.write(hashlib.sha256(payload).digest())
        f.write(payload)

    atomic_write(path, write)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint's state on the CPU, or None when the file is missing, torn, corrupted or
    not a checkpoint of this format."""
    try:
        data = memoryview(Path(path).read_bytes())
    except OSError:
        return None
    start = len(MAGIC) + _DIGEST
    if len(data) <= start or data[: len(MAGIC)] != MAGIC:
        return None
    if hashlib.sha256(data[start:]).digest() != data[len(MAGIC):start]:
        return None
    try:
        return torch.load(io.BytesIO(data[start:]), map_location="cpu", weights_only=True)
    except Exception:  # a payload that hashes right but was never a checkpoint of ours
        return None
