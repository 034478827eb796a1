"""One defense candidate, start to finish, without Ray: build the defended teacher, gate it,
distil every student from it, and summarise. The Tune shell in `trial.py` only adds
checkpoints and reporting around this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .phases import MODEL_FILE, PhaseConfig, run_phase

@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its knobs; built once by the orchestrator."""

    normal_teacher_weights: str  # model.pt of the normal teacher (artifact store)
    normal_teacher_key: str
    normal_teacher_acc: float  # percent, test
    nasty_template: PhaseConfig | None  # phase "nasty" with omega/tau_a still unset
    kd_templates: tuple[PhaseConfig, ...]  # phase "kd", one per student, identity transform
    # student label -> {"scratch_acc": ..., "normal_kd_acc": ...}: the baselines of each row
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    max_teacher_drop: float | None = None  # points; a nasty teacher losing more is not distilled
    data_cache: str | None = None
    work_root: str = "."  # in-phase checkpoints go to <work_root>/<trial id>/


# on_phase(state) is called after every finished phase with the state so far (JSON-able), so
# a shell can checkpoint it; `state` is also what a retried trial passes back in to skip work.
OnPhase = Callable[[dict], None]


def run_candidate(params: dict, ctx: TrialContext, work_dir: Path, state: dict | None = None,
                  on_phase: OnPhase = lambda state: None) -> dict:
    """Evaluate one candidate: {"defense": "nasty", "omega", "tau_a"} or {"defense": "stingy", "k"}.

    Returns the trial summary with `status` (ok | diverged | infeasible), `teacher_acc`, and
    `student_acc` = the best clone, i.e. the highest accuracy over the students. Once it has
    returned, only the nasty teacher's weights stay in `work_dir`, not the mid-phase checkpoints.
    """
    summary = _evaluate(params, ctx, Path(work_dir), state, on_phase)
    for stale in Path(work_dir).glob("*.ckpt"):
        stale.unlink(missing_ok=True)
    return summary


def _evaluate(params: dict, ctx: TrialContext, work_dir: Path, state: dict | None,
              on_phase: OnPhase) -> dict:
    state = dict(state or {})
    state.setdefault("students", {})
    defense = params["defense"]

    # 1. the defended teacher
    if defense == "nasty":
        nasty_cfg = replace(ctx.nasty_template, omega=float(params["omega"]), tau_a=float(params["tau_a"]))
        teacher_key = nasty_cfg.key(ctx.normal_teacher_key)
        teacher_weights = work_dir / "nasty" / MODEL_FILE
        lost_weights = "teacher" in state and state["teacher"]["status"] == "ok" and not teacher_weights.exists()
        if "teacher" not in state or lost_weights:
            result = run_phase(nasty_cfg, work_dir / "nasty", teacher_weights=Path(ctx.normal_teacher_weights),
                               data_cache=_path(ctx.data_cache), checkpoint=work_dir / "nasty.ckpt")
            state["teacher"] = result
            on_phase(state)
        teacher_acc = state["teacher"]["test_acc"]
        transform, k = "identity", None
        if state["teacher"]["status"] != "ok":
            return _summary(params, ctx, state, "diverged", math.nan)
    elif defense == "stingy":
        teacher_key, teacher_weights = ctx.normal_teacher_key, Path(ctx.normal_teacher_weights)
        teacher_acc = ctx.normal_teacher_acc  # top-1 survives top-k; measured again below
        transform, k = "stingy", int(params["k"])
    else:
        raise ValueError(f"unknown defense {defense!r}")

    # 2. the gate: a teacher that already lost too much is not worth its students
    if ctx.max_teacher_drop is not None and ctx.normal_teacher_acc - teacher_acc > ctx.max_teacher_drop:
        return _summary(params, ctx, state, "infeasible", teacher_acc)

    # 3. the attack: distil every student from the defended teacher
    for template in ctx.kd_templates:
        label = template.model.label
        if label in state["students"]:
            continue  # finished before a retry
        kd_cfg = replace(template, transform=transform, k=k)
        ckpt = work_dir / f"kd-{kd_cfg.key(teacher_key)}.ckpt"
        state["students"][label] = run_phase(kd_cfg, work_dir / "kd", teacher_weights=teacher_weights,
                                             data_cache=_path(ctx.data_cache), checkpoint=ckpt)
        on_phase(state)
        if defense == "stingy":
            teacher_acc = state["students"][label]["teacher_acc_seen"]

    ok = [s for s in state["students"].values() if s["status"] == "ok"]
    return _summary(params, ctx, state, "ok" if ok else "diverged", teacher_acc)


def _path(p: str | None) -> Path | None:
    return Path(p) if p else None


def _summary(params: dict, ctx: TrialContext, state: dict, status: str, teacher_acc: float) -> dict:
    students = []
    for template in ctx.kd_templates:
        label = template.model.label
        r = state["students"].get(label)
        base = ctx.baselines.get(label, {})
        students.append({
            "student_arch": label,
            "kd_temperature": template.kd_temperature,
            "kd_alpha": template.kd_alpha,
            "status": r["status"] if r else "skipped",
            "student_acc": r["test_acc"] if r and r["test_acc"] is not None else math.nan,
            "scratch_acc": base.get("scratch_acc", math.nan),
            "normal_kd_acc": base.get("normal_kd_acc", math.nan),
            "best_epoch": r["best_epoch"] if r else -1,
            "wall_s": r["wall_s"] if r else 0.0,
        })
    finished = [s for s in students if s["status"] == "ok"]
    best = max(finished, key=lambda s: s["student_acc"]) if finished else None
    teacher_acc = math.nan if teacher_acc is None else float(teacher_acc)
    return {
        "status": status,
        "teacher_acc": teacher_acc,
        "student_acc": best["student_acc"] if best and status == "ok" else math.nan,
        "best_student": best["student_arch"] if best else "",
        "normal_teacher_acc": ctx.normal_teacher_acc,
        "teacher_drop": ctx.normal_teacher_acc - teacher_acc,
        # compute time of the trial's own phases, summed so that a retried trial counts each once
        "wall_s": (state.get("teacher") or {}).get("wall_s", 0.0) + sum(s["wall_s"] for s in students),
        "students": students,
    }
