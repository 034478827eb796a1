"""A sweep's report folder: the front plot, the hypervolume plot, and a Markdown summary.

    front.png        teacher accuracy against best clone accuracy (see `plots.front_figure`)
    hypervolume.png  the front's hypervolume after each trial
    front.json       the front, exactly as `pareto NAME --single-seed --format json` prints it
    front_replicated.json   once `confirm` has run: the front on the means over seeds, exactly as
                     `pareto NAME --format json` prints it (with each number's sd and interval)
    report.md        the front as a table, per-student × attack numbers of the front, the
                     sweep's settings, and where its results live
"""

from __future__ import annotations

import json
import math

from undistill.record import SweepRecord

from .pareto import _finite, pareto_front, range_edges
from .plots import front_figure, hypervolume_curve, hypervolume_figure, png
from .replicates import BASELINE_WORDS, Replicated, mean_front, replicated
from .report import _fmt, front_columns, reference_point, render, render_replicated, with_knob_columns


def build_report(name: str, stored: SweepRecord, trials: list[dict], students: list[dict],
                 results_uri: str, replicates: tuple[list[dict], list[dict]] = ((), ())) -> dict[str, bytes]:
    """The report's files by name. `stored`: the sweep's record; `trials` in finishing
    order (as `ResultStore.trial_rows` gives them); `replicates`: the trial and student rows
    `confirm` added (`ResultStore.replicate_rows`)."""
    front = pareto_front(trials)
    means = mean_front(replicated(trials, students, *replicates)) if replicates[0] else []
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
                                      paper_point=paper, colours={d.defense: d.colour for d in stored.space},
                                      replicated=means,
                                      title=f"{name}: {len(front)} of {len(trials)} trials on the front")),
        "hypervolume.png": png(hypervolume_figure(curve, reference)),
        "front.json": render(front, "json", space=stored.space).encode(),
    }
    if means:
        files["front_replicated.json"] = render_replicated(means, "json", stored.space).encode()
    hv = curve[-1] if curve else 0.0
    files["report.md"] = _markdown(name, stored, trials, students, front, reference, hv, baselines,
                                   results_uri, means).encode()
    return files


def _paper_point(stored: SweepRecord, trials: list[dict]) -> dict | None:
    """The trial of the preset's first start point (the paper-like knobs of the first defense
    that has one: the nasty teacher's ω, τ_A on every built-in preset), if it finished."""
    space = next((d for d in stored.space if d.start), None)
    if space is None:
        return None
    for t in trials:
        knobs = t.get("knobs") or {}
        if t["defense"] == space.defense and t["status"] == "ok" \
                and all(_close(knobs.get(k), v) for k, v in space.start.items()):
            return t
    return None


_PROTOCOL_SAYS = {
    "validation": "Protocol: **validation**. Each phase trained on the training set less a held-out "
                  "validation split, which picked its best epoch; accuracies are on the test set.",
    "paper": "Protocol: **paper**, the reference code's. Each phase trained on the whole training set "
             "and its best epoch was picked on the test set, whose accuracy is reported: optimistic, "
             "but comparable with the papers' tables number for number.",
}


