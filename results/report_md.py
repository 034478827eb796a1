"""`report.md`: a sweep's report read at a glance, then its details.

A short header (the sweep, its preset, trials, the front's size and hypervolume, the normal
teacher), the front with one row per defense, the baselines once (per student: alone,
label-smoothed, each attack's clone of the normal teacher), then the details: best clones by
defense and attack, by defense and student, the front on the means over seeds (once `confirm`
ran), the hypervolume and training curves, the settings and versions, and where it all lives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from undistill.record import SweepRecord

from .clones import Clones, defense_label, protects_nothing, short_names
from .pareto import _finite, range_edges
from .replicates import BASELINE_WORDS, Replicated
from .report import render_replicated

_PROTOCOL_SAYS = {
    "validation": "Protocol: **validation**. Each phase trained on the training set less a held-out "
                  "validation split, which picked its best epoch; accuracies are on the test set.",
    "paper": "Protocol: **paper**, the reference code's. Each phase trained on the whole training set "
             "and its best epoch was picked on the test set, whose accuracy is reported: optimistic, "
             "but comparable with the papers' tables number for number.",
}

_VERSIONS = ("undistill", "torch", "ray", "optuna", "python", "pyarrow")  # the order the settings list them

# file -> what it shows, in the order report.md lists them (those written)
FILES = {
    "report.md": "this summary",
    "front.png": "teacher accuracy against best clone accuracy for every finished trial, the front "
                 "numbered as in the table above, the normal teacher, the students alone, the drop budget",
    "clones.png": "the best clone of each front defense by each attack, coloured by its difference from "
                  "the normal teacher's clone by the same attack",
    "students.png": "per student: teacher accuracy against that student's best clone",
    "hypervolume.png": "the front's hypervolume after each trial",
    "curves.png": "validation accuracy and training loss per epoch: the normal teacher and its students "
                  "against the front's defended teachers and theirs",
    "front.json": "the front, as `pareto NAME --single-seed --format json` prints it",
    "front_replicated.json": "the front on the means over seeds, as `pareto NAME --format json` prints it",
}


@dataclass(frozen=True)
class Sweep:
    """What the Markdown is written from."""

    name: str
    stored: SweepRecord
    trials: list[dict]
    front: list[dict]
    clones: Clones
    reference: tuple[float, float]
    hypervolume: float
    results_uri: str
    means: list[Replicated]
    files: tuple[str, ...]  # the report's files, as written


def markdown(s: Sweep) -> str:
    stored, space, front, c = s.stored, s.stored.space, s.front, s.clones
    short = short_names(c.students)
    normal_acc = s.trials[0]["normal_teacher_acc"] if s.trials else math.nan
    normal_best, normal_attack, normal_student = c.normal_best()
    if not _finite(normal_best):
        normal_best = s.reference[1]
    by = f" ({short.get(normal_student, normal_student)}, {normal_attack})" if normal_attack else ""
    budget = (f"{stored.max_teacher_drop:g} points (teacher ≥ {normal_acc - stored.max_teacher_drop:.2f} %)"
              if stored.max_teacher_drop is not None else "none")
    lines = [
        f"# Sweep `{s.name}`",
        "",
        "| | |",
        "| --- | --- |",
        f"| preset | `{stored.preset_name}` |",
        f"| trials | {len(s.trials)} of {stored.trials} done |",
        f"| front | {len(front)} defenses; hypervolume {s.hypervolume:.1f} (reference: teacher "
        f"{s.reference[0]:.0f} %, clone {s.reference[1]:.2f} %) |",
        f"| normal teacher | {_num(normal_acc)} %; its best clone {_num(normal_best)} %{by} |",
        f"| drop budget | {budget} |",
        "",
        _PROTOCOL_SAYS[stored.preset.get("protocol", "validation")],
        "",
        "![front](front.png)",
        "",
        *_front_section(front, space, normal_best, short, stored),
        *_baselines_section(c, short),
        "# Details",
        "",
        *_by_attack_section(front, c, space, normal_best),
        *_by_student_section(front, c, space, short, "students.png" in s.files),
        *_replicated_section(s.name, s.means, space),
        "## Hypervolume",
        "",
        "![hypervolume](hypervolume.png)",
        "",
        *(["## Training curves", "", "![curves](curves.png)", ""] if "curves.png" in s.files else []),
        *_settings_section(stored, c),
        "## Where the results live",
        "",
        f"- Parquet: `{s.results_uri}` (`trials/`, `students/`{', `epochs/`' if 'curves.png' in s.files else ''}): "
        "every trial and every student × attack",
        f"- `python cli.py pareto {s.name}` prints the front; `front.json` here is its `--format json`.",
        "- This folder:",
        *(f"  - `{f}`: {FILES[f].replace('NAME', s.name)}" for f in FILES if f in s.files),
        "",
    ]
    return "\n".join(lines)


def _front_section(front, space, normal_best, short, stored: SweepRecord) -> list[str]:
    lines = ["## The front", "",
             f"One row per defense, by teacher accuracy; `#` numbers the points of `front.png`. drop: the points "
             f"the teacher lost against the normal one. vs normal: the best clone less the normal teacher's "
             f"best clone ({_num(normal_best)}): below zero, the defense pushed clones down. **protects "
             f"nothing**: a defense whose best clone is no lower than the normal teacher's.", "",
             "| # | defense | teacher | drop | best clone | vs normal | by | trial | |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, t in enumerate(front, 1):
        flag = "**protects nothing**" if protects_nothing(t, normal_best) else ""
        made = " · ".join(x for x in (t.get("best_attack"), short.get(t.get("best_student"), t.get("best_student")))
                          if x) or "–"
        lines.append(f"| {n} | {defense_label(t, space, ', ', ' = ')} | {_num(t.get('teacher_acc'))} | "
                     f"{_num(t.get('teacher_drop'))} | {_num(t.get('student_acc'))} | "
                     f"{_signed(t.get('student_acc'), normal_best)} | {made} | {t['trial_id']} | {flag} |")
    lines.append("")
    if edges := range_edges(front, stored.searched_space, stored.focus_teacher_drop):
        lines += [f"**{edges}**", ""]
    return lines


def _baselines_section(c: Clones, short) -> list[str]:
    if not c.students:
        return []
    lines = ["## Baselines", "",
             "Each student without a defense: trained alone, label-smoothed, and distilled from the normal "
             "teacher by each attack (its clone of the normal teacher).", "",
             "| student | alone | label-smoothed | " + " | ".join(c.attacks) + " | best clone |",
             "| --- | --- | --- | " + " | ".join("---" for _ in c.attacks) + " | --- |"]
    for student in c.students:
        best = c.by_student.get((None, student))
        lines.append(f"| {short[student]} | {_num(c.alone.get(student))} | {_num(c.smoothed.get(student))} | "
                     + " | ".join(_num(c.normal_kd.get((student, a))) for a in c.attacks)
                     + f" | {_num(best[0]) + ' (' + best[1] + ')' if best else '–'} |")
    return [*lines, ""]


def _by_attack_section(front, c: Clones, space, normal_best: float) -> list[str]:
    """The best clone of each front defense by each attack (the higher over the students), beside
    the normal teacher's, flagging a front defense that protects nothing."""
    attacks = c.attacks
    if not front or not attacks:
        return []

    def cell(trial, attack):
        return _num(c.by_attack[(trial, attack)]) if (trial, attack) in c.by_attack else "–"

    lines = ["## Best clone by defense and attack", "",
             "The higher of the students' clones per attack; – where the attack was skipped (the candidate "
             "was already shown beaten). **protects nothing**: a front defense whose best clone is no lower "
             "than the normal teacher's.", "",
             "| defense | teacher | " + " | ".join(attacks) + " | best clone | |",
             "| --- | --- | " + " | ".join("---" for _ in attacks) + " | --- | --- |",
             f"| none (normal teacher) | {_num(front[0].get('normal_teacher_acc'))} | "
             + " | ".join(cell(None, a) for a in attacks) + f" | {normal_best:.2f} | |"]
    for t in front:
        flag = "**protects nothing**" if protects_nothing(t, normal_best) else ""
        lines.append(f"| {defense_label(t, space, ', ', ' = ')} | {_num(t.get('teacher_acc'))} | "
                     + " | ".join(cell(t["trial_id"], a) for a in attacks)
                     + f" | {_num(t.get('student_acc'))} ({t.get('best_attack') or '–'}) | {flag} |")
    return [*lines, "", "![clones](clones.png)", ""]


