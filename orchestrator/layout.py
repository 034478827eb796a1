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

from undistill.errors import ConfigError, DamagedSweepError
from undistill.record import SweepRecord
from undistill.storage import Storage

__all__ = ["TUNE_DIR", "DamagedSweepError", "list_sweeps", "read_json", "read_state", "read_sweep",
           "write_json"]

TUNE_DIR = "tune"


def write_json(storage: Storage, sweep: str, name: str, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one, even after a power loss."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    storage.write_bytes((sweep, name), text.encode())


def read_json(storage: Storage, sweep: str, name: str, default: dict | None = None) -> dict:
    """`<sweep>/<name>` parsed; `default` when it does not exist (if given)."""
    try:
        return json.loads(storage.read_bytes(sweep, name))
    except FileNotFoundError:
        if default is not None:
            return default
        raise DamagedSweepError(f"{storage.uri(sweep, name)} is missing") from None
    except (OSError, ValueError) as exc:
        raise DamagedSweepError(f"{storage.uri(sweep, name)} cannot be read ({exc}); restore it "
                                "from a backup or start the sweep under another --name") from None


def list_sweeps(storage: Storage) -> list[str]:
    return [name for name in storage.list(dirs=True) if storage.exists(name, "sweep.json")]


def read_sweep(storage: Storage, name: str) -> SweepRecord:
    """The stored record (sweep.json) of `name`, or a ConfigError that lists the sweeps there
    are, or a DamagedSweepError when it cannot be read as one."""
    if not storage.exists(name, "sweep.json"):
        known = list_sweeps(storage)
        hint = f"; sweeps in {storage}: {', '.join(known)}" if known else f"; {storage} holds no sweep"
        raise ConfigError(f"no sweep named {name!r}{hint} (use --storage to look elsewhere)")
    return SweepRecord.from_json(read_json(storage, name, "sweep.json"), storage.uri(name, "sweep.json"))


def read_state(storage: Storage, name: str) -> dict:
    return read_json(storage, name, "state.json", default={"finished": False})
