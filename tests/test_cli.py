"""The CLI as users run it: help, bad input, and a real sweep on a real local Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(cli.main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli.main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def _cli(*args, storage=None, timeout=600):
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    if storage is not None:
        cmd += ["--storage", str(storage)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


BAD_INPUT = [
    (["sweep", "--preset", "nope"], "unknown preset 'nope'"),
    (["sweep", "--preset", "smoke", "--name", "../x"], "sweep name '../x'"),
    (["sweep", "--preset", "smoke", "--max-teacher-drop", "-1"], "--max-teacher-drop"),
    (["sweep", "--config", "missing.toml"], "does not exist"),
    (["pareto", "ghost"], "no sweep named 'ghost'"),
    (["status", "ghost"], "no sweep named 'ghost'"),
    (["resume", "ghost"], "no sweep named 'ghost'"),
    (["sweep", "--preset", "smoke", "--gpus-per-trial", "1.5"], "above 1 give a whole number"),
    (["sweep", "--preset", "smoke", "--cpus-per-trial", "0"], "--cpus-per-trial 0 must be > 0"),
    (["sweep", "--preset", "smoke", "--study-storage", "postgresql://u:p@127.0.0.1:1/db"],
     "--study-storage postgresql://u:p@127.0.0.1:1/db: its database driver is not installed"),
    # this machine has no GPU: the local Ray starts, and the check refuses before any work
    (["sweep", "--preset", "smoke", "--gpus-per-trial", "0.5"], "one trial needs 1.5 GPUs"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(tmp_storage, args, message):
    result = CliRunner().invoke(cli.main, [*args, "--storage", str(tmp_storage)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["sweep", "pareto", "status"])
def test_a_storage_uri_nobody_can_open_is_one_line(command):
    args = [command, "--storage", "nosuch://bucket/x"] + (["x"] if command != "sweep" else [])
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2 and "cannot be opened" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unwritable_storage_is_refused_before_any_work(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result = CliRunner().invoke(cli.main, ["sweep", "--preset", "smoke", "--storage", str(blocked / "x")])
    assert result.exit_code == 2 and "not writable" in result.output


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_storage):
    run = _cli("sweep", "--preset", "smoke", storage=tmp_storage)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto front of 'smoke'" in run.stdout
    assert "[  4/4]" in run.stderr

    results = tmp_storage / "smoke" / "results"
    trials = pq.read_table(results / "trials").to_pylist()
    students = pq.read_table(results / "students").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert len(students) == 4 * 2
    assert {t["defense"] for t in trials} == {"nasty", "stingy"}
    paper = [t for t in trials if t["defense"] == "nasty" and t["omega"] == 0.1]
    assert paper and paper[0]["tau_a"] == 4.0  # the preset's start point ran
    for t in trials:
        assert t["status"] == "ok" and 0 < t["teacher_acc"] <= 100 and 0 < t["student_acc"] <= 100
        mine = [s for s in students if s["trial_id"] == t["trial_id"]]
        assert t["student_acc"] == max(s["student_acc"] for s in mine)  # the best clone
        assert t["teacher_drop"] == pytest.approx(t["normal_teacher_acc"] - t["teacher_acc"])
        if t["defense"] == "stingy":
            assert t["teacher_acc"] == t["normal_teacher_acc"]  # top-1 survives top-k
    for s in students:
        assert s["scratch_acc"] is not None and s["normal_kd_acc"] is not None

    # the study saw every trial exactly once, all COMPLETE
    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_storage / 'smoke' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4

    pareto = _cli("pareto", "smoke", "--format", "json", storage=tmp_storage)
    assert pareto.returncode == 0, pareto.stderr
    front = json.loads(pareto.stdout)
    assert front and {"trial_id", "defense", "omega", "tau_a", "k", "teacher_acc", "student_acc",
                      "teacher_drop"} <= set(front[0])
    ok = [(t["teacher_acc"], t["student_acc"]) for t in trials]
    for f in front:  # nothing on the front is dominated by any trial
        assert not any(a >= f["teacher_acc"] and b <= f["student_acc"] and
                       (a, b) != (f["teacher_acc"], f["student_acc"]) for a, b in ok)

    nan_limit = _cli("pareto", "smoke", "--max-teacher-drop", "nan", storage=tmp_storage)
    assert nan_limit.returncode == 2 and "must be ≥ 0" in nan_limit.stderr

    # rerunning the finished sweep (same flags or a new --concurrency) trains nothing and
    # prints the same front
    again = _cli("sweep", "--preset", "smoke", "--format", "json", "--concurrency", "1",
                 storage=tmp_storage)
    assert again.returncode == 0 and "already finished" in again.stderr
    assert json.loads(again.stdout) == front

    # another name with the same preset reuses every upstream phase from the artifact cache;
    # with a teacher-drop limit, nasty teachers beyond it are gated: no students trained
    other = _cli("sweep", "--preset", "smoke", "--name", "smoke-b", "--max-teacher-drop", "0.5",
                 storage=tmp_storage)
    assert other.returncode == 0, other.stderr[-3000:]
    assert other.stderr.count("(cached)") == 5
    gated_trials = pq.read_table(tmp_storage / "smoke-b" / "results" / "trials").to_pylist()
    gated_students = pq.read_table(tmp_storage / "smoke-b" / "results" / "students").to_pylist()
    assert len(gated_trials) == 4
    assert any(t["status"] == "infeasible" for t in gated_trials)
    for t in gated_trials:
        over = t["teacher_drop"] > 0.5
        assert (t["status"] == "infeasible") == over
        trained = [s["status"] for s in gated_students if s["trial_id"] == t["trial_id"]]
        assert trained == (["skipped"] * 2 if over else ["ok"] * 2)
    gated_front = json.loads(_cli("pareto", "smoke-b", "--format", "json", storage=tmp_storage).stdout)
    assert all(f["teacher_drop"] <= 0.5 for f in gated_front)

    # pareto and status read Parquet only: they must not load torch or Ray
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, cli\n"
         "try:\n    cli.main(['pareto', 'smoke', '--storage', sys.argv[1]])\n"
         "except SystemExit:\n    pass\n"
         "cli.main(['status', 'smoke', '--storage', sys.argv[1]], standalone_mode=False)\n"
         "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n",
         str(tmp_storage)], capture_output=True, text=True, cwd=ROOT)
    assert probe.returncode == 0, probe.stderr[-2000:]

    # a damaged results file is one line and exit 1 for the readers, not a traceback
    damaged = tmp_storage / "smoke-b" / "results" / "trials"
    victim = sorted(damaged.glob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 torn")
    for command in ("pareto", "status"):
        broken = _cli(command, "smoke-b", storage=tmp_storage)
        assert broken.returncode == 1 and "cannot be read" in broken.stderr
        assert "Traceback" not in broken.stderr

    # the same name with a different config is refused, and nothing is lost
    conflict = _cli("sweep", "--preset", "smoke", "--max-teacher-drop", "1", storage=tmp_storage)
    assert conflict.returncode == 2 and "different config" in conflict.stderr
    assert pq.read_table(results / "trials").num_rows == 4