def _by_student_section(front, c: Clones, space, short, drawn: bool) -> list[str]:
    """Each front defense's best clone per student (over the attacks, with the attack that made
    it), beside that student's clone of the normal teacher and its accuracy alone."""
    if not front or not c.students:
        return []
    head, rule = ["#", "defense"], ["---", "---"]
    for student in c.students:
        head += [f"{short[student]} best clone", "vs normal", "vs alone"]
        rule += ["---"] * 3
    normal = ["", "normal teacher"]
    for student in c.students:
        best = c.by_student.get((None, student))
        normal += [f"{_num(best[0])} ({best[1]})" if best else "–", "",
                   _signed(best[0] if best else None, c.alone.get(student))]
    lines = ["## Best clone by defense and student", "",
             "Each student's best clone over the attacks (and the attack that made it); vs normal: less that "
             "student's best clone of the normal teacher; vs alone: less the student trained alone "
             f"({', '.join(f'{short[s]} {_num(c.alone.get(s))}' for s in c.students)}). Below zero, the "
             "defense pushed that student's clone down.", "",
             "| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |", "| " + " | ".join(normal) + " |"]
    for n, t in enumerate(front, 1):
        cells = [str(n), defense_label(t, space, ", ", " = ")]
        for student in c.students:
            mine, base = c.by_student.get((t["trial_id"], student)), c.by_student.get((None, student))
            value = mine[0] if mine else None
            cells += [f"{_num(value)} ({mine[1]})" if mine else "–", _signed(value, base[0] if base else None),
                      _signed(value, c.alone.get(student))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *(["![students](students.png)", ""] if drawn else [])]


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
        f"front plot's error bars are those intervals. `below_normal_kd` is how many points the best clone "
        f"lies below the best clone of the normal teacher, seed by seed; `pushes_below` names the baselines "
        f"whose paired interval lies wholly above zero. Of these {len(means)} defenses, "
        + ", ".join(f"{n} push clones below {BASELINE_WORDS[b]}" for b, n in sure.items())
        + f" for sure (`python cli.py pareto {name}` prints this table).",
        "",
        render_replicated(means, "markdown", space),
        "",
    ]


