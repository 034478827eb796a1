"""Ray core for the driver: start or join a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from undistill.errors import ConfigError, UndistillError
from undistill.storage import Storage

from ._resources import Resources


class ClusterError(UndistillError):
    """Ray could not be started or reached."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nobody answers at: ray.init would retry for minutes."""
    if address == "auto" or address.startswith("ray://"):
        return  # `auto` is resolved by Ray from a local `ray start`; it fails fast on its own
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, "
                           "6379 by default) or `auto`")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one "
                           "with `ray start --head` or check the address") from None


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local one with `num_cpus` CPU slots. True when
    we started it (and so must stop it). The dashboard is off locally; it would bind to
    127.0.0.1 only."""
    import ray

    # Silence Tune's per-trial CSV/JSON/TensorBoard loggers: results go to our Parquet store.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    # workers' output reaches the driver, which keeps it in the sweep's log (`_quiet`)
    quiet = dict(logging_level=logging.ERROR, log_to_driver=True)
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **quiet)
        else:
            # Keep idle workers: by default Ray ends a worker idle for a second once there are more
            # than CPU slots, so nearly every student phase would pay a fresh interpreter and torch
            # import (measured: 16 processes for 16 child tasks, 4 with this setting).
            # address="local": our own Ray, never one that `ray start` runs (or once ran, leaving
            # its cluster file) on this machine, which would refuse num_cpus.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1",
                     _system_config={"kill_idle_workers_interval_ms": 0}, **quiet)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE") != "token":
            hint = ("; if the cluster was started with RAY_AUTH_MODE=token, run with "
                    "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token")
        raise ClusterError(f"could not start or reach {where}: {str(exc).splitlines()[0]}{hint}") from None
    stop_on_sigterm()
    return not address


def stop_on_sigterm() -> None:
    """SIGTERM (what `timeout`, Slurm and Kubernetes send) stops the driver as Ctrl-C does: Tune
    stops its trials and keeps what finished, the resume hint is printed, exit 1. Called after
    `ray.init`, whose own handler for it would otherwise dump a C++ stack and kill the driver
    mid-write; in the main thread only (where Python lets a handler be set)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: os.kill(os.getpid(), signal.SIGINT))


def alive_nodes() -> list[dict]:
    """The cluster's live nodes that offer resources: id, host, address, CPUs and GPUs."""
    import ray

    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        nodes.append({"node_id": n["NodeID"], "hostname": n.get("NodeManagerHostname", ""),
                      "address": n.get("NodeManagerAddress", ""), "CPU": res.get("CPU", 0.0),
                      "GPU": res.get("GPU", 0.0)})
    return nodes


def describe(nodes: list[dict]) -> str:
    cpus, gpus = sum(n["CPU"] for n in nodes), sum(n["GPU"] for n in nodes)
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPU slots"
            + (f", {gpus:g} GPUs" if gpus else ""))


def check_fits(nodes: list[dict], resources: Resources, cap: int | None) -> int:
    """How many trials run at once: what the cluster holds, at most `cap`. A ConfigError, before
    any work, when not even one trial fits."""
    fits = resources.capacity(nodes)
    if fits < 1:
        need_gpu = resources.gpus * resources.bundles
        if resources.gpus and sum(n["GPU"] for n in nodes) < need_gpu:
            raise ConfigError(
                f"--gpus-per-trial {resources.gpus:g}: one trial needs {need_gpu:g} GPUs "
                f"({resources.describe()}), the cluster has {describe(nodes)}; lower "
                "--gpus-per-trial or add GPU nodes")
        raise ConfigError(
            f"one trial needs {resources.describe()}, which the cluster ({describe(nodes)}) "
            "cannot place; lower --cpus-per-trial/--gpus-per-trial")
    return min(fits, cap) if cap else fits


def this_machine() -> set[str]:
    """The addresses this machine answers to (a node started here reports one of them)."""
    import ray

    names = {"127.0.0.1", "localhost", socket.gethostname(), ray.util.get_node_ip_address()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return names


def check_storage_shared(nodes: list[dict], storage: Storage, declared_shared: bool,
                         here: set[str] | None = None) -> None:
    """A local path is only safe when every node (and this driver) sees the same folder: all on
    this machine, or a shared mount the user vouches for."""
    here = this_machine() if here is None else here
    elsewhere = {n["address"] for n in nodes} - here
    if storage.is_local and elsewhere and not declared_shared:
        raise ConfigError(
            f"--storage {storage} is a local path, but {len(elsewhere)} node(s) run on other "
            "machines; use a bucket (s3://…, gs://…), or a folder every node mounts at the same "
            "path and pass --shared-storage")


def shutdown() -> None:
    import ray

    ray.shutdown()
