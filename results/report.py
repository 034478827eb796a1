"""Text views of a sweep's results: the front as a table, JSON or CSV, and its hypervolume."""

from __future__ import annotations

import csv
import io
import json
import math

from undistill.space import SearchSpace

from .pareto import hypervolume

# A front's columns around its knobs (a column per knob of the sweep's defenses, see `front_columns`)
KEY_COLUMNS = ("trial_id", "defense")
RESULT_COLUMNS = ("teacher_acc", "student_acc", "teacher_drop", "best_student", "best_attack", "status")


def front_columns(space: SearchSpace) -> tuple[str, ...]:
    return (*KEY_COLUMNS, *space.knob_names(), *RESULT_COLUMNS)


def with_knob_columns(rows: list[dict], space: SearchSpace) -> list[dict]:
    """Rows with a column per knob of the sweep (None where a defense lacks it), each value of
    its knob's type: what tables, JSON and CSV show."""
    out = []
    for r in rows:
        knobs = r.get("knobs") or {}
        flat = {}
        for name in space.knob_names():
            knob = space.knob(name)
            flat[name] = knob.cast(knobs[name]) if name in knobs else None
        out.append({**r, **flat})
    return out


def reference_point(student_rows: list[dict]) -> tuple[float, float]:
    """Hypervolume reference: teacher accuracy 0 %, clone accuracy = the best clone distilled from
    the *normal* teacher. The volume is the area of (teacher accuracy, clone points lost) that
    the front dominates: a single defense adds its teacher accuracy × the points its clone
    lost, and a defense that does not hurt clones adds nothing."""
    normal = [r["normal_kd_acc"] for r in student_rows if r.get("normal_kd_acc") is not None]
    return (0.0, max(normal) if normal else 100.0)


def front_hypervolume(front: list[dict], student_rows: list[dict]) -> tuple[float, tuple[float, float]]:
    ref = reference_point(student_rows)
    return hypervolume([(r["teacher_acc"], r["student_acc"]) for r in front], ref), ref


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def render(rows: list[dict], fmt: str, columns: tuple[str, ...] | None = None,
           space: SearchSpace | None = None) -> str:
    """Rows as `table`, `json` (an array of objects), `csv` or `markdown` (a GitHub table). With
    the sweep's `space`, the rows are trial rows: their knobs become columns (and `columns`
    defaults to a front's)."""
    knobs: tuple[str, ...] = ()
    if space is not None:
        rows, knobs = with_knob_columns(rows, space), space.knob_names()
        columns = columns or front_columns(space)
    columns = columns or (*KEY_COLUMNS, *RESULT_COLUMNS)
    picked = [{c: _clean(r.get(c)) for c in columns} for r in rows]
    if fmt == "json":
        return json.dumps(picked, indent=1, default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(_fmt(c, r[c], knobs) for c in columns) + " |" for r in picked]
        return "\n".join(lines)
    return _table(picked, columns, knobs)


def _fmt(column: str, value, knobs: tuple[str, ...] = ()) -> str:
    """A cell: knobs to 4 significant digits, other numbers (percentages) to 2 decimals."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if column in knobs else f"{value:.2f}"
    return str(value)


def _table(rows: list[dict], columns, knobs: tuple[str, ...] = ()) -> str:
    cells = [[_fmt(c, r[c], knobs) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w)
                                    for v, w in zip(values, widths, strict=True)).rstrip()
    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "–"


def replicated_columns(space: SearchSpace, fmt: str) -> tuple[str, ...]:
    """A replicated front's columns: in a table each estimate is one `mean ± sd [low, high]`
    cell; JSON and CSV give every number its own column."""
    if fmt in ("table", "markdown"):
        return ("trial_id", "defense", *space.knob_names(), "seeds", "teacher_acc", "student_acc",
                "below_normal_kd", "pushes_below")
    estimates = ("teacher_acc", "student_acc", "teacher_drop", "below_normal_kd", "below_alone", "below_smoothed")
    return ("trial_id", "defense", *space.knob_names(), "seeds", "seed_list",
            *(f"{e}{part}" for e in estimates for part in ("", "_sd", "_low", "_high")),
            "pushes_below", "best_attacks")


def render_replicated(candidates, fmt: str, space: SearchSpace) -> str:
    """`candidates` (`replicates.Replicated`) as `render` gives a front: a table shows each
    estimate as mean ± sd [95 % interval]."""
    rows = with_knob_columns([c.to_row() for c in candidates], space)
    if fmt in ("table", "markdown"):
        for row, c in zip(rows, candidates, strict=True):
            row.update(teacher_acc=c.teacher_acc.text(), student_acc=c.student_acc.text(),
                       below_normal_kd=c.below["normal_kd"].text() if "normal_kd" in c.below else None,
                       pushes_below=row["pushes_below"] or "–")
    return render(rows, fmt, columns=replicated_columns(space, fmt), space=space)
