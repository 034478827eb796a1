"""The upstream phase DAG on Ray: every node not already in the artifact store runs as a task,
in parallel where the DAG allows (a node that needs the teacher waits for it)."""

from __future__ import annotations

from collections.abc import Callable

from ._worker import PhaseRuntime, remote_phase
from .artifacts import ArtifactStore
from .plan import Node


def run_upstream(nodes: tuple[Node, ...], runtime: PhaseRuntime,
                 on_done: Callable[[Node, dict], None]) -> dict[str, dict]:
    """Run every node not already in the artifact store, in parallel where the DAG allows; each
    task holds one trial bundle's worth of CPU and GPU.

    A node's dependencies are passed to its task as object refs, so Ray starts it only once
    they have finished. `on_done(node, result)` is called as each one completes.
    """
    import ray

    store = ArtifactStore(runtime.storage)
    remote = remote_phase(runtime)
    results: dict[str, dict] = {}
    pending: dict = {}
    refs: dict[str, object] = {}
    for node in nodes:
        cached = store.get(node.key)
        if cached is not None:
            results[node.key] = {**cached, "cached": True}
            on_done(node, results[node.key])
            continue
        deps = [refs[node.teacher_key]] if node.teacher_key in refs else []
        ref = remote.options(name=node.name).remote(node, runtime, *deps)
        refs[node.key] = ref
        pending[ref] = node
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        node = pending.pop(ready[0])
        results[node.key] = ray.get(ready[0])
        on_done(node, results[node.key])
    return results
