"""The sweep driver: validate, run the upstream DAG once, then the Tune/Optuna search over
defense candidates, writing each finished trial to the Parquet store as it completes.
The files it keeps are described in `layout`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from results import ResultStore, pareto_front
from results.store import DamagedResultsError
from search_spaces import Preset
from search_spaces._schema import MAX_TRIALS, parse_preset
from trainables.data import check_data_root
from trainables.loop import CHECKPOINT_EVERY_S
from trainables.phases import PHASE_CODE_VERSION
from undistill.errors import ConfigError, DamagedSweepError, UndistillError
from undistill.outcomes import PLACEMENT_KEYS
from undistill.record import RECORD_FORMAT, RunOptions, SweepRecord, versions
from undistill.space import check_max_teacher_drop
from undistill.storage import Storage, is_uri
from undistill.tables import check_within

from . import live
from ._progress import Progress, duration
from ._quiet import quiet_ray
from ._resources import Resources, check_amount
from ._worker import PhaseRuntime
from .curves import epoch_rows
from .layout import TUNE_DIR, read_cluster_runs, read_state, read_sweep, write_json
from .lease import Lease
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
    data_root: str | None = None  # datasets read from a folder (CIFAR): the same path on every node
    checkpoint_every_s: float | None = None  # mid-phase checkpoints (default: the preset's)

    def identity(self) -> dict:
        """What makes two sweeps the same sweep: the resolved preset and the search's limits."""
        return {"preset": self.preset.to_dict(), "max_teacher_drop": self.max_teacher_drop}

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resources(self, cluster_gpus: float = 0.0) -> Resources:
        """The bundle each process of a trial holds. GPUs left unset mean: none on a cluster
        without GPUs, else 1/(1 + students) of one, so that each GPU holds one whole trial."""
        preset = self.preset.resources
        cpus = self.cpus_per_trial if self.cpus_per_trial is not None else preset["cpus_per_trial"]
        gpus = self.gpus_per_trial if self.gpus_per_trial is not None else preset["gpus_per_trial"]
        students = len(self.preset.students)
        if gpus is None:
            gpus = math.floor(10_000 / (1 + students)) / 10_000 if cluster_gpus >= 1 else 0.0
        # named as the user gave it: the flag, or the preset's key
        return Resources(check_amount("--cpus-per-trial" if self.cpus_per_trial is not None
                                      else "resources.cpus_per_trial", cpus, allow_zero=False),
                         check_amount("--gpus-per-trial" if self.gpus_per_trial is not None
                                      else "resources.gpus_per_trial", gpus, allow_zero=True), students=students)

    def concurrency_cap(self) -> int | None:
        return self.concurrency or self.preset.resources.get("concurrency")

    def checkpoint_interval(self) -> float:
        for seconds in (self.checkpoint_every_s, self.preset.resources.get("checkpoint_every_s")):
            if seconds is not None:
                return seconds
        return CHECKPOINT_EVERY_S


@dataclass(frozen=True)
class SweepResult:
    """What a finished (or re-read) sweep gives back: its front, every trial row (finishing
    order, as `ResultStore.trial_rows` reads them) and where the Parquet results are."""

    front: list[dict]
    trials: list[dict]
    results: str


def options_from_stored(storage: str, name: str, address: str | None = None,
                        **overrides) -> SweepOptions:
    """The options `name` was started with; `overrides` given (not None) replace them. Resources
    and concurrency cannot change once trials have started (see `_fixed_run`)."""
    stored = read_sweep(Storage(storage), name)
    _check_current(stored, name)
    preset = parse_preset(stored.preset_name, stored.preset)
    run = stored.run
    options = {"cpus_per_trial": run.cpus_per_trial, "gpus_per_trial": run.gpus_per_trial,
               "concurrency": run.concurrency_cap, "study_storage": run.study_storage,
               "shared_storage": run.shared_storage, "data_root": run.data_root,
               "checkpoint_every_s": run.checkpoint_every_s}
    options.update({k: v for k, v in overrides.items() if v is not None})
    return SweepOptions(preset, name, storage, address, stored.max_teacher_drop, **options)


