"""A sweep's report folder: figures, the front as JSON, and a Markdown summary.

    report.md        the sweep at a glance (its preset, trials, front size and hypervolume, the
                     normal teacher), the front with one row per defense, the baselines once per
                     student, then the details: best clones by defense × attack and by defense ×
                     student, the front on the means over seeds, the settings and versions, and
                     where the results live (`report_md`)
    front.png        teacher accuracy against best clone accuracy (`plots.front_figure`), the
                     front numbered as report.md's table and keyed with its knobs, the students
                     alone named, the drop budget (`--max-teacher-drop`) as a line; without one,
                     the search's focus, lighter, where it falls among the trials
    clones.png       a heat map of the best clone by defense and attack, the normal teacher's row
                     first, each cell coloured by its difference from the normal teacher's clone
                     by that attack; a defense that protects nothing framed in red
    students.png     one panel per student: teacher accuracy against that student's best clone
    hypervolume.png  the front's hypervolume after each trial
    curves.png       when epoch rows are given: validation accuracy and training loss per epoch of
                     the normal teacher and the front's defended teachers, and of their students
    front.json       the front, exactly as `pareto NAME --single-seed --format json` prints it
    front_replicated.json   once `confirm` has run: the front on the means over seeds, exactly as
                     `pareto NAME --format json` prints it (with each number's sd and interval)
"""

from __future__ import annotations

import math

from undistill.record import SweepRecord

from .clones import Clones, clones, defense_label, protects_nothing, short_names
from .pareto import pareto_front
from .plots import (
    clones_figure,
    curves_figure,
    front_figure,
    hypervolume_curve,
    hypervolume_figure,
    png,
    students_figure,
)
from .replicates import mean_front, replicated
from .report import reference_point, render, render_replicated
from .report_md import Sweep, _num, markdown


def build_report(name: str, stored: SweepRecord, trials: list[dict], students: list[dict],
                 results_uri: str, replicates: tuple[list[dict], list[dict]] = ((), ()),
                 epochs: list[dict] = ()) -> dict[str, bytes]:
    """The report's files by name. `stored`: the sweep's record; `trials` in finishing
    order (as `ResultStore.trial_rows` gives them); `replicates`: the trial and student rows
    `confirm` added (`ResultStore.replicate_rows`); `epochs`: one row per phase and epoch
    (see `plots.curves_figure`), for curves.png."""
    front = pareto_front(trials)
    means = mean_front(replicated(trials, students, *replicates)) if replicates[0] else []
    reference = reference_point(students)
    c = clones(students)
    normal_acc = trials[0]["normal_teacher_acc"] if trials else math.nan
    labels = [defense_label(t, stored.space) for t in front]
    colours = {d.defense: d.colour for d in stored.space}
    curve = hypervolume_curve(trials, reference)
    files = {
        "front.png": png(front_figure(
            trials, front, normal=(normal_acc, reference[1]), baselines=baselines(c),
            paper_point=_paper_point(stored, trials), colours=colours, replicated=means, labels=labels,
            max_teacher_drop=stored.max_teacher_drop,
            focus_teacher_drop=stored.focus_teacher_drop if stored.max_teacher_drop is None else None,
            title=f"{name}: {len(front)} of {len(trials)} trials on the front")),
    }
    if front and c.attacks:
        files["clones.png"] = png(_clones_figure(front, c, labels, reference[1], normal_acc))
    if front and c.students:
        files["students.png"] = png(_students_figure(trials, front, c, colours, normal_acc))
    files["hypervolume.png"] = png(hypervolume_figure(curve, reference))
    if epochs:
        best = {key: attack for key, (_, attack) in c.by_student.items() if key[0] is not None}
        figure = curves_figure(list(epochs), [t["trial_id"] for t in front],
                               labels={t["trial_id"]: label for t, label in zip(front, labels, strict=True)},
                               best=best)
        if figure is not None:
            files["curves.png"] = png(figure)
    files["front.json"] = render(front, "json", space=stored.space).encode()
    if means:
        files["front_replicated.json"] = render_replicated(means, "json", stored.space).encode()
    written = (*files, "report.md")
    files["report.md"] = markdown(Sweep(name, stored, trials, front, c, reference, curve[-1] if curve else 0.0,
                                        results_uri, means, written)).encode()
    return files


def baselines(c: Clones) -> dict[str, float]:
    """The students alone as front.png's lines, each naming its student: the best student
    trained alone, and the best label-smoothed (`cnn1d alone: 94.65 %`)."""
    short = short_names(c.students)
    out = {}
    for which, words in (("alone", "alone"), ("smoothed", "label-smoothed")):
        value, student = c.best_baseline(which)
        if student is not None:
            out[f"{short[student]} {words}: {value:.2f} %"] = value
    return out


def _clones_figure(front, c: Clones, labels, normal_best: float, normal_acc: float):
    columns = [*c.attacks, "best clone"]
    normal = [c.by_attack.get((None, a), math.nan) for a in c.attacks] + [normal_best]
    rows = [(f"{n}  {label} (teacher {_num(t['teacher_acc'])})",
             [c.by_attack.get((t["trial_id"], a), math.nan) for a in c.attacks] + [t["student_acc"]],
             protects_nothing(t, normal_best))
            for n, (t, label) in enumerate(zip(front, labels, strict=True), 1)]
    return clones_figure(columns, normal, rows, normal_label=f"normal teacher (teacher {_num(normal_acc)})")


def _students_figure(trials, front, c: Clones, colours, normal_acc: float):
    short = short_names(c.students)
    panels = []
    for student in c.students:
        def clone(trial_id, student=student):
            return c.by_student.get((trial_id, student), (math.nan, None))[0]

        panels.append({
            "student": short[student],
            "trials": [(t["teacher_acc"], clone(t["trial_id"]), colours.get(t["defense"], "tab:gray"))
                       for t in trials if t["status"] == "ok"],
            "front": [(n, t["teacher_acc"], clone(t["trial_id"]), colours.get(t["defense"], "black"))
                      for n, t in enumerate(front, 1)],
            "normal": (normal_acc, clone(None)),
            "alone": c.alone.get(student, math.nan), "smoothed": c.smoothed.get(student, math.nan)})
    return students_figure(panels, title="Each student's best clone (over the attacks); front numbered as in front.png")


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


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
