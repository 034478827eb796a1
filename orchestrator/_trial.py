"""The Tune function trainable: a thin shell around `trainables.candidate.run_candidate`.

It restores the phases a retried trial already finished from `tune.get_checkpoint()`, reports
a checkpoint after every phase, and reports the summary last with `final=True`. Every report
carries both searcher metrics (NaN until the last one): Tune aborts a fit whose report lacks one.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from ray import tune

from trainables.candidate import TrialContext, run_candidate
from trainables.phases import MODEL_FILE

# The two searcher metrics. Every report carries both (NaN until the last one), else Tune
# aborts the fit; the orchestrator's searcher reads them from the final report.
OBJECTIVES = ("teacher_acc", "student_acc")
_STATE_FILE = "state.json"


def tune_trial(config: dict, context: TrialContext) -> None:
    trial_id = tune.get_context().get_trial_id()
    work_dir = Path(context.work_root) / trial_id
    nasty_weights = work_dir / "nasty" / MODEL_FILE

    state: dict = {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry: bring back what the earlier attempt finished
        with checkpoint.as_directory() as saved:
            state = json.loads((Path(saved) / _STATE_FILE).read_text())
            if (Path(saved) / MODEL_FILE).exists():
                nasty_weights.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(saved) / MODEL_FILE, nasty_weights)

    def report_phase(state: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / _STATE_FILE).write_text(json.dumps(state))
            if nasty_weights.exists():
                shutil.copyfile(nasty_weights, Path(tmp) / MODEL_FILE)
            done = len(state.get("students", {})) + ("teacher" in state)
            tune.report({**{m: math.nan for m in OBJECTIVES}, "final": False, "phases_done": done},
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    summary = run_candidate(config, context, work_dir, state=state, on_phase=report_phase)
    tune.report({**summary, "students": json.dumps(summary["students"]), "final": True})
