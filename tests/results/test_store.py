import math

import pyarrow.parquet as pq
import pytest
from _outcomes import context, outcome, student

from results import STUDENTS, TRIALS, ResultStore, Storage, trial_rows
from undistill.outcomes import Candidate

CONTEXT = context(versions={"torch": "x"}, students=[
    student("mlp", "kd-T4", 4.0, 0.9, status="error", scratch_acc=72.0, smoothed_acc=72.2, normal_kd_acc=72.5)])
STUDENTS_OK = [student("mlp", "kd-T4", 4.0, 0.9, "ok", 70.0, 72.0, 72.2, 72.5, best_epoch=3, wall_s=2.0),
               student("cnn1d", "dafl", 1.0, 1.0, "ok", 80.0, 93.0, 93.1, 94.0, best_epoch=9, wall_s=5.0)]


def RESULT(defense, **knobs):
    return outcome(defense, knobs, teacher_acc=95.5, student_acc=80.0, best_student="cnn1d",
                   best_attack="dafl", students=STUDENTS_OK, started_at=0.0, finished_at=12.0)


def test_rows_round_trip_through_parquet_with_the_schema(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    row, students = trial_rows(sweep="s", trial_id="t1", candidate=None,
                               outcome=RESULT("nasty", omega=0.01, tau_a=4.0), context=CONTEXT)
    store.write_trial(row, students)
    trials = pq.read_table(tmp_path / "s" / "results" / "trials" / "t1.parquet")
    assert trials.schema.equals(TRIALS)
    got = store.trial_rows()[0]
    assert got["knobs"] == {"omega": 0.01, "tau_a": 4.0} and got["student_acc"] == 80.0
    assert got["status"] == "ok" and got["teacher_drop"] == 0.5
    # the best clone's attack, and that attack's parameters
    assert (got["best_student"], got["best_attack"], got["kd_temperature"], got["kd_alpha"]) == (
        "cnn1d", "dafl", 1.0, 1.0)
    stud = store.students()
    assert stud.schema.equals(STUDENTS) and stud.num_rows == 2
    rows = sorted(stud.to_pylist(), key=lambda r: r["student_arch"])
    assert [(r["student_arch"], r["attack"], r["smoothed_acc"]) for r in rows] == [
        ("cnn1d", "dafl", 93.1), ("mlp", "kd-T4", 72.2)]


def test_writing_a_trial_twice_keeps_one_row_and_leaves_no_partial_files(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    for _ in range(2):
        row, students = trial_rows(sweep="s", trial_id="t1", candidate=None,
                                   outcome=RESULT("stingy", k=2), context=CONTEXT)
        store.write_trial(row, students)
    assert store.trials().num_rows == 1 and store.students().num_rows == 2
    assert not [p for p in (tmp_path / "s" / "results").rglob("*") if p.name.startswith(".")]


def test_failed_and_gated_trials_get_rows_without_a_clone_accuracy(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    row, students = trial_rows(sweep="s", trial_id="err", candidate=Candidate.of("nasty", omega=0.1, tau_a=9.0),
                               outcome=None, context=CONTEXT, error="boom")
    store.write_trial(row, students)
    gated = outcome("nasty", {"omega": 0.5, "tau_a": 9.0}, status="infeasible", teacher_acc=80.0)
    store.write_trial(*trial_rows(sweep="s", trial_id="gate", candidate=None, outcome=gated, context=CONTEXT))
    rows = {r["trial_id"]: r for r in store.trial_rows()}
    assert rows["err"]["status"] == "error" and rows["err"]["error"] == "boom"
    failed = [r for r in store.student_rows() if r["trial_id"] == "err"]
    assert [(r["student_arch"], r["status"], r["student_acc"], r["scratch_acc"]) for r in failed] == [
        ("mlp", "error", None, 72.0)]
    assert rows["gate"]["status"] == "infeasible" and math.isnan(rows["gate"]["student_acc"])


def test_readers_ignore_partial_files(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    store.write_trial(*trial_rows(sweep="s", trial_id="t1", candidate=None, outcome=RESULT("stingy", k=2),
                                  context=CONTEXT))
    # a half-written file, named like a finished one but for the leading dot
    (tmp_path / "s" / "results" / "trials" / ".t2.parquet").write_bytes(b"PAR1 half a file")
    assert store.trials().num_rows == 1


def test_a_damaged_results_file_is_a_clear_error(tmp_path):
    from results.store import DamagedResultsError

    store = ResultStore(Storage(tmp_path), "s")
    store.write_trial(*trial_rows(sweep="s", trial_id="t1", candidate=None, outcome=RESULT("stingy", k=2),
                                  context=CONTEXT))
    (tmp_path / "s" / "results" / "trials" / "t1.parquet").write_bytes(b"PAR1 torn")
    with pytest.raises(DamagedResultsError, match="t1.parquet cannot be read"):
        store.trials()


def test_unknown_columns_are_refused():
    from results.schema import table

    with pytest.raises(KeyError, match="not in the schema"):
        table([{"sweep": "s", "bogus": 1}], TRIALS)


def test_every_row_says_which_protocol_and_old_files_read_as_null(tmp_path):
    import pyarrow as pa

    store = ResultStore(Storage(tmp_path), "s")
    row, students = trial_rows(sweep="s", trial_id="t1", candidate=None, outcome=RESULT("nasty", omega=0.01, tau_a=4.0),
                               context=context(STUDENTS_OK, protocol="paper"))
    store.write_trial(row, students)
    assert store.trial_rows()[0]["protocol"] == "paper"
    assert {r["protocol"] for r in store.student_rows()} == {"paper"}
    # a file written before the column existed: read, the protocol null (it was validation)
    old = tmp_path / "s" / "results" / "trials" / "t1.parquet"
    table = pq.read_table(old)
    pq.write_table(table.drop_columns(["protocol"]), old)
    assert store.trial_rows()[0]["protocol"] is None
    assert pa.types.is_string(store.trials().schema.field("protocol").type)
