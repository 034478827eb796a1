import math
import random

import pytest

from results import dominates, front_indices, hypervolume, pareto_front, range_edges


def _brute_front(points):
    return {i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)}


def _brute_hypervolume(points, ref, grid=0.25):
    """Count grid cells dominated by some point: slow, obviously right."""
    t_ref, s_ref = ref
    area = 0.0
    t = t_ref
    while t < max([p[0] for p in points] + [t_ref]):
        s = min([p[1] for p in points] + [s_ref])
        while s < s_ref:
            cx, cy = t + grid / 2, s + grid / 2
            if any(px >= cx and py <= cy for px, py in points):
                area += grid * grid
            s += grid
        t += grid
    return area


@pytest.mark.parametrize("seed", range(200))
def test_front_matches_brute_force(seed):
    rng = random.Random(seed)
    points = [(rng.choice([90.0, 91.0, 92.5, 94.0]), rng.choice([60.0, 61.0, 62.0, 65.0]))
              for _ in range(rng.randint(0, 9))]
    assert set(front_indices(points)) == _brute_front(points)


@pytest.mark.parametrize("seed", range(20))
def test_hypervolume_matches_grid_count(seed):
    rng = random.Random(seed)
    points = [(rng.randint(80, 96) / 1.0, rng.randint(50, 70) / 1.0) for _ in range(rng.randint(1, 6))]
    ref = (82.0, 68.0)
    assert hypervolume(points, ref) == pytest.approx(_brute_hypervolume(points, ref))


def test_hypervolume_hand_value():
    # strips: (95−80)·(80−70) + (90−80)·(70−60) = 150 + 100
    assert hypervolume([(95, 70), (90, 60), (85, 65)], (80, 80)) == 250
    assert hypervolume([(70, 50)], (80, 80)) == 0  # worse teacher than the reference adds nothing


def test_pareto_front_keeps_ok_rows_and_applies_the_drop_limit():
    rows = [
        dict(trial_id="a", status="ok", teacher_acc=96.0, student_acc=90.0, teacher_drop=0.0),
        dict(trial_id="b", status="ok", teacher_acc=95.5, student_acc=80.0, teacher_drop=0.5),
        dict(trial_id="c", status="ok", teacher_acc=92.0, student_acc=60.0, teacher_drop=4.0),
        dict(trial_id="d", status="diverged", teacher_acc=99.0, student_acc=10.0, teacher_drop=-3.0),
        dict(trial_id="e", status="ok", teacher_acc=math.nan, student_acc=1.0, teacher_drop=math.nan),
        dict(trial_id="f", status="ok", teacher_acc=95.0, student_acc=85.0, teacher_drop=1.0),
    ]
    assert [r["trial_id"] for r in pareto_front(rows)] == ["a", "b", "c"]
    assert [r["trial_id"] for r in pareto_front(rows, max_teacher_drop=1.0)] == ["a", "b"]


@pytest.mark.parametrize("seed", range(10))
def test_judging_by_one_attack_takes_each_trials_best_clone_of_that_attack(seed):
    from results import attack_names, by_attack

    rng = random.Random(seed)
    attacks = ["kd-T1", "kd-T4", "kd-T20", "dafl"]
    trials = [{"trial_id": f"t{i}", "status": rng.choice(["ok", "ok", "infeasible"]), "teacher_acc": 90.0,
               "student_acc": 99.0, "best_student": "x", "best_attack": "x"} for i in range(8)]
    students = [{"trial_id": t["trial_id"], "student_arch": arch, "attack": attack,
                 "status": rng.choice(["ok", "ok", "diverged"]), "student_acc": rng.uniform(10, 90),
                 "kd_temperature": 1.0, "kd_alpha": 0.9}
                for t in trials for arch in ("mlp", "cnn") for attack in attacks]
    assert attack_names(students) == ["dafl", "kd", "kd-T1", "kd-T20", "kd-T4"]
    for attack, members in (("kd", attacks[:3]), ("kd-T4", ["kd-T4"]), ("dafl", ["dafl"])):
        judged = {t["trial_id"]: t for t in by_attack(trials, students, attack)}
        for t in trials:
            ok = [s for s in students if s["trial_id"] == t["trial_id"] and s["attack"] in members
                  and s["status"] == "ok"]
            got = judged[t["trial_id"]]
            if t["status"] != "ok" or not ok:
                assert math.isnan(got["student_acc"])
                continue
            best = max(ok, key=lambda s: s["student_acc"])
            assert (got["student_acc"], got["best_student"], got["best_attack"]) == (
                best["student_acc"], best["student_arch"], best["attack"])


def _space(**defenses):
    from undistill.space import DefenseSpace, Knob, KnobRange, SearchSpace

    knobs = {"omega": Knob("omega", "ω", 1e-6, 10.0, log=True), "tau_a": Knob("tau_a", "τ_A", 0.1, 100.0, log=True),
             "k": Knob("k", "k", 1, 9, integer=True)}
    return SearchSpace(tuple(DefenseSpace(d, tuple(KnobRange(knobs[n], *r) for n, r in ranges.items()))
                             for d, ranges in defenses.items()))


