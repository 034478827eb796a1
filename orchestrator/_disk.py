"""A full disk stops a sweep cleanly: one line naming the storage and the room a trial needs,
nothing half-written, and `resume` finishes the budget once there is room again.

Every file the driver keeps is written atomically (ours through `undistill.files`, Tune's
through `_tunefs`), so a failed write leaves the old version. What remains is to stop before
Tune records an outcome the storage could not keep: the driver checks the storage's free space
as trials run and before it records a failed trial, and any write that fails for want of space
ends the run by an exception out of Tune's loop, which skips Tune's final save. The restored
Tune then runs again whatever had not been written, from the artifact store.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator

from undistill.errors import UndistillError
from undistill.storage import Storage

from .artifacts import FOLDER

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full")
MARGIN = 1 << 20  # a trial's rows, Tune's state and the study's records, beside its weights


class StorageFullError(UndistillError):
    """The sweep's storage has no room left for what the next trial writes."""


def free_bytes(storage: Storage) -> int | None:
    """Free space where the sweep writes (None: a bucket, which does not fill up)."""
    if not storage.is_local:
        return None
    try:
        return shutil.disk_usage(storage.root).free
    except OSError:
        return None


def trial_bytes(storage: Storage, teacher_key: str, phases: int) -> int:
    """About what one trial writes: `phases` phases' weights, each the size of the normal
    teacher's artifact (students are no larger in the presets), and `MARGIN`."""
    size = sum(storage.size(FOLDER, teacher_key, name) or 0 for name in storage.list(FOLDER, teacher_key))
    return phases * size + MARGIN


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what it wraps: Tune and Ray wrap a trial's or a callback's errors (a Ray task's
    error holds its own as `cause`)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def is_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or anything in its chain, is a write that failed for want of space: an
    OSError, or SQLite's own words for it."""
    return any((isinstance(e, OSError) and e.errno in _FULL) or any(text in str(e) for text in _FULL_TEXT)
               for e in _chain(exc))


def found(exc: BaseException | None) -> StorageFullError | None:
    """The StorageFullError somewhere in `exc`'s chain (Tune wraps what a callback raised)."""
    return next((e for e in _chain(exc) if isinstance(e, StorageFullError)), None)


def full(storage: Storage, sweep: str, needed: int | None) -> StorageFullError:
    free = free_bytes(storage)
    room = f"{_size(free)} free" if free is not None else "a write failed for want of space"
    need = f"; a trial needs about {_size(needed)}" if needed else ""
    return StorageFullError(
        f"storage {storage} is full ({room}{need}): sweep {sweep!r} stopped, keeping every trial "
        f"finished so far; free space there, then `python cli.py resume {sweep}`")


def check_room(storage: Storage, sweep: str, needed: int) -> None:
    """Raise StorageFullError when the storage has less than `needed` bytes free."""
    free = free_bytes(storage)
    if free is not None and free < needed:
        raise full(storage, sweep, needed)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
