"""The upstream phase DAG on Ray: every node not already in the artifact store runs as a task,
in parallel where the DAG allows (a node that needs the teacher waits for it)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .artifacts import ArtifactStore
from .plan import Node


def _run_node(node: Node, storage_root: str, data_cache: str, *_deps) -> dict:
    """Worker side: compute one upstream phase unless an intact artifact already holds it."""
    from trainables.phases import MODEL_FILE, run_phase

    store = ArtifactStore(storage_root)
    cached = store.get(node.key)
    if cached is not None:
        return cached
    if node.teacher_key is not None:
        teacher = store.get(node.teacher_key)
        if teacher is None or teacher["status"] != "ok":  # nothing to distil from
            return {"phase": node.config.phase, "status": "skipped", "test_acc": None, "wall_s": 0.0}
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
