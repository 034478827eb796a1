"""Scale-out on real Ray clusters on this machine (no mocks): a head and two worker nodes with
fake GPUs (`ray.cluster_utils.Cluster`), and a cluster started with `ray start` that the CLI
joins by address. Where work ran is checked from the Parquet rows the sweep wrote."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _net import free_port, wait_for_port
from _presets import one_attack_smoke

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cli(*args, env=None, timeout=900):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def _intervals_overlap_max(spans):
    """The most spans open at one instant."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.fixture
def fake_gpu_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=4, num_gpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield [w.node_id for w in workers]
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_trials_and_their_students_pack_onto_fractional_gpus_of_two_nodes(fake_gpu_cluster, tmp_path):
    from orchestrator import SweepOptions, run_sweep
    from search_spaces import load_preset

    storage = tmp_path / "sweeps"
    preset = load_preset(config_file=one_attack_smoke(tmp_path))
    outcome = run_sweep(SweepOptions(preset, "gpu", str(storage), gpus_per_trial=0.5))
    assert len(outcome.trials) == 4

    results = storage / "gpu" / "results"
    trials = pq.read_table(results / "trials").to_pylist()
    students = pq.read_table(results / "students").to_pylist()
    upstream = json.loads((storage / "gpu" / "upstream.json").read_text())["phases"]
    assert all(t["status"] == "ok" for t in trials)

    # every process held half a GPU on a worker (the head has none), and one GPU id
    trained = [s for s in students if not s["cached"]]
    upstream_trained = [u for u in upstream if not u["cached"]]
    for row in trials + trained + upstream_trained:
        assert row["node_id"] in fake_gpu_cluster and row["gpus"] == 0.5 and row["cpus"] == 1.0
        assert len(row["gpu_ids"]) == 1
    # trials ran on both workers
    assert {t["node_id"] for t in trials} | {s["node_id"] for s in trained} == set(fake_gpu_cluster)

    # up to the concurrency the GPUs allow (8 half-GPU bundles, 3 per trial: 2 trials) ran at once
    spans = [(t["started_at"].timestamp(), t["finished_at"].timestamp()) for t in trials]
    assert _intervals_overlap_max(spans) == 2

    # no GPU was over-subscribed: at any instant the shares held on each GPU sum to at most 1
    holders = {}
    for row in trials + trained:
        key = (row["node_id"], row["gpu_ids"][0])
        holders.setdefault(key, []).append((row["started_at"].timestamp(), row["finished_at"].timestamp()))
    for row in upstream_trained:
        holders.setdefault((row["node_id"], row["gpu_ids"][0]), []).append((row["started_at"], row["finished_at"]))
    for key, held in holders.items():
        assert _intervals_overlap_max(held) * 0.5 <= 1.0, key

    # student phases ran inside their trial's placement group, beside it
    by_trial = {t["trial_id"]: t for t in trials}
    assert trained
    for s in trained:
        assert s["placement_group"] and s["placement_group"] == by_trial[s["trial_id"]]["placement_group"]
    # ... side by side: the two students of some trial overlapped in time
    pairs = {}
    for s in trained:
        pairs.setdefault(s["trial_id"], []).append((s["started_at"].timestamp(), s["finished_at"].timestamp()))
    assert any(len(p) == 2 and _intervals_overlap_max(p) == 2 for p in pairs.values())

    # status reports work per node
    status = _cli("status", "gpu", "--storage", str(storage), "--format", "json")
    assert status.returncode == 0, status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert {n["node"] for n in nodes} == {w[:8] for w in fake_gpu_cluster}
    assert sum(n["trials"] for n in nodes) == 4 and all(0 < n["utilisation"] <= 1 for n in nodes)


def test_asking_for_more_gpus_than_the_cluster_has_is_refused_before_any_work(fake_gpu_cluster, tmp_path):
    from orchestrator import SweepOptions, run_sweep
    from search_spaces import load_preset
    from undistill.errors import ConfigError

    storage = tmp_path / "sweeps"
    with pytest.raises(ConfigError, match="one trial needs 6 GPUs"):
        run_sweep(SweepOptions(load_preset("smoke"), "big", str(storage), gpus_per_trial=2))
    assert not (storage / "big" / "sweep.json").exists() and not (storage / "_artifacts").exists()


@pytest.fixture
def ray_start_cluster():
    """A one-node cluster from `ray start --block` on loopback, stopped by signalling its process
    group (so that `ray stop` does not kill other Ray instances on the machine)."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=6", "--include-dashboard=false", "--disable-usage-stats",
         """--system-config={"kill_idle_workers_interval_ms":0}""",  # as the README's head command
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        import signal

        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


def test_the_cli_joins_a_cluster_started_with_ray_start(ray_start_cluster, tmp_path):
    storage = tmp_path / "sweeps"
    run = _cli("sweep", "--config", str(one_attack_smoke(tmp_path)), "--trials", "2", "--address", ray_start_cluster,
               "--storage", str(storage))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cluster: 1 node, 6 CPU slots" in run.stderr and "2 trials at once" in run.stderr
    trials = pq.read_table(storage / "smoke" / "results" / "trials").to_pylist()
    assert len(trials) == 2 and all(t["status"] == "ok" for t in trials)
    status = _cli("status", "smoke", "--storage", str(storage))
    assert status.returncode == 0 and "where it ran" in status.stdout


def test_an_address_nobody_answers_at_is_one_line_before_any_work(tmp_path):
    storage = tmp_path / "sweeps"
    run = _cli("sweep", "--preset", "smoke", "--address", f"127.0.0.1:{free_port()}",
               "--storage", str(storage), timeout=120)
    assert run.returncode == 1 and "no Ray cluster answers at" in run.stderr
    assert "Traceback" not in run.stderr and not (storage / "smoke").exists()


def test_a_local_sweep_starts_its_own_ray_beside_another_ray_or_its_stale_cluster_file():
    """`ray start` on the machine, running or long dead, leaves a cluster file that plain
    `ray.init(num_cpus=…)` tries to join (and then refuses num_cpus): a local sweep must start
    its own Ray whatever that file says."""
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths have a limit
    (Path(temp) / "ray").mkdir()
    (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # nobody there
    script = ("from orchestrator import _cluster\n"
              "assert _cluster.connect(None, num_cpus=1)\n"
              "print(len(_cluster.alive_nodes()))\n"
              "_cluster.shutdown()\n")
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "1", run.stderr[-2000:]
