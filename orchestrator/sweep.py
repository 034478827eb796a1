"""The sweep driver: validate, run the upstream DAG once, then the Tune/Optuna search over
defense candidates, writing each finished trial to the Parquet store as it completes.

Directory layout under the storage root:
    _artifacts/<key>/        upstream phases, shared by every sweep with the same config
    _data/                   generated datasets
    <sweep>/sweep.json       the resolved config (its identity) and options
    <sweep>/state.json       finished or not
    <sweep>/study.db         the Optuna study (SQLite)
    <sweep>/tune/            Tune's experiment state, for resume
    <sweep>/work/<trial>/    in-phase checkpoints of running trials
    <sweep>/results/         Parquet: trials/ and students/
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from results import ResultStore, pareto_front, trial_rows
from search_spaces import Preset
from search_spaces._schema import parse_preset
from trainables.errors import ConfigError, UndistillError

from .plan import Plan, make_plan

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SweepError(UndistillError):
    """A sweep could not run to the end (a phase failed, an experiment is damaged)."""


class SweepInterrupted(SweepError):
    """The sweep stopped before its budget (Ctrl-C); everything finished so far is kept."""


@dataclass(frozen=True)
class SweepOptions:
    preset: Preset
    name: str
    storage: Path
    address: str | None = None
    max_teacher_drop: float | None = None
    concurrency: int | None = None  # cap on concurrent trials (default: the preset's)

    def identity(self) -> dict:
        """What makes two sweeps the same sweep: the resolved preset and the search's limits."""
        return {"preset": self.preset.to_dict(), "max_teacher_drop": self.max_teacher_drop}

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("undistill", "torch", "ray", "optuna", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def sweep_dir(storage: Path, name: str) -> Path:
    return Path(storage) / name


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_sweep(storage: Path, name: str) -> dict:
    """The stored sweep.json of `name`, or a ConfigError that lists the sweeps there are."""
    path = sweep_dir(storage, name) / "sweep.json"
    if not path.exists():
        known = list_sweeps(storage)
        hint = f"; sweeps in {storage}: {', '.join(known)}" if known else f"; {storage} holds no sweep"
        raise ConfigError(f"no sweep named {name!r}{hint} (use --storage to look elsewhere)")
    return json.loads(path.read_text())


def read_state(storage: Path, name: str) -> dict:
    path = sweep_dir(storage, name) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"finished": False}


def list_sweeps(storage: Path) -> list[str]:
    root = Path(storage)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/sweep.json"))


def options_from_stored(storage: Path, name: str, address: str | None = None,
                        concurrency: int | None = None) -> SweepOptions:
    stored = read_sweep(storage, name)
    preset = parse_preset(stored["preset_name"], stored["identity"]["preset"])
    return SweepOptions(preset, name, Path(storage), address, stored["identity"]["max_teacher_drop"],
                        concurrency)


def check_options(opts: SweepOptions) -> Path:
    """Everything that can be checked before compute starts; returns the sweep folder."""
    if not _NAME.match(opts.name):
        raise ConfigError(f"sweep name {opts.name!r}: use letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit")
    if opts.max_teacher_drop is not None and not (0 <= opts.max_teacher_drop < 100):
        raise ConfigError(f"--max-teacher-drop {opts.max_teacher_drop} must be within [0, 100) points")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError(f"--concurrency {opts.concurrency} must be ≥ 1")
    storage = Path(opts.storage)
    try:
        storage.mkdir(parents=True, exist_ok=True)
        probe = storage / f".write-probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"storage {str(storage)!r} is not writable ({exc.strerror}); "
                          "pass --storage DIR") from None
    folder = sweep_dir(storage, opts.name)
    if (folder / "sweep.json").exists():
        stored = json.loads((folder / "sweep.json").read_text())
        if stored["fingerprint"] != opts.fingerprint():
            raise ConfigError(
                f"sweep {opts.name!r} already exists in {storage} with a different config; "
                f"resume it with `resume {opts.name}` or choose another --name"
            )
    return folder


def _create(folder: Path, opts: SweepOptions) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "sweep.json").exists():
        _write_json(folder / "sweep.json", {
            "name": opts.name,
            "preset_name": opts.preset.name,
            "identity": opts.identity(),
            "fingerprint": opts.fingerprint(),
            "trials": opts.preset.trials,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
        })


def front_of(storage: Path, name: str, max_teacher_drop: float | None = None) -> list[dict]:
    return pareto_front(ResultStore(sweep_dir(storage, name)).trial_rows(), max_teacher_drop)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sweep(opts: SweepOptions) -> dict:
    """Run (or resume, or just re-read) the sweep; returns {"front", "trials", "sweep_dir"}."""
    folder = check_options(opts)
    store = ResultStore(folder)
    if read_state(opts.storage, opts.name).get("finished"):
        _log(f"sweep {opts.name!r} is already finished: nothing to train")
        return {"front": front_of(opts.storage, opts.name), "trials": store.trial_rows(),
                "sweep_dir": folder}
    from . import _cluster, _driver

    started_ray = _cluster.connect(opts.address)  # an unreachable cluster fails before any write
    try:
        _create(folder, opts)
        plan = make_plan(opts.preset)
        upstream = _run_upstream(plan, opts)
        _driver.search(opts, plan, upstream, folder)
    finally:
        if started_ray:
            _cluster.shutdown()
    rows = store.trial_rows()
    if len(rows) < opts.preset.trials:  # Ctrl-C: Tune stops its trials and returns early
        raise SweepInterrupted(
            f"sweep {opts.name!r} stopped after {len(rows)} of {opts.preset.trials} trials; "
            f"`python cli.py resume {opts.name}` continues it"
        )
    _write_json(folder / "state.json", {"finished": True, "trials": len(rows)})
    return {"front": pareto_front(rows), "trials": rows, "sweep_dir": folder}


def _run_upstream(plan: Plan, opts: SweepOptions) -> dict[str, dict]:
    from . import _cluster

    storage = str(Path(opts.storage).resolve())
    t0 = time.perf_counter()
    _log(f"upstream: {len(plan.upstream)} phases (normal teacher, students alone, students "
         "distilled from the normal teacher)")

    def done(node, result, cached):
        acc = result.get("test_acc")
        acc_s = f"{acc:.2f}%" if acc is not None else result["status"]
        how = "cached" if cached else f"{result['wall_s']:.0f}s"
        _log(f"  {node.name:<28} {acc_s:>8}  ({how})")

    try:
        results = _cluster.run_upstream(plan.upstream, storage, str(Path(storage) / "_data"), done)
    except Exception as exc:  # a task's traceback is Ray's; the user needs the phase and cause
        raise SweepError(f"an upstream phase failed: {str(exc).strip().splitlines()[-1]}") from None
    teacher = results[plan.teacher.key]
    if teacher["status"] != "ok":
        raise SweepError("the normal teacher diverged; lower teacher_schedule.lr in the preset")
    _log(f"upstream done in {time.perf_counter() - t0:.0f}s")
    return results