def _settings_section(stored: SweepRecord, c: Clones) -> list[str]:
    preset, search = stored.preset, stored.search
    attack = preset.get("attack", {})
    order = [*(k for k in _VERSIONS if k in stored.versions), *sorted(set(stored.versions) - set(_VERSIONS))]
    versions = ", ".join(f"{k} {stored.versions[k]}" for k in order if stored.versions[k]) or "not recorded"
    drop = (f"{stored.max_teacher_drop:g} points (`--max-teacher-drop`)" if stored.max_teacher_drop is not None
            else "none")
    rows = [
        ("preset", f"`{stored.preset_name}`"),
        ("fingerprint", f"`{stored.fingerprint}`"),
        ("created", stored.created_at or "–"),
        ("protocol", preset.get("protocol", "validation")),
        ("sampler", search.get("sampler", "front")),
        ("budget", f"{stored.trials} trials"),
        ("max teacher drop", drop),
        ("search focus", f"{stored.focus_teacher_drop:g} points below the normal teacher"),
        ("phase code", str(stored.phase_code) if stored.phase_code is not None else "older than the field"),
        ("versions", versions),
        ("dataset", _json(preset.get("dataset", {}))),
        ("teacher", _json(preset.get("teacher", {}))),
        ("students", ", ".join(_json(s) for s in preset.get("students", [])) or "–"),
        ("attacks", ", ".join(c.attacks) or "none yet"),
        ("label smoothing", f"{attack.get('label_smoothing')} (the label-smoothed baseline)"),
    ]
    return ["## Settings", "", "| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
            "<details><summary>the resolved preset's attack and search tables</summary>", "",
            f"- attack: {_json(attack)}", f"- search: {_json(search)}", "", "</details>", ""]


def _json(value) -> str:
    return f"`{json.dumps(value, sort_keys=True)}`"


def _num(value) -> str:
    return f"{value:.2f}" if _finite(value) else "–"


def _signed(value, base) -> str:
    return f"{value - base:+.2f}" if _finite(value) and _finite(base) else "–"
