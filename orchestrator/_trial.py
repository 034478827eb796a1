"""The Tune function trainable: a thin shell around `trainables.candidate.run_candidate`.

The trial's own process (bundle 0 of its placement group) trains the defended teacher; the
students then run side by side as Ray child tasks, which land in the trial's placement group,
one per student bundle: each task trains one attack, or, batched, every attack of a wave on one
student architecture as one stack (`_worker.run_batch`). Every phase goes through the artifact
store by key, so a retried trial (`FailureConfig`) or a restored sweep picks up each finished
phase instead of training it again.
The trial reports once, at the end, with `final=True`.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from ray import tune

from trainables.candidate import TrialContext, attack_name, run_candidate
from trainables.phases import PhaseJob, batch_groups, stacking_pays
from trainables.pruning import Pruning, attack_order
from undistill.outcomes import Candidate, CandidateOutcome, Placement

from ._worker import PhaseRuntime, placement, remote_batch, remote_phase, run_job

# The two searcher metrics; the orchestrator's searcher reads them from the final report.
OBJECTIVES = ("teacher_acc", "student_acc")
OUTCOME = "outcome"  # the report's key for the trial's typed `CandidateOutcome`


def tune_trial(config: dict, context: TrialContext, runtime: PhaseRuntime, board: str | None = None,
               batch: bool = True) -> None:
    """`board`: the sweep's name when its trials prune their attacks (see `_board`), else None;
    `batch`: the attacks on one student architecture train as one stack (`run_batch`)."""
    outcome = evaluate(Candidate.from_params(config), context, runtime, board, batch)
    tune.report(final_report(outcome))


def final_report(outcome: CandidateOutcome) -> dict:
    """A trial's final result as Tune reports it and the searcher reads it (`search.told`).
    Tune's metrics are floats (a missing one is NaN there); the outcome itself travels whole,
    pickled by Ray, to the driver's callback."""
    return {"teacher_acc": _metric(outcome.teacher_acc), "student_acc": _metric(outcome.student_acc),
            "teacher_drop": _metric(outcome.teacher_drop), "status": outcome.status,
            OUTCOME: outcome, "final": True}


def evaluate(candidate: Candidate, context: TrialContext, runtime: PhaseRuntime, board: str | None = None,
             batch: bool = True) -> CandidateOutcome:
    """The candidate, run from the process that holds bundle 0 of its placement group (a Tune
    trial's, or a `confirm` replicate's): its teacher here, its students as child tasks."""
    import ray

    res = runtime.resources
    runtime = replace(runtime, candidate=candidate)  # its phases show whom they serve (`live`)
    started = time.time()

    def run_here(jobs: list[PhaseJob]) -> list[dict]:
        return [run_job(job, runtime) for job in jobs]

    def run_side_by_side(jobs: list[PhaseJob]) -> list[dict]:
        # Child tasks of a trial are captured by its placement group: each takes a student bundle.
        if not batch:
            task = remote_phase(runtime)
            return ray.get([task.options(name=job.name).remote(job, runtime) for job in jobs])
        task = remote_batch(runtime)
        groups = batch_groups(jobs, on_gpu=res.gpus > 0)
        refs = [task.options(name=" + ".join(j.name for j in group)).remote(group, runtime) for group in groups]
        done = {job.key: result for group, results in zip(groups, ray.get(refs), strict=True)
                for job, result in zip(group, results, strict=True)}
        return [done[job.key] for job in jobs]

    # the second wave takes all the rest only where they train in stacks
    stacks = batch and any(stacking_pays(t, res.gpus > 0) for t in context.attack_templates)
    pruning = _pruning(context, board, res.students, stacks) if board else None
    outcome = run_candidate(candidate, context, run_here, run_side_by_side, pruning)
    ran = Placement.from_result({**placement(), "cpus": res.cpus, "gpus": res.gpus,
                                 "started_at": started, "finished_at": time.time()})
    return replace(outcome, ran=ran)


def _pruning(context: TrialContext, sweep: str, students: int, batch: bool) -> Pruning | None:
    """The attacks' order (learned from the normal teacher and every trial attacked in full so
    far) and the live front, from the sweep's board; waves as wide as the trial's students."""
    import ray

    from ._board import find_board

    found = find_board(sweep)
    if found is None:
        return None
    try:
        seen = ray.get(found.seen.remote())
    except ray.exceptions.RayActorError:
        return None  # the board is gone (its node was lost): every attack runs, as without pruning
    names = [attack_name(t) for t in context.attack_templates]
    normal = {name: b.normal_kd_acc for name, b in context.baselines.items()}
    order = attack_order(names, normal, seen)

    def front():
        try:
            return ray.get(found.front.remote())
        except ray.exceptions.RayActorError:
            return []  # no front to be beaten by: the remaining attacks run

    # batched, a second wave of all the rest costs little more than one more attack per student
    return Pruning(order=tuple(order), wave=max(1, students), front=front, rest_together=batch)


def _metric(x: float | None) -> float:
    return math.nan if x is None else x
