"""What the orchestrator runs on workers: one phase through the artifact store, recording where
and when it ran. The same function serves the upstream DAG, a trial's own phase and its students.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainables.loop import CHECKPOINT_EVERY_S
from trainables.phases import MODEL_FILE, PhaseJob, batchable, run_attack_batch, run_phase
from trainables.stacked import NotStackable
from undistill.errors import UndistillError
from undistill.outcomes import Candidate
from undistill.storage import Storage

from ._quiet import say_from_worker
from ._resources import Resources
from .artifacts import ArtifactStore, node_cache_root
from .live import EpochTicker


@dataclass(frozen=True)
class PhaseRuntime:
    """How every phase of a sweep runs: where its outputs go, what its process holds, where
    datasets read from a folder are, and how often it checkpoints."""

    storage: Storage
    resources: Resources
    data_root: str | None = None  # CIFAR-like datasets: the same path on every node
    checkpoint_every_s: float = CHECKPOINT_EVERY_S  # see trainables.loop
    sweep: str | None = None  # whose `live/` folder shows its phases as they train (see `live`)
    candidate: Candidate | None = None  # the trial's whose phases these are (None: upstream)

    def ticker(self, phase: str, key: str) -> EpochTicker | None:
        """A phase's live entry (None: no sweep to show it in)."""
        if self.sweep is None:
            return None
        who = self.candidate
        return EpochTicker(self.storage, self.sweep, phase, key, who and who.defense, who and dict(who.knobs))


class ArtifactMissing(UndistillError):
    """A phase's input is not in the artifact store although it was computed before."""


def remote_phase(runtime: PhaseRuntime):
    """`run_job` as a Ray task holding one bundle. A task whose worker dies is retried (it
    resumes from its checkpoint). A GPU task gets a fresh worker process each time: CUDA binds
    to the GPU it first sees, so a reused worker would keep computing on an earlier task's GPU."""
    import ray

    gpus = runtime.resources.gpus
    return ray.remote(max_retries=2, max_calls=1 if gpus else 0,
                      **runtime.resources.task_options())(run_job)


def remote_batch(runtime: PhaseRuntime):
    """`run_batch` as a Ray task holding one bundle, retried and placed as `remote_phase`."""
    import ray

    gpus = runtime.resources.gpus
    return ray.remote(max_retries=2, max_calls=1 if gpus else 0,
                      **runtime.resources.task_options())(run_batch)


def data_cache(storage: Storage) -> Path:
    """Generated datasets: beside the sweeps on a local or NFS storage, else on each node."""
    return storage.local_path("_data") if storage.is_local else node_cache_root() / "data"


def placement() -> dict:
    """Where this process runs: node, host, the GPUs Ray gave it, its placement group."""
    out = {"hostname": socket.gethostname(), "node_id": "", "gpu_ids": [], "placement_group": ""}
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        out["node_id"] = ctx.get_node_id()
        out["gpu_ids"] = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
        out["placement_group"] = ctx.get_placement_group_id() or ""
    return out


def run_batch(jobs: list[PhaseJob], runtime: PhaseRuntime, *_deps) -> list[dict]:
    """`run_job` for attack phases that train as one stack (`trainables.phases.batchable`):
    the results in order, each published under its own key. A finished one is never trained
    again; the rest train together and resume from the batch's checkpoint (its key names the
    phases still to train, so it is resumed only by the same batch)."""
    store = ArtifactStore(runtime.storage)
    results: dict[str, dict] = {}
    for job in jobs:
        found = store.get(job.key)
        if found is not None:
            results[job.key] = {**found, "cached": True}
    todo = [job for job in jobs if job.key not in results]
    if len(todo) == 1 or (todo and not batchable([j.config for j in todo])):
        results.update((job.key, run_job(job, runtime)) for job in todo)
    elif todo:
        teacher_weights = _teacher_weights(store, todo[0], runtime)
        if teacher_weights is None:
            results.update((job.key, _skipped(job)) for job in todo)
        else:
            try:
                results.update(_train_batch(store, todo, teacher_weights, runtime))
            except NotStackable:  # said in each row: `batched` false
                results.update((job.key, run_job(job, runtime)) for job in todo)
    return [results[job.key] for job in jobs]


def batch_key(jobs: list[PhaseJob]) -> str:
    return "batch-" + hashlib.sha256(" ".join(sorted(j.key for j in jobs)).encode()).hexdigest()[:20]


