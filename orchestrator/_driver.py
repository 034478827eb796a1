"""Ray Tune for the driver: the Tuner (new or restored), and the callback that writes each
finished trial to Parquet and prints progress."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace

from ray import tune

from results import ResultStore, pareto_front, trial_rows
from results.store import DamagedResultsError
from trainables.candidate import TrialContext, attack_name, student_outcome
from undistill.outcomes import Baselines, Candidate, SweepColumns
from undistill.record import versions
from undistill.space import SearchSpace
from undistill.storage import Storage

from ._disk import check_room, found, full, is_full, trial_bytes
from ._here import Here, driving, here
from ._killpoints import BEFORE_TRIAL_WRITE, kill_point
from ._progress import Progress, duration
from ._trial import OUTCOME, tune_trial
from ._tunefs import tune_filesystem
from ._worker import PhaseRuntime
from .curves import trial_epoch_rows
from .layout import TUNE_DIR
from .plan import Plan
from .search import DefenseSearch

ROOM_CHECK_S = 5.0  # how often the driver looks at the storage's free space while trials run


class SweepCallback(tune.Callback):
    """Driver side: one atomic Parquet write per finished trial, and a progress line. The rows
    written so far are read once, when the driver starts, and kept in memory after that.

    Picklable on purpose: Tune stores callbacks in its experiment state for restore. It pickles
    without its storage: a restored callback writes where the driver was pointed now (`_here`),
    so that a copied or moved sweep never writes into the folder it came from.
    """

    def __init__(self, sweep: str, storage: Storage, columns: SweepColumns, total: int,
                 space: SearchSpace, prune: bool = False, context: TrialContext | None = None):
        """`prune`: keep the sweep's front board (`_board`) current for trials that prune;
        `context`: the trials' (to find their phases' learning curves; None: no curves)."""
        self.sweep, self.storage, self.columns, self.total = sweep, storage, columns, total
        self.space, self.prune, self.context = space, prune, context
        self._t0 = time.time()
        self._done_at_start = 0
        self._rows: dict[str, dict] = {}
        self._board = None
        self._display: Progress | None = None

    def __getstate__(self):
        # a restored driver reads the rows afresh, opens the board again, and writes to the
        # storage it was given now
        return {**self.__dict__, "storage": None, "_rows": {}, "_board": None, "_display": None}

    def setup(self, **info):
        bound = here()
        if bound is not None:
            self.storage = bound.storage
        if self.storage is None:
            raise RuntimeError("a restored SweepCallback runs only inside `_here.driving`")
        self._t0 = time.time()
        self._room = bound.room if bound is not None else 0
        self._room_checked = time.monotonic()
        self._display = Progress(self.storage, self.sweep, self.space)
        store = ResultStore(self.storage, self.sweep)
        self._rows = {r["trial_id"]: r for r in store.trial_rows()}
        self._done_at_start = len(self._rows)
        if self.prune:
            from ._board import open_board

            self._board = open_board(self.sweep)
            clones: dict[str, dict[str, float]] = {}
            for s in store.student_rows():
                if s["status"] == "ok" and s["student_acc"] is not None:
                    clones.setdefault(s["trial_id"], {})[attack_name_of(s)] = s["student_acc"]
            for row in self._rows.values():
                self._post(row, clones.get(row["trial_id"]))

    def _post(self, row: dict, clones: dict[str, float] | None) -> None:
        """A finished trial's point, and its clones when every attack ran, to the board."""
        if self._board is None or row["status"] != "ok":
            return  # dominated trials are beaten by the front, and their clones are partial
        if all(x is not None and math.isfinite(x) for x in (row["teacher_acc"], row["student_acc"])):
            self._board.add.remote((row["teacher_acc"], row["student_acc"]), clones)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, trial.last_result, None)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed and Tune runs it again (FailureConfig): one line; Ray's traceback is in
        the sweep's log (`_quiet`)."""
        cause = str(trial.get_error() or "it failed").strip().splitlines()
        candidate = Candidate.from_params(trial.config) if "defense" in trial.config else None
        what = f"{candidate.defense} {self.space.describe(candidate.defense, dict(candidate.knobs))}" \
            if candidate is not None else "?"
        self._display.say(f"trial {trial.trial_id} ({what}) failed "
                          f"({(cause[-1] if cause else 'it failed')[:160]}); retrying it: its finished "
                          "phases come from the artifact store, the rest from their checkpoints")

    def on_trial_error(self, iteration, trials, trial, **info):
        if is_full(trial.get_error()):  # not the candidate's fault: it runs again after `resume`
            raise full(self.storage, self.sweep, self._room)
        check_room(self.storage, self.sweep, self._room)  # a trial's phases may fail on a full disk
        cause = str(trial.get_error() or "the trial raised an error").strip().splitlines()
        self._record(trial, None, cause[-1][:500] if cause else "the trial raised an error")

    def _record(self, trial, result, error):
        outcome = result.get(OUTCOME) if result and result.get("final") else None
        if outcome is None and error is None:
            error = "the trial ended without a final result"
        held = self._rows.get(trial.trial_id)
        if error is not None and held is not None and held["status"] != "error":
            return  # a rerun of a trial that already finished (see DefenseSearch): keep its row
        candidate = Candidate.from_params(trial.config) if "defense" in trial.config else None
        row, students = trial_rows(sweep=self.sweep, trial_id=trial.trial_id, candidate=candidate,
                                   outcome=outcome, context=self.columns, error=error)
        curves = []
        if candidate is not None and self.context is not None:
            curves = trial_epoch_rows(self.storage, self.sweep, trial.trial_id, candidate, self.context)
        kill_point(BEFORE_TRIAL_WRITE)
        store = ResultStore(self.storage, self.sweep)
        try:
            store.write_trial(row, students, curves)
        except OSError as exc:  # raised out of Tune's loop: Tune keeps the trial to run again
            if is_full(exc):
                raise full(self.storage, self.sweep, self._room) from None
            raise
        try:
            store.compact()  # a few files per table, however long the sweep
        except DamagedResultsError as exc:  # the rows are written; merging them can wait
            self._display.say(f"results not compacted: {exc}")
        self._rows.pop(trial.trial_id, None)
        self._rows[trial.trial_id] = row
        self._post(row, {attack_name_of(s): s["student_acc"] for s in students
                         if s["status"] == "ok" and s["student_acc"] is not None})
        rows = list(self._rows.values())
        self._display.say(f"{trial_line(len(rows), self.total, row, self.space)} {self._times(rows)}")

    def on_step_end(self, iteration, trials, **info):
        if self._room and time.monotonic() - self._room_checked > ROOM_CHECK_S:
            self._room_checked = time.monotonic()
            check_room(self.storage, self.sweep, self._room)  # stop before a write fails
        if self._display is not None:  # what runs now, at most once a second (a minute in a log)
            self._display.tick(lambda: self._header(list(self._rows.values())))

    def on_experiment_end(self, trials, **info):
        if self._display is not None:
            self._display.close()

    def _header(self, rows) -> str:
        return f"[{len(rows)}/{self.total} trials] {self._times(rows)}"

    def _times(self, rows) -> str:
        """`front 3 · 4m10s elapsed · ETA 12m30s`, the ETA from this run's pace."""
        elapsed = time.time() - self._t0
        new = len(rows) - self._done_at_start
        eta = f"ETA {duration(elapsed / new * max(0, self.total - len(rows)))}" if new > 0 else "ETA –"
        return f"front {len(pareto_front(rows))} · {duration(elapsed)} elapsed · {eta}"


