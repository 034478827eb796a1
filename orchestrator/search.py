"""The Optuna side of a sweep: a two-objective study (see `_study` for where it lives) and a searcher that only lets
final, finite results into it.

Ray's OptunaSearch tells Optuna COMPLETE with whatever a trial reported last; a NaN makes the
tell fail and leaves the Optuna trial RUNNING forever. Here:
    ok, dominated           -> COMPLETE (teacher_acc, student_acc), with the drop constraint
                               (dominated: student_acc is a lower bound, see trainables.pruning)
    infeasible, diverged    -> PRUNED with a violated constraint: the sampler steers away
    anything else           -> FAIL (errors, partial or non-finite results)
    a repeated candidate    -> PRUNED with user attribute `repeat_of`, never run (see `suggest`)
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from dataclasses import dataclass
from functools import partial

import optuna
from ray.tune.search.optuna import OptunaSearch

from search_spaces import Preset, start_points, suggest_candidate
from undistill.space import focus_drop

from ._disk import check_room
from ._here import here
from ._trial import OBJECTIVES, OUTCOME
from .strategy import FrontSampler, candidate_key

MODES = ["max", "min"]  # for OBJECTIVES: teacher accuracy up, best clone accuracy down
DROP_CONSTRAINT = "teacher_drop_over_limit"
DIVERGED_CONSTRAINT = "diverged"
_REDRAWS = 40  # asks per suggestion before accepting a repeat; half from the sampler, half random

logger = logging.getLogger(__name__)


def make_sampler(name: str, seed: int, preset: Preset | None = None, *, normal_teacher_acc: float | None = None,
                 max_teacher_drop: float | None = None) -> optuna.samplers.BaseSampler:
    """The sampler a preset's `search.sampler` (or `--sampler`) names; `bench/search.py`
    measures each of them. Explicit arguments: Optuna 5 changed TPE's defaults. `front`, the
    default, needs the preset's space (see `strategy`), and steers only by teachers within
    `search.focus_teacher_drop` (or `max_teacher_drop`, when tighter) of the normal teacher."""
    if name == "front":
        floor = 0.0  # the normal teacher unknown (a test's searcher): every teacher steers
        if normal_teacher_acc is not None:
            floor = max(0.0, normal_teacher_acc - focus_drop(preset.focus_teacher_drop, max_teacher_drop))
        return FrontSampler(preset.space, seed=seed, start=start_points(preset), extend=preset.extend_ranges,
                            reference=(floor, None))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        # The space is conditional (ω, τ_A for nasty, k for stingy): the GP models only what
        # every trial shares (the defense) and draws the knobs from its independent sampler.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=6, warn_independent_sampling=False)
    if name == "nsga2":
        # Optuna's default population of 50 would be random search for a whole sweep.
        return _NSGAIISampler(seed=seed, population_size=8)
    # A handful of random start-up trials, then TPE; constant_liar keeps concurrent trials from
    # being sent to the same spot.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=False,
                                      constant_liar=True)


_LOCK = type(threading.Lock())


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II as Tune can save it. Tune pickles the searcher, sampler and all, into the
    experiment's state; Optuna ≥ 5.1's genetic samplers hold a `threading.Lock`, which pickle
    refuses. The locks are left out and made anew on restore."""

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if not isinstance(v, _LOCK)}
        state["_undistill_locks"] = [k for k, v in self.__dict__.items() if isinstance(v, _LOCK)]
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name in state.pop("_undistill_locks", []):
            state[name] = threading.Lock()
        self.__dict__.update(state)


# Optuna names a GA sampler's study attributes after its class (set when it is subclassed): keep
# NSGA-II's own, so that a sweep started with Optuna's class resumes its generations with this one
for _key in ("_GENERATION_KEY", "_PARENT_CACHE_KEY_PREFIX"):
    if hasattr(optuna.samplers.NSGAIISampler, _key):
        setattr(_NSGAIISampler, _key, getattr(optuna.samplers.NSGAIISampler, _key))