def check_options(opts: SweepOptions) -> Storage:
    """Everything that can be checked before connecting to Ray; returns the sweep's storage."""
    if not _NAME.match(opts.name):
        raise ConfigError(f"sweep name {opts.name!r}: use letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit")
    check_max_teacher_drop(opts.max_teacher_drop)
    if opts.concurrency is not None:
        check_within("--concurrency", opts.concurrency, 1, MAX_TRIALS)
    resources = opts.resources()
    if opts.address is None:
        _check_local_cpus(opts, resources)
    check_data_root(opts.preset.dataset["name"], opts.data_root)
    storage = Storage(opts.storage)
    storage.check_writable()
    started = False
    if storage.exists(opts.name, "sweep.json"):
        stored = read_sweep(storage, opts.name)
        if _has_started(storage, opts.name):
            started = True
            _check_current(stored, opts.name)
            if stored.fingerprint != opts.fingerprint():
                raise ConfigError(
                    f"sweep {opts.name!r} already exists in {storage} with a different config; "
                    f"resume it with `resume {opts.name}` or choose another --name"
                )
            _check_run_kept(storage, opts, stored.run)
    if started and opts.study_storage is not None:
        _check_study_moved(storage, opts, stored.run)
    elif opts.study_storage is not None:  # a mistyped URL fails here, not after the upstream phases
        from ._study import open_study_storage

        open_study_storage(opts.study_storage, storage, opts.name)
    return storage


def _check_local_cpus(opts: SweepOptions, resources: Resources) -> None:
    """A local sweep places every bundle on this machine: one that asks for more CPUs than it has
    cores cannot be given them (our Ray would be handed the slots, and the cores shared)."""
    cores = os.cpu_count() or 1
    if resources.cpus > cores:
        flag = "--cpus-per-trial" if opts.cpus_per_trial is not None else "resources.cpus_per_trial"
        raise ConfigError(f"{flag} {resources.cpus:g}: each process of a trial would hold {resources.cpus:g} "
                          f"CPUs, this machine has {cores} cores; give at most {cores}, or join a cluster "
                          "with --address")


def _check_run_kept(storage: Storage, opts: SweepOptions, run: RunOptions) -> None:
    """A started sweep keeps the resources and concurrency it started with: another is refused
    here (`_fixed_run`), before anything is written. A finished one trains nothing more: its
    front is printed as it is, with a line for each flag that asked for another (it changes
    nothing), rather than ignoring it without a word."""
    if not read_state(storage, opts.name).get("finished"):
        _fixed_run(storage, opts)
        return
    for flag, asked, was in (("--cpus-per-trial", opts.cpus_per_trial, run.cpus_per_trial),
                             ("--gpus-per-trial", opts.gpus_per_trial, run.gpus_per_trial),
                             ("--concurrency", opts.concurrency, run.concurrency_cap)):
        if asked is not None and asked != was:
            _log(_finished_flag(opts.name, flag, asked, was))


def _finished_flag(name: str, flag: str, asked, was) -> str:
    return (f"sweep {name!r} is finished: {flag} {asked} changes nothing (it ran with "
            f"{was if was is not None else 'the default'})")


def _check_study_moved(storage: Storage, opts: SweepOptions, run: RunOptions) -> None:
    """`--study-storage` on a started sweep says where its study was moved to: it must be there
    (Tune's saved searcher reopens it), checked without creating anything. A finished sweep
    asks its study nothing more: the flag changes nothing, and is not opened (which would make
    an empty journal), only said so."""
    if opts.study_storage == run.study_storage:
        return
    if read_state(storage, opts.name).get("finished"):
        _log(_finished_flag(opts.name, "--study-storage", opts.study_storage,
                            run.study_storage or "the default, in the sweep's folder"))
        return
    was = run.study_storage or "the default, in the sweep's folder"
    missing = (f"--study-storage {opts.study_storage} holds no study of sweep {opts.name!r} (it started "
               f"with {was}); give where its study was moved to, or leave the flag out")
    spec = opts.study_storage
    # a journal file, or an SQLite database: opening either would create it
    path = spec.removeprefix("sqlite:///") if spec.startswith("sqlite:///") else None
    if not is_uri(spec) or spec.startswith("file://"):
        path = str(Storage(spec).local_path())
    if path is not None and not os.path.exists(path):
        raise ConfigError(missing)
    from ._study import open_study_storage

    try:
        open_study_storage(opts.study_storage, storage, opts.name).get_study_id_from_name(opts.name)
    except KeyError:
        raise ConfigError(missing) from None


