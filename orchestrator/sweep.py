"""The sweep driver: validate, run the upstream DAG once, then the Tune/Optuna search over
defense candidates, writing each finished trial to the Parquet store as it completes.
The files it keeps are described in `layout`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

from results import ResultStore, Storage, pareto_front
from search_spaces import Preset
from search_spaces._schema import parse_preset
from trainables.candidate import PLACEMENT_KEYS
from trainables.errors import ConfigError, UndistillError

from ._resources import Resources, check_amount
from .layout import TUNE_DIR, read_json, read_state, read_sweep, write_json
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
    storage: str  # a folder (local or NFS) or a bucket URI; see `results.storage`
    address: str | None = None
    max_teacher_drop: float | None = None
    concurrency: int | None = None  # cap on concurrent trials (default: what the cluster holds)
    cpus_per_trial: float | None = None  # per process of a trial (default: the preset's)
    gpus_per_trial: float | None = None
    study_storage: str | None = None  # default: SQLite beside the results, or a bucket journal
    shared_storage: bool = False  # a local path every node of a cluster mounts (NFS)

    def identity(self) -> dict:
        """What makes two sweeps the same sweep: the resolved preset and the search's limits."""
        return {"preset": self.preset.to_dict(), "max_teacher_drop": self.max_teacher_drop}

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resources(self) -> Resources:
        preset = self.preset.resources
        cpus = self.cpus_per_trial if self.cpus_per_trial is not None else preset["cpus_per_trial"]
        gpus = self.gpus_per_trial if self.gpus_per_trial is not None else preset["gpus_per_trial"]
        return Resources(check_amount("--cpus-per-trial", cpus, allow_zero=False),
                         check_amount("--gpus-per-trial", gpus, allow_zero=True),
                         students=len(self.preset.students))

    def concurrency_cap(self) -> int | None:
        return self.concurrency or self.preset.resources.get("concurrency")

    def run_options(self) -> dict:
        """How the sweep was started: what `resume` runs with unless told otherwise."""
        return {"cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial,
                "study_storage": self.study_storage, "shared_storage": self.shared_storage}


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("undistill", "torch", "ray", "optuna", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def options_from_stored(storage: str, name: str, address: str | None = None, **overrides) -> SweepOptions:
    """The options `name` was started with; `overrides` (cpus/gpus per trial, study storage)
    replace the stored ones where given, e.g. to resume on another cluster."""
    stored = read_sweep(Storage(storage), name)
    preset = parse_preset(stored["preset_name"], stored["identity"]["preset"])
    run = {**stored.get("run", {}), **{k: v for k, v in overrides.items() if v is not None}}
    return SweepOptions(preset, name, storage, address, stored["identity"]["max_teacher_drop"],
                        **run)


def check_options(opts: SweepOptions) -> Storage:
    """Everything that can be checked before connecting to Ray; returns the sweep's storage."""
    if not _NAME.match(opts.name):
        raise ConfigError(f"sweep name {opts.name!r}: use letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit")
    if opts.max_teacher_drop is not None and not (0 <= opts.max_teacher_drop < 100):
        raise ConfigError(f"--max-teacher-drop {opts.max_teacher_drop} must be within [0, 100) points")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError(f"--concurrency {opts.concurrency} must be ≥ 1")
    opts.resources()
    storage = Storage(opts.storage)
    storage.check_writable()
    if storage.exists(opts.name, "sweep.json"):
        stored = read_sweep(storage, opts.name)
        if stored["fingerprint"] != opts.fingerprint() and _has_started(storage, opts.name):
            raise ConfigError(
                f"sweep {opts.name!r} already exists in {storage} with a different config; "
                f"resume it with `resume {opts.name}` or choose another --name"
            )
    if opts.study_storage is not None:  # a mistyped URL fails here, not after the upstream phases
        from ._study import open_study_storage

        open_study_storage(opts.study_storage, storage, opts.name)
    return storage


def _check_resumable(storage: Storage, opts: SweepOptions) -> None:
    """A sweep Tune has started keeps its concurrency: Tune restores its own."""
    if not storage.exists(opts.name, TUNE_DIR):
        return
    started_with = read_sweep(storage, opts.name).get("concurrency")
    if opts.concurrency not in (None, started_with):
        raise ConfigError(f"--concurrency cannot change while resuming {opts.name!r} (it started "
                          f"with {started_with or 'the default'}); leave the flag out")


def _has_started(storage: Storage, name: str) -> bool:
    """Trials have begun: the config can no longer change. Before that (say, a first run that
    failed in its upstream phases) a corrected config may take the name over."""
    return storage.exists(name, TUNE_DIR) or bool(ResultStore(storage, name).trial_rows())


def _create(storage: Storage, opts: SweepOptions) -> None:
    if not _has_started(storage, opts.name):
        write_json(storage, opts.name, "sweep.json", {
            "name": opts.name,
            "preset_name": opts.preset.name,
            "identity": opts.identity(),
            "fingerprint": opts.fingerprint(),
            "trials": opts.preset.trials,
            "concurrency": opts.concurrency,
            "run": opts.run_options(),
            "created_at": _now(),
            "versions": versions(),
        })


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sweep(opts: SweepOptions) -> dict:
    """Run (or resume, or just re-read) the sweep; returns {"front", "trials", "results"}."""
    storage = check_options(opts)
    store = ResultStore(storage, opts.name)
    done = {"results": store.location}
    if read_state(storage, opts.name).get("finished"):
        _log(f"sweep {opts.name!r} is already finished: nothing to train")
        rows = store.trial_rows()
        return {"front": pareto_front(rows), "trials": rows, **done}
    _check_resumable(storage, opts)
    from . import _cluster, _driver

    resources = opts.resources()
    # an unreachable cluster fails before any write
    started_ray = _cluster.connect(opts.address, num_cpus=resources.local_cpus())
    try:
        nodes = _cluster.alive_nodes()
        if started_ray:  # our local Ray has more CPU slots than cores (see Resources.local_cpus)
            nodes = [{**n, "cores": os.cpu_count() or 1} for n in nodes]
        concurrency = _cluster.check_fits(nodes, resources, opts.concurrency_cap())
        _cluster.check_storage_shared(nodes, storage, opts.shared_storage)
        _create(storage, opts)
        _record_cluster(storage, opts.name, nodes, resources, concurrency)
        _log(f"cluster: {_cluster.describe(nodes)}; each trial holds {resources.describe()}; "
             f"{concurrency} trial{'s' if concurrency > 1 else ''} at once")
        plan = make_plan(opts.preset)
        upstream = _run_upstream(plan, storage, opts, resources)
        _driver.search(opts, storage, plan, upstream, resources, concurrency)
    finally:
        if started_ray:
            _cluster.shutdown()
    rows = store.trial_rows()
    if len(rows) < opts.preset.trials:  # Ctrl-C: Tune stops its trials and returns early
        raise SweepInterrupted(
            f"sweep {opts.name!r} stopped after {len(rows)} of {opts.preset.trials} trials; "
            f"`python cli.py resume {opts.name}` continues it"
        )
    write_json(storage, opts.name, "state.json", {"finished": True, "trials": len(rows)})
    return {"front": pareto_front(rows), "trials": rows, **done}


def _record_cluster(storage: Storage, name: str, nodes: list[dict], resources, concurrency: int) -> None:
    """Append this run's nodes to `cluster.json`: `status` reports utilisation against them."""
    runs = read_json(storage, name, "cluster.json", default={"runs": []})["runs"]
    runs.append({"started_at": _now(), "nodes": nodes, "bundle": resources.bundle(),
                 "bundles_per_trial": resources.bundles, "concurrency": concurrency})
    write_json(storage, name, "cluster.json", {"runs": runs})


def _run_upstream(plan: Plan, storage: Storage, opts: SweepOptions, resources) -> dict[str, dict]:
    from . import dag

    t0 = time.perf_counter()
    _log(f"upstream: {len(plan.upstream)} phases (normal teacher, students alone, students "
         "distilled from the normal teacher)")

    def done(node, result):
        acc = result.get("test_acc")
        acc_s = f"{acc:.2f}%" if acc is not None else result["status"]
        how = "cached" if result.get("cached") else f"{result['wall_s']:.0f}s"
        _log(f"  {node.name:<28} {acc_s:>8}  ({how})")

    try:
        results = dag.run_upstream(plan.upstream, storage, resources, done)
    except Exception as exc:  # a task's traceback is Ray's; the user needs the phase and cause
        raise SweepError(f"an upstream phase failed: {str(exc).strip().splitlines()[-1]}") from None
    teacher = results[plan.teacher.key]
    if teacher["status"] != "ok":
        raise SweepError("the normal teacher diverged; lower teacher_schedule.lr in the preset")
    write_json(storage, opts.name, "upstream.json", {"phases": [
        {"name": node.name, "key": node.key, **{k: results[node.key].get(k) for k in UPSTREAM_KEYS}}
        for node in plan.upstream]})
    _log(f"upstream done in {time.perf_counter() - t0:.0f}s")
    return results


UPSTREAM_KEYS = ("status", "test_acc", "wall_s", "cached", *PLACEMENT_KEYS[:-1])
