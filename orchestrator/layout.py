"""Where a sweep keeps its files, and reading them back. Light on purpose: `pareto` and
`status` import this, and must not pay for torch or Ray.

    <storage>/_artifacts/<key>/        upstream phases, shared by every sweep with that config
    <storage>/_data/                   generated datasets
    <storage>/<sweep>/sweep.json       the resolved config (the sweep's identity) and options
    <storage>/<sweep>/state.json       finished or not
    <storage>/<sweep>/study.db         the Optuna study (SQLite)
    <storage>/<sweep>/tune/            Tune's experiment state, for resume
    <storage>/<sweep>/work/<trial>/    each trial's nasty teacher (model.pt) and live checkpoints
    <storage>/<sweep>/results/         Parquet: trials/ and students/
"""

from __future__ import annotations

import json
from pathlib import Path

from results.store import atomic_write
from trainables.errors import ConfigError, UndistillError

TUNE_DIR = "tune"


class DamagedSweepError(UndistillError):
    """A sweep's own bookkeeping file cannot be read."""


def sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage) / name


def write_json(path: Path, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one, even after a power loss."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    atomic_write(path, lambda f: f.write(text.encode()))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DamagedSweepError(f"{path} cannot be read ({exc}); restore it from a backup or "
                                "start the sweep under another --name") from None


def list_sweeps(storage: str | Path) -> list[str]:
    root = Path(storage)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/sweep.json"))


def read_sweep(storage: str | Path, name: str) -> dict:
    """The stored sweep.json of `name`, or a ConfigError that lists the sweeps there are."""
    path = sweep_dir(storage, name) / "sweep.json"
    if not path.exists():
        known = list_sweeps(storage)
        hint = f"; sweeps in {storage}: {', '.join(known)}" if known else f"; {storage} holds no sweep"
        raise ConfigError(f"no sweep named {name!r}{hint} (use --storage to look elsewhere)")
    return _read_json(path)


def read_state(storage: str | Path, name: str) -> dict:
    path = sweep_dir(storage, name) / "state.json"
    return _read_json(path) if path.exists() else {"finished": False}
