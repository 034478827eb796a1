"""The Tune function trainable: a thin shell around `trainables.candidate.run_candidate`.

The trial's own process (bundle 0 of its placement group) trains the defended teacher; the
students then run side by side as Ray child tasks, which land in the trial's placement group,
one per student bundle. Every phase goes through the artifact store by key, so a retried trial
(`FailureConfig`) or a restored sweep picks up each finished phase instead of training it again.
The trial reports once, at the end, with `final=True`.
"""

from __future__ import annotations

import json
import time

from ray import tune

from trainables.candidate import TrialContext, run_candidate
from trainables.phases import PhaseJob

from ._worker import PhaseRuntime, placement, remote_phase, run_job

# The two searcher metrics; the orchestrator's searcher reads them from the final report.
OBJECTIVES = ("teacher_acc", "student_acc")


def tune_trial(config: dict, context: TrialContext, runtime: PhaseRuntime) -> None:
    import ray

    res = runtime.resources
    ran = {**placement(), "cpus": res.cpus, "gpus": res.gpus, "started_at": time.time()}

    def run_here(jobs: list[PhaseJob]) -> list[dict]:
        return [run_job(job, runtime) for job in jobs]

    def run_side_by_side(jobs: list[PhaseJob]) -> list[dict]:
        # Child tasks of a trial are captured by its placement group: each takes a student bundle.
        task = remote_phase(runtime)
        refs = [task.options(name=job.name).remote(job, runtime) for job in jobs]
        return ray.get(refs)

    summary = run_candidate(config, context, run_here, run_side_by_side)
    ran["finished_at"] = time.time()
    ran["wall_s"] = ran["finished_at"] - ran["started_at"]
    # Tune's results are flat scalars: lists and dicts travel as JSON.
    tune.report({**summary, "students": json.dumps(summary["students"]), "ran": json.dumps(ran),
                 "final": True})
