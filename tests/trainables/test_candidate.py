"""A defense candidate evaluated in-process (no Ray) on tiny MNIST-1D, with phases run through
the artifact store as workers run them: statuses, the gate, and retries that skip finished work."""

import math
import random
from dataclasses import replace

import pytest

from orchestrator._resources import Resources
from orchestrator._worker import PhaseRuntime, run_job
from orchestrator.plan import make_plan
from results import Storage
from search_spaces import load_preset
from trainables.candidate import TrialContext, _summary, attack_name, candidate_jobs, run_candidate
from undistill.outcomes import Candidate


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return Storage(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def context(storage):
    plan = make_plan(load_preset("smoke"))
    teacher = run_job(plan.teacher, _in_process(storage))
    return TrialContext(
        normal_teacher_key=plan.teacher.key,
        normal_teacher_acc=teacher["test_acc"],
        defenses=plan.defenses,
        defense_template=plan.defense_template,
        attack_templates=plan.attack_templates,
    )


def _in_process(storage):
    return PhaseRuntime(storage, Resources(1, 0, students=0))


def _runner(storage, log=None):
    def run(jobs):
        results = [run_job(job, _in_process(storage)) for job in jobs]
        if log is not None:
            log.extend((job.name, r["cached"]) for job, r in zip(jobs, results, strict=True))
        return results
    return run


def test_stingy_keeps_the_teacher_and_reports_the_best_clone(context, storage):
    out = run_candidate(Candidate.of("stingy", k=2), context, _runner(storage), _runner(storage))
    assert out.status == "ok" and out.teacher_acc == context.normal_teacher_acc
    assert out.student_acc == max(s.student_acc for s in out.students)
    assert out.best_student in {s.student_arch for s in out.students}
    assert out.teacher_wall_s == 0 and out.compute_s == sum(s.wall_s for s in out.students)


def test_a_diverging_nasty_teacher_is_recorded_not_raised(context, storage):
    # An infinite KL weight makes the nasty loss non-finite at the first step: the phase ends
    # as diverged and the trial is recorded, not raised. (On MNIST-1D, AdamW's bounded steps
    # and BatchNorm keep even huge finite ω·τ_A² from overflowing.)
    students = []
    out = run_candidate(Candidate.of("nasty", omega=math.inf, tau_a=4.0), context,
                        _runner(storage), _runner(storage, students))
    assert out.status == "diverged" and out.student_acc is None
    assert all(s.status == "skipped" for s in out.students) and students == []


def test_the_gate_skips_students_of_a_teacher_that_lost_too_much(context, storage):
    gated = replace(context, max_teacher_drop=-100.0)  # every teacher is "too bad"
    students = []
    out = run_candidate(Candidate.of("nasty", omega=0.01, tau_a=4.0), gated,
                        _runner(storage), _runner(storage, students))
    assert out.status == "infeasible" and out.teacher_acc is not None
    assert all(s.status == "skipped" for s in out.students) and students == []


def test_a_retry_finds_every_finished_phase_in_the_artifact_store(context, storage):
    params = Candidate.of("nasty", omega=0.02, tau_a=4.0)
    first_log, again_log = [], []
    first = run_candidate(params, context, _runner(storage, first_log), _runner(storage, first_log))
    phases = 1 + len(context.attack_templates)  # the nasty teacher, then students × attacks
    assert [cached for _, cached in first_log] == [False] * phases
    # a retry after all but one clone: only that one is trained again
    teacher_job, student_jobs = candidate_jobs(params, context)
    storage.delete_dir("_artifacts", student_jobs[1].key)
    again = run_candidate(params, context, _runner(storage, again_log), _runner(storage, again_log))
    assert [cached for _, cached in again_log] == [True, True, False] + [True] * (phases - 3)
    assert again.student_acc == first.student_acc and again.teacher_acc == first.teacher_acc
    placed = again.students[0].ran
    assert placed.cached is True and placed.started_at <= placed.finished_at


@pytest.mark.parametrize("seed", range(20))
def test_the_objective_is_the_best_clone_over_every_student_and_attack(context, seed):
    # Against brute force: random outcomes for every student × attack; the trial's clone
    # accuracy is the highest over finished ones (the worst case for the defense).
    rng = random.Random(seed)
    names = [attack_name(t) for t in context.attack_templates]
    assert len(names) == len(set(names)) == 8  # smoke: 2 students × (KD at 2 temperatures, unlabelled, DAFL)
    results = {n: {"status": rng.choice(["ok", "ok", "diverged"]), "test_acc": round(rng.uniform(5, 95), 2),
                   "best_epoch": 1, "wall_s": 1.0} for n in names}
    out = _summary(Candidate.of("stingy", k=2), context, None, results, "ok", 90.0)
    finished = [(r["test_acc"], n) for n, r in results.items() if r["status"] == "ok"]
    if not finished:
        assert out.student_acc is None and out.best_attack is None
        return
    acc, name = max(finished)
    assert out.student_acc == acc and f"{out.best_attack} {out.best_student}" == name
    by_name = {f"{s.attack} {s.student_arch}": s for s in out.students}
    assert {n: by_name[n].student_acc for n in names} == {n: r["test_acc"] for n, r in results.items()}


def test_the_attacks_on_one_student_train_as_one_batch_each_stored_under_its_own_key(context, storage, tmp_path):
    """`run_batch`: the KD attacks on one student, as one stack; each result published under
    its phase's key (a retry finds it), the same clones as one by one; DAFL (its own inputs) in
    a group of its own, every student on one generator."""
    from orchestrator._worker import run_batch
    from trainables.phases import batch_groups

    _, students = candidate_jobs(Candidate.of("stingy", k=3), context)
    groups = batch_groups(students)
    kd = [g for g in groups if len(g) > 1 and g[0].config.attack.trains_on_real_data]
    assert kd and all(j.config.attack.trains_on_real_data for g in kd for j in g)
    (dafl,) = [g for g in groups if not g[0].config.attack.trains_on_real_data]
    assert [j.config.attack.name for j in dafl] == ["dafl", "dafl"]  # both students, one group
    assert len({j.config.model for j in dafl}) == 2
    runtime = _in_process(storage)
    together = run_batch(kd[0], runtime)
    assert all(r["batched"] and not r["cached"] and r["batch_size"] == len(kd[0]) for r in together)
    assert [r["cached"] for r in run_batch(kd[0], runtime)] == [True] * len(kd[0])  # a retry trains nothing
    from orchestrator._worker import data_cache
    from orchestrator.artifacts import ArtifactStore
    from trainables.phases import MODEL_FILE, run_phase

    weights = ArtifactStore(storage).file(kd[0][0].teacher_key, MODEL_FILE)
    alone = [run_phase(job.config, tmp_path / job.key, teacher_weights=weights, data_cache=data_cache(storage))
             for job in kd[0]]
    for a, b in zip(together, alone, strict=True):
        assert not b["batched"] and abs(a["test_acc"] - b["test_acc"]) <= 0.5


def test_a_teacher_lost_after_it_was_published_is_computed_again_by_the_phase_that_needs_it(tmp_path):
    """The normal teacher's weights deleted and a nasty teacher's corrupted after both were
    published: a student of the nasty teacher computes both again (the nasty one needs the
    normal one), each once, and trains; the next student finds them intact. A phase with no way
    to compute its teacher (no `teacher_job`) still fails with `ArtifactMissing`."""
    import json

    from _presets import one_attack_smoke

    from orchestrator._worker import ArtifactMissing

    storage, runtime = Storage(tmp_path / "sweeps"), _in_process(Storage(tmp_path / "sweeps"))
    plan = make_plan(load_preset(config_file=one_attack_smoke(tmp_path, epochs=2)))
    normal = run_job(plan.teacher, runtime)
    ctx = TrialContext(plan.teacher.key, normal["test_acc"], plan.defenses, plan.defense_template,
                       plan.attack_templates, normal_teacher_job=plan.teacher)
    nasty, students = candidate_jobs(Candidate.of("nasty", omega=0.1, tau_a=4.0), ctx)
    assert students[0].teacher_job is nasty and nasty.teacher_job is plan.teacher
    run_job(nasty, runtime)
    artifacts = tmp_path / "sweeps" / "_artifacts"
    (artifacts / plan.teacher.key / "model.pt").unlink()
    weights = artifacts / nasty.key / "model.pt"
    weights.write_bytes(b"x" * weights.stat().st_size)

    with pytest.raises(ArtifactMissing, match="is not intact"):
        run_job(replace(students[0], teacher_job=None), runtime)
    first = run_job(students[0], runtime)
    assert first["status"] == "ok" and not first["cached"]
    second = run_job(students[1], runtime)
    assert second["status"] == "ok" and not second["cached"]
    for job in (plan.teacher, nasty):
        assert json.loads((artifacts / job.key / "result.json").read_text())["recomputed"] is True
        history = (artifacts / ".locks" / f"{job.key}.lock").read_text().splitlines()
        assert len(history) == 1 and f"recomputing {job.name} {job.key}" in history[0]
    assert storage.exists("_artifacts", nasty.key, "MANIFEST.json")
