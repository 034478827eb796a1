"""`resume` runs again the trials that failed only because an artifact was missing.

Such a trial ended with status `error` and an `error` that names `ArtifactMissing`
(`_worker._teacher_weights`): its teacher was lost mid-sweep, before a lost teacher was
recomputed (`PhaseJob.teacher_job`), or its recomputation failed too. Nothing was wrong with the
candidate, so its budget is given back: once the search has reached its budget (or on a sweep
already finished), each such candidate runs again as `confirm` runs a replicate (`_outside`),
with the sweep's own context (its teacher gate included) and columns.

Tune cannot do it: restored, it reruns every errored trial or none (`restart_errored`), and a
trial that raises every time must not run again. So the new row is written under the old trial
id, replacing the error row (the store keeps a trial id's newest row), and the study, whose old
trial is FAIL and stays so, gets a finished trial of the same params (`retry_of`: the old
trial's number), told as the searcher tells a trial's result (`search.told`): the study's
COMPLETE trials match the ok rows. Optuna is told before the row is written, as Tune's searcher
is before its callback: a driver killed between the two runs the candidate again at the next
`resume`, which finds the study already told.
"""

from __future__ import annotations

import sys
import time

import optuna

from results import ResultStore, pareto_front, trial_rows
from undistill.outcomes import CandidateOutcome

from ._killpoints import BEFORE_TRIAL_WRITE, kill_point
from ._outside import Outside, row_candidate, run_outside
from ._progress import duration
from ._worker import PhaseRuntime
from .curves import trial_epoch_rows
from .plan import Plan
from .strategy import candidate_key

LOST = "ArtifactMissing"  # how a trial's `error` names a lost artifact (`_worker.ArtifactMissing`)
RETRY_OF = "retry_of"  # the user attribute of the study's trial for a retry: the old trial's number


def lost_artifact(row: dict) -> bool:
    """A trial row that failed only because an artifact was missing (and has a candidate)."""
    return row["status"] == "error" and LOST in (row["error"] or "") and row["defense"] is not None


def retry_lost(opts, plan: Plan, upstream: dict, runtime: PhaseRuntime, concurrency: int, batch: bool) -> int:
    """Run every trial of the sweep `opts` that failed only because an artifact was missing again,
    `concurrency` at once; each one's study trial and rows as it ends. How many ran."""
    # Tune's modules here, not above: `lost_artifact` is asked on every `resume` of a finished
    # sweep, which otherwise answers at once
    from ._driver import sweep_columns, trial_context, trial_line
    from ._study import open_study_storage

    storage = runtime.storage
    store = ResultStore(storage, opts.name)
    held = {r["trial_id"]: r for r in store.trial_rows()}
    lost = [r for r in held.values() if lost_artifact(r)]
    if not lost:
        return 0
    context = trial_context(plan, upstream, opts.max_teacher_drop)
    columns = sweep_columns(opts, plan, context)
    study = optuna.load_study(study_name=opts.name,
                              storage=open_study_storage(opts.study_storage, storage, opts.name))
    space = opts.preset.space
    started = time.time()

    def done(run: Outside, outcome: CandidateOutcome | None, error: str | None) -> None:
        old = run.tag
        if outcome is not None and error is None:  # failed again: its old row and FAIL say so
            _tell(study, old, outcome, opts.max_teacher_drop)
        row, students = trial_rows(sweep=opts.name, trial_id=old["trial_id"], candidate=run.candidate,
                                   outcome=outcome, context=columns, error=error)
        curves = trial_epoch_rows(storage, opts.name, old["trial_id"], run.candidate, context)
        kill_point(BEFORE_TRIAL_WRITE)
        store.write_trial(row, students, curves)
        held[row["trial_id"]] = row
        rows = list(held.values())
        _say(f"{trial_line(len(rows), opts.preset.trials, row, space)} front {len(pareto_front(rows))} · "
             f"retried in {duration(time.time() - started)}")

    runs = []
    for old in lost:
        candidate = row_candidate(old, space)
        _say(f"retrying trial {old['trial_id']} ({candidate.defense} "
             f"{space.describe(candidate.defense, candidate.values)}): it failed only because an "
             "artifact was missing")
        runs.append(Outside(f"retry {old['trial_id']}", candidate, context, old))
    run_outside(runs, runtime, concurrency, batch, done)
    return len(runs)


def _tell(study: optuna.Study, old: dict, outcome: CandidateOutcome, max_teacher_drop: float | None) -> None:
    """Add the retry's finished trial to the study, once, with the old trial's params and
    distributions (what the sampler drew)."""
    from ._trial import OBJECTIVES, final_report
    from .search import told

    trials = study.get_trials(deepcopy=False)
    was = _old_trial(trials, old, outcome.candidate.params())
    if was is None:  # no study trial to take the params from (never told): the row still counts
        return
    if any(t.user_attrs.get(RETRY_OF) == was.number and t.state != optuna.trial.TrialState.FAIL
           for t in trials):
        return  # told by a driver killed before the row's write
    verdict = told(final_report(outcome), max_teacher_drop)
    study.add_trial(optuna.trial.create_trial(
        state=verdict.state, params=was.params, distributions=was.distributions,
        values=[verdict.values[m] for m in OBJECTIVES] if verdict.values is not None else None,
        user_attrs={**verdict.user_attrs, "tune_trial_id": old["trial_id"], RETRY_OF: was.number},
        constraints=verdict.constraints or None))


def _old_trial(trials, old: dict, params: dict):
    """The study's trial of the row `old`: the one the searcher named after its Tune trial, else
    a failed one of the same candidate (a searcher that failed it without naming it)."""
    named = [t for t in trials if t.user_attrs.get("tune_trial_id") == old["trial_id"]
             and RETRY_OF not in t.user_attrs]
    if named:
        return named[0]
    key = candidate_key(params)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and RETRY_OF not in t.user_attrs
              and "defense" in t.params and candidate_key(t.params) == key]
    return failed[0] if failed else None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
