"""Faults done for real: the driver SIGKILLed at each kind of moment, then `resume`; a worker
process SIGKILLed mid-phase. Nothing finished is lost or done twice, and the Optuna study agrees
with the Parquet rows."""

import json
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


def _sweep(storage, *flags, env=None):
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "sweep", "--preset", "smoke",
                             "--storage", str(storage), *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**ENV, **(env or {})}, cwd=ROOT)


def _kill_when(proc, ready, timeout_s=600):
    deadline = time.time() + timeout_s
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the sweep never reached the point to kill it at"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _resume(storage, name="smoke"):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "resume", name, "--storage",
                           str(storage)], capture_output=True, text=True, timeout=900, env=ENV, cwd=ROOT)


def _study(storage, name="smoke"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage / name / 'study.db'}")


def _check_complete(storage, name="smoke"):
    trials = pq.read_table(storage / name / "results" / "trials").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4  # each exactly once
    assert all(t["status"] == "ok" for t in trials)
    states = [t.state.name for t in _study(storage, name).trials]
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


def test_a_driver_killed_between_a_trials_end_and_its_parquet_write_loses_nothing(tmp_path):
    # No file marks that moment, so the driver kills itself there (SIGKILL, see _killpoints).
    storage = tmp_path / "sweeps"
    sweep = _sweep(storage, env={"UNDISTILL_KILL_AT": "before-trial-write"})
    assert sweep.wait(timeout=600) == -signal.SIGKILL, sweep.communicate()[1][-3000:]
    results = storage / "smoke" / "results" / "trials"
    assert not results.exists() or not any(results.glob("[!.]*.parquet"))  # the row was lost...
    told = [t.params for t in _study(storage).trials if t.state.name == "COMPLETE"]
    assert told  # ... after Optuna was told: the trial had finished

    resumed = _resume(storage)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = _check_complete(storage)
    students = pq.read_table(storage / "smoke" / "results" / "students").to_pylist()
    for params in told:  # rerun by the restored Tune from the artifact store: nothing retrained
        (trial,) = [t for t in trials if all(t[k] == v for k, v in params.items())]
        assert all(s["cached"] for s in students if s["trial_id"] == trial["trial_id"])


def _descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every live process below `root` (Ray workers sit under the
    driver's raylet)."""
    parent, cmdline = {}, {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in out}
        out.update({pid: cmdline[pid] for pid in frontier})
    return out


def _kill_worker(sweep, title: str, partial_glob: str, partials: Path, timeout_s=600) -> list[str]:
    """SIGKILL every process of the sweep whose title starts with `title` once a phase matching
    `partial_glob` has a mid-phase checkpoint; returns those checkpoints' keys."""
    deadline = time.time() + timeout_s
    while True:
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {title} with a checkpoint to kill"
        keys = [p.name[: -len(".ckpt")] for p in partials.glob(partial_glob)] if partials.is_dir() else []
        victims = [pid for pid, cmd in _descendants(sweep.pid).items() if cmd.startswith(title)]
        if keys and victims:
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            return keys
        time.sleep(0.05)


def test_a_worker_killed_mid_phase_is_retried_from_its_checkpoint(tmp_path):
    # Checkpoints after every epoch, and phases long enough to be caught mid-way.
    config = tmp_path / "slow.toml"
    smoke = (ROOT / "search_spaces" / "presets" / "smoke.toml").read_text()
    config.write_text(smoke.replace("epochs = 12", "epochs = 30") + "checkpoint_every_s = 0\n")
    storage = tmp_path / "sweeps"
    partials = storage / "_artifacts" / ".partial"
    # One trial at a time: the nasty teacher trains in the trial's own process (Tune's actor),
    # its students in Ray tasks.
    sweep = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "sweep", "--config", str(config),
                              "--storage", str(storage), "--concurrency", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    nasty = _kill_worker(sweep, "ray::ImplicitFunc", "nasty-*.ckpt", partials)
    students = _kill_worker(sweep, "ray::kd ", "kd-*.ckpt", partials)
    _, err = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, err[-3000:]

    trials = pq.read_table(storage / "slow" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    artifacts = storage / "_artifacts"
    resumed = {key: json.loads((artifacts / key / "result.json").read_text())["resumed_from_epoch"]
               for key in nasty + students}
    assert all(resumed[key] > 0 for key in nasty), resumed  # not trained from the start again
    assert any(resumed[key] > 0 for key in students), resumed
    assert not any(partials.glob("*.ckpt"))  # published phases leave no checkpoint behind