def test_range_edges_names_each_range_end_the_front_reaches():
    search = _space(nasty={"omega": [0.002, 0.04], "tau_a": [2.0, 20.0]}, stingy={"k": [1, 9]})
    width = math.log(20)  # both ranges span a factor of 20; "at an end" is its outer 5 %
    inside, outside = 0.04 * math.exp(-0.049 * width), 0.04 * math.exp(-0.051 * width)
    row = lambda **knobs: {"defense": "nasty", "knobs": knobs}
    front = [row(omega=inside, tau_a=6.0), row(omega=0.04, tau_a=2.0), row(omega=outside, tau_a=6.0),
             {"defense": "stingy", "knobs": {"k": 1}}]
    assert range_edges(front, search) == (
        "The front reaches the end of a search range: ω at the top of its range (0.04) for 2; τ_A at "
        "the bottom of its range (2) for 1 of its 4 defenses. It may go on past them: widen "
        "search.nasty there and sweep again.")
    assert range_edges([row(omega=outside, tau_a=6.0)], search) is None
    assert range_edges([{"defense": "stingy", "knobs": {"k": 1}}], search) is None  # k's range is the teacher's whole
    assert range_edges(front, _space(stingy={"k": [1, 9]})) is None  # a sweep without the nasty teacher


def test_a_trial_cut_short_is_judged_by_one_attack_only_when_that_attack_ran():
    from results import by_attack, lacking_attack

    trials = [{"trial_id": t, "status": status, "teacher_acc": 90.0, "student_acc": 80.0}
              for t, status in (("full", "ok"), ("early", "dominated"), ("late", "dominated"))]
    students = [{"trial_id": t, "student_arch": "cnn", "attack": a, "status": status,
                 "student_acc": acc, "kd_temperature": 4.0, "kd_alpha": 0.9}
                for t, a, status, acc in (("full", "kd-T4", "ok", 80.0), ("full", "dafl", "ok", 40.0),
                                          ("early", "kd-T4", "ok", 80.0), ("early", "dafl", "skipped", None),
                                          ("late", "kd-T4", "ok", 79.0), ("late", "dafl", "ok", 45.0))]
    assert lacking_attack(trials, students, "dafl") == ["early"]
    assert lacking_attack(trials, students, "kd") == []
    judged = {t["trial_id"]: t for t in by_attack(trials, students, "dafl")}
    assert judged["late"]["status"] == "ok" and judged["late"]["student_acc"] == 45.0  # dafl ran: exact
    assert judged["early"]["status"] == "dominated" and math.isnan(judged["early"]["student_acc"])
    assert [t["trial_id"] for t in pareto_front(trials)] == ["full"]  # cut short: never on the front


def test_range_edges_judge_the_range_searched_not_the_presets():
    from undistill.record import SweepRecord

    preset = _space(nasty={"omega": [0.002, 0.04], "tau_a": [2.0, 20.0]})
    widened = _space(nasty={"omega": [0.002, 0.08], "tau_a": [2.0, 20.0]})
    front = [{"defense": "nasty", "knobs": {"omega": 0.04, "tau_a": 6.0}}]
    assert "ω at the top" in range_edges(front, preset)
    assert range_edges(front, widened) is None  # the search went on past 0.04
    record = SweepRecord("s", "mnist1d", {}, None, "f", 16, space=preset, searched=widened)
    again = SweepRecord.from_json(record.to_json(), "sweep.json")
    assert again.searched_space == widened and again.space == preset
    unsearched = {k: v for k, v in record.to_json().items() if k != "searched"}  # before a search ended
    assert SweepRecord.from_json(unsearched, "sweep.json").searched_space == preset


def test_range_edges_leave_out_teachers_past_the_focus():
    from undistill.record import SweepRecord

    search = _space(nasty={"omega": [0.002, 0.085], "tau_a": [2.0, 20.0]})
    collapsed = {"defense": "nasty", "knobs": {"omega": 0.085, "tau_a": 6.0}, "teacher_drop": 37.9}
    kept = {"defense": "nasty", "knobs": {"omega": 0.085, "tau_a": 6.0}, "teacher_drop": 9.0}
    # a teacher that lost 37.9 points at ω's top: widening ω further is no advice
    assert range_edges([collapsed], search, focus_teacher_drop=15.0) is None
    assert "ω at the top" in range_edges([collapsed], search)  # no focus given: every front point
    assert "for 1 of its 2" in range_edges([collapsed, kept], search, focus_teacher_drop=15.0)
    # the record's focus: the preset's, or --max-teacher-drop when tighter
    record = SweepRecord("s", "mnist1d", {"search": {"focus_teacher_drop": 20.0}}, None, "f", 16)
    assert record.focus_teacher_drop == 20.0
    assert SweepRecord("s", "mnist1d", {}, 5.0, "f", 16).focus_teacher_drop == 5.0
    assert SweepRecord("s", "mnist1d", {}, None, "f", 16).focus_teacher_drop == 15.0
