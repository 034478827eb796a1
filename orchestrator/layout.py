"""Where a sweep keeps its files, and reading them back. Light on purpose: `pareto` and
`status` import this, and must not pay for torch or Ray. Paths are inside the sweep's storage
(a local or NFS folder, or a bucket; see `results.storage`):

    _artifacts/<key>/          every phase's output, shared by every sweep with that config
    _data/                     generated datasets (local storage; a bucket's nodes cache locally)
    <sweep>/sweep.json         the resolved config (the sweep's identity) and run options
    <sweep>/state.json         finished or not
    <sweep>/cluster.json       the nodes (and their CPUs and GPUs) each run of the sweep saw
    <sweep>/upstream.json      the upstream phases: accuracy, where they ran, how long
    <sweep>/study.db           the Optuna study (SQLite; `study.journal/` on a bucket)
    <sweep>/tune/              Tune's experiment state, for resume
    <sweep>/live/              what trains now, a file per phase (see `live`)
    <sweep>/results/           Parquet: trials/, students/ and epochs/ (see `results.store`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from undistill.errors import ConfigError, DamagedSweepError
from undistill.record import SweepRecord
from undistill.storage import Storage

__all__ = ["CLUSTER", "STATE", "TUNE_DIR", "UPSTREAM", "DamagedSweepError", "Maybe", "list_sweeps",
           "read_cluster_runs", "read_json", "read_state", "read_sweep", "read_upstream", "wrong_shape",
           "write_json"]

TUNE_DIR = "tune"
# what to do about a damaged file, by what it is: the sweep's own record, or a file only `status`
# reads that the sweep's next run writes anew
RESTORE = "restore it from a backup or start the sweep under another --name"
REWRITTEN = ("delete it: only `status` reads it (where the work ran), and the sweep's next run "
             "writes it anew")


@dataclass(frozen=True)
class Maybe:
    """In a table's shape: a key the table may lack (`shape`: what it holds when there)."""

    shape: object


NUMBER = (int, float)
_OPTIONAL_NUMBER = Maybe((int, float, None))
# The shapes of the files the code reads keys of (see `wrong_shape`): the keys and types it uses
STATE = {"finished": bool, "trials": Maybe(int)}
CLUSTER = {"runs": [{"nodes": Maybe([{"node_id": str, "GPU": _OPTIONAL_NUMBER, "CPU": _OPTIONAL_NUMBER,
                                      "cores": _OPTIONAL_NUMBER, "hostname": Maybe((str, None))}])}]}
UPSTREAM = {"phases": [{"node_id": Maybe((str, None)), "hostname": Maybe((str, None)),
                        "started_at": _OPTIONAL_NUMBER, "finished_at": _OPTIONAL_NUMBER,
                        "cpus": _OPTIONAL_NUMBER, "gpus": _OPTIONAL_NUMBER, "cached": Maybe((bool, None))}]}


def write_json(storage: Storage, sweep: str, name: str, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one, even after a power loss."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    storage.write_bytes((sweep, name), text.encode())


def read_json(storage: Storage, sweep: str, name: str, default: dict | None = None, *,
              shape: object = None, fix: str = RESTORE) -> dict:
    """`<sweep>/<name>` parsed; `default` when it does not exist (if given). A file that is not
    JSON, or not of `shape` (see `wrong_shape`), is a DamagedSweepError of one line that names
    it, says what is wrong and what to do (`fix`)."""
    where = storage.uri(sweep, name)
    try:
        data = json.loads(storage.read_bytes(sweep, name))
    except FileNotFoundError:
        if default is not None:
            return default
        raise DamagedSweepError(f"{where} is missing; {fix}") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DamagedSweepError(f"{where} cannot be read ({reason}); {fix}") from None
    why = wrong_shape(data, shape) if shape is not None else None
    if why is not None:
        raise DamagedSweepError(f"{where} is damaged ({why}); {fix}")
    return data


def wrong_shape(value: object, shape: object, at: str = "") -> str | None:
    """Why `value` (parsed JSON) is not of `shape`, None when it is. A shape is a type or a
    tuple of them (None for null; a bool is no number), a dict of a table's keys (each a shape,
    or `Maybe(shape)` for a key it may lack; other keys are allowed), or `[shape]`: a list of
    items of that shape. `at`: where `value` is, for the message."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{at or 'it'} holds {_kind(value)}, not a table"
        for key, want in shape.items():
            inner = want.shape if isinstance(want, Maybe) else want
            if key not in value:
                if isinstance(want, Maybe):
                    continue
                return f"{at + '.' if at else ''}{key} is missing"
            why = wrong_shape(value[key], inner, f"{at + '.' if at else ''}{key}")
            if why is not None:
                return why
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{at or 'it'} holds {_kind(value)}, not a list"
        return next((why for i, item in enumerate(value)
                     if (why := wrong_shape(item, shape[0], f"{at}[{i}]")) is not None), None)
    types = tuple(type(None) if t is None else t for t in (shape if isinstance(shape, tuple) else (shape,)))
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    wanted = [t for t in types if not (t is int and float in types)]  # a whole number is a number
    return f"{at or 'it'} holds {_kind(value)}, not {' or '.join(_kind(t) for t in wanted)}"


def _kind(value: object) -> str:
    """What a JSON value (or, given a type, its values) is, in the words of a message."""
    kind = value if isinstance(value, type) else type(value)
    names = {dict: "a table", list: "a list", str: "a string", bool: "true or false", int: "a whole number",
             float: "a number", type(None): "null"}
    return names.get(kind, kind.__name__)


def list_sweeps(storage: Storage) -> list[str]:
    return [name for name in storage.list(dirs=True) if storage.exists(name, "sweep.json")]


def read_sweep(storage: Storage, name: str) -> SweepRecord:
    """The stored record (sweep.json) of `name`, or a ConfigError that lists the sweeps there
    are, or a DamagedSweepError when it cannot be read as one. The sweep's identity: every
    command that reads a sweep needs it whole."""
    if not storage.exists(name, "sweep.json"):
        known = list_sweeps(storage)
        hint = f"; sweeps in {storage}: {', '.join(known)}" if known else f"; {storage} holds no sweep"
        raise ConfigError(f"no sweep named {name!r}{hint} (use --storage to look elsewhere)")
    return SweepRecord.from_json(read_json(storage, name, "sweep.json"), storage.uri(name, "sweep.json"))


def read_state(storage: Storage, name: str) -> dict:
    """`state.json`: whether the sweep has finished (not yet, when absent). A damaged one is an
    error, never "not finished": that would make `resume` train a finished sweep again."""
    return read_json(storage, name, "state.json", default={"finished": False}, shape=STATE,
                     fix="restore it from a backup, or delete it: `resume` then writes it anew "
                         "(a finished sweep's resume trains nothing)")


def read_cluster_runs(storage: Storage, name: str) -> list[dict]:
    """`cluster.json`'s runs of the sweep, each with the nodes it saw; [] before the first."""
    return read_json(storage, name, "cluster.json", {"runs": []}, shape=CLUSTER, fix=REWRITTEN)["runs"]


def read_upstream(storage: Storage, name: str) -> list[dict]:
    """`upstream.json`'s phases: each upstream phase's accuracy, where it ran and how long."""
    return read_json(storage, name, "upstream.json", {"phases": []}, shape=UPSTREAM, fix=REWRITTEN)["phases"]
