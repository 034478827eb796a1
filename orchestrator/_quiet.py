"""Ray's and Tune's messages while a driver runs: whole in a log file in the sweep's folder, one
line each on stderr.

A fault Ray or Tune recovers from (a worker killed and its task retried, a trial retried from its
checkpoints) used to print tens of lines of tracebacks, and the user could not tell a handled
fault from a broken run. Now stderr carries undistill's own lines, and for each of Ray's
warnings or errors its first line, ending with where the rest is: `<sweep>/logs/driver-*.log`
(on a bucket, the node's cache, as a bucket cannot be appended to). What workers print goes to
that file too; a worker's line that starts with `undistill:` is meant for the user and is
shown as it is.

Ray's worker output reaches the driver through private hooks (`ray._private.worker`); where a
Ray version lacks them, its output is left as Ray prints it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from undistill.storage import Storage

from .artifacts import node_cache_root

MARK = "undistill:"  # a worker's line for the user (see `say_from_worker`)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# records already reported in undistill's own words (the callback's trial lines), or the
# aftermath of one (a failed trial's result that nobody fetched)
_SAID = ("Trial task failed for trial", "Unhandled error (suppress with")


def say_from_worker(message: str) -> None:
    """A one-line notice from a worker process that the driver shows on its stderr."""
    print(f"{MARK} {message}", file=sys.stderr, flush=True)


def log_path(storage: Storage, sweep: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    folder = storage.local_path(sweep, "logs") if storage.is_local else node_cache_root() / "logs" / sweep
    return folder / f"driver-{stamp}.log"


class _QuietFile(logging.FileHandler):
    """The log file; a write that fails (a full disk) is dropped, never printed as a traceback."""

    def handleError(self, record):  # noqa: N802 (logging's name)
        pass

    def _open(self):
        # its folder made with the file, on its first line: a run that logs nothing (a bad
        # flag refused once Ray is up) leaves no trace in the sweep's folder
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def close(self):
        with contextlib.suppress(OSError):  # its last flush, on a full disk
            super().close()


class _OneLine(logging.Handler):
    """A record's first line on stderr, with where the rest is."""

    def __init__(self, path: Path):
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record):
        try:
            text = _ANSI.sub("", record.getMessage()).strip()
        except Exception:  # noqa: BLE001 (a record that cannot be formatted still says something)
            text = str(record.msg)
        if text.startswith(_SAID):
            return
        first = text.splitlines()[0] if text else record.levelname.lower()
        print(f"ray: {first[:200]} (details: {self.path})", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_ray(storage: Storage, sweep: str) -> Iterator[Path]:
    """Route Ray's log records and its workers' output as described above, for the span of the
    block (Ray connected); yields the log file's path (created on its first line)."""
    path = log_path(storage, sweep)
    to_file = _QuietFile(path, delay=True, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger = logging.getLogger("ray")
    kept = ray_logger.handlers[:]
    ray_logger.handlers = [to_file, _OneLine(path)]
    unpatch = _route_worker_output(to_file)
    try:
        yield path
    finally:
        unpatch()
        ray_logger.handlers = kept
        to_file.close()


def _route_worker_output(to_file: logging.Handler):
    """Workers' output (and the raylet's messages) to the file; marked lines, and the first line
    of each raylet message, to stderr. Returns what undoes it."""
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return lambda: None
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None
    path = getattr(to_file, "baseFilename", "the log")

    def route(data, ignore_prefix: bool = False):
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) " if who else f"(pid={data.get('pid')}) "
        lines = [_ANSI.sub("", line) for line in data.get("lines", [])]
        for line in lines:
            to_file.emit(logging.makeLogRecord({"msg": prefix + line, "levelno": logging.INFO,
                                                "levelname": "INFO", "name": "worker"}))
            if line.lstrip().startswith(MARK):
                print(line.lstrip(), file=sys.stderr, flush=True)
        if data.get("pid") == "raylet" and lines:  # a worker died, a node was lost: one line
            print(f"ray: {lines[0].strip().splitlines()[0][:200]} (details: {path})", file=sys.stderr, flush=True)

    handlers = [(name, handler) for name, handler in dispatcher.handlers]
    dispatcher.handlers = [(name, route if name == "ray_print_logs" else handler) for name, handler in handlers]
    ray_worker.print_to_stdstream = route

    def undo():
        dispatcher.handlers = [(name, handler) for name, handler in handlers]
        ray_worker.print_to_stdstream = original

    return undo