def _check_current(stored: SweepRecord, name: str) -> None:
    """A sweep stored before the attack suite (one KD attack), before pluggable defenses (record
    format 1), before DAFL as published (a generator run of `generator_steps`), or by other phase
    code cannot go on with this code: its phases and Tune state belong to the older version."""
    if "kd_temperatures" not in stored.preset.get("attack", {}):
        raise ConfigError(f"sweep {name!r} was made by an older undistill (one KD attack, before the "
                          "attack suite): `pareto` and `status` still read its results; to go on, "
                          "run it again under another --name")
    if "generator_steps" in stored.preset.get("attack", {}).get("data_free", {}):
        raise ConfigError(f"sweep {name!r} was made by an older undistill (DAFL before it was made as "
                          "published): `pareto`, `status` and `report` still read its results; to go on, "
                          "run it again under another --name")
    if stored.format < RECORD_FORMAT:
        raise ConfigError(f"sweep {name!r} was made by an older undistill (before pluggable defenses): "
                          "`pareto`, `status` and `report` still read its results; to go on, run it "
                          "again under another --name")
    if stored.phase_code != PHASE_CODE_VERSION:  # its phases computed otherwise (networks, optimizers)
        made = f"phase code {stored.phase_code}" if stored.phase_code is not None else "an older phase code"
        raise ConfigError(f"sweep {name!r} was made by {made}, this undistill trains with phase code "
                          f"{PHASE_CODE_VERSION}: going on would mix results of both; `pareto`, `status` "
                          "and `report` still read it; to go on, run it again under another --name")


def _fixed_run(storage: Storage, opts: SweepOptions) -> RunOptions | None:
    """How a sweep Tune has already started runs, or None. Its resources and concurrency are
    fixed: restored trials keep their placement groups, and Tune restores its own limit."""
    if not storage.exists(opts.name, TUNE_DIR):
        return None
    run = read_sweep(storage, opts.name).run
    for flag, asked, was in (("--cpus-per-trial", opts.cpus_per_trial, run.cpus_per_trial),
                             ("--gpus-per-trial", opts.gpus_per_trial, run.gpus_per_trial),
                             ("--concurrency", opts.concurrency, run.concurrency_cap)):
        if asked is not None and asked != was:
            raise ConfigError(f"{flag} cannot change while resuming {opts.name!r} (its trials "
                              f"started with {was if was is not None else 'the default'}); leave "
                              "the flag out, or start a new sweep under another --name")
    return run


def _check_tune_agrees(storage: Storage, name: str, store: ResultStore) -> None:
    """Refuse a sweep whose Tune state says trials finished that have no Parquet row: restored,
    Tune would never run them again, and the sweep could never reach its budget. It happens when
    the Tune state and the results come from different moments (a partial sync, a backup of one
    folder but not the other). The reverse, rows Tune has not finished, is normal: a driver
    killed after a row's write and before Tune saved its state reruns that trial, keeping its row."""
    states = storage.list(name, TUNE_DIR, suffix=".json")
    states = [s for s in states if s.startswith("experiment_state-")]
    if not states:
        return
    try:
        saved = json.loads(storage.read_bytes(name, TUNE_DIR, max(states)))
        finished = {trial["trial_id"] for trial in (json.loads(t[0]) for t in saved["trial_data"])
                    if trial["status"] in ("TERMINATED", "ERROR")}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DamagedSweepError(f"{storage.uri(name, TUNE_DIR, max(states))} cannot be read ({exc}); "
                                "restore the sweep's folder from a backup, or start it again under "
                                "another --name") from None
    missing = sorted(finished - {row["trial_id"] for row in store.trial_rows()})
    if missing:
        raise DamagedSweepError(
            f"sweep {name!r}: Tune's state ({storage.uri(name, TUNE_DIR)}) has {len(missing)} finished "
            f"trial(s) with no row in {store.location} ({', '.join(missing[:3])}"
            f"{', …' if len(missing) > 3 else ''}): its tune/ and results/ come from different moments; "
            "restore the whole sweep folder from one copy, or start it again under another --name")


def _resolve_run(opts: SweepOptions, fixed: RunOptions | None, nodes: list[dict]) -> tuple[Resources, int]:
    """This run's bundle and concurrency: resolved against the cluster for a new sweep, the
    stored ones (which must still fit) for a started one."""
    from . import _cluster

    if fixed is None:
        resources = opts.resources(sum(n["GPU"] for n in nodes))
        return resources, _cluster.check_fits(nodes, resources, opts.concurrency_cap())
    resources = Resources(fixed.cpus_per_trial, fixed.gpus_per_trial, len(opts.preset.students))
    _cluster.check_fits(nodes, resources, None)
    return resources, fixed.concurrency


