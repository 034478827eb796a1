"""`confirm`: the front's candidates measured again under further seeds, so that every number on
the front comes with how sure it is (`results.replicates`).

A replicate of a candidate under seed s shares nothing with its trial but the knobs: seed s has
its own normal teacher, students alone (plain and label-smoothed) and attacks on the normal
teacher, and the candidate's defended teacher and attacks are trained from those. The data is
the dataset's (the same samples and validation split under every seed). Every phase goes
through the artifact store by key, so a seed's upstream phases serve every candidate, a phase
finished before a crash is not trained again, and a replicate whose row is written is never run
again: `confirm` run twice does nothing the second time, and after a kill it goes on.

Each replicate runs like a trial: a placement group of `1 + students` bundles (the sweep's),
the defended teacher in bundle 0, the attacks side by side as child tasks, at most the sweep's
concurrency at once; every attack runs (a replicate is never pruned) and no teacher gate
applies (the teacher's accuracy is what is measured).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

from results import ResultStore, pareto_front, trial_rows
from results.replicates import Replicated, mean_front, replicated
from undistill.errors import ConfigError
from undistill.outcomes import Candidate, SweepColumns
from undistill.space import check_max_teacher_drop

from ._killpoints import BEFORE_TRIAL_WRITE, kill_point
from ._outside import Outside, row_candidate, run_outside
from ._quiet import quiet_ray
from ._worker import PhaseRuntime
from .curves import epoch_rows, trial_epoch_rows
from .layout import read_sweep
from .plan import Plan, make_plan
from .sweep import (
    SweepError,
    SweepOptions,
    _log,
    _resolve_run,
    check_options,
    compact_finished,
    hold_lease,
    run_upstream_phases,
)

MAX_SEEDS = 50  # a t interval past this many seeds narrows by less than a percent


@dataclass(frozen=True)
class ConfirmResult:
    """The replicated candidates (over every seed they have), the front on their means, how many
    replicates ran now and how many were already there."""

    candidates: list[Replicated]
    front: list[Replicated]
    trained: int
    held: int
    results: str


def replicate_id(trial_id: str, seed: int) -> str:
    """The trial id (and file name) of `trial_id`'s replicate under `seed`."""
    return f"{trial_id}-seed{seed}"


def further_seeds(seed: int, count: int) -> list[int]:
    """The `count` seeds after the sweep's own: its replicates' seeds, the same on every rerun."""
    return [seed + i for i in range(1, count + 1)]


def check_seeds(seeds: int, flag: str = "--seeds") -> None:
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"{flag} {seeds} must be within 1 to {MAX_SEEDS}: the number of seeds "
                          "to add to the sweep's own")


def run_confirm(opts: SweepOptions, seeds: int, max_teacher_drop: float | None = None) -> ConfirmResult:
    """Run every missing replicate of the front's candidates (the front of the sweep's own trials,
    their teachers within `max_teacher_drop` points if given) under `seeds` further seeds."""
    check_seeds(seeds)
    check_max_teacher_drop(max_teacher_drop)
    storage = check_options(opts)
    store = ResultStore(storage, opts.name)
    before = store.sweep_rows()
    front = pareto_front(before.trials, max_teacher_drop)
    if not front:
        raise ConfigError(f"sweep {opts.name!r} has no finished trial on its front yet"
                          f"{' within --max-teacher-drop' if max_teacher_drop is not None else ''}; "
                          f"sweep first (python cli.py resume {opts.name})")
    held = {r["trial_id"] for r in before.replicate_trials if r["status"] != "error"}  # an error is tried again
    wanted = [(t, s) for s in further_seeds(opts.preset.seed, seeds) for t in front]
    todo = [(t, s) for t, s in wanted if replicate_id(t["trial_id"], s) not in held]
    _log(f"confirm {opts.name!r}: {len(front)} front candidates × {seeds} further "
         f"seed{'s' if seeds > 1 else ''}: {len(wanted) - len(todo)} replicates done, {len(todo)} to run")
    if todo:
        with hold_lease(storage, opts.name, "confirm"):
            _run(opts, storage, todo)
    rows = store.sweep_rows()
    ids = {t["trial_id"] for t in front}
    candidates = [c for c in replicated(rows.trials, rows.students, rows.replicate_trials, rows.replicate_students)
                  if c.trial_id in ids]
    return ConfirmResult(candidates, mean_front(candidates), len(todo), len(wanted) - len(todo), store.location)


