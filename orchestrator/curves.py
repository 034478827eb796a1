"""Learning curves as rows of the `epochs` table: each phase's epochs (kept in its artifact's
result, see `trainables.loop.Epoch`), with what the phase was and, for a trial's phases, the
candidate it served. The upstream phases' rows are shared by every trial (`trial_id` null)."""

from __future__ import annotations

from trainables.candidate import TrialContext, candidate_jobs
from trainables.phases import PhaseJob
from undistill.outcomes import Candidate
from undistill.storage import Storage

from .artifacts import ArtifactStore


def epoch_rows(sweep: str, jobs, results: dict[str, dict | None], *, trial_id: str | None = None,
               candidate: Candidate | None = None, replicate_of: str | None = None) -> list[dict]:
    """One row per epoch of each of `jobs` whose result (by key, in `results`) has a curve."""
    rows = []
    for job in jobs:
        result = results.get(job.key) or {}
        cfg = job.config
        for epoch in result.get("epochs") or ():
            rows.append({
                "sweep": sweep, "trial_id": trial_id, "phase_key": job.key, "phase_kind": cfg.phase,
                "phase": job.name,
                "defense": candidate.defense if candidate is not None else None,
                "knobs": dict(candidate.knobs) if candidate is not None else None,
                "student_arch": cfg.model.label if cfg.phase in ("scratch", "attack") else None,
                "attack": cfg.attack.label if cfg.attack is not None else None,
                "seed": cfg.seed, "replicate_of": replicate_of, **epoch,
            })
    return rows


def trial_epoch_rows(storage: Storage, sweep: str, trial_id: str, candidate: Candidate,
                     context: TrialContext, replicate_of: str | None = None) -> list[dict]:
    """A finished trial's curves: its defended teacher's and each clone's, read from the
    artifact store (a phase that never ran, an attack skipped, has none)."""
    teacher, students = candidate_jobs(candidate, context)
    jobs: list[PhaseJob] = [j for j in (teacher, *students) if j is not None]
    store = ArtifactStore(storage)
    return epoch_rows(sweep, jobs, {j.key: store.result(j.key) for j in jobs}, trial_id=trial_id,
                      candidate=candidate, replicate_of=replicate_of)