def _has_started(storage: Storage, name: str) -> bool:
    """Trials have begun: the config can no longer change. Before that (say, a first run that
    failed in its upstream phases) a corrected config may take the name over."""
    return storage.exists(name, TUNE_DIR) or bool(ResultStore(storage, name).trial_rows())


def _create(storage: Storage, opts: SweepOptions, resources: Resources, concurrency: int) -> None:
    if not _has_started(storage, opts.name):
        record = SweepRecord(
            name=opts.name,
            preset_name=opts.preset.name,
            preset=opts.identity()["preset"],
            max_teacher_drop=opts.max_teacher_drop,
            fingerprint=opts.fingerprint(),
            trials=opts.preset.trials,
            # how it runs, resolved: what `resume` keeps
            run=RunOptions(cpus_per_trial=resources.cpus, gpus_per_trial=resources.gpus,
                           concurrency=concurrency, concurrency_cap=opts.concurrency_cap(),
                           study_storage=opts.study_storage, shared_storage=opts.shared_storage,
                           data_root=opts.data_root, checkpoint_every_s=opts.checkpoint_interval()),
            created_at=_now(),
            versions=versions(),
            space=opts.preset.space,
            phase_code=PHASE_CODE_VERSION,
        )
        write_json(storage, opts.name, "sweep.json", record.to_json())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sweep(opts: SweepOptions, command: str = "sweep") -> SweepResult:
    """Run (or resume, or just re-read) the sweep, holding its lease (`lease`): a second driver
    of a running sweep is refused before it writes anything. `command`: what the lease's holder
    is shown as (sweep, resume)."""
    storage = check_options(opts)
    with hold_lease(storage, opts.name, command):
        return _run_sweep(opts, storage)


def hold_lease(storage: Storage, name: str, command: str) -> Lease:
    """The sweep's lease, to hold with `with`. If another driver takes it over (this one was
    thought dead), this one stops as Ctrl-C stops it: two drivers must never both write."""
    import _thread

    return Lease(storage, name, command, say=_log, on_lost=lambda _holder: _thread.interrupt_main())


def _run_sweep(opts: SweepOptions, storage: Storage) -> SweepResult:
    from ._retry import lost_artifact

    store = ResultStore(storage, opts.name)
    finished = read_state(storage, opts.name).get("finished")
    if finished:
        rows = store.trial_rows()
        if not any(lost_artifact(r) for r in rows):
            _log(f"sweep {opts.name!r} is already finished: nothing to train")
            return SweepResult(pareto_front(rows), rows, store.location)
    fixed = _fixed_run(storage, opts)
    if not finished:  # a finished sweep's Tune state is not read again
        _check_tune_agrees(storage, opts.name, store)
    from . import _cluster

    # an unreachable cluster fails before any write
    started_ray = _cluster.connect(opts.address, num_cpus=opts.resources().local_cpus())
    try:
        with quiet_ray(storage, opts.name):  # Ray's tracebacks to a log file, a line each here
            _drive(opts, storage, fixed, started_ray, search=not finished)
    finally:
        if started_ray:
            _cluster.shutdown()
    rows = store.trial_rows()
    if len(rows) < opts.preset.trials:  # Ctrl-C: Tune stops its trials and returns early
        raise SweepInterrupted(
            f"sweep {opts.name!r} stopped after {len(rows)} of {opts.preset.trials} trials; "
            f"`python cli.py resume {opts.name}` continues it"
        )
    compact_finished(store)
    write_json(storage, opts.name, "state.json", {"finished": True, "trials": len(rows)})
    return SweepResult(pareto_front(rows), rows, store.location)


def _drive(opts: SweepOptions, storage: Storage, fixed: RunOptions | None, started_ray: bool,
           search: bool = True) -> None:
    """On the connected cluster: check the sweep fits, record it, run the upstream phases once,
    then the search to the budget (`search`: False for a finished sweep), then the trials that
    failed only for a missing artifact again (`_retry`)."""
    from . import _cluster, _driver, _retry

    nodes = _cluster.alive_nodes()
    resources, concurrency = _resolve_run(opts, fixed, nodes)
    _cluster.check_storage_shared(nodes, storage, opts.shared_storage)
    if started_ray:  # our local Ray has more CPU slots than cores (see Resources.local_cpus)
        nodes = [{**n, "cores": os.cpu_count() or 1} for n in nodes]
    _create(storage, opts, resources, concurrency)
    live.clear(storage, opts.name)  # what an earlier, killed run left as running
    _record_cluster(storage, opts.name, nodes, resources, concurrency)
    _log(f"cluster: {_cluster.describe(nodes)}; each trial holds {resources.describe()}; "
         f"{concurrency} trial{'s' if concurrency > 1 else ''} at once")
    plan = make_plan(opts.preset)
    runtime = PhaseRuntime(storage, resources, opts.data_root, opts.checkpoint_interval(), opts.name)
    batch = opts.preset.resources.get("batch_attacks", True)
    upstream = _run_upstream(plan, runtime, opts.name, batch)
    if search:
        _driver.search(opts, plan, upstream, runtime, concurrency)
    if len(ResultStore(storage, opts.name).trial_rows()) >= opts.preset.trials:  # not stopped by Ctrl-C
        _retry.retry_lost(opts, plan, upstream, runtime, concurrency, batch)