def trial_line(done: int, total: int, row: dict, space: SearchSpace) -> str:
    """A finished trial's progress line up to its status, e.g.
    `[  3/16] nasty  ω=0.015 τ_A=4  teacher 91.20 · clone 80.15  ok`."""
    knobs = space.describe(row["defense"], row["knobs"] or {})
    accs = f"teacher {_pct(row['teacher_acc'])} · clone {_pct(row['student_acc'])}"
    return f"[{done:>3}/{total}] {row['defense'] or '?':<6} {knobs:<24} {accs}  {row['status']:<10}"


def attack_name_of(student_row: dict) -> str:
    """A student row's attack name, as `trainables.candidate.attack_name` gives it."""
    return f"{student_row['attack']} {student_row['student_arch']}"


def _pct(x) -> str:
    return "  –  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:5.2f}"


def trial_context(plan: Plan, upstream: dict, max_teacher_drop: float | None = None) -> TrialContext:
    """What every trial needs besides its candidate, from the upstream phases' results."""
    alone = {node.config.model.label: upstream[node.key]["test_acc"] for node in plan.scratch}
    smoothed = {node.config.model.label: upstream[node.key]["test_acc"] for node in plan.smoothed}
    baselines = {}
    for node in plan.normal_attacks:
        student = node.config.model.label
        baselines[attack_name(node.config)] = Baselines(scratch_acc=alone[student],
                                                        smoothed_acc=smoothed.get(student),
                                                        normal_kd_acc=upstream[node.key]["test_acc"])
    return TrialContext(
        normal_teacher_key=plan.teacher.key,
        normal_teacher_acc=upstream[plan.teacher.key]["test_acc"],
        defenses=plan.defenses,
        defense_template=plan.defense_template,
        attack_templates=plan.attack_templates,
        baselines=baselines,
        max_teacher_drop=max_teacher_drop,
        normal_teacher_job=plan.teacher,  # recomputed by a trial that finds it lost (`_worker`)
    )


