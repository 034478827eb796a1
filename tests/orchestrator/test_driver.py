"""The driver's callback: one Parquet write per finished trial, progress and front from memory,
the rows on disk read once per driver start (not per trial)."""

import shutil
from types import SimpleNamespace

import optuna
import pytest
from _outcomes import context, outcome, student

from orchestrator._driver import SweepCallback
from orchestrator._here import Here, driving
from results import ResultStore, Storage
from search_spaces import load_preset


def _trial(i: int, clone: float):
    result = outcome("stingy", {"k": 1 + i % 9}, teacher_acc=97.0, student_acc=clone, best_student="mlp",
                     best_attack="kd-T4", students=[student("mlp", "kd-T4", student_acc=clone)],
                     started_at=100.0 + i, finished_at=101.0 + i)
    return SimpleNamespace(trial_id=f"t{i}", config={"defense": "stingy", "k": 1 + i % 9},
                           last_result={"final": True, "outcome": result})


def test_the_callback_writes_each_trial_and_reads_the_store_once_per_start(tmp_path, monkeypatch, capsys):
    storage = Storage(tmp_path)
    store = ResultStore(storage, "s")
    cols = context(students=[student("mlp", "kd-T4", status="error", scratch_acc=70.0)])
    callback = SweepCallback("s", storage, cols, 6, load_preset("smoke").space)
    callback.setup()
    callback.on_trial_complete(0, [], _trial(0, 90.0))

    reads = []
    original = ResultStore.trial_rows
    monkeypatch.setattr(ResultStore, "trial_rows", lambda self: reads.append(1) or original(self))
    for i, clone in enumerate([85.0, 95.0, 80.0], start=1):
        callback.on_trial_complete(i, [], _trial(i, clone))
    # an error reported for a trial that already finished (a rerun) keeps its row
    callback.on_trial_error(4, [], SimpleNamespace(trial_id="t1", config={"defense": "stingy", "k": 2},
                                                   get_error=lambda: RuntimeError("boom")))
    assert reads == []  # nothing read back while trials finish
    rows = original(store)
    assert [r["trial_id"] for r in rows] == ["t0", "t1", "t2", "t3"] and all(r["status"] == "ok" for r in rows)
    progress = capsys.readouterr().err.splitlines()
    assert progress[-1].startswith("[  4/6] stingy k=4") and "front 1" in progress[-1]

    # a restored driver (Tune pickles the callback) reads the rows afresh, once, from the storage
    # it is given now: here a copy of the sweep elsewhere, which it then writes to
    import pickle

    moved = Storage(tmp_path / "moved")
    shutil.copytree(tmp_path / "s", tmp_path / "moved" / "s")
    again = pickle.loads(pickle.dumps(callback))
    assert again.storage is None  # no path travels with it
    with pytest.raises(RuntimeError, match="driving"):
        pickle.loads(pickle.dumps(callback)).setup()
    with driving(Here(moved, optuna.storages.InMemoryStorage())):
        again.setup()
    assert reads == [1] and len(again._rows) == 4
    again.on_trial_complete(5, [], _trial(5, 70.0))
    assert reads == [1] and len(original(ResultStore(moved, "s"))) == 5
    assert len(original(store)) == 4  # the copy restored from is left as it was
    assert capsys.readouterr().err.splitlines()[-1].startswith("[  5/6]")


@pytest.mark.parametrize("last", [None, {"final": False}])
def test_a_trial_without_a_final_outcome_is_an_error_row(tmp_path, last):
    storage = Storage(tmp_path)
    cols = context(students=[student("mlp", "kd-T4", status="error", scratch_acc=70.0)])
    callback = SweepCallback("s", storage, cols, 2, load_preset("smoke").space)
    callback.setup()
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="t0", config={"defense": "stingy", "k": 3},
                                                      last_result=last))
    (row,) = ResultStore(storage, "s").trial_rows()
    assert row["status"] == "error" and row["knobs"] == {"k": 3.0}
    assert row["error"] == "the trial ended without a final result"
    (s,) = ResultStore(storage, "s").student_rows()
    assert (s["status"], s["scratch_acc"]) == ("error", 70.0)
