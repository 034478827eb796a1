"""The sweep driver: validate, run the upstream DAG once, then the Tune/Optuna search over
defense candidates, writing each finished trial to the Parquet store as it completes.
The files it keeps are described in `layout`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from results import ResultStore, pareto_front
from search_spaces import Preset
from search_spaces._schema import parse_preset
from trainables.errors import ConfigError, UndistillError

from .layout import TUNE_DIR, read_state, read_sweep, sweep_dir, write_json
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


def options_from_stored(storage: Path, name: str, address: str | None = None) -> SweepOptions:
    stored = read_sweep(storage, name)
    preset = parse_preset(stored["preset_name"], stored["identity"]["preset"])
    return SweepOptions(preset, name, Path(storage), address, stored["identity"]["max_teacher_drop"])


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
        stored = read_sweep(storage, opts.name)
        if stored["fingerprint"] != opts.fingerprint() and _has_started(folder):
            raise ConfigError(
                f"sweep {opts.name!r} already exists in {storage} with a different config; "
                f"resume it with `resume {opts.name}` or choose another --name"
            )
    return folder


def _check_resumable(folder: Path, opts: SweepOptions) -> None:
    """A sweep Tune has started keeps its concurrency: Tune restores its own."""
    if not (folder / TUNE_DIR).exists():
        return
    started_with = read_sweep(opts.storage, opts.name).get("concurrency")
    if opts.concurrency not in (None, started_with):
        raise ConfigError(f"--concurrency cannot change while resuming {opts.name!r} (it started "
                          f"with {started_with or 'the preset default'}); leave the flag out")


def _has_started(folder: Path) -> bool:
    """Trials have begun: the config can no longer change. Before that (say, a first run that
    failed in its upstream phases) a corrected config may take the name over."""
    return (folder / TUNE_DIR).exists() or bool(ResultStore(folder).trial_rows())


def _create(folder: Path, opts: SweepOptions) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not _has_started(folder):
        write_json(folder / "sweep.json", {
            "name": opts.name,
            "preset_name": opts.preset.name,
            "identity": opts.identity(),
            "fingerprint": opts.fingerprint(),
            "trials": opts.preset.trials,
            "concurrency": opts.concurrency,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
        })


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sweep(opts: SweepOptions) -> dict:
    """Run (or resume, or just re-read) the sweep; returns {"front", "trials", "sweep_dir"}."""
    folder = check_options(opts)
    store = ResultStore(folder)
    if read_state(opts.storage, opts.name).get("finished"):
        _log(f"sweep {opts.name!r} is already finished: nothing to train")
        rows = store.trial_rows()
        return {"front": pareto_front(rows), "trials": rows, "sweep_dir": folder}
    _check_resumable(folder, opts)
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
    write_json(folder / "state.json", {"finished": True, "trials": len(rows)})
    return {"front": pareto_front(rows), "trials": rows, "sweep_dir": folder}


def _run_upstream(plan: Plan, opts: SweepOptions) -> dict[str, dict]:
    from . import dag

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
        results = dag.run_upstream(plan.upstream, storage, str(Path(storage) / "_data"), done)
    except Exception as exc:  # a task's traceback is Ray's; the user needs the phase and cause
        raise SweepError(f"an upstream phase failed: {str(exc).strip().splitlines()[-1]}") from None
    teacher = results[plan.teacher.key]
    if teacher["status"] != "ok":
        raise SweepError("the normal teacher diverged; lower teacher_schedule.lr in the preset")
    _log(f"upstream done in {time.perf_counter() - t0:.0f}s")
    return results
