"""Dominance pruning of attacks: the rule against brute force on random fronts, the attacks'
order, and the front unchanged by pruning when the same candidates run with it on and off."""

import itertools
import random

import pytest

from orchestrator.plan import make_plan
from results import pareto_front
from search_spaces import load_preset
from trainables.candidate import TrialContext, attack_name, run_candidate
from trainables.pruning import Pruning, attack_order, dominated, waves
from undistill.outcomes import Candidate


def _on_front(point, others) -> bool:
    """Brute force: no other point is at least as good on both axes and better on one."""
    t, c = point
    return not any(a >= t and b <= c and (a, b) != (t, c) for a, b in others)


@pytest.mark.parametrize("seed", range(40))
def test_the_rule_is_brute_force_dominance_and_a_higher_clone_never_escapes_it(seed):
    rng = random.Random(seed)
    grid = [round(rng.uniform(80, 98) * 2) / 2 for _ in range(12)]  # ties happen on a coarse grid
    front = [(rng.choice(grid), rng.choice(grid)) for _ in range(rng.randint(0, 8))]
    for _ in range(50):
        point = (rng.choice(grid), rng.choice(grid))
        assert dominated(point, front) == (not _on_front(point, front))
        if dominated(point, front):  # more attacks only raise the clone: still beaten
            assert all(dominated((point[0], point[1] + up), front) for up in (0.0, 0.5, 3.0, 20.0))


def test_nothing_unknown_is_dominated():
    assert not dominated((90.0, float("nan")), [(95.0, 80.0)])
    assert not dominated((90.0, 85.0), [])
    assert not dominated((90.0, 85.0), [(90.0, 85.0)])  # a tie is on the front with its twin
    assert dominated((90.0, 85.0), [(90.0, 84.9)])


def test_attacks_are_ordered_strongest_first_and_learn_from_the_sweep():
    names = ["kd-T1 mlp", "kd-T4 cnn", "dafl cnn"]
    normal = {"kd-T1 mlp": 70.0, "kd-T4 cnn": 96.0, "dafl cnn": 40.0}
    assert attack_order(names, normal) == ["kd-T4 cnn", "kd-T1 mlp", "dafl cnn"]
    # defended teachers where DAFL made the best clone, twice: it moves up
    seen = [{"kd-T1 mlp": 60.0, "kd-T4 cnn": 50.0, "dafl cnn": 80.0}] * 2
    assert attack_order(names, normal, seen)[0] == "dafl cnn"
    assert attack_order(names, {}) == names  # nothing known: the suite's order
    assert waves(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


def _context():
    plan = make_plan(load_preset("smoke"))
    return TrialContext(normal_teacher_key="normal", normal_teacher_acc=96.0, defenses=plan.defenses,
                        defense_template=plan.defense_template, attack_templates=plan.attack_templates)


def _world(seed, context):
    """Random but fixed outcomes: each candidate's teacher, and every attack's clone of it."""
    rng = random.Random(seed)
    names = [attack_name(t) for t in context.attack_templates]
    world = {}
    for i in range(24):
        candidate = Candidate.of("nasty", omega=0.01 * (i + 1), tau_a=4.0)
        strength = rng.uniform(0, 10)
        world[candidate] = (96.0 - strength + rng.uniform(-1, 1),
                            {n: 90.0 - strength + rng.uniform(-4, 4) - 20 * (n.startswith("dafl")) for n in names})
    return world


def _sweep(world, context, prune: bool, concurrency: int, seed: int):
    """The candidates run `concurrency` at a time, in a seeded order, each pruning against the
    front of the trials finished before each of its waves ends."""
    rows, ran = [], []
    order = list(world)
    random.Random(seed).shuffle(order)

    def front():
        return [(r["teacher_acc"], r["student_acc"]) for r in rows if r["status"] == "ok"]

    for start in range(0, len(order), concurrency):
        batch = order[start:start + concurrency]
        for candidate in batch:
            teacher_acc, clones = world[candidate]

            def teacher(jobs, acc=teacher_acc):
                return [{"status": "ok", "test_acc": acc, "wall_s": 1.0} for _ in jobs]

            def students(jobs, clones=clones):
                ran.extend(j.name for j in jobs)
                return [{"status": "ok", "test_acc": clones[j.name], "wall_s": 1.0} for j in jobs]

            names = list(clones)
            pruning = Pruning(order=tuple(attack_order(names, {n: 95.0 - i for i, n in enumerate(names)})),
                              wave=2, front=front) if prune else None
            out = run_candidate(candidate, context, teacher, students, pruning)
            rows.append({"candidate": candidate, "status": out.status, "teacher_acc": out.teacher_acc,
                         "student_acc": out.student_acc, "teacher_drop": out.teacher_drop, "outcome": out})
    return rows, ran


@pytest.mark.parametrize("seed", range(12))
def test_the_front_is_the_same_with_pruning_on_and_off(seed):
    context = _context()
    world = _world(seed, context)
    for concurrency in (1, 3):
        full, ran_full = _sweep(world, context, prune=False, concurrency=concurrency, seed=seed)
        pruned, ran_pruned = _sweep(world, context, prune=True, concurrency=concurrency, seed=seed)
        assert len(ran_full) == len(world) * len(context.attack_templates)

        def points(rows):
            return sorted((r["candidate"].knobs, r["teacher_acc"], r["student_acc"]) for r in pareto_front(rows))

        assert points(pruned) == points(full)
        by_candidate = {r["candidate"]: r for r in full}
        for r in pruned:
            out = r["outcome"]
            if r["status"] == "dominated":
                # a lower bound of the full suite's clone, from the attacks that ran; the rest skipped
                assert out.clone_lower_bound and r["student_acc"] <= by_candidate[r["candidate"]]["student_acc"]
                assert {s.status for s in out.students} == {"ok", "skipped"}
                assert r["student_acc"] == max(s.student_acc for s in out.students if s.status == "ok")
            else:
                assert r["student_acc"] == by_candidate[r["candidate"]]["student_acc"]
    assert len(ran_pruned) < len(ran_full)  # and it did save attacks


def test_a_candidate_not_beaten_runs_every_attack_in_the_given_order():
    context = _context()
    names = [attack_name(t) for t in context.attack_templates]
    order = list(reversed(names))
    called = []

    def students(jobs):
        called.append([j.name for j in jobs])
        return [{"status": "ok", "test_acc": 50.0, "wall_s": 1.0} for _ in jobs]

    out = run_candidate(Candidate.of("stingy", k=2), context, lambda jobs: [], students,
                        Pruning(order=tuple(order), wave=4, front=lambda: [(99.0, 99.0)]))
    assert out.status == "ok" and list(itertools.chain(*called)) == order
    assert [len(w) for w in called] == [4, 4]  # 8 attacks (smoke: 2 students × 4), waves of 4
