"""What a sweep is running now: each training phase keeps `<sweep>/live/<key>.json` (its name,
the trial's candidate, its epoch, its host) up to date while it trains, and removes it when it
ends. The driver's progress display and `status --watch` read them. Light on purpose (no torch,
no Ray): `status` imports it.

A worker killed mid-phase leaves its file behind: the entry is shown until it is older than
`STALE_S`, and a new run of the sweep clears the folder before it starts anything.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass, field

from undistill.storage import Storage

from .layout import NUMBER, Maybe, wrong_shape

LIVE_DIR = "live"
STALE_S = 900.0  # an entry not updated for this long belongs to a phase that is gone
# an entry as `EpochTicker` writes it: one of another shape is not shown (see `running`)
ENTRY = {"phase": str, "key": str, "epoch": int, "epochs": int, "hostname": str, "started_at": NUMBER,
         "updated_at": NUMBER, "defense": Maybe((str, None)), "knobs": Maybe(dict)}
WRITE_EVERY_S = 2.0  # a phase rewrites its entry at most this often (and at its last epoch)


@dataclass(frozen=True)
class Running:
    """A phase training now."""

    phase: str  # its name: "teacher", "nasty", "kd-T4 mlp", "5 attacks on mlp"
    key: str
    epoch: int  # epochs done
    epochs: int  # in all
    hostname: str
    started_at: float
    updated_at: float
    defense: str | None = None  # the candidate it serves (None: an upstream phase)
    knobs: dict = field(default_factory=dict)

    def progress(self, space=None) -> str:
        """`kd-T4 mlp  [nasty ω 0.01 τ 20]  epoch 12/40  on host`: the candidate described by
        the sweep's `space` (a `undistill.space.SearchSpace`) when given."""
        who = ""
        if self.defense is not None:
            knobs = space.describe(self.defense, self.knobs) if space is not None else ""
            who = f"  [{self.defense}{' ' + knobs if knobs else ''}]"
        return f"{self.phase}{who}  epoch {self.epoch}/{self.epochs}  on {self.hostname}"


class EpochTicker:
    """Worker side: `on_epoch` for a phase's loop (see `trainables.loop.train`), writing the
    phase's entry; `close()` removes it. Failures to write are ignored: progress must never
    fail a phase."""

    def __init__(self, storage: Storage, sweep: str, phase: str, key: str, defense: str | None = None,
                 knobs: dict | None = None):
        self.storage, self.sweep = storage, sweep
        now = time.time()
        self.entry = {"phase": phase, "key": key, "epoch": 0, "epochs": 0, "hostname": socket.gethostname(),
                      "started_at": now, "updated_at": now, "defense": defense, "knobs": knobs or {}}
        self._written = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.time()
        self.entry.update(epoch=done, epochs=total, updated_at=now)
        if now - self._written >= WRITE_EVERY_S or done in (1, total):
            self._write()
            self._written = now

    def _write(self) -> None:
        with contextlib.suppress(OSError):
            self.storage.write_bytes((self.sweep, LIVE_DIR, f"{self.entry['key']}.json"),
                                     json.dumps(self.entry).encode())

    def close(self) -> None:
        self.storage.delete(self.sweep, LIVE_DIR, f"{self.entry['key']}.json")


def running(storage: Storage, sweep: str, now: float | None = None) -> list[Running]:
    """The phases of `sweep` training now, longest-running first (unreadable, damaged or stale
    entries are left out: they are only a display, and the sweep's next run clears them)."""
    now = time.time() if now is None else now
    out = []
    for name in storage.list(sweep, LIVE_DIR, suffix=".json"):
        try:
            entry = json.loads(storage.read_bytes(sweep, LIVE_DIR, name))
            if wrong_shape(entry, ENTRY) is not None:
                continue  # not an entry: junk, or a file of another kind
            one = Running(**entry)
        except (OSError, ValueError, TypeError):
            continue  # written as we read it, or removed: the next look sees it
        if now - one.updated_at < STALE_S:
            out.append(one)
    return sorted(out, key=lambda r: (r.started_at, r.phase))


def clear(storage: Storage, sweep: str) -> None:
    """Remove every entry: a new run of the sweep starts with nothing running."""
    for name in storage.list(sweep, LIVE_DIR, suffix=".json"):
        storage.delete(sweep, LIVE_DIR, name)