def _train_batch(store: ArtifactStore, jobs: list[PhaseJob], teacher_weights: Path,
                 runtime: PhaseRuntime) -> dict[str, dict]:
    gpus = runtime.resources.gpus
    where = {**placement(), "cpus": runtime.resources.cpus, "gpus": gpus, "started_at": time.time()}
    key = batch_key(jobs)
    checkpoint, on_checkpoint = store.partial(key)
    ticker = runtime.ticker(f"{len(jobs)} attacks on {jobs[0].config.model.label}", key)
    try:
        trained = run_attack_batch([j.config for j in jobs], teacher_weights=teacher_weights,
                                   data_cache=data_cache(runtime.storage), checkpoint=checkpoint,
                                   on_checkpoint=on_checkpoint, checkpoint_tag=key,
                                   checkpoint_every_s=runtime.checkpoint_every_s, gpu_fraction=gpus,
                                   data_root=Path(runtime.data_root) if runtime.data_root else None,
                                   on_epoch=ticker)
    finally:
        if ticker is not None:
            ticker.close()
    finished = time.time()
    out = {}
    for job, result in zip(jobs, trained, strict=True):
        result.update(where, finished_at=finished)
        out[job.key] = {**store.publish(job.key, store.scratch(job.key), result), "cached": False}
    store.drop_partial(key)
    return out


def _teacher_weights(store: ArtifactStore, job: PhaseJob, runtime: PhaseRuntime) -> Path | None:
    """The teacher's weights from the store (None: it diverged, nothing to distil from). A
    teacher lost or damaged since it was published (a deleted file, a bad disk) is computed again
    from `job.teacher_job`; the phase fails only when it cannot be."""
    fetched = store.fetch(job.teacher_key)
    if fetched is None and job.teacher_job is not None:
        fetched = _recompute(store, job.teacher_job, runtime)
    if fetched is None:  # not a result but a fault (lost or unreadable): the phase fails
        raise ArtifactMissing(f"{job.name}: its teacher {job.teacher_key} is not intact in "
                              f"{runtime.storage.uri('_artifacts')}")
    teacher, files = fetched
    return files[MODEL_FILE] if teacher["status"] == "ok" else None


def _recompute(store: ArtifactStore, teacher: PhaseJob, runtime: PhaseRuntime) -> tuple[dict, dict] | None:
    """The teacher's artifact, computed again under its lock: of the processes that find it lost
    at once (a trial's students, concurrent trials) one computes it, the others wait, then find it
    published. A defended teacher's own teacher may need computing again too: its lock is taken
    inside this one, always in that order (a phase's before its teacher's), so none waits in a
    cycle. The phase that needs it holds no lock meanwhile."""
    with store.lock(teacher.key) as history:
        fetched = store.fetch(teacher.key)
        if fetched is None:
            line = f"recomputing {teacher.name} {teacher.key}: its artifact was missing or damaged"
            # the worker's log (the driver's too where Ray logs to it); the lock file keeps one
            # line per recomputation, the live entry and the result (`recomputed`) say it too
            say_from_worker(line)
            history.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {socket.gethostname()} "
                          f"pid {os.getpid()}: {line}\n")
            history.flush()
            run_job(teacher, runtime, recompute=True)
            fetched = store.fetch(teacher.key)
    return fetched


def _skipped(job: PhaseJob) -> dict:
    return {"phase": job.config.method, "status": "skipped", "test_acc": None,
            "best_epoch": -1, "wall_s": 0.0, "cached": False}


def run_job(job: PhaseJob, runtime: PhaseRuntime, *_deps, recompute: bool = False) -> dict:
    """The phase's result: from the artifact store if it is already there (`cached`), else
    trained here and published. `_deps` are the results of phases it waits for (Ray passes
    them once they exist); the teacher's weights are read from the store by key, and computed
    again if they were lost. `recompute`: this phase is such a teacher (its live entry and
    result say so)."""
    storage, cpus, gpus = runtime.storage, runtime.resources.cpus, runtime.resources.gpus
    store = ArtifactStore(storage)
    found = store.get(job.key)
    if found is not None:
        return {**found, "cached": True}
    teacher_weights = None
    if job.teacher_key is not None:
        teacher_weights = _teacher_weights(store, job, runtime)
        if teacher_weights is None:  # diverged: nothing to distil from
            return _skipped(job)
    where = {**placement(), "cpus": cpus, "gpus": gpus, "started_at": time.time()}
    scratch = store.scratch(job.key)
    checkpoint, on_checkpoint = store.partial(job.key)
    ticker = runtime.ticker(f"{job.name} (recomputed)" if recompute else job.name, job.key)
    try:
        result = run_phase(job.config, scratch, teacher_weights=teacher_weights,
                           data_cache=data_cache(storage), checkpoint=checkpoint,
                           on_checkpoint=on_checkpoint, checkpoint_every_s=runtime.checkpoint_every_s,
                           gpu_fraction=gpus, data_root=Path(runtime.data_root) if runtime.data_root else None,
                           on_epoch=ticker)
    finally:
        if ticker is not None:
            ticker.close()
    result.update(where, finished_at=time.time(), **({"recomputed": True} if recompute else {}))
    return {**store.publish(job.key, scratch, result), "cached": False}
