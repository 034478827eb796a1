"""One driver per sweep: a lease in the sweep's folder, `<sweep>/lease.json`.

Two drivers of one sweep (`sweep NAME` started twice, `resume NAME` from another terminal or a
scheduler's retry while it runs) would both restore Tune's experiment and both write rows: more
trials than the budget and two different fronts. So a driver takes the sweep's lease before it
writes anything, keeps it fresh with a heartbeat, and gives it back when it stops; a second
driver is refused in one line that names the holder.

A lease whose holder is gone is taken over, and the taker says so: on the same host, when the
holder's process no longer exists (a SIGKILL, a power loss: no heartbeat is needed to tell);
from another host, once its heartbeat is older than `STALE_AFTER_S`.

Taking one is atomic on a local or NFS folder: the check and the write happen under an
exclusive `flock` of `<sweep>/.lease.lock` (NFS maps it to a POSIX lock). An object store has no
conditional write through pyarrow, so on a bucket a driver writes its claim, waits `SETTLE_S`,
and reads it back: two drivers starting within that window of each other could both go on.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from undistill.errors import UndistillError
from undistill.files import locked
from undistill.storage import Storage

LEASE = "lease.json"
HEARTBEAT_S = 10.0  # how often a driver renews its lease
STALE_AFTER_S = 90.0  # a lease not renewed for this long has lost its holder (other hosts)
SETTLE_S = 2.0  # on a bucket: how long a claim must stand before it counts


class SweepBusyError(UndistillError):
    """Another driver holds the sweep's lease: it is running."""


@dataclass(frozen=True)
class Holder:
    """Who drives a sweep: stored in `lease.json`, shown by `status`."""

    token: str  # this lease's own id: a driver that finds another token lost its lease
    user: str
    host: str
    pid: int
    pid_started: str  # the process's start time on its host: a reused pid is another process
    command: str  # sweep, resume or confirm
    since: str  # ISO time, UTC
    heartbeat: float  # time.time() of the last renewal

    def describe(self, now: float | None = None) -> str:
        ago = max(0.0, (now if now is not None else time.time()) - self.heartbeat)
        return (f"`{self.command}` (pid {self.pid} on {self.host}, user {self.user}) since {self.since}, "
                f"last heartbeat {ago:.0f}s ago")

    def gone(self, now: float | None = None) -> str | None:
        """Why the holder is no longer there (None: it may still be running)."""
        now = now if now is not None else time.time()
        if self.host == socket.gethostname() and _process_started(self.pid) != self.pid_started:
            return f"its process (pid {self.pid}) has ended"
        if now - self.heartbeat > STALE_AFTER_S:
            return f"no heartbeat for {now - self.heartbeat:.0f}s"
        return None


def read_holder(storage: Storage, sweep: str) -> Holder | None:
    """The lease's holder as stored; None when nobody holds it, or the file is unreadable (a
    torn lease holds nothing: its writer died mid-write, so it is not running)."""
    try:
        data = json.loads(storage.read_bytes(sweep, LEASE))
        return Holder(**{k: data[k] for k in Holder.__dataclass_fields__})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def check_free(storage: Storage, sweep: str) -> None:
    """Refuse now if a live driver holds the sweep's lease: what the CLI calls first, before it
    pays for reading and checking a preset (`Lease.acquire` decides, atomically, later)."""
    holder = read_holder(storage, sweep)
    if holder is not None and holder.gone() is None:
        raise _refusal(sweep, holder)


def _process_started(pid: int) -> str:
    """The start time of process `pid` on this host ('' if it does not exist): with the pid, it
    names one process, whatever pids the system reuses later."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 (read whole, closed by refcount)
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:  # not Linux: whether it exists at all
        os.kill(pid, 0)
        return "alive"
    except ProcessLookupError:
        return ""
    except PermissionError:
        return "alive"


def _refusal(sweep: str, holder: Holder) -> SweepBusyError:
    return SweepBusyError(
        f"sweep {sweep!r} is running: {holder.describe()}; wait for it to finish (`status {sweep} "
        "--watch`), or stop that driver first; a driver that died leaves its lease to be taken over")


class Lease:
    """The sweep's lease, held from `acquire` to `release`, renewed by a daemon thread.

    `on_lost` runs (on the heartbeat thread) if another driver took the lease over while this one
    still ran (it was thought dead: a machine suspended past `STALE_AFTER_S`): the caller stops."""

    def __init__(self, storage: Storage, sweep: str, command: str, say: Callable[[str], None],
                 on_lost: Callable[[Holder | None], None] | None = None):
        self.storage, self.sweep, self.say, self.on_lost = storage, sweep, say, on_lost
        pid = os.getpid()
        self.holder = Holder(token=uuid.uuid4().hex, user=_user(), host=socket.gethostname(), pid=pid,
                             pid_started=_process_started(pid), command=command,
                             since=datetime.now(UTC).isoformat(timespec="seconds"), heartbeat=time.time())
        self._made_folder = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise SweepBusyError naming its holder. Writes nothing else."""
        self._made_folder = not self.storage.exists(self.sweep)
        with self._exclusive():
            current = read_holder(self.storage, self.sweep)
            if current is not None and current.token != self.holder.token:
                why = current.gone()
                if why is None:
                    self._drop_new_folder()
                    raise _refusal(self.sweep, current)
                self.say(f"sweep {self.sweep!r}: taking over the lease of {current.describe()}: {why}")
            self._write()
        if not self.storage.is_local:
            time.sleep(SETTLE_S)  # two claims on a bucket: the later write wins, the other backs off
            current = read_holder(self.storage, self.sweep)
            if current is None or current.token != self.holder.token:
                raise _refusal(self.sweep, current or self.holder)
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.sweep}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and give the lease back (only if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        with self._exclusive():
            current = read_holder(self.storage, self.sweep)
            if current is not None and current.token == self.holder.token:
                self.storage.delete(self.sweep, LEASE)
        self._drop_new_folder()

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _write(self) -> None:
        self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
        self.storage.write_bytes((self.sweep, LEASE), json.dumps(asdict(self.holder), indent=1).encode())

    def _beat(self) -> None:
        failing = False
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self._exclusive():
                    current = read_holder(self.storage, self.sweep)
                    if current is not None and current.token != self.holder.token:
                        lost = current
                    else:
                        lost = None
                        self._write()
            except OSError as exc:  # a full disk or a storage hiccup: try again next beat
                if not failing:
                    self.say(f"sweep {self.sweep!r}: its lease could not be renewed ({exc}); retrying")
                failing = True
                continue
            failing = False
            if lost is not None:
                self.say(f"sweep {self.sweep!r}: another driver took its lease over ({lost.describe()}); "
                         "stopping this one")
                if self.on_lost is not None:
                    self.on_lost(lost)
                return

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The lease's check-and-write, one driver at a time on a local or NFS folder."""
        if not self.storage.is_local:
            yield
            return
        with locked(self.storage.local_path(self.sweep, ".lease.lock")):
            yield

    def _drop_new_folder(self) -> None:
        """A sweep folder this driver created only for its lease goes again when nothing else
        was written into it (bad input found after the lease was taken leaves no trace)."""
        if not (self._made_folder and self.storage.is_local):
            return
        folder = self.storage.local_path(self.sweep)
        with contextlib.suppress(OSError):
            if {p.name for p in folder.iterdir()} <= {".lease.lock"}:
                (folder / ".lease.lock").unlink(missing_ok=True)
                folder.rmdir()  # fails, as it should, if a file appeared meanwhile


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        return str(os.getuid())
