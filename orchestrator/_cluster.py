"""Ray core for the driver: start or join a cluster."""

from __future__ import annotations

import logging
import os
import socket

from trainables.errors import UndistillError


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