def _run(opts: SweepOptions, storage, todo: list[tuple[dict, int]]) -> None:
    from . import _cluster

    record = read_sweep(storage, opts.name)
    started_ray = _cluster.connect(opts.address, num_cpus=opts.resources().local_cpus())
    try:
        with quiet_ray(storage, opts.name):
            _drive(opts, storage, record, todo)
    finally:
        if started_ray:
            _cluster.shutdown()


def _drive(opts: SweepOptions, storage, record, todo: list[tuple[dict, int]]) -> None:
    """On the connected cluster: every seed's upstream phases, then the replicates."""
    from . import _cluster

    nodes = _cluster.alive_nodes()
    resources, concurrency = _resolve_run(opts, record.run, nodes)
    _cluster.check_storage_shared(nodes, storage, opts.shared_storage)
    runtime = PhaseRuntime(storage, resources, opts.data_root, opts.checkpoint_interval(), opts.name)
    batch = opts.preset.resources.get("batch_attacks", True)
    plans = {s: make_plan(replace(opts.preset, seed=s)) for s in sorted({s for _, s in todo})}
    upstream = _run_upstream(plans, runtime, batch)
    store = ResultStore(storage, opts.name)
    for seed, plan in plans.items():  # each seed's upstream curves, beside the sweep's own
        store.write_epochs(f"upstream-seed{seed}", epoch_rows(opts.name, plan.upstream, upstream))
    _run_replicates(opts, record, plans, upstream, runtime, concurrency, batch, todo)
    compact_finished(store)


def _run_upstream(plans: dict[int, Plan], runtime: PhaseRuntime, batch: bool) -> dict[str, dict]:
    """Every seed's upstream phases as one DAG: seeds run side by side."""
    t0 = time.perf_counter()
    nodes = tuple(replace(node, name=f"seed {seed}: {node.name}") for seed, plan in plans.items()
                  for node in plan.upstream)
    _log(f"upstream of {len(plans)} seed{'s' if len(plans) > 1 else ''}: {len(nodes)} phases")
    results = run_upstream_phases(nodes, runtime, batch, width=36)
    for seed, plan in plans.items():
        if results[plan.teacher.key]["status"] != "ok":
            raise SweepError(f"the normal teacher of seed {seed} diverged; lower teacher_schedule.lr "
                             "in the preset")
    _log(f"upstream done in {time.perf_counter() - t0:.0f}s")
    return results


def _run_replicates(opts: SweepOptions, record, plans: dict[int, Plan], upstream: dict[str, dict],
                    runtime: PhaseRuntime, concurrency: int, batch: bool, todo: list[tuple[dict, int]]) -> None:
    """Each replicate as a task in its own placement group, `concurrency` at once (`_outside`);
    its rows are written as it finishes."""
    from ._driver import _pct, sweep_columns, trial_context

    contexts = {s: trial_context(plan, upstream) for s, plan in plans.items()}  # no teacher gate
    columns = {s: sweep_columns(opts, plan, contexts[s]) for s, plan in plans.items()}
    store = ResultStore(runtime.storage, opts.name)
    t0, total, finished = time.time(), len(todo), 0

    def done(run: Outside, outcome, error) -> None:
        nonlocal finished
        trial, seed = run.tag
        row, students = _rows(opts, columns[seed], trial, seed, outcome, error)
        curves = trial_epoch_rows(runtime.storage, opts.name, row["trial_id"], run.candidate,
                                  contexts[seed], replicate_of=trial["trial_id"])
        kill_point(BEFORE_TRIAL_WRITE)
        store.write_trial(row, students, curves)
        finished += 1
        elapsed = time.time() - t0
        eta = elapsed / finished * (total - finished)
        knobs = record.space.describe(row["defense"], row["knobs"] or {})
        print(f"[{finished:>3}/{total}] seed {seed} {row['defense']:<6} {knobs:<24} teacher "
              f"{_pct(row['teacher_acc'])} · clone {_pct(row['student_acc'])}  {row['status']:<8} "
              f"{elapsed:.0f}s elapsed · ETA {eta:.0f}s", file=sys.stderr, flush=True)

    runs = [Outside(f"replicate {replicate_id(trial['trial_id'], seed)}", row_candidate(trial, record.space),
                    contexts[seed], (trial, seed)) for trial, seed in todo]
    run_outside(runs, runtime, concurrency, batch, done)


def _rows(opts: SweepOptions, columns: SweepColumns, trial: dict, seed: int, outcome, error):
    return trial_rows(sweep=opts.name, trial_id=replicate_id(trial["trial_id"], seed),
                      candidate=Candidate(trial["defense"], tuple(sorted((trial["knobs"] or {}).items()))),
                      outcome=outcome, context=columns, error=error, replicate_of=trial["trial_id"])