class DefenseSearch(OptunaSearch):
    def __init__(self, preset: Preset, sweep_name: str, storage: optuna.storages.BaseStorage,
                 max_teacher_drop: float | None, normal_teacher_acc: float | None = None):
        """`storage`: where the study lives (see `_study.open_study_storage`); `normal_teacher_acc`:
        the upstream normal teacher's, which the default sampler's focus is measured from."""
        self._max_teacher_drop = max_teacher_drop
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        super().__init__(
            space=partial(suggest_candidate, preset=preset),
            metric=list(OBJECTIVES),
            mode=MODES,
            points_to_evaluate=None,  # enqueued below, once per study, not once per start
            sampler=make_sampler(preset.sampler, preset.seed, preset, normal_teacher_acc=normal_teacher_acc,
                                 max_teacher_drop=max_teacher_drop),
            study_name=sweep_name,
            storage=storage,
        )
        if not isinstance(self._ot_study.sampler, FrontSampler):  # it starts with them itself
            self.enqueue_start_points(start_points(preset))
        if self._ot_study.metric_names is None:  # optuna-dashboard then names its axes
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(list(OBJECTIVES))

    def enqueue_start_points(self, points: list[dict]) -> None:
        for point in points:
            # skip_if_exists: a sweep restarted before Tune saved its state must not queue the
            # paper's points a second time.
            self._ot_study.enqueue_trial(point, skip_if_exists=True)

    def fail_orphans(self) -> int:
        """Mark FAIL every RUNNING Optuna trial this searcher does not track: a driver killed
        mid-trial leaves one behind, and the restored searcher will never tell it."""
        tracked = {t.number for t in self._ot_trials.values()}
        orphans = [t for t in self._ot_study.get_trials(deepcopy=False,
                                                         states=(optuna.trial.TrialState.RUNNING,))
                   if t.number not in tracked or _is_done(self, t.number)]
        for t in orphans:
            self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        return len(orphans)

    def suggest(self, trial_id: str) -> dict | None:
        """The sampler's next candidate, never one this sweep has already run or is running.

        Trials are deterministic for a candidate, so a repeat (TPE proposes the best discrete k
        again and again) would only spend budget. A repeat is told to Optuna as PRUNED, which
        TPE ranks below finished trials, and the sampler is asked again; if it keeps insisting,
        a random draw takes its place.
        """
        sampler = self._ot_study.sampler
        try:
            for attempt in range(_REDRAWS):
                if attempt == _REDRAWS // 2:  # the sampler insists: draw at random instead
                    self._ot_study.sampler = optuna.samplers.RandomSampler(seed=attempt)
                params = self._ask(trial_id)
                repeat = self._repeat_of(params, self._ot_trials[trial_id].number)
                if repeat is None:
                    return params
                ot_trial = self._ot_trials.pop(trial_id)
                ot_trial.set_user_attr("repeat_of", repeat)
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        finally:
            self._ot_study.sampler = sampler
        return self._ask(trial_id)  # nothing new found: a repeat is better than stalling

    def _ask(self, trial_id: str) -> dict | None:
        with warnings.catch_warnings():
            # Ray times the define-by-run space function, which here includes the sampler's own
            # work (GP fits a model per ask, over a second) and warns as if it trained something.
            warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space`")
            return super().suggest(trial_id)

    def _repeat_of(self, params: dict, number: int) -> int | None:
        key = candidate_key(params)
        for t in self._ot_study.get_trials(deepcopy=False):
            if (t.number != number and t.state != optuna.trial.TrialState.FAIL
                    and "repeat_of" not in t.user_attrs and candidate_key(t.params) == key):
                return t.number
        return None

    def restore(self, checkpoint_path: str):
        """Tune calls this when it restores an experiment: fail what a killed driver orphaned."""
        super().restore(checkpoint_path)
        failed = self.fail_orphans()
        if failed:
            logger.warning("marked %d Optuna trial(s) left RUNNING by an earlier driver as FAIL", failed)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        bound = here()
        if error and bound is not None:  # a full disk is not the candidate's fault: leave it
            check_room(bound.storage, self._study_name, bound.room)  # RUNNING, to run again
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        if _already_told(self, ot_trial):
            # A driver killed after telling Optuna but before Tune saved its state: Tune restores
            # the trial and runs it again (its phases come from the artifact store); Optuna keeps
            # the first outcome, and touching the finished trial would raise.
            self._completed_trials.add(trial_id)
            return None
        ot_trial.set_user_attr("tune_trial_id", trial_id)  # the Parquet row's trial_id
        verdict = told(result, self._max_teacher_drop)
        for key, value in verdict.user_attrs.items():
            ot_trial.set_user_attr(key, value)
        for key, value in verdict.constraints.items():
            ot_trial.set_constraint(key, value)
        if verdict.state == optuna.trial.TrialState.COMPLETE:
            return super().on_trial_complete(trial_id, verdict.values)
        return super().on_trial_complete(trial_id, None,
                                         error=error or verdict.state == optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class Told:
    """What the study is told of a trial: its state, its objectives (COMPLETE only), its user
    attributes and constraints."""

    state: optuna.trial.TrialState
    values: dict[str, float] | None
    user_attrs: dict
    constraints: dict[str, float]


def told(result: dict | None, max_teacher_drop: float | None) -> Told:
    """What a trial's final result (`_trial.final_report`; None: it failed) tells the study: the
    searcher's tell, and the one a trial run again outside Tune adds (`_retry`)."""
    final = bool(result and result.get("final"))
    status = result.get("status") if final else None
    attrs, constraints = {}, {}
    if status:
        attrs["status"] = status
        outcome = result.get(OUTCOME)
        if outcome is not None and outcome.best_attack is not None:
            attrs["best_attack"] = outcome.best_attack
        if _finite(result.get("teacher_drop")):
            attrs["teacher_drop"] = result["teacher_drop"]
    limit = max_teacher_drop
    # dominated: attacks were skipped once it was beaten; its clone is a lower bound, told
    # as it is (the candidate is off the front either way)
    if status in ("ok", "dominated") and all(_finite(result.get(m)) for m in OBJECTIVES):
        if limit is not None:
            constraints[DROP_CONSTRAINT] = result["teacher_drop"] - limit
        return Told(optuna.trial.TrialState.COMPLETE, {m: result[m] for m in OBJECTIVES}, attrs, constraints)
    if status == "infeasible" and limit is not None:
        constraints[DROP_CONSTRAINT] = result["teacher_drop"] - limit
    elif status == "diverged":
        constraints[DIVERGED_CONSTRAINT] = 1.0
    # Partial or non-finite results never enter the study as COMPLETE: gated and diverged
    # trials are PRUNED (with their violated constraint), anything else is a FAIL.
    gated = status in ("infeasible", "diverged")
    return Told(optuna.trial.TrialState.PRUNED if gated else optuna.trial.TrialState.FAIL, None, attrs,
                constraints)


def _already_told(search: DefenseSearch, ot_trial) -> bool:
    stored = search._ot_study._storage.get_trial(ot_trial._trial_id)
    return stored.state.is_finished()


def _is_done(search: DefenseSearch, number: int) -> bool:
    return any(t.number == number and tid in search._completed_trials
               for tid, t in search._ot_trials.items())


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
