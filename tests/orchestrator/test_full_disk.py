"""A full disk mid-sweep, for real: the sweep's storage on a small tmpfs, filled while trials
run. The sweep stops with one line naming the storage; every state file (ours and Tune's) is
whole; once space is back, `resume` finishes the budget with every trial exactly once."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from _presets import one_attack_smoke
from _readme import fault_message

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs: room for the smoke sweep, and quick to fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here ({made.stderr.strip()}): run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the disk refuses; its path (remove it to give the space back)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12):  # megabytes, then the last pages
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_disk_that_fills_mid_sweep_stops_it_cleanly_and_resume_finishes_it(small_disk, tmp_path):
    storage = small_disk / "sweeps"
    config = one_attack_smoke(tmp_path)
    results = storage / "smoke" / "results" / "trials"
    log = tmp_path / "sweep.log"
    with open(log, "w") as err:
        sweep = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "sweep", "--config", str(config),
                                  "--storage", str(storage)], stdout=subprocess.DEVNULL, stderr=err,
                                 env=ENV, cwd=ROOT)
    deadline = time.time() + 600
    while not (results.is_dir() and any(results.glob("[!.]*.parquet"))):
        assert sweep.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    filler = _fill(small_disk)
    assert sweep.wait(timeout=300) == 1, log.read_text()[-3000:]
    said = log.read_text()
    last = said.strip().splitlines()[-1]
    assert f"storage {storage} is full" in last and fault_message("The storage filled") in last, said[-3000:]
    assert "`python cli.py resume smoke`" in last
    assert "Traceback" not in said, said[-3000:]  # Ray's go to the sweep's log file, not here

    # nothing the driver or Tune keeps is torn: each is the old version or the new one, whole
    for state in (storage / "smoke").glob("*.json"):
        json.loads(state.read_text())
    for state in (storage / "smoke" / "tune").glob("experiment_state-*.json"):
        json.loads(state.read_text())
    written = {p.name for p in results.glob("[!.]*.parquet")}
    assert written

    filler.unlink()  # space is back
    resumed = subprocess.run([sys.executable, str(ROOT / "cli.py"), "resume", "smoke", "--storage", str(storage)],
                             capture_output=True, text=True, timeout=900, env=ENV, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert all(t["status"] == "ok" for t in trials), [(t["status"], t["error"]) for t in trials]
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{storage / 'smoke' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states