def sweep_columns(opts, plan: Plan, context: TrialContext) -> SweepColumns:
    """What every row of the trials of `plan` shares (its seed's: a `confirm` replicate's plan
    is the preset's under another seed)."""
    preset = opts.preset
    return SweepColumns(
        dataset=preset.dataset["name"],
        teacher_arch=plan.teacher.config.model.label,
        seed=plan.teacher.config.seed,
        preset=preset.name,
        config_fingerprint=opts.fingerprint(),
        versions=versions(),
        normal_teacher_acc=context.normal_teacher_acc,
        protocol=preset.protocol,
        # a failed trial's student rows: every student × attack, with its baselines
        students=tuple(student_outcome(t, context.baselines[attack_name(t)], None, status="error")
                       for t in context.attack_templates),
    )


def search(opts, plan: Plan, upstream: dict, runtime: PhaseRuntime, concurrency: int) -> None:
    """Run the trials of the sweep to its budget, restoring Tune's state when there is one."""
    from ._study import open_study_storage

    storage = runtime.storage
    context = trial_context(plan, upstream, opts.max_teacher_drop)
    prune = not opts.preset.full_suite
    trainable = tune.with_resources(tune.with_parameters(tune_trial, context=context, runtime=runtime,
                                                         board=opts.name if prune else None,
                                                         batch=opts.preset.resources.get("batch_attacks", True)),
                                    runtime.resources.placement_group_factory())
    experiment = storage.path(opts.name, TUNE_DIR)
    fs = tune_filesystem(storage.fs)  # Tune's state replaced whole or not at all
    room = trial_bytes(storage, plan.teacher.key, 1 + len(context.attack_templates))
    check_room(storage, opts.name, room)
    # where this run writes: the storage given now, whatever Tune's saved state remembers
    bound = Here(storage, open_study_storage(opts.study_storage, storage, opts.name), room)
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        # Errored trials are not resumed: they used up their retries (FailureConfig), have an
        # `error` row, and the searcher has told Optuna they failed.
        with driving(bound):  # restore unpickles the searcher, study storage and callbacks
            tuner = tune.Tuner.restore(experiment, trainable, storage_filesystem=fs)
            print(f"resuming {opts.name!r} from {storage.uri(opts.name, TUNE_DIR)}", file=sys.stderr,
                  flush=True)
            grid = _fit(tuner, bound, opts.name)
        done = len(ResultStore(storage, opts.name).trial_rows())
        if done >= opts.preset.trials or not _spent(grid):  # finished, or stopped (Ctrl-C): resume goes on
            _record_searched(opts, storage)
            return
        # Every trial Tune's state holds has ended, yet the budget is not reached (trials of a run
        # whose rows were never written): restoring it again would never get further. The study
        # and the rows are what count: a new Tune run searches for the rest.
        spent = f"{TUNE_DIR}.spent-{time.strftime('%Y%m%dT%H%M%S')}"
        storage.fs.move(storage.path(opts.name, TUNE_DIR), storage.path(opts.name, spent))
        print(f"sweep {opts.name!r}: Tune's state ended with {done} of {opts.preset.trials} trials; "
              f"searching for the rest in a new Tune run (the old state kept in {spent}/)",
              file=sys.stderr, flush=True)

    preset = opts.preset
    columns = sweep_columns(opts, plan, context)
    searcher = DefenseSearch(preset, opts.name, bound.study_storage, opts.max_teacher_drop,
                             context.normal_teacher_acc)
    searcher.fail_orphans()
    done = len(ResultStore(storage, opts.name).trial_rows())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=preset.trials - done,
                                    max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=storage.path(opts.name),
            storage_filesystem=fs,
            verbose=0,
            callbacks=[SweepCallback(opts.name, storage, columns, preset.trials, preset.space, prune,
                                     context)],
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    with driving(bound):
        _fit(tuner, bound, opts.name)
    _record_searched(opts, storage)


def _spent(grid) -> bool:
    """Whether every trial of a finished `fit` ended (none stopped half-way by Ctrl-C)."""
    return all(result.metrics.get("final") or result.error is not None for result in grid)


def _fit(tuner, bound: Here, name: str):
    """`tuner.fit()`'s ResultGrid; a full storage, whichever write found it (ours, Tune's, the
    study's), as one StorageFullError."""
    try:
        return tuner.fit()
    except Exception as exc:
        stop = found(exc)
        if stop is not None:
            raise stop from None
        if is_full(exc):
            raise full(bound.storage, name, bound.room) from None
        raise


def _record_searched(opts, storage: Storage) -> None:
    """Write the ranges the search went over into the sweep's record (`SweepRecord.searched`):
    `pareto` and `report` judge range ends against them, not against the preset's."""
    import optuna

    from ._study import open_study_storage
    from .layout import read_sweep, write_json
    from .strategy import searched_ranges

    study = optuna.load_study(study_name=opts.name,
                              storage=open_study_storage(opts.study_storage, storage, opts.name))
    searched = searched_ranges(opts.preset.space, study.get_trials(deepcopy=False))
    record = read_sweep(storage, opts.name)
    write_json(storage, opts.name, "sweep.json", replace(record, searched=searched).to_json())