def compact_finished(store: ResultStore) -> None:
    """Each table of a finished sweep (or `confirm`) in one file; a damaged file leaves them as
    they are, with a line: every row is written, merging them can wait."""
    try:
        store.compact(min_files=1, max_parts=1)
    except DamagedResultsError as exc:
        _log(f"results not compacted: {exc}")


def _record_cluster(storage: Storage, name: str, nodes: list[dict], resources, concurrency: int) -> None:
    """Append this run's nodes to `cluster.json`: `status` reports utilisation against them. A
    damaged one is a one-line error, not overwritten: what it held may still be read by hand."""
    runs = read_cluster_runs(storage, name)
    runs.append({"started_at": _now(), "nodes": nodes, "bundle": resources.bundle(),
                 "bundles_per_trial": resources.bundles, "concurrency": concurrency})
    write_json(storage, name, "cluster.json", {"runs": runs})


def run_upstream_phases(nodes, runtime: PhaseRuntime, batch: bool = True, width: int = 28,
                        progress: Progress | None = None) -> dict[str, dict]:
    """The DAG of `nodes` on Ray (`dag.run_upstream`), a line logged as each finishes (its name
    padded to `width`), what runs now on `progress`; a failed phase is one `SweepError` line."""
    from . import dag

    say = progress.say if progress is not None else _log
    t0, finished = time.perf_counter(), []

    def tick():
        if progress is not None:
            progress.tick(lambda: f"upstream: {len(finished)} of {len(nodes)} phases done · "
                                  f"{duration(time.perf_counter() - t0)} elapsed")

    def done(node, result):
        finished.append(node)
        acc = result.get("test_acc")
        acc_s = f"{acc:.2f}%" if acc is not None else result["status"]
        how = "cached" if result.get("cached") else f"{result['wall_s']:.0f}s"
        if result.get("batched") and not result.get("cached"):  # its share of a batch's seconds
            how = f"{result['wall_s']:.0f}s of a batch of {result['batch_size']}"
        say(f"  {node.name:<{width}} {acc_s:>8}  ({how})")

    try:
        return dag.run_upstream(nodes, runtime, done, batch=batch, on_tick=tick)
    except Exception as exc:  # a task's traceback is Ray's; the user needs the phase and cause
        from ._disk import full, is_full

        if is_full(exc):
            raise full(runtime.storage, runtime.sweep or "", None) from None
        raise SweepError(f"an upstream phase failed: {str(exc).strip().splitlines()[-1]}") from None


def _run_upstream(plan: Plan, runtime: PhaseRuntime, name: str, batch: bool = True) -> dict[str, dict]:
    t0 = time.perf_counter()
    _log(f"upstream: {len(plan.upstream)} phases (normal teacher, students alone, every attack "
         "on the normal teacher)")
    progress = Progress(runtime.storage, name)
    try:
        results = run_upstream_phases(plan.upstream, runtime, batch, progress=progress)
    finally:
        progress.close()
    teacher = results[plan.teacher.key]
    if teacher["status"] != "ok":
        raise SweepError("the normal teacher diverged; lower teacher_schedule.lr in the preset")
    ResultStore(runtime.storage, name).write_epochs(UPSTREAM_CURVES, epoch_rows(name, plan.upstream, results))
    write_json(runtime.storage, name, "upstream.json", {"phases": [
        {"name": node.name, "key": node.key, **{k: results[node.key].get(k) for k in UPSTREAM_KEYS}}
        for node in plan.upstream]})
    _log(f"upstream done in {time.perf_counter() - t0:.0f}s")
    return results


UPSTREAM_CURVES = "upstream"  # the upstream phases' curves: epochs/upstream.parquet
UPSTREAM_KEYS = ("status", "test_acc", "wall_s", *PLACEMENT_KEYS)
