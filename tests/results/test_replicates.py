"""Replicated candidates: mean ± sd, Student's t intervals and the paired comparisons with the
baselines, on hand values written through the real row and Parquet code."""

import math

import pytest
from _outcomes import context, outcome, student

from results import ResultStore, Storage, trial_rows
from results.replicates import Estimate, Replicated, mean_front, replicated, t_quantile

# Student's t 0.975 quantiles from a printed table (NIST/SEMATECH e-Handbook, 1.3.6.7.2)
PRINTED = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 40: 2.021, 60: 2.000, 100: 1.984}


@pytest.mark.parametrize("df", sorted(PRINTED))
def test_t_quantiles_are_the_printed_tables(df):
    assert t_quantile(df) == pytest.approx(PRINTED[df], abs=6e-4)


def test_an_estimate_of_three_values_by_hand():
    e = Estimate.of([89.0, 90.0, 91.0])
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert (e.mean, e.n, e.sd) == (90.0, 3, 1.0)
    assert (e.low, e.high) == pytest.approx((90 - half, 90 + half), abs=1e-5)
    assert e.text() == "90.00 ± 1.00 [87.52, 92.48]"
    assert Estimate.of([float("nan"), 70.0]) == Estimate(70.0, 1)  # a missing value is left out
    assert not Estimate.of([70.0]).above_zero and Estimate.of([]) is None


def _write(store, trial_id, seed, clones, *, teacher_acc, status="ok", replicate_of=None, defense="nasty",
           knobs=None):
    """`clones`: (arch, clone acc, normal KD acc, alone acc, smoothed acc) per student, KD T4."""
    rows = [student(arch, "kd-T4", student_acc=acc, normal_kd_acc=normal, scratch_acc=alone, smoothed_acc=smoothed)
            for arch, acc, normal, alone, smoothed in clones]
    best = max(rows, key=lambda s: s.student_acc)
    result = outcome(defense, knobs or {"omega": 0.01, "tau_a": 4.0}, status=status, teacher_acc=teacher_acc,
                     student_acc=best.student_acc, normal_teacher_acc=teacher_acc + 2, best_student=best.student_arch,
                     best_attack="kd-T4", students=rows, started_at=0.0, finished_at=1.0 + seed)
    store.write_trial(*trial_rows(sweep="s", trial_id=trial_id, candidate=None, outcome=result,
                                  context=context(seed=seed, normal_teacher_acc=teacher_acc + 2),
                                  replicate_of=replicate_of))


def test_a_candidate_over_three_seeds_is_paired_seed_by_seed(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    _write(store, "a", 0, [("mlp", 80, 85, 82, 83), ("cnn", 84, 88, 86, 87)], teacher_acc=90)
    _write(store, "a-seed1", 1, [("mlp", 81, 86, 82, 84), ("cnn", 83, 89, 85, 86)], teacher_acc=91, replicate_of="a")
    _write(store, "a-seed2", 2, [("mlp", 70, 84, 80, 81), ("cnn", 85, 90, 88, 88)], teacher_acc=89, replicate_of="a")
    _write(store, "a-seed3", 3, [("mlp", 99, 99, 99, 99)], teacher_acc=20, status="diverged", replicate_of="a")
    _write(store, "b", 0, [("mlp", 60, 85, 82, 83)], teacher_acc=70)  # never replicated

    assert {r["trial_id"] for r in store.trial_rows()} == {"a", "b"}  # the search's own rows
    copies, copy_students = store.replicate_rows()
    assert sorted((r["trial_id"], r["seed"], r["replicate_of"]) for r in copies) == [
        ("a-seed1", 1, "a"), ("a-seed2", 2, "a"), ("a-seed3", 3, "a")]
    assert {(s["seed"], s["replicate_of"]) for s in copy_students} == {(1, "a"), (2, "a"), (3, "a")}

    (a,) = replicated(store.trial_rows(), store.student_rows(), copies, copy_students)
    assert (a.trial_id, a.seeds, a.knobs) == ("a", (0, 1, 2), {"omega": 0.01, "tau_a": 4.0})  # diverged left out
    assert (a.teacher_acc.mean, a.teacher_acc.sd) == (90.0, 1.0)
    assert a.student_acc.mean == pytest.approx(84.0) and a.student_acc.sd == pytest.approx(1.0)
    # best baseline minus best clone, per seed: normal KD 88−84, 89−83, 90−85; alone 86−84, 85−83, 88−85
    assert a.below["normal_kd"].mean == pytest.approx(5.0) and a.below["normal_kd"].sd == pytest.approx(1.0)
    assert a.below["alone"].mean == pytest.approx(7 / 3)
    assert a.below["alone"].low == pytest.approx(7 / 3 - 4.302653 * math.sqrt(1 / 3) / math.sqrt(3), abs=1e-5)
    assert a.below["smoothed"] == Estimate(3.0, 3, 0.0, 3.0, 3.0)
    assert a.pushes_below == ("normal_kd", "alone", "smoothed")
    row = a.to_row()
    assert row["seeds"] == 3 and row["seed_list"] == "0 1 2" and row["below_normal_kd_low"] == pytest.approx(
        5 - 4.302653 / math.sqrt(3), abs=1e-5)


def test_an_interval_across_zero_is_not_a_push_below(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    _write(store, "a", 0, [("mlp", 84, 88, 80, 80)], teacher_acc=90)
    _write(store, "a-seed1", 1, [("mlp", 89, 88, 80, 80)], teacher_acc=90, replicate_of="a")
    (a,) = replicated(store.trial_rows(), store.student_rows(), *store.replicate_rows())
    assert a.below["normal_kd"].mean == pytest.approx(1.5) and a.below["normal_kd"].low < 0
    assert a.pushes_below == ()  # better on average, not for sure; below the students alone: never


def test_the_front_on_the_means():
    def cand(trial_id, teacher, clone, drop):
        return Replicated(trial_id, "nasty", {}, (0, 1), Estimate(teacher, 2), Estimate(drop, 2), Estimate(clone, 2))

    a, b, c, d = cand("a", 90, 84, 1), cand("b", 85, 70, 6), cand("c", 80, 75, 11), cand("d", 60, 20, 31)
    assert [x.trial_id for x in mean_front([c, a, b, d])] == ["a", "b", "d"]
    assert [x.trial_id for x in mean_front([c, a, b, d], max_teacher_drop=10)] == ["a", "b"]