def _markdown(name, stored: SweepRecord, trials, students, front, reference, hv, baselines,
              results_uri, means: list[Replicated]) -> str:
    preset, space = stored.preset, stored.space
    attack = preset.get("attack", {})
    knobs = space.knob_names()
    lines = [
        f"# Sweep `{name}`",
        "",
        f"{len(trials)} of {stored.trials} trials done; {len(front)} on the front. "
        f"Hypervolume {hv:.1f} (reference: teacher {reference[0]:.0f} %, "
        f"clone {reference[1]:.2f} % = the normal teacher's best clone).",
        "",
        _PROTOCOL_SAYS[preset.get("protocol", "validation")],
        "",
        "![front](front.png)",
        "",
        "![hypervolume](hypervolume.png)",
        "",
        "## The front",
        "",
        _markdown_table(with_knob_columns(front, space), front_columns(space), knobs),
        "",
        *([f"**{edges}**", ""]
          if (edges := range_edges(front, stored.searched_space, stored.focus_teacher_drop)) else []),
        *_replicated_section(name, means, space),
        *_by_attack_section(front, students, space, reference[1]),
        "## Each front defense, student by attack",
        "",
    ]
    by_trial: dict[str, list[dict]] = {}
    for s in students:
        by_trial.setdefault(s["trial_id"], []).append(s)
    columns = ("student_arch", "attack", "status", "student_acc", "normal_kd_acc", "scratch_acc", "smoothed_acc")
    for t in front:
        shown = space.describe(t["defense"], t.get("knobs") or {}, sep=", ", eq=" = ")
        lines += [f"### {t['defense']} {shown} (trial {t['trial_id']})", "",
                  _markdown_table(sorted(by_trial.get(t["trial_id"], []),
                                         key=lambda s: (s["student_arch"], s["attack"] or "")), columns), ""]
    lines += [
        "## Settings",
        "",
        f"- preset: `{stored.preset_name}`, created {stored.created_at}",
        f"- dataset: `{json.dumps(preset.get('dataset', {}), sort_keys=True)}`",
        f"- teacher: `{json.dumps(preset.get('teacher', {}), sort_keys=True)}`",
        f"- students: {', '.join('`' + json.dumps(s, sort_keys=True) + '`' for s in preset.get('students', []))}",
        f"- attacks: {', '.join(_attacks(students)) or 'none yet'} (`{json.dumps(attack, sort_keys=True)}`)"
        f"; label smoothing {attack.get('label_smoothing')} for the baseline",
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


def _replicated_section(name: str, means: list[Replicated], space) -> list[str]:
    """The front on the means over seeds, once `confirm` has run; the plot's error bars."""
    if not means:
        return []
    seeds = sorted({s for c in means for s in c.seeds})
    sure = {b: sum(b in c.pushes_below for c in means) for b in BASELINE_WORDS}
    return [
        f"## The front on the means of seeds {', '.join(map(str, seeds))}",
        "",
        f"`confirm` re-ran the front's candidates under further seeds, each from that seed's own normal "
        f"teacher and students. Each number is mean ± sd [95 % interval of the mean, Student's t]; the "
        f"plot's error bars are those intervals. `below_normal_kd` is how many points the best clone lies "
        f"below the best clone of the normal teacher, seed by seed; `pushes_below` names the baselines "
        f"whose paired interval lies wholly above zero. Of these {len(means)} defenses, "
        + ", ".join(f"{n} push clones below {BASELINE_WORDS[b]}" for b, n in sure.items())
        + f" for sure (`python cli.py pareto {name}` prints this table).",
        "",
        render_replicated(means, "markdown", space),
        "",
    ]


def _by_attack_section(front: list[dict], students: list[dict], space, normal_best: float) -> list[str]:
    """The best clone of each front defense by each attack (the higher over the students), beside
    the normal teacher's; a front defense whose best clone is no lower than the normal teacher's
    best clone protects nothing (it is on the front for its teacher's accuracy)."""
    attacks = _attacks(students)
    if not front or not attacks:
        return []
    best: dict[tuple, float] = {}
    for s in students:
        if s.get("status") == "ok" and _finite(s.get("student_acc")):
            key = (s["trial_id"], s["attack"])
            best[key] = max(best.get(key, -math.inf), s["student_acc"])
        if _finite(s.get("normal_kd_acc")):
            key = (None, s["attack"])
            best[key] = max(best.get(key, -math.inf), s["normal_kd_acc"])
    cell = lambda trial, attack: f"{best[(trial, attack)]:.2f}" if (trial, attack) in best else "–"  # noqa: E731
    lines = ["## Best clone by defense and attack", "",
             "The higher of the students' clones per attack; – where the attack was skipped (the candidate "
             "was already shown beaten). **protects nothing**: a front defense whose best clone is no lower "
             "than the normal teacher's.", "",
             "| defense | teacher | " + " | ".join(attacks) + " | best clone | |",
             "| --- | --- | " + " | ".join("---" for _ in attacks) + " | --- | --- |",
             f"| none (normal teacher) | {_fmt('x', front[0].get('normal_teacher_acc'))} | "
             + " | ".join(cell(None, a) for a in attacks) + f" | {normal_best:.2f} | |"]
    for t in front:
        shown = space.describe(t["defense"], t.get("knobs") or {}, sep=", ", eq=" = ")
        flag = "**protects nothing**" if _finite(t.get("student_acc")) and t["student_acc"] >= normal_best else ""
        lines.append(f"| {t['defense']} {shown} | {_fmt('x', t.get('teacher_acc'))} | "
                     + " | ".join(cell(t["trial_id"], a) for a in attacks)
                     + f" | {_fmt('x', t.get('student_acc'))} ({t.get('best_attack') or '–'}) | {flag} |")
    return [*lines, ""]


def _markdown_table(rows: list[dict], columns, knobs: tuple[str, ...] = ()) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(c, _nan_to_none(r.get(c)), knobs) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _attacks(students: list[dict]) -> list[str]:
    """The attacks the sweep ran, in the order its rows first name them."""
    return list(dict.fromkeys(s["attack"] for s in students if s.get("attack")))


def _nan_to_none(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _max(values) -> float:
    finite = [v for v in values if _finite(v)]
    return max(finite) if finite else math.nan


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
