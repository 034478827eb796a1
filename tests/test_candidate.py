"""A defense candidate evaluated in-process (no Ray) on tiny MNIST-1D: statuses and retries."""

import math
from dataclasses import replace

import pytest

from orchestrator.plan import make_plan
from search_spaces import load_preset
from trainables.candidate import TrialContext, run_candidate
from trainables.phases import MODEL_FILE, run_phase


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    plan = make_plan(load_preset("smoke"))
    teacher = run_phase(plan.teacher.config, root / "teacher", data_cache=root / "data")
    return TrialContext(
        normal_teacher_weights=str(root / "teacher" / MODEL_FILE),
        normal_teacher_key=plan.teacher.key,
        normal_teacher_acc=teacher["test_acc"],
        nasty_template=plan.nasty_template,
        kd_templates=plan.kd_templates,
        data_cache=str(root / "data"),
    )


def test_stingy_keeps_the_teacher_and_reports_the_best_clone(context, tmp_path):
    out = run_candidate({"defense": "stingy", "k": 2}, context, tmp_path)
    assert out["status"] == "ok" and out["teacher_acc"] == context.normal_teacher_acc
    assert out["student_acc"] == max(s["student_acc"] for s in out["students"])
    assert out["best_student"] in {s["student_arch"] for s in out["students"]}
    assert not list(tmp_path.glob("*.ckpt"))


def test_a_diverging_nasty_teacher_is_recorded_not_raised(context, tmp_path):
    # An infinite KL weight makes the nasty loss non-finite at the first step: the phase ends
    # as diverged and the trial is recorded, not raised. (On MNIST-1D, AdamW's bounded steps
    # and BatchNorm keep even huge finite ω·τ_A² from overflowing.)
    out = run_candidate({"defense": "nasty", "omega": math.inf, "tau_a": 4.0}, context, tmp_path)
    assert out["status"] == "diverged" and math.isnan(out["student_acc"])
    assert all(s["status"] == "skipped" for s in out["students"])


def test_the_gate_skips_students_of_a_teacher_that_lost_too_much(context, tmp_path):
    gated = replace(context, max_teacher_drop=-100.0)  # every teacher is "too bad"
    out = run_candidate({"defense": "nasty", "omega": 0.01, "tau_a": 4.0}, gated, tmp_path)
    assert out["status"] == "infeasible" and not math.isnan(out["teacher_acc"])
    assert all(s["status"] == "skipped" for s in out["students"])


def test_a_retry_skips_the_phases_it_finished(context, tmp_path):
    seen = []
    first = run_candidate({"defense": "nasty", "omega": 0.01, "tau_a": 4.0}, context, tmp_path,
                          on_phase=lambda state: seen.append(dict(state, students=dict(state["students"]))))
    assert len(seen) == 1 + len(context.kd_templates)
    # Restart from the state after the teacher and the first student: only the rest is trained.
    after_first_student = seen[1]
    calls = []
    again = run_candidate({"defense": "nasty", "omega": 0.01, "tau_a": 4.0}, context, tmp_path,
                          state=after_first_student, on_phase=lambda state: calls.append(1))
    assert len(calls) == len(context.kd_templates) - 1
    assert again["student_acc"] == first["student_acc"] and again["teacher_acc"] == first["teacher_acc"]


def test_the_best_clone_is_chosen_among_finished_students_only(context):
    from trainables.candidate import _summary

    first, second = (t.model.label for t in context.kd_templates)
    state = {"students": {
        first: {"status": "diverged", "test_acc": None, "best_epoch": 0, "wall_s": 1.0},
        second: {"status": "ok", "test_acc": 61.0, "best_epoch": 3, "wall_s": 1.0},
    }}
    out = _summary({"defense": "stingy", "k": 2}, context, state, "ok", 90.0)
    assert out["best_student"] == second and out["student_acc"] == 61.0
