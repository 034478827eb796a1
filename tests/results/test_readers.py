"""Readers while a sweep writes: `pareto` and `status` run again and again in this process while
another process writes trial rows and the sweep's JSON files to the same real folder. A reader
must see each file whole (the old or the new one), never part of one.

The harness is first pointed at a writer that writes in place, to show it does catch a reader
meeting half a file; then at the store's own atomic writes, which it must never catch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[2]

WRITER = r"""
import json, sys, time
from results import ResultStore, Storage, trial_rows
from orchestrator.layout import write_json
from undistill.outcomes import Baselines, Candidate, CandidateOutcome, Placement, StudentOutcome, SweepColumns

storage, mode, trials = Storage(sys.argv[1]), sys.argv[2], int(sys.argv[3])
students = tuple(StudentOutcome(f"s{i}", "kd-T4", 4.0, 0.9, "ok", 50.0 + i / 10,
                                 Baselines(60.0, None, 61.0), 3, 1.0) for i in range(200))
context = SweepColumns(dataset="mnist1d", teacher_arch="cnn1d", seed=0, preset="smoke",
                       config_fingerprint="abc", versions={}, normal_teacher_acc=96.0, students=students)
store = ResultStore(storage, "live")
for i in range(trials):
    result = CandidateOutcome(Candidate.of("stingy", k=1 + i % 9), "ok", 90.0 + i % 7, 96.0,
                              40.0 + i % 11, "s0", "kd-T4", students=students,
                              ran=Placement(started_at=time.time() - 1.0, finished_at=time.time()))
    row, rows = trial_rows(sweep="live", trial_id=f"t{i:04d}", candidate=None, outcome=result,
                           context=context)
    if mode == "atomic":
        store.write_trial(row, rows)
        if i:  # replace an earlier row too, as a rerun trial does
            store.write_trial({**row, "trial_id": "t0000"}, [{**r, "trial_id": "t0000"} for r in rows])
        write_json(storage, "live", "state.json", {"finished": False, "trials": i + 1})
        write_json(storage, "live", "cluster.json", {"runs": [{"started_at": "x", "nodes": [],
                   "bundle": {"CPU": 1}, "bundles_per_trial": 3, "concurrency": i}]})
    else:  # in place, slowly: what the store must never do
        import io, pyarrow.parquet as pq
        from results import schema
        for kind, table in (("students", schema.table(rows, schema.STUDENTS)),
                            ("trials", schema.table([row], schema.TRIALS))):
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            path = storage.local_path("live", "results", kind, f"t{i:04d}.parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                data = buffer.getvalue()
                f.write(data[: len(data) // 2]); f.flush()
                time.sleep(0.05)
                f.write(data[len(data) // 2 :])
        with open(storage.local_path("live", "state.json"), "w") as f:
            f.write('{"finished": fal'); f.flush()
            time.sleep(0.05)
            f.write('se, "trials": %d}' % (i + 1))
"""


def _start(storage: Path, mode: str, trials: int) -> subprocess.Popen:
    (storage / "live").mkdir(parents=True)
    (storage / "live" / "sweep.json").write_text(json.dumps(
        {"name": "live", "preset_name": "smoke", "trials": trials, "created_at": "now", "identity": {}}))
    return subprocess.Popen([sys.executable, "-c", WRITER, str(storage), mode, str(trials)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)


def _read_while_writing(storage: Path, writer: subprocess.Popen) -> tuple[int, list[str]]:
    """Run pareto and status until the writer ends; (reads done, the errors they printed)."""
    reads, errors, seen = 0, [], 0
    runner = CliRunner()
    while writer.poll() is None:
        for args in (["pareto", "live", "--format", "json"], ["status", "live", "--format", "json"]):
            out = runner.invoke(cli.main, [*args, "--storage", str(storage)])
            reads += 1
            if out.exit_code != 0:
                errors.append(out.output.strip())
                continue
            if args[0] == "status":
                done = json.loads(out.output)["trials_done"]
                assert done >= seen  # rows only ever appear
                seen = done
    assert writer.returncode == 0, writer.stderr.read()[-2000:]
    return reads, errors


def test_the_harness_catches_a_reader_meeting_half_a_file(tmp_path):
    reads, errors = _read_while_writing(tmp_path, _start(tmp_path, "in-place", 40))
    assert all("cannot be read" in e for e in errors), errors[:3]
    assert any("results" in e for e in errors) and any("state.json" in e for e in errors), errors


@pytest.mark.slow
def test_pareto_and_status_never_see_a_partial_file_while_a_sweep_writes(tmp_path):
    reads, errors = _read_while_writing(tmp_path, _start(tmp_path, "atomic", 150))
    print(f"{reads} reads while 150 trials were written")
    assert errors == [] and reads >= 20, (reads, errors[:3])
