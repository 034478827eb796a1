"""Candidates run outside Tune, each as Tune would run it as a trial: `_trial.evaluate` as a Ray
task in a placement group of its own (the sweep's `1 + students` bundles, the defended teacher in
bundle 0, the attacks as child tasks), at most the sweep's concurrency at once. `confirm` runs its
replicates so, and `resume` the trials that failed only because an artifact was missing
(`_retry`): neither is a trial Tune's search could run (Tune reruns every errored trial or none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainables.candidate import TrialContext
from undistill.outcomes import Candidate, CandidateOutcome
from undistill.space import SearchSpace

from ._worker import PhaseRuntime


@dataclass(frozen=True)
class Outside:
    """One candidate to run: the Ray task's name, the candidate, its trials' context, and what
    the caller needs back with its outcome."""

    name: str
    candidate: Candidate
    context: TrialContext
    tag: object = None


def run_outside(runs: Sequence[Outside], runtime: PhaseRuntime, concurrency: int, batch: bool,
                done: Callable[[Outside, CandidateOutcome | None, str | None], None]) -> None:
    """Run each of `runs`, `concurrency` at once; `done(run, outcome, error)` as each ends (a
    failed one: no outcome, and the last line of what it raised), in the driver, before the next
    one starts: it writes the rows, so a kill loses at most the runs under way."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ._trial import evaluate

    res = runtime.resources
    # a lost worker is retried: its phases resume by key; on a GPU a fresh process each time
    # (CUDA binds to the GPU it first sees, see `_worker.remote_phase`)
    task = ray.remote(max_retries=2, max_calls=1 if res.gpus else 0)(evaluate)
    queue, pending = list(runs), {}
    while queue or pending:
        while queue and len(pending) < concurrency:
            run = queue.pop(0)
            group = placement_group([res.bundle() for _ in range(res.bundles)], strategy="PACK")
            where = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0,
                                                     placement_group_capture_child_tasks=True)
            # no board: the candidate runs every attack (nothing to prune against out here)
            ref = task.options(num_cpus=res.cpus, num_gpus=res.gpus, scheduling_strategy=where,
                               name=run.name).remote(run.candidate, run.context, runtime, None, batch)
            pending[ref] = (run, group)
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        run, group = pending.pop(ready)
        try:
            outcome, error = ray.get(ready), None
        except Exception as exc:  # noqa: BLE001 (recorded as the run's error; a rerun tries again)
            outcome, error = None, (str(exc).strip().splitlines() or ["it failed"])[-1][:500]
        remove_placement_group(group)
        done(run, outcome, error)


def row_candidate(trial: dict, space: SearchSpace) -> Candidate:
    """A trial row's candidate, its knobs of their own types again (Parquet holds them as floats)."""
    defense = space.get(trial["defense"])
    return Candidate.of(trial["defense"], **{k: defense.knob(k).cast(v) if defense and defense.knob(k) else v
                                             for k, v in (trial["knobs"] or {}).items()})
