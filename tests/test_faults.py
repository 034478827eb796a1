"""Faults done for real: the driver SIGKILLed mid-sweep, then `resume`. Nothing finished is lost
or done twice, and the Optuna study agrees with the Parquet rows."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _sweep(storage):
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "sweep", "--preset", "smoke",
                             "--storage", str(storage)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _kill_when(proc, ready, timeout_s=600):
    deadline = time.time() + timeout_s
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the sweep never reached the point to kill it at"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _resume(storage):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "resume", "smoke", "--storage",
                           str(storage)], capture_output=True, text=True, timeout=900, env=ENV, cwd=ROOT)


def _check_complete(storage):
    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4  # each exactly once
    assert all(t["status"] == "ok" for t in trials)
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{storage / 'smoke' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states  # orphans were failed
    return trials


def test_a_driver_killed_mid_trial_resumes_without_losing_or_repeating_a_trial(tmp_path):
    storage = tmp_path / "sweeps"
    results = storage / "smoke" / "results" / "trials"
    sweep = _sweep(storage)
    _kill_when(sweep, lambda: results.is_dir() and any(results.glob("[!.]*.parquet")))
    before = {p.name for p in results.glob("[!.]*.parquet")}
    assert 1 <= len(before) < 4

    resumed = _resume(storage)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming 'smoke'" in resumed.stderr
    trials = _check_complete(storage)
    assert before <= {f"{t['trial_id']}.parquet" for t in trials}  # finished rows kept


def test_a_driver_killed_during_the_upstream_phases_does_not_train_them_again(tmp_path):
    storage = tmp_path / "sweeps"
    artifacts = storage / "_artifacts"
    sweep = _sweep(storage)
    # killed once the first upstream phase is sealed (its manifest is written last)
    _kill_when(sweep, lambda: artifacts.is_dir() and any(artifacts.glob("*/MANIFEST.json")))
    sealed = {p.parent.name for p in artifacts.glob("*/MANIFEST.json")}
    assert sealed and not (storage / "smoke" / "results").exists()

    resumed = _resume(storage)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("(cached)") >= len(sealed & {p for p in sealed if not p.startswith("nasty")})
    _check_complete(storage)
