"""Mid-training checkpoints that prove their own integrity.

A checkpoint file is a header line, the SHA-256 of the payload, then the payload (what
`torch.save` writes). A torn or corrupted file fails the check and counts as absent: the phase
starts over rather than training on from damaged state. A payload that passes is read with
`weights_only=True`, so a checkpoint can hold tensors and plain data, never code.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

MAGIC = b"undistill checkpoint v1\n"
_DIGEST = 32  # bytes of SHA-256


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(hashlib.sha256(payload).digest())
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict | None:
    """The checkpoint's state, or None when the file is missing, torn or corrupted."""
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
        return torch.load(io.BytesIO(data[start:]), map_location=map_location, weights_only=True)
    except Exception:  # a payload that hashes right but was never a checkpoint of ours
        return None
