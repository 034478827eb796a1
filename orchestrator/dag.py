"""The upstream phase DAG on Ray: every node not already in the artifact store runs as a task,
in parallel where the DAG allows (a node that needs the teacher waits for it)."""

from __future__ import annotations

from collections.abc import Callable

from trainables.phases import batch_groups

from ._worker import PhaseRuntime, remote_batch, remote_phase
from .artifacts import ArtifactStore
from .plan import Node


def run_upstream(nodes: tuple[Node, ...], runtime: PhaseRuntime,
                 on_done: Callable[[Node, dict], None], batch: bool = True,
                 on_tick: Callable[[], None] | None = None) -> dict[str, dict]:
    """Run every node not already in the artifact store, in parallel where the DAG allows; each
    task holds one trial bundle's worth of CPU and GPU. `batch`: the attacks on one student
    architecture run as one task that trains them as one stack (`_worker.run_batch`).

    A node's dependencies are passed to its task as object refs, so Ray starts it only once
    they have finished. `on_done(node, result)` is called as each one completes, `on_tick()`
    about once a second while they run (a progress display).
    """
    import ray

    store = ArtifactStore(runtime.storage)
    remote, remote_together = remote_phase(runtime), remote_batch(runtime)
    results: dict[str, dict] = {}
    pending: dict = {}
    refs: dict[str, object] = {}
    todo = []
    for node in nodes:
        cached = store.get(node.key)
        if cached is not None:
            results[node.key] = {**cached, "cached": True}
            on_done(node, results[node.key])
        else:
            todo.append(node)
    for group in batch_groups(todo, on_gpu=runtime.resources.gpus > 0) if batch else [[n] for n in todo]:
        deps = [refs[k] for k in dict.fromkeys(n.teacher_key for n in group) if k in refs]
        if len(group) == 1:
            ref = remote.options(name=group[0].name).remote(group[0], runtime, *deps)
        else:
            ref = remote_together.options(name=" + ".join(n.name for n in group)).remote(group, runtime, *deps)
        refs.update((n.key, ref) for n in group)
        pending[ref] = group
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        if not ready:
            if on_tick is not None:
                on_tick()
            continue
        group = pending.pop(ready[0])
        done = ray.get(ready[0])
        for node, result in zip(group, done if len(group) > 1 else [done], strict=True):
            results[node.key] = result
            on_done(node, result)
    return results
