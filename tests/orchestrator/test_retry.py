"""`resume` runs again, for real, a trial that failed only because an artifact was missing: the
row and study trial such a trial left before lost teachers were recomputed (an `error` row naming
`ArtifactMissing`, its Optuna trial FAIL), put into a finished smoke sweep."""

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from _outcomes import outcome
from _readme import fault_message
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from orchestrator._retry import _tell
from results import ResultStore, Storage

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=600, env=ENV, cwd=ROOT)


def _study(storage):
    return optuna.load_study(study_name="smoke", storage=f"sqlite:///{storage / 'smoke' / 'study.db'}")


def _lost(storage, row: dict, students: list[dict]) -> None:
    """`row`'s trial as the driver recorded it when its teacher was lost (before 87a3344): an
    error row naming ArtifactMissing, its students `error`, its Optuna trial FAIL with only the
    Tune trial's id; and the trial's own artifacts gone (its phases never finished)."""
    store = ResultStore(Storage(str(storage)), "smoke")
    phases = json.loads((storage / "smoke" / "upstream.json").read_text())["phases"]
    (teacher,) = [p["key"] for p in phases if p["name"] == "teacher"]
    error = (f"orchestrator._worker.ArtifactMissing: kd-T4 mlp(hidden=32): its teacher {teacher} is not "
             f"intact in {storage / '_artifacts'}")
    numbers = ("teacher_acc", "teacher_drop", "student_acc", "clone_lower_bound", "best_student", "best_attack",
               "kd_temperature", "kd_alpha", "compute_s", "teacher_wall_s", "teacher_cached")
    failed = {**row, **dict.fromkeys(numbers), "status": "error", "error": error}
    store.write_trial(failed, [{**s, "status": "error", "student_acc": None} for s in students])
    store.compact(1, 1)  # as a finished sweep holds it: in a compacted part
    for result in (storage / "_artifacts").glob("*/result.json"):
        config = json.loads(result.read_text())["config"]
        if config.get("defense") == row["defense"] and config.get("knobs") == row["knobs"]:
            shutil.rmtree(result.parent)
    db = sqlite3.connect(storage / "smoke" / "study.db")
    with db:
        (trial,) = db.execute("SELECT trial_id FROM trial_user_attributes WHERE key = 'tune_trial_id' "
                              "AND value_json = ?", (json.dumps(row["trial_id"]),)).fetchone()
        db.execute("UPDATE trials SET state = 'FAIL' WHERE trial_id = ?", (trial,))
        db.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial,))
        db.execute("DELETE FROM trial_user_attributes WHERE trial_id = ? AND key != 'tune_trial_id'", (trial,))
    db.close()


@pytest.mark.slow
def test_resume_retries_a_trial_that_failed_only_for_a_missing_artifact_under_its_own_id(finished_smoke, tmp_path):
    storage = tmp_path / "sweeps"
    shutil.copytree(finished_smoke, storage, symlinks=True)  # a finished sweep of its own to damage
    store = ResultStore(Storage(str(storage)), "smoke")
    before = {r["trial_id"]: r for r in store.trial_rows()}
    (lost,) = [r for r in before.values() if r["defense"] == "nasty"][:1]
    _lost(storage, lost, [s for s in store.student_rows() if s["trial_id"] == lost["trial_id"]])
    assert [r["status"] for r in store.trial_rows()].count("error") == 1
    old = [t for t in _study(storage).trials if t.user_attrs.get("tune_trial_id") == lost["trial_id"]]
    assert [t.state.name for t in old] == ["FAIL"]

    resumed = _cli("resume", "smoke", "--storage", str(storage))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"retrying trial {lost['trial_id']} (nasty ω=" in resumed.stderr
            and fault_message("A trial that failed only because") in resumed.stderr), resumed.stderr[-3000:]

    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert sorted(t["trial_id"] for t in trials) == sorted(before)  # each once, the retry under its old id
    assert all(t["status"] == "ok" and t["error"] is None for t in trials)
    (again,) = [t for t in trials if t["trial_id"] == lost["trial_id"]]
    assert again["teacher_cached"] is False  # its defended teacher trained again...
    for key in ("teacher_acc", "student_acc"):  # ... to the same numbers: the sweep's own context
        assert math.isclose(again[key], lost[key]), (key, again[key], lost[key])
    students = pq.read_table(storage / "smoke" / "results" / "students").to_pylist()
    mine = [s for s in students if s["trial_id"] == lost["trial_id"]]
    assert len(mine) == 2 and all(s["status"] == "ok" for s in mine)
    assert len(students) == 2 * len(before)

    study = _study(storage).trials
    states = [t.state.name for t in study]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states and states.count("FAIL") == 1
    (retry,) = [t for t in study if "retry_of" in t.user_attrs]
    assert retry.user_attrs["retry_of"] == old[0].number and retry.params == old[0].params
    assert retry.user_attrs["tune_trial_id"] == lost["trial_id"] and retry.user_attrs["status"] == "ok"
    assert retry.values == [again["teacher_acc"], again["student_acc"]]

    nothing = _cli("resume", "smoke", "--storage", str(storage))
    assert nothing.returncode == 0 and "already finished" in nothing.stderr, nothing.stderr[-3000:]
    assert "retrying" not in nothing.stderr
    assert len(_study(storage).trials) == len(study)


def _failed_study(named: bool) -> optuna.Study:
    """A study holding the FAIL trial a lost artifact left (named after its Tune trial, or not:
    failed without being named) beside a finished one."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    space = {"defense": CategoricalDistribution(["nasty", "stingy"]), "omega": FloatDistribution(0.001, 1.0, log=True),
             "tau_a": FloatDistribution(1.0, 8.0)}
    study.add_trial(optuna.trial.create_trial(params={"defense": "nasty", "omega": 0.5, "tau_a": 2.0},
                                              distributions=space, values=[80.0, 30.0]))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, distributions=space,
                                              params={"defense": "nasty", "omega": 0.1, "tau_a": 4.0},
                                              user_attrs={"tune_trial_id": "abc"} if named else {}))
    return study


@pytest.mark.parametrize("named", [True, False])
def test_a_retry_is_told_to_the_study_once_with_the_old_trials_params(named):
    """Told before its row is written: a driver killed in between runs it again at the next
    `resume`, which must not add a second finished trial."""
    study = _failed_study(named)
    done = outcome("nasty", {"omega": 0.1, "tau_a": 4.0}, teacher_acc=90.0, student_acc=40.0,
                   best_attack="kd-T4")
    for _ in range(2):
        _tell(study, {"trial_id": "abc"}, done, max_teacher_drop=10.0)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    retry = study.trials[2]
    assert retry.params == study.trials[1].params and retry.distributions == study.trials[1].distributions
    assert retry.values == [90.0, 40.0]
    assert retry.user_attrs == {"tune_trial_id": "abc", "retry_of": 1, "status": "ok", "best_attack": "kd-T4",
                                "teacher_drop": 6.0}
    assert retry.system_attrs["constraints:teacher_drop_over_limit"] == -4.0  # as the searcher tells it


def test_a_retried_teacher_past_the_limit_is_pruned_with_its_violated_constraint():
    study = _failed_study(named=True)
    _tell(study, {"trial_id": "abc"}, outcome("nasty", {"omega": 0.1, "tau_a": 4.0}, status="infeasible",
                                              teacher_acc=70.0), max_teacher_drop=10.0)
    retry = study.trials[-1]
    assert retry.state == TrialState.PRUNED and retry.user_attrs["retry_of"] == 1
    assert retry.system_attrs["constraints:teacher_drop_over_limit"] == 16.0
