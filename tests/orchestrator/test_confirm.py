"""`confirm` for real: a finished smoke sweep's front re-run under two further seeds on a local
Ray, its driver SIGKILLed during the seeds' upstream phases and again between a replicate's end
and its row; the same command goes on from what was done, and a last run does nothing at all."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _presets import one_attack_smoke

from results import ResultStore, Storage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _cli(*args, env=None, background=False):
    log = tempfile.NamedTemporaryFile("w+", prefix="undistill-", suffix=".log", delete=False)  # noqa: SIM115 (the process owns it)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.PIPE, stderr=log,
                            text=True, env={**ENV, **(env or {})}, cwd=ROOT)
    proc.log = Path(log.name)
    if not background:
        proc.out, _ = proc.communicate(timeout=900)
    return proc


def _rows(storage, kind="trials"):
    folder = storage / "smoke" / "results" / kind
    return pq.read_table(folder).to_pylist() if folder.is_dir() else []


def _manifests(storage) -> set[str]:
    return {p.parent.name for p in (storage / "_artifacts").glob("*/MANIFEST.json")}


def test_confirm_adds_each_front_candidate_under_each_seed_once_through_driver_kills(tmp_path):
    storage = tmp_path / "sweeps"
    config = one_attack_smoke(tmp_path)
    swept = _cli("sweep", "--config", str(config), "--storage", str(storage), "--trials", "2")
    assert swept.returncode == 0, swept.log.read_text()[-3000:]
    own = _rows(storage)
    front = [t for t in own if t["status"] == "ok"]  # two trials: the start points, both on the front
    assert len(front) == 2 and {t["seed"] for t in own} == {0} and {t["replicate_of"] for t in own} == {None}
    sealed = _manifests(storage)
    teachers = sum(k.startswith("teacher-") for k in sealed)
    confirm = ("confirm", "smoke", "--seeds", "2", "--storage", str(storage))

    # 1. killed during the seeds' upstream phases, once a new phase is sealed
    first = _cli(*confirm, background=True)
    deadline = time.time() + 600
    while not _manifests(storage) - sealed:
        assert first.poll() is None, first.log.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert not [t for t in _rows(storage) if t["replicate_of"]]

    # 2. killed between a replicate's end and its row (the driver kills itself there)
    second = _cli(*confirm, env={"UNDISTILL_KILL_AT": "before-trial-write"})
    assert second.returncode == -signal.SIGKILL, second.log.read_text()[-3000:]
    assert "(cached)" in second.log.read_text()  # what run 1 sealed was not trained again
    assert not [t for t in _rows(storage) if t["replicate_of"]]

    # 3. to the end: every front candidate under seeds 1 and 2, from each seed's own upstream
    third = _cli(*confirm, "--format", "json")
    assert third.returncode == 0, third.log.read_text()[-3000:]
    copies = [t for t in _rows(storage) if t["replicate_of"]]
    assert sorted((t["replicate_of"], t["seed"]) for t in copies) == sorted(
        (t["trial_id"], s) for t in front for s in (1, 2))
    assert {t["trial_id"] for t in copies} == {f"{t['replicate_of']}-seed{t['seed']}" for t in copies}
    assert all(t["status"] == "ok" for t in copies)
    for t in copies:
        original = next(f for f in front if f["trial_id"] == t["replicate_of"])
        assert (t["defense"], dict(t["knobs"])) == (original["defense"], dict(original["knobs"]))
    # each seed trained its own normal teacher: three in all, and other accuracies
    assert sum(k.startswith("teacher-") for k in _manifests(storage)) == teachers + 2
    assert len({(t["seed"], t["normal_teacher_acc"]) for t in (*own, *copies)}) == 3
    students = [s for s in _rows(storage, "students") if s["replicate_of"]]
    assert len(students) == len(copies) * 2 and all(s["status"] == "ok" for s in students)
    # the replicate whose row run 2 lost was not trained again: its phases came from the store
    assert any(s["cached"] for s in students)
    assert '"seeds": 3' in third.out and "below_normal_kd_low" in third.out
    # the learning curves of each seed's upstream phases and of each replicate's
    epochs = ResultStore(Storage(storage), "smoke").epoch_rows()
    assert {r["seed"] for r in epochs if r["trial_id"] is None and r["phase_kind"] == "teacher"} == {0, 1, 2}
    for t in copies:
        mine = [r for r in epochs if r["trial_id"] == t["trial_id"]]
        assert {(r["replicate_of"], r["seed"]) for r in mine} == {(t["replicate_of"], t["seed"])}
        assert {r["phase_kind"] for r in mine} == ({"defense", "attack"} if t["defense"] == "nasty" else {"attack"})

    # 4. once more: nothing to run, nothing written, Ray not even started
    files = {p: p.stat().st_mtime_ns for p in (storage / "smoke" / "results").rglob("*.parquet")}
    fourth = _cli(*confirm)
    assert fourth.returncode == 0, fourth.log.read_text()[-3000:]
    assert f"{len(copies)} replicates done, 0 to run" in fourth.log.read_text()
    assert {p: p.stat().st_mtime_ns for p in (storage / "smoke" / "results").rglob("*.parquet")} == files
    assert "mean ± sd [95 % interval]" in fourth.out

    # the readers: pareto shows the front on the means, status counts the replicates
    pareto = _cli("pareto", "smoke", "--storage", str(storage))
    assert pareto.returncode == 0 and " ± " in pareto.out
    status = _cli("status", "smoke", "--storage", str(storage), "--format", "json")
    assert '"seeds": "0 1 2"' in status.out and f'"replicates": {len(copies)}' in status.out
