"""One driver per sweep: the lease (orchestrator/lease.py). Its rules on real files and real
processes, then for real: a second `sweep`, a `resume` and a `confirm` of a running sweep are
refused within 5 s, naming the holder; Ctrl-C (SIGINT) then stops the first mid-sweep, a
`resume` is stopped by a disk that fills up, and the next `resume` finishes the budget with
every trial exactly once."""

import json
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from _presets import one_attack_smoke
from _readme import fault_message

from orchestrator import SweepOptions
from orchestrator import lease as lease_mod
from orchestrator.layout import read_sweep, write_json
from orchestrator.lease import LEASE, Lease, SweepBusyError, read_holder
from search_spaces._schema import parse_preset
from undistill.storage import Storage

ROOT = Path(__file__).resolve().parents[2]


def _lease(root, command="sweep"):
    said = []
    return Lease(Storage(root), "x", command, say=said.append), said


def test_a_held_lease_refuses_a_second_driver_and_names_its_holder(tmp_path):
    first, _ = _lease(tmp_path)
    first.acquire()
    try:
        second, _ = _lease(tmp_path, "resume")
        with pytest.raises(SweepBusyError) as refused:
            second.acquire()
        message = str(refused.value)
        assert "\n" not in message and "sweep 'x' is running: `sweep` (pid" in message
        assert f"on {socket.gethostname()}" in message and "status x --watch" in message
        assert read_holder(Storage(tmp_path), "x").token == first.holder.token  # untouched
    finally:
        first.release()
    assert not (tmp_path / "x" / LEASE).exists()  # given back
    second, _ = _lease(tmp_path)
    with second:  # free again
        assert read_holder(Storage(tmp_path), "x").command == "sweep"


def test_a_lease_whose_process_ended_is_taken_over_and_the_taker_says_so(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    held, _ = _lease(tmp_path)
    stored = {**held.holder.__dict__, "pid": int(dead.stdout), "token": "someone-else"}
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / LEASE).write_text(json.dumps(stored))
    taker, said = _lease(tmp_path, "resume")
    with taker:
        assert read_holder(Storage(tmp_path), "x").token == taker.holder.token
    assert len(said) == 1 and f"{fault_message('The lease of a driver')} `sweep` (pid {int(dead.stdout)}" in said[0]
    assert "has ended" in said[0]


def test_a_lease_from_another_host_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    held, _ = _lease(tmp_path)
    (tmp_path / "x").mkdir()
    for age, taken in ((10.0, False), (lease_mod.STALE_AFTER_S + 5, True)):
        stored = {**held.holder.__dict__, "host": "elsewhere", "token": "theirs", "heartbeat": time.time() - age}
        (tmp_path / "x" / LEASE).write_text(json.dumps(stored))
        taker, said = _lease(tmp_path)
        if not taken:
            with pytest.raises(SweepBusyError, match="on elsewhere"):
                taker.acquire()
            continue
        with taker:
            assert "no heartbeat for" in said[0]


def test_a_torn_lease_file_holds_nothing(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / LEASE).write_bytes(b'{"token": "ab')  # its writer died mid-write
    with _lease(tmp_path)[0]:
        pass


def test_the_heartbeat_renews_the_lease_and_a_lost_lease_stops_its_driver(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.1)
    lost = []
    held = Lease(Storage(tmp_path), "x", "sweep", say=lambda _m: None, on_lost=lost.append)
    held.acquire()
    try:
        first = read_holder(Storage(tmp_path), "x").heartbeat
        time.sleep(0.5)
        assert read_holder(Storage(tmp_path), "x").heartbeat > first
        # another driver took it over (this one was thought dead)
        stolen = {**held.holder.__dict__, "token": "theirs", "pid": 1}
        Storage(tmp_path).write_bytes(("x", LEASE), json.dumps(stolen).encode())
        deadline = time.time() + 5
        while not lost and time.time() < deadline:
            time.sleep(0.05)
        assert lost and lost[0].token == "theirs"
    finally:
        held.release()
    assert read_holder(Storage(tmp_path), "x").token == "theirs"  # not ours to give back


def test_a_lease_of_a_new_sweep_leaves_no_folder_when_nothing_else_was_written(tmp_path):
    held, _ = _lease(tmp_path)
    with held:
        pass
    assert not (tmp_path / "x").exists()  # the lease alone made it: nothing to keep


def _study(storage):
    return optuna.load_study(study_name="smoke", storage=f"sqlite:///{storage / 'smoke' / 'study.db'}")


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, text=True, **kwargs)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs, room for the smoke sweep and quick to fill; None where a tmpfs cannot be
    mounted (not root): the full-disk step is then left out, and says so."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        warnings.warn(f"a tmpfs cannot be mounted here ({made.stderr.strip()}): no full-disk step", stacklevel=1)
        yield None
        return
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


