"""A sweep's report folder: the front plot, the hypervolume plot, and a Markdown summary.

    front.png        teacher accuracy against best clone accuracy (see `plots.front_figure`)
    hypervolume.png  the front's hypervolume after each trial
    front.json       the front, exactly as `pareto NAME --format json` prints it
    report.md        the front as a table, per-student × attack numbers of the front, the
                     sweep's settings, and where its results live
"""

from __future__ import annotations

import json
import math

from .pareto import _finite, pareto_front, range_edges
from .plots import front_figure, hypervolume_curve, hypervolume_figure, png
from .report import FRONT_COLUMNS, _fmt, reference_point, render


def build_report(name: str, stored: dict, trials: list[dict], students: list[dict],
                 results_uri: str) -> dict[str, bytes]:
    """The report's files by name. `stored`: the sweep's sweep.json; `trials` in finishing
    order (as `ResultStore.trial_rows` gives them)."""
    front = pareto_front(trials)
    reference = reference_point(students)
    normal_acc = trials[0]["normal_teacher_acc"] if trials else math.nan
    baselines = {
        "best student alone": _max(s.get("scratch_acc") for s in students),
        "best student alone, label-smoothed": _max(s.get("smoothed_acc") for s in students),
    }
    paper = _paper_point(stored, trials)
    curve = hypervolume_curve(trials, reference)
    files = {
        "front.png": png(front_figure(trials, front, normal=(normal_acc, reference[1]), baselines=baselines,
                                      paper_point=paper, title=f"{name}: {len(front)} of {len(trials)} trials on the front")),
        "hypervolume.png": png(hypervolume_figure(curve, reference)),
        "front.json": render(front, "json").encode(),
    }
    hv = curve[-1] if curve else 0.0
    files["report.md"] = _markdown(name, stored, trials, students, front, reference, hv, baselines,
                                   results_uri).encode()
    return files


def _paper_point(stored: dict, trials: list[dict]) -> dict | None:
    """The trial of the preset's nasty start point (the paper-like ω, τ_A), if it finished."""
    start = stored.get("identity", {}).get("preset", {}).get("search", {}).get("nasty", {}).get("start")
    if not start:
        return None
    for t in trials:
        if t["defense"] == "nasty" and t["status"] == "ok" and _close(t["omega"], start["omega"]) \
                and _close(t["tau_a"], start["tau_a"]):
            return t
    return None


def _markdown(name, stored, trials, students, front, reference, hv, baselines, results_uri) -> str:
    preset = stored.get("identity", {}).get("preset", {})
    attack = preset.get("attack", {})
    lines = [
        f"# Sweep `{name}`",
        "",
        f"{len(trials)} of {stored.get('trials', '?')} trials done; {len(front)} on the front. "
        f"Hypervolume {hv:.1f} (reference: teacher {reference[0]:.0f} %, "
        f"clone {reference[1]:.2f} % = the normal teacher's best clone).",
        "",
        "![front](front.png)",
        "",
        "![hypervolume](hypervolume.png)",
        "",
        "## The front",
        "",
        _markdown_table(front, FRONT_COLUMNS),
        "",
        *([f"**{edges}**", ""] if (edges := range_edges(front, preset.get("search", {}))) else []),
        "## Each front defense, student by attack",
        "",
    ]
    by_trial: dict[str, list[dict]] = {}
    for s in students:
        by_trial.setdefault(s["trial_id"], []).append(s)
    columns = ("student_arch", "attack", "status", "student_acc", "normal_kd_acc", "scratch_acc", "smoothed_acc")
    for t in front:
        knobs = f"k = {t['k']}" if t["defense"] == "stingy" else f"ω = {_fmt('omega', t['omega'])}, τ_A = {_fmt('tau_a', t['tau_a'])}"
        lines += [f"### {t['defense']} {knobs} (trial {t['trial_id']})", "",
                  _markdown_table(sorted(by_trial.get(t["trial_id"], []),
                                         key=lambda s: (s["student_arch"], s["attack"] or "")), columns), ""]
    lines += [
        "## Settings",
        "",
        f"- preset: `{stored.get('preset_name')}`, created {stored.get('created_at')}",
        f"- dataset: `{json.dumps(preset.get('dataset', {}), sort_keys=True)}`",
        f"- teacher: `{json.dumps(preset.get('teacher', {}), sort_keys=True)}`",
        f"- students: {', '.join('`' + json.dumps(s, sort_keys=True) + '`' for s in preset.get('students', []))}",
        f"- attacks: KD at T = {', '.join(f'{t:g}' for t in attack.get('kd_temperatures', []))}, "
        f"α = {attack.get('kd_alpha')}" + (", DAFL" if attack.get("data_free") else "")
        + f"; label smoothing {attack.get('label_smoothing')} for the baseline",
        f"- search: `{json.dumps(preset.get('search', {}), sort_keys=True)}`",
        "- baselines: " + "; ".join(f"{k} {_fmt('x', v)} %" for k, v in baselines.items()),
        "",
        "## Where the results live",
        "",
        f"- Parquet: `{results_uri}` (`trials/`, `students/`)",
        f"- `python cli.py pareto {name}` prints the front; `front.json` here is its `--format json`.",
        "",
    ]
    return "\n".join(lines)


def _markdown_table(rows: list[dict], columns) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(c, _nan_to_none(r.get(c))) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _nan_to_none(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _max(values) -> float:
    finite = [v for v in values if _finite(v)]
    return max(finite) if finite else math.nan


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
