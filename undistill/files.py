"""Atomic local writes: no pyarrow, so a worker that only checkpoints does not load it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write local `path` so that readers see the old file or the whole new one, even after a
    crash or a power loss: into a dot-named temporary beside it (hidden from readers and from
    pyarrow.dataset), synced to disk, renamed into place, and the rename synced too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[TextIO]:
    """An exclusive `flock` of `path` (made with its folder if need be) for the span of the block;
    yields the file, open for appending. The kernel releases it when its holder dies, however (on
    NFS, which maps it to a POSIX lock, once the dead client's lease expires)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process holds it
        try:
            yield f
        finally:
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
