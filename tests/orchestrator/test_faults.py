"""Faults done for real: the driver SIGKILLed at each kind of moment, then `resume`; a worker
process SIGKILLed mid-phase. Nothing finished is lost or done twice, and the Optuna study agrees
with the Parquet rows."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from _presets import one_attack_smoke
from _readme import fault_message

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _start(*args, env=None) -> subprocess.Popen:
    """`python cli.py ARGS` in the background, its stderr in a file (a pipe nobody reads while
    the test polls could fill up and stall it): read it back with `_stderr(proc)`."""
    log = tempfile.NamedTemporaryFile("w+", prefix="undistill-", suffix=".log", delete=False)  # noqa: SIM115 (the process owns it)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.DEVNULL,
                            stderr=log, text=True, env={**ENV, **(env or {})}, cwd=ROOT)
    proc.log = Path(log.name)
    return proc


def _stderr(proc) -> str:
    return proc.log.read_text()


def _sweep(storage, *flags, env=None):
    config = one_attack_smoke(storage.parent)
    return _start("sweep", "--config", str(config), "--storage", str(storage), *flags, env=env)


def _kill_when(proc, ready, timeout_s=600):
    deadline = time.time() + timeout_s
    while not ready():
        assert proc.poll() is None, _stderr(proc)[-3000:]
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


def test_a_driver_killed_at_any_point_resumes_with_every_trial_done_once(tmp_path):
    """One sweep, its driver SIGKILLed three times: during the upstream phases, between a trial's
    end and its Parquet write, and mid-trial. Each time the same `sweep` or `resume` goes on from
    what was done; the last run finishes the budget."""
    storage = tmp_path / "sweeps"
    artifacts = storage / "_artifacts"
    results = storage / "smoke" / "results" / "trials"

    # 1. during the upstream phases, once the first is sealed (its manifest is written last)
    first = _sweep(storage)
    _kill_when(first, lambda: artifacts.is_dir() and any(artifacts.glob("*/MANIFEST.json")))
    sealed = {p.parent.name for p in artifacts.glob("*/MANIFEST.json")}
    assert sealed and not (storage / "smoke" / "results").exists()

    # 2. the same command again; killed between a trial's end and its row. No file marks that
    # moment, so the driver kills itself there (SIGKILL, see orchestrator/_killpoints.py).
    second = _sweep(storage, env={"UNDISTILL_KILL_AT": "before-trial-write"})
    assert second.wait(timeout=600) == -signal.SIGKILL, _stderr(second)[-3000:]
    err = _stderr(second)
    assert err.count("(cached)") >= len(sealed)  # sealed upstream phases were not trained again
    assert not results.exists() or not any(results.glob("[!.]*.parquet"))  # the row was lost...
    told = [t.params for t in _study(storage).trials if t.state.name == "COMPLETE"]
    assert told  # ... after Optuna was told: the trial had finished

    # 3. `resume`, killed mid-trial: once a row is written, while the next trials run
    third = _start("resume", "smoke", "--storage", str(storage))
    _kill_when(third, lambda: results.is_dir() and any(results.glob("[!.]*.parquet")))
    before = {p.name for p in results.glob("[!.]*.parquet")}
    assert 1 <= len(before) < 4

    # 4. `resume` to the end
    last = _resume(storage)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "resuming 'smoke'" in last.stderr
    trials = _check_complete(storage)
    assert before <= {f"{t['trial_id']}.parquet" for t in trials}  # finished rows kept
    students = pq.read_table(storage / "smoke" / "results" / "students").to_pylist()
    for params in told:  # rerun by the restored Tune from the artifact store: nothing retrained
        (trial,) = [t for t in trials if {"defense": t["defense"], **dict(t["knobs"])} == params]
        assert all(s["cached"] for s in students if s["trial_id"] == trial["trial_id"])


def test_a_teacher_lost_mid_sweep_is_computed_again_once_and_every_trial_finishes(tmp_path):
    """The normal teacher's weights deleted once the upstream phases are done, before any trial
    reads them: the trials that need them compute them again, once (one process under the
    key's lock, the others waiting on it), and the sweep finishes its budget, no trial `error`."""
    storage = tmp_path / "sweeps"
    upstream = storage / "smoke" / "upstream.json"
    sweep = _sweep(storage)
    deadline = time.time() + 600
    while not upstream.is_file():  # written whole (atomically), seconds before a trial starts
        assert sweep.poll() is None, _stderr(sweep)[-3000:]
        assert time.time() < deadline, "the upstream phases never finished"
        time.sleep(0.01)
    (teacher,) = [p["key"] for p in json.loads(upstream.read_text())["phases"] if p["name"] == "teacher"]
    (storage / "_artifacts" / teacher / "model.pt").unlink()
    assert sweep.wait(timeout=900) == 0, _stderr(sweep)[-3000:]

    _check_complete(storage)  # every trial ok, each once; Optuna agrees
    assert json.loads((storage / "_artifacts" / teacher / "result.json").read_text())["recomputed"] is True
    history = (storage / "_artifacts" / ".locks" / f"{teacher}.lock").read_text().splitlines()
    assert len(history) == 1 and "its artifact was missing or damaged" in history[0], history
    assert fault_message("A teacher lost") in _stderr(sweep)  # the worker's line, shown by the driver


def test_sigterm_stops_a_sweep_as_ctrl_c_does_and_a_moved_copy_resumes_in_place(tmp_path):
    """`timeout`, Slurm and Kubernetes stop a job with SIGTERM: the driver stops its trials,
    keeps what finished, says how to resume and exits 1, without Ray's C++ signal dump. The
    stopped sweep is then copied elsewhere (a new mount, a colleague's copy) and the original
    moved away: `resume` of the copy finishes it there, every byte of the original untouched
    (Tune's saved callbacks and searcher held the old paths)."""
    storage = tmp_path / "sweeps"
    results = storage / "smoke" / "results" / "trials"
    sweep = _sweep(storage)
    deadline = time.time() + 600
    while not (results.is_dir() and any(results.glob("[!.]*.parquet"))):
        assert sweep.poll() is None, _stderr(sweep)[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=300) == 1, _stderr(sweep)[-3000:]
    err = _stderr(sweep)
    assert "`python cli.py resume smoke` continues it" in err and "SIGTERM received" not in err, err[-3000:]
    before = {p.name for p in results.glob("[!.]*.parquet")}
    assert 1 <= len(before) < 4

    # a copy whose results lag its Tune state (a partial sync) is refused before any compute
    lagging = tmp_path / "lagging"
    shutil.copytree(storage, lagging, symlinks=True)
    for row in (lagging / "smoke" / "results" / "trials").glob("*.parquet"):
        row.unlink()
    refused = _resume(lagging)
    assert refused.returncode == 1 and fault_message("Tune's state and the results") in refused.stderr, \
        refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    copy = tmp_path / "copy"
    shutil.copytree(storage, copy, symlinks=True)
    original = tmp_path / "original"  # moved away: its old path no longer exists
    storage.rename(original)
    snapshot = _tree_bytes(original)
    last = _resume(copy)
    assert last.returncode == 0, last.stderr[-3000:]
    trials = _check_complete(copy)
    assert before <= {f"{t['trial_id']}.parquet" for t in trials}
    assert not storage.exists()  # nothing written to the old path either
    assert _tree_bytes(original) == snapshot


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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
        assert sweep.poll() is None, _stderr(sweep)[-3000:]
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
    config = one_attack_smoke(tmp_path, "slow", epochs=24, checkpoint_every_s=0)
    storage = tmp_path / "sweeps"
    partials = storage / "_artifacts" / ".partial"
    # One trial at a time: the nasty teacher trains in the trial's own process (Tune's actor),
    # its students in Ray tasks.
    sweep = _start("sweep", "--config", str(config), "--storage", str(storage), "--concurrency", "1")
    nasty = _kill_worker(sweep, "ray::ImplicitFunc", "nasty-*.ckpt", partials)
    students = _kill_worker(sweep, "ray::kd-T", "kd-*.ckpt", partials)
    assert sweep.wait(timeout=900) == 0, _stderr(sweep)[-3000:]
    # recovered faults are a line each; Ray's tracebacks are in the sweep's log
    err = _stderr(sweep)
    assert fault_message("A trial failed") in err and "Traceback" not in err, err[-3000:]
    assert any((storage / "slow" / "logs").glob("driver-*.log"))

    trials = pq.read_table(storage / "slow" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    artifacts = storage / "_artifacts"
    resumed = {key: json.loads((artifacts / key / "result.json").read_text())["resumed_from_epoch"]
               for key in nasty + students}
    assert all(resumed[key] > 0 for key in nasty), resumed  # not trained from the start again
    assert any(resumed[key] > 0 for key in students), resumed
    assert not any(partials.glob("*.ckpt"))  # published phases leave no checkpoint behind


@pytest.fixture
def two_worker_cluster():
    """A head that runs nothing and two worker nodes of 3 CPUs: one trial (3 bundles) each."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=3) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_node_lost_mid_sweep_has_its_trials_rerun_on_the_nodes_left(two_worker_cluster, tmp_path):
    import threading

    from orchestrator import SweepOptions, run_sweep
    from search_spaces import load_preset

    cluster, workers = two_worker_cluster
    config = one_attack_smoke(tmp_path, "slow", epochs=24, checkpoint_every_s=0)
    storage = tmp_path / "sweeps"
    partials = storage / "_artifacts" / ".partial"
    lost = {}

    def remove_the_busy_node():
        # One trial at a time: once a nasty teacher is mid-phase (its checkpoint exists), remove
        # the node that trains it (Tune's actor sits under the node's raylet, titled `.train`).
        deadline = time.time() + 600
        while time.time() < deadline:
            keys = [p.name[: -len(".ckpt")] for p in partials.glob("nasty-*.ckpt")] if partials.is_dir() else []
            for node in workers if keys else []:
                raylet = node.all_processes["raylet"][0].process.pid
                if any(c.startswith("ray::ImplicitFunc.train") for c in _descendants(raylet).values()):
                    cluster.remove_node(node)
                    lost.update(node_id=node.node_id, at=time.time(), nasty=keys)
                    return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_the_busy_node, daemon=True)
    remover.start()
    outcome = run_sweep(SweepOptions(load_preset(config_file=config), "lost", str(storage), concurrency=1))
    remover.join(timeout=5)
    assert lost, "the sweep finished before a node could be removed"

    trials = pq.read_table(storage / "lost" / "results" / "trials").to_pylist()
    assert len(outcome.trials) == len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert all(t["status"] == "ok" for t in trials)
    (left,) = [w.node_id for w in workers if w.node_id != lost["node_id"]]
    for t in trials:  # nothing finished on the lost node after it was gone
        assert t["node_id"] == left or t["finished_at"].timestamp() < lost["at"]
    # the nasty teacher cut off was retried on the node left, from its checkpoint
    (key,) = lost["nasty"]
    nasty = json.loads((storage / "_artifacts" / key / "result.json").read_text())
    assert nasty["resumed_from_epoch"] > 0
    (trial,) = [t for t in trials if dict(t["knobs"] or {}) == nasty["config"]["knobs"]]
    assert trial["node_id"] == left
    # ... as the same trial: not replaced by a new one, nor recorded as failed
    assert [t.state.name for t in _study(storage, "lost").trials] == ["COMPLETE"] * 4


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    # No valid ω·τ_A² makes the nasty loss overflow on MNIST-1D: the KL term saturates (ω = 10,
    # τ_A = 100 only collapses the teacher). So the preset's start point is set past validation
    # to ω = ∞, and the real training loop meets a non-finite loss inside a real sweep.
    import math
    from dataclasses import replace

    from orchestrator import SweepOptions, run_sweep
    from results import pareto_front
    from search_spaces import load_preset

    smoke = load_preset(config_file=one_attack_smoke(tmp_path))
    space = replace(smoke.space, defenses=tuple(d.with_start({"omega": math.inf, "tau_a": 4.0})
                                                if d.defense == "nasty" else d for d in smoke.space))
    preset = replace(smoke, space=space)
    storage = tmp_path / "sweeps"
    outcome = run_sweep(SweepOptions(preset, "diverge", str(storage)))

    trials = pq.read_table(storage / "diverge" / "results" / "trials").to_pylist()
    assert len(trials) == 4 and len(outcome.trials) == 4  # the sweep went on to its budget
    (diverged,) = [t for t in trials if t["status"] == "diverged"]
    assert dict(diverged["knobs"])["omega"] == math.inf and diverged["student_acc"] is None
    students = pq.read_table(storage / "diverge" / "results" / "students").to_pylist()
    assert [s["status"] for s in students if s["trial_id"] == diverged["trial_id"]] == ["skipped"] * 2
    assert all(t["status"] == "ok" for t in trials if t is not diverged)
    front = pareto_front(trials)
    assert front and diverged["trial_id"] not in {f["trial_id"] for f in front}
    assert [f["trial_id"] for f in outcome.front] == [f["trial_id"] for f in front]
    # Optuna saw it as pruned with a violated constraint, so the sampler steers away from it
    study = _study(storage, "diverge").trials
    pruned = [t for t in study if t.state.name == "PRUNED"]
    assert [(t.params["omega"], t.constraints) for t in pruned] == [(math.inf, {"diverged": 1.0})]
    assert len(study) == 4 and [t.state.name for t in study].count("COMPLETE") == 3