def _fill_mid_resume(storage: Path, disk: Path, log: Path) -> None:
    """`resume`, the disk filled as its trials start: it stops with one line naming the storage,
    no state file torn (ours or Tune's); then the space is given back."""
    with open(log, "w") as err:
        resuming = _cli("resume", "smoke", "--storage", str(storage), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while "resuming 'smoke'" not in log.read_text():
        assert resuming.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    filler = _fill(disk)
    assert resuming.wait(timeout=300) == 1, log.read_text()[-3000:]
    said = log.read_text()
    last = said.strip().splitlines()[-1]
    assert f"storage {storage} is full" in last and fault_message("The storage filled") in last, said[-3000:]
    assert "`python cli.py resume smoke`" in last and "Traceback" not in said, said[-3000:]
    for state in [*(storage / "smoke").glob("*.json"), *(storage / "smoke" / "tune").glob("experiment_state-*.json")]:
        json.loads(state.read_text())  # the old version or the new one, whole
    filler.unlink()


@pytest.mark.slow
def test_one_sweep_through_a_second_driver_ctrl_c_a_full_disk_and_a_budget_tune_cannot_reach(small_disk, tmp_path):
    """One real sweep, end to end through the faults a driver meets: a second `sweep`, `resume`
    and `confirm` refused while it runs; Ctrl-C mid-sweep; a `resume` whose disk fills up (on a
    real tmpfs); the `resume` that finishes it; and a budget its Tune state cannot reach."""
    storage = (small_disk or tmp_path) / "sweeps"
    config = one_attack_smoke(tmp_path)
    log = open(tmp_path / "first.log", "w+")  # noqa: SIM115 (the process writes it)
    first = _cli("sweep", "--config", str(config), "--storage", str(storage), stdout=subprocess.DEVNULL,
                 stderr=log)
    try:
        deadline = time.time() + 300
        while not (storage / "smoke" / "tune").exists():  # well into it: trials are running
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        # the name given, the refusal comes before anything loads; left to the preset, after the
        # preset is read and checked (seconds more)
        for args, within_s in ((("sweep", "--config", str(config), "--name", "smoke"), 5),
                               (("resume", "smoke"), 5), (("confirm", "smoke", "--seeds", "1"), 5),
                               (("sweep", "--config", str(config)), 60)):
            t0 = time.time()
            second = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--storage", str(storage)],
                                    cwd=ROOT, capture_output=True, text=True, timeout=60)
            took = time.time() - t0
            assert second.returncode == 1, second.stderr
            assert f"sweep 'smoke' is running: `sweep` (pid {first.pid} on {socket.gethostname()}" in second.stderr
            assert fault_message("A second driver") in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
            assert took < within_s, f"{' '.join(args[:2])} took {took:.1f}s to refuse"
        status = subprocess.run([sys.executable, str(ROOT / "cli.py"), "status", "smoke", "--storage",
                                 str(storage)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert f"`sweep` (pid {first.pid} on {socket.gethostname()}" in status.stdout, status.stdout

        # the crash matrix's Ctrl-C: SIGINT mid-sweep stops it, keeps what finished, frees the lease
        results = storage / "smoke" / "results" / "trials"
        while not (results.is_dir() and any(results.glob("[!.]*.parquet"))):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=300) == 1, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    said = (tmp_path / "first.log").read_text()
    assert "`python cli.py resume smoke` " + fault_message("Ctrl-C") in said and "Traceback" not in said, said[-3000:]
    assert not (storage / "smoke" / LEASE).exists()
    kept = {p.name for p in (storage / "smoke" / "results" / "trials").glob("[!.]*.parquet")}
    assert 1 <= len(kept) < 4

    if small_disk is not None:
        _fill_mid_resume(storage, small_disk, tmp_path / "full.log")
    resumed = subprocess.run([sys.executable, str(ROOT / "cli.py"), "resume", "smoke", "--storage", str(storage)],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert all(t["status"] == "ok" for t in trials)
    states = [t.state.name for t in _study(storage).trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states, states
    assert not (storage / "smoke" / LEASE).exists()

    # A Tune state whose trials have all ended short of the budget (here the budget is raised by
    # hand) would make every `resume` stop at once: the rest is searched in a new Tune run.
    record = read_sweep(Storage(storage), "smoke")
    preset = {**record.preset, "search": {**record.preset["search"], "trials": 5}}
    fingerprint = SweepOptions(parse_preset("smoke", preset), "smoke", str(storage),
                               max_teacher_drop=record.max_teacher_drop).fingerprint()
    write_json(Storage(storage), "smoke", "sweep.json",
               replace(record, preset=preset, trials=5, fingerprint=fingerprint).to_json())
    (storage / "smoke" / "state.json").unlink()
    more = subprocess.run([sys.executable, str(ROOT / "cli.py"), "resume", "smoke", "--storage", str(storage)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "Tune's state ended with 4 of 5 trials; " + fault_message("Tune's state can give") in more.stderr
    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert len(trials) == 5 and len({t["trial_id"] for t in trials}) == 5
    assert [t.state.name for t in _study(storage).trials].count("COMPLETE") == 5
