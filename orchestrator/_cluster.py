"""Ray core for the driver: start or join a cluster, and run the upstream phase DAG as tasks."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Callable

from trainables.errors import UndistillError

from .artifacts import ArtifactStore
from .plan import Node


class ClusterError(UndistillError):
    """Ray could not be started or reached."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nobody answers at: ray.init would retry for minutes."""
    if address == "auto" or address.startswith("ray://"):
        return  # `auto` is resolved by Ray from a local `ray start`; it fails fast on its own
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, "
                           "6379 by default) or `auto`")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one "
                           "with `ray start --head` or check the address") from None


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local one. True when we started it (and so
    must stop it). The dashboard is off locally; it would bind to 127.0.0.1 only."""
    import ray

    # Silence Tune's per-trial CSV/JSON/TensorBoard loggers: results go to our Parquet store.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **quiet)
            return False
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1", **quiet)
        return True
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise ClusterError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from None


def shutdown() -> None:
    import ray

    ray.shutdown()


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def _run_node(node: Node, storage_root: str, data_cache: str, *_deps) -> dict:
    """Worker side: compute one upstream phase unless an intact artifact already holds it."""
    from trainables.phases import MODEL_FILE, run_phase

    store = ArtifactStore(storage_root)
    cached = store.get(node.key)
    if cached is not None:
        return cached
    staged = store.staging(node.key)
    weights = store.path(node.teacher_key) / MODEL_FILE if node.teacher_key else None
    result = run_phase(node.config, staged, teacher_weights=weights, data_cache=Path(data_cache),
                       checkpoint=store.partial_checkpoint(node.key))
    return store.publish(node.key, staged, result)


def run_upstream(nodes: tuple[Node, ...], storage_root: str, data_cache: str,
                 on_done: Callable[[Node, dict, bool], None]) -> dict[str, dict]:
    """Run every node not already in the artifact store, in parallel where the DAG allows.

    A node's dependencies are passed to its task as object refs, so Ray starts it only once
    they have finished. `on_done(node, result, cached)` is called as each one completes.
    """
    import ray

    store = ArtifactStore(storage_root)
    remote = ray.remote(num_cpus=1, max_retries=2)(_run_node)
    results: dict[str, dict] = {}
    pending: dict = {}
    refs: dict[str, object] = {}
    for node in nodes:
        cached = store.get(node.key)
        if cached is not None:
            results[node.key] = cached
            on_done(node, cached, True)
            continue
        deps = [refs[node.teacher_key]] if node.teacher_key in refs else []
        ref = remote.options(name=node.name).remote(node, storage_root, data_cache, *deps)
        refs[node.key] = ref
        pending[ref] = node
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        node = pending.pop(ready[0])
        results[node.key] = ray.get(ready[0])
        on_done(node, results[node.key], False)
    return results
