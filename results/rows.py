"""Build a trial's Parquet rows from what its trial function reported last."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from .schema import WHERE_COLUMNS


def trial_rows(*, sweep: str, trial_id: str, params: dict, result: dict | None, context: dict,
               error: str | None = None) -> tuple[dict, list[dict]]:
    """`params`: the candidate's knobs; `result`: the final report (None when the trial failed),
    with `ran`, where and when the trial's own process ran, and `students`, each with its own;
    `context`: sweep-wide columns (dataset, teacher_arch, seed, preset, config_fingerprint,
    versions, normal_teacher_acc) and `students`, each student × attack's baseline row
    (student_arch, attack, kd_temperature, kd_alpha, scratch_acc, smoothed_acc, normal_kd_acc)."""
    knobs = {
        "defense": params.get("defense"),
        "omega": params.get("omega"),
        "tau_a": params.get("tau_a"),
        "k": params.get("k"),
    }
    result = result or {}
    status = result.get("status", "error") if error is None else "error"
    students = result.get("students") or []
    if isinstance(students, str):  # reported as JSON: Tune's results must be flat scalars
        students = json.loads(students)
    if not students:  # a failed trial still gets its trial × student rows, with the baselines
        students = [{**s, "status": "error"} for s in context.get("students", [])]
    ran = result.get("ran") or {}
    if isinstance(ran, str):
        ran = json.loads(ran)
    best = next((s for s in students if s.get("student_arch") == result.get("best_student")
                 and s.get("attack") == result.get("best_attack")), {})
    trial = {
        "sweep": sweep,
        "trial_id": trial_id,
        **knobs,
        "dataset": context["dataset"],
        "teacher_arch": context["teacher_arch"],
        "seed": context["seed"],
        "status": status,
        "teacher_acc": _num(result.get("teacher_acc")),
        "normal_teacher_acc": context["normal_teacher_acc"],
        "teacher_drop": _num(result.get("teacher_drop")),
        "student_acc": _num(result.get("student_acc")) if status == "ok" else None,
        "best_student": result.get("best_student") or None,
        "best_attack": result.get("best_attack") or None,
        "kd_temperature": best.get("kd_temperature"),
        "kd_alpha": best.get("kd_alpha"),
        "wall_s": _num(ran.get("wall_s")),
        "compute_s": _num(result.get("compute_s")),
        "teacher_wall_s": _num(result.get("teacher_wall_s")),
        "teacher_cached": result.get("teacher_cached"),
        **_where(ran),
        "started_at": _time(ran.get("started_at")),
        "finished_at": _time(ran.get("finished_at")) or datetime.now(timezone.utc),
        "preset": context["preset"],
        "config_fingerprint": context["config_fingerprint"],
        "versions": json.dumps(context["versions"], sort_keys=True),
        "error": error,
    }
    student_rows = [
        {
            "sweep": sweep,
            "trial_id": trial_id,
            **knobs,
            **{key: s.get(key) for key in ("student_arch", "attack", "kd_temperature", "kd_alpha",
                                           "status", "best_epoch")},
            **{key: _num(s.get(key)) for key in ("student_acc", "scratch_acc", "smoothed_acc",
                                                 "normal_kd_acc", "wall_s")},
            "cached": s.get("cached"),
            **_where(s),
            "started_at": _time(s.get("started_at")),
            "finished_at": _time(s.get("finished_at")),
        }
        for s in students
    ]
    return trial, student_rows


def _num(x) -> float | None:
    """Floats for Parquet: NaN and missing both become null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _where(ran: dict) -> dict:
    return {key: ran.get(key) for key in WHERE_COLUMNS}


def _time(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, timezone.utc)
