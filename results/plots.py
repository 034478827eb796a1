"""The figures of a sweep's report, drawn with matplotlib (Agg: no display needed).

    front_figure        teacher accuracy against best clone accuracy, every finished trial
                        coloured by defense family, the front joined and numbered (its knobs
                        keyed beside the plot), the normal teacher, the students alone, the
                        preset's paper point and the drop budget marked
    hypervolume_figure  the front's hypervolume after each trial, in finishing order
    clones_figure       a heat map of best clones, defense by attack, coloured by how far each
                        lies below or above the normal teacher's clone by the same attack
    students_figure     one panel per student: teacher accuracy against that student's best
                        clone, beside its clone of the normal teacher and its accuracy alone
    curves_figure       validation accuracy and training loss per epoch: the normal teacher
                        against the front's defended teachers, and their students

Each returns the figure (`curves_figure` None when it has nothing to draw); `png(figure)` gives
its bytes. The artists carry labels (`gid`) so tests can read the plotted data back.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from .pareto import _finite, hypervolume, pareto_front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ZOOM_POINTS = 2.0  # front.png zooms on the front within this many points of the normal teacher


def front_figure(trials: list[dict], front: list[dict], *, normal: tuple[float, float],
                 baselines: dict[str, float], paper_point: dict | None = None,
                 colours: dict[str, str] | None = None, replicated=(), title: str = "",
                 labels: Sequence[str] = (), max_teacher_drop: float | None = None,
                 focus_teacher_drop: float | None = None):
    """`normal`: (normal teacher accuracy, its best clone); `baselines`: label -> clone accuracy
    drawn as horizontal lines (the students alone, the label naming the student); `paper_point`:
    the trial row of the preset's paper-like start point, if it ran; `colours`: defense -> its
    colour (the sweep's space); `replicated`: the front on the means over seeds
    (`replicates.Replicated`), drawn at its means with its 95 % intervals as error bars on both
    axes. `labels`: each front point's defense and knobs, in the order of `front`: the points
    are numbered 1, 2, … in that order and the numbers keyed beside the plot. `max_teacher_drop`:
    the sweep's drop budget, a vertical line at the normal teacher's accuracy less it; without
    one, `focus_teacher_drop` (the search's focus) is drawn lighter, where it falls among the
    trials (it never widens the plot). Where the front's points near the normal teacher (within
    `ZOOM_POINTS`, or the budget) crowd into a corner of a wide plot, an inset zooms on them."""
    colours = colours or {}
    plt = _pyplot()
    from matplotlib.lines import Line2D

    keyed = list(labels)[:len(front)]
    fig = plt.figure(figsize=(11, max(5.2, 0.21 * (len(keyed) + 11) + 0.6)), dpi=120)
    grid = fig.add_gridspec(1, 2, width_ratios=(2.3, 1))
    ax, side = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    side.axis("off")
    done = [t for t in trials if t["status"] == "ok" and _finite(t["teacher_acc"]) and _finite(t["student_acc"])]

    def draw(axis, main: bool):
        def gid(name):
            return name if main else f"zoom:{name}"

        def label(text):
            return text if main else "_nolegend_"

        for family in sorted({t["defense"] for t in done}):
            mine = [t for t in done if t["defense"] == family]
            axis.scatter([t["teacher_acc"] for t in mine], [t["student_acc"] for t in mine], s=28,
                         alpha=0.75, color=colours.get(family, "tab:gray"), label=label(f"{family} ({len(mine)})"),
                         gid=gid(f"trials:{family}"))
        ordered = sorted(front, key=lambda t: t["teacher_acc"])
        axis.plot([t["teacher_acc"] for t in ordered], [t["student_acc"] for t in ordered], "-o", color="black",
                  markerfacecolor="none", markersize=10, linewidth=1, label=label(f"front ({len(front)})"),
                  gid=gid("front"))
        if replicated:
            def bars(estimates):
                return [[e.mean - e.low if e.low is not None else 0.0 for e in estimates],
                        [e.high - e.mean if e.high is not None else 0.0 for e in estimates]]

            teachers, clones = [c.teacher_acc for c in replicated], [c.student_acc for c in replicated]
            seeds = max(len(c.seeds) for c in replicated)
            axis.errorbar([e.mean for e in teachers], [e.mean for e in clones], xerr=bars(teachers),
                          yerr=bars(clones), fmt="s", color="tab:purple", markersize=5, capsize=3, linewidth=1,
                          zorder=4, label=label(f"front on the means of {seeds} seeds, 95 % intervals"),
                          gid=gid("replicated"))
        axis.scatter([normal[0]], [normal[1]], marker="*", s=220, color="gold", edgecolor="black", zorder=5,
                     label=label("normal teacher"), gid=gid("normal"))
        if paper_point is not None:
            axis.scatter([paper_point["teacher_acc"]], [paper_point["student_acc"]], marker="D", s=70,
                         facecolor="none", edgecolor="tab:green", linewidth=2, zorder=6,
                         label=label("paper's point"), gid=gid("paper"))
        for (name, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
            if _finite(value):
                axis.axhline(value, linestyle=style, color="gray", linewidth=1, label=label(name),
                             gid=gid(f"baseline:{name}"))

    draw(ax, True)
    ax.set_xlabel("teacher accuracy (%) ↑")
    ax.set_ylabel("best clone accuracy (%) ↓")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    extra = _drop_line(ax, normal[0], max_teacher_drop, focus_teacher_drop)
    handles, names = ax.get_legend_handles_labels()
    handles += extra
    names += [h.get_label() for h in extra]
    if keyed:
        handles.append(Line2D([], [], linestyle="none"))
        names.append("the front, by teacher accuracy:")
        for n, (t, text) in enumerate(zip(front, keyed, strict=False), 1):
            handles.append(Line2D([], [], linestyle="none", marker=f"${n}$", markersize=7 if n < 10 else 10,
                                  color=colours.get(t["defense"], "black")))
            names.append(text)
    side.legend(handles, names, loc="upper left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False,
                borderaxespad=0.0).set_gid("key")
    fig.tight_layout()
    numbered = [(t["teacher_acc"], t["student_acc"], str(n), colours.get(t["defense"], "black"))
                for n, t in enumerate(front, 1)]
    everything = [(t["teacher_acc"], t["student_acc"]) for t in done] + [tuple(normal)]

    def budget(inset, box):
        if max_teacher_drop is not None and box[0] <= normal[0] - max_teacher_drop <= box[1]:
            inset.axvline(normal[0] - max_teacher_drop, color="tab:red", linestyle="--", linewidth=1.2)

    _zoom_and_number(ax, numbered, normal, max_teacher_drop if max_teacher_drop is not None else ZOOM_POINTS,
                     everything, draw, numbers=bool(keyed), gid="front-label", fontsize=9, also=budget)
    return fig


def _zoom_and_number(ax, numbered, normal, near: float, everything, draw, *, numbers: bool = True,
                     gid: str = "label", fontsize: float = 8, also=None) -> None:
    """Number the points (x, y, text, colour) beside them; where those within `near` points of
    the normal teacher's accuracy crowd a corner of the plot, first draw an inset zoomed on them
    (`draw(axes, False)` draws its content, `also(inset, box)` anything more) and number those
    there. Call after the layout is final."""
    box = _zoom_box([p[:2] for p in numbered], normal, near, ax)
    inset = None
    if box is not None:
        inset = _inset(ax, box, everything)
        draw(inset, False)
        if also is not None:
            also(inset, box)
        inset.set_xlim(box[0], box[1])
        inset.set_ylim(box[2], box[3])
        ax.indicate_inset_zoom(inset, edgecolor="0.35")
    if not numbers:
        return

    def inside(p):
        return inset is not None and box[0] <= p[0] <= box[1] and box[2] <= p[1] <= box[3]

    avoid = [p[:2] for p in numbered] + [tuple(normal)]
    _number_points(ax, [p for p in numbered if not inside(p)], avoid, gid=gid, fontsize=fontsize)
    if inset is not None:
        _number_points(inset, [p for p in numbered if inside(p)], avoid, gid=f"zoom:{gid}", fontsize=fontsize - 1)


def _zoom_box(points, normal, near: float, ax) -> tuple[float, float, float, float] | None:
    """The data box around the front's points within `near` points of the normal teacher's
    accuracy (and the normal teacher), when at least two of them crowd it: the box spans under a
    fifth of the plot both ways. None otherwise."""
    close = [p for p in points if _finite(p[0]) and _finite(p[1]) and p[0] >= normal[0] - near]
    if len(close) < 2 or not (_finite(normal[0]) and _finite(normal[1])):
        return None
    xs, ys = [p[0] for p in close] + [normal[0]], [p[1] for p in close] + [normal[1]]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    if width > (x1 - x0) / 5 or height > (y1 - y0) / 5:
        return None
    pad_x, pad_y = max(0.15 * width, 0.15), max(0.15 * height, 0.15)
    return min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y


def _inset(ax, box, everything):
    """An inset for `box`, in the corner of the axes (lower right, where a front leaves room,
    else upper left) that covers the fewest points and not the box itself."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()

    def axes_xy(x, y):
        return (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)

    zoomed = (*axes_xy(box[0], box[2]), *axes_xy(box[1], box[3]))
    best = None
    for bounds in ((0.55, 0.05, 0.42, 0.42), (0.05, 0.53, 0.42, 0.42), (0.55, 0.53, 0.42, 0.42),
                   (0.05, 0.05, 0.42, 0.42)):
        rect = (bounds[0], bounds[1], bounds[0] + bounds[2], bounds[1] + bounds[3])
        covered = sum(rect[0] <= ax_x <= rect[2] and rect[1] <= ax_y <= rect[3]
                      for ax_x, ax_y in (axes_xy(*p) for p in everything))
        cost = covered + (1000 if _overlap(rect, zoomed) else 0)
        if best is None or cost < best[0]:
            best = (cost, bounds)
    inset = ax.inset_axes(best[1])
    inset.tick_params(labelsize=7)
    inset.grid(alpha=0.3)
    inset.set_gid("zoom")
    return inset


def _drop_line(ax, normal_acc: float, max_teacher_drop: float | None, focus: float | None) -> list:
    """The drop budget (or, lighter, the search's focus) as a vertical line labelled on the plot.
    A budget left of every trial is not drawn (it would squeeze them) but said in the key (the
    proxy returned); the focus is drawn only where it falls among the trials."""
    from matplotlib.lines import Line2D

    if not _finite(normal_acc) or (max_teacher_drop is None and focus is None):
        return []
    budget = max_teacher_drop is not None
    drop = max_teacher_drop if budget else focus
    x = normal_acc - drop
    low, high = ax.get_xlim()
    style = dict(color="tab:red", linestyle="--", linewidth=1.2) if budget else \
        dict(color="gray", linestyle=(0, (1, 3)), linewidth=1, alpha=0.7)
    words = f"drop budget: {drop:g} points" if budget else f"search focus: {drop:g} points of drop"
    if x < low:
        return [Line2D([], [], **style, label=f"{words} ({x:.2f} %): every trial within it", gid="drop-key")] \
            if budget else []
    gid = "drop-budget" if budget else "focus-drop"
    ax.axvline(x, **style, label=f"{words} ({x:.2f} %)", gid=gid)
    if budget:
        ax.axvspan(low, x, color="tab:red", alpha=0.05, linewidth=0)
    ax.set_xlim(low, high)
    ax.text(x, 0.98, f"{words} ", transform=ax.get_xaxis_transform(), rotation=90, ha="right", va="top",
            fontsize=7, color=style["color"], gid=f"{gid}:text")
    return []


def _number_points(ax, points: list[tuple[float, float, str, str]], avoid: Sequence[tuple[float, float]] = (),
                   gid: str = "label", fontsize: float = 8) -> None:
    """Each point's text beside it, at the first of a spiral of offsets where it overlaps no
    other text and no point of `avoid`, inside the axes; a leader line where it sits far off.
    Call after the layout is final: the search is in display space."""
    ax.set_xlim(ax.get_xlim())  # freeze the limits the search measures against
    ax.set_ylim(ax.get_ylim())
    scale = ax.figure.dpi / 72.0
    frame = ax.get_window_extent()
    marks = [ax.transData.transform(p) for p in avoid if _finite(p[0]) and _finite(p[1])]
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(r, a) for r in (10, 16, 23, 31, 40, 50, 62) for a in (45, -45, 135, -135, 0, 180, 90, -90, 20, -20,
                                                                        160, -160, 65, -65, 115, -115)]
    for x, y, text, colour in points:
        if not (_finite(x) and _finite(y)):
            continue
        px, py = ax.transData.transform((x, y))
        w, h = (0.62 * fontsize * len(text) + 6) * scale, (fontsize + 5) * scale
        choice = offsets[0]
        for r, a in offsets:
            cx = px + r * scale * math.cos(math.radians(a))
            cy = py + r * scale * math.sin(math.radians(a))
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            inside = box[0] >= frame.x0 and box[2] <= frame.x1 and box[1] >= frame.y0 and box[3] <= frame.y1
            if inside and not any(_overlap(box, b) for b in placed) \
                    and not any(_near(box, m, 6 * scale) for m in marks):
                choice = (r, a)
                break
        r, a = choice
        dx, dy = r * math.cos(math.radians(a)), r * math.sin(math.radians(a))
        cx, cy = px + dx * scale, py + dy * scale
        placed.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha="center", va="center",
                    fontsize=fontsize, fontweight="bold", color=colour, zorder=7, gid=f"{gid}:{text}",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8),
                    arrowprops=dict(arrowstyle="-", color=colour, linewidth=0.6, shrinkA=0, shrinkB=4)
                    if r > 12 else None)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _near(box, point, radius: float) -> bool:
    """The box comes within `radius` of the point."""
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return dx * dx + dy * dy < radius * radius


def hypervolume_curve(trials: list[dict], reference: tuple[float, float]) -> list[float]:
    """The front's hypervolume after each trial, trials taken in finishing order."""
    out = []
    for i in range(1, len(trials) + 1):
        front = pareto_front(trials[:i])
        out.append(hypervolume([(t["teacher_acc"], t["student_acc"]) for t in front], reference))
    return out


def hypervolume_figure(curve: list[float], reference: tuple[float, float], title: str = ""):
    """`curve`: see `hypervolume_curve`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(range(1, len(curve) + 1), curve, "-o", markersize=3, gid="hypervolume")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume")
    ax.set_title(title or f"reference: teacher {reference[0]:.0f} %, clone {reference[1]:.2f} %")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def clones_figure(columns: Sequence[str], normal: Sequence[float], rows: Sequence[tuple[str, Sequence[float], bool]],
                  normal_label: str = "normal teacher", title: str = "Best clone by defense and attack"):
    """A heat map: a row per defense (`rows`: its label, its best clone by each of `columns`,
    whether it protects nothing) under the normal teacher's row (`normal`, by the same columns).
    Each cell holds the clone's accuracy and its difference from the normal teacher's clone in
    that column, and is coloured by that difference on a scale centred on zero, linear within
    ±1 point and logarithmic past it (a point of protection shows beside DAFL's ten): blue, the
    defense lowers the clone; red, it raises it; grey, the attack did not run. A defense that
    protects nothing is framed in red and says so."""
    plt = _pyplot()
    import numpy as np
    from matplotlib.colors import SymLogNorm
    from matplotlib.patches import Rectangle

    columns = list(columns)
    values = np.array([list(normal)] + [list(v) for _, v, _ in rows], dtype=float)
    diff = values - values[0]
    finite = np.abs(diff[np.isfinite(diff)])
    spread = max(float(finite.max()) if finite.size else 0.0, 1.0)
    width = min(3.8 + 0.95 * len(columns) + 1.6, 22)
    fig, ax = plt.subplots(figsize=(width, 1.9 + 0.52 * len(values)), dpi=120)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    norm = SymLogNorm(linthresh=1.0, linscale=1.0, vmin=-spread, vmax=spread, base=10)
    image = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap, norm=norm, aspect="auto", gid="clones")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if not math.isfinite(value):
                ax.text(j, i, "–", ha="center", va="center", fontsize=9, color="dimgray")
                continue
            strong = i and math.isfinite(diff[i, j]) and abs(norm(diff[i, j]) - 0.5) > 0.33
            text = f"{value:.2f}" if not i else f"{value:.2f}\n{diff[i, j]:+.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, linespacing=1.1,
                    color="white" if strong else "black", fontweight="bold" if not i else "normal",
                    gid=f"cell:{i}:{j}")
    names = [normal_label] + [f"{label} · protects nothing" if flag else label for label, _, flag in rows]
    ax.set_yticks(range(len(values)), names, fontsize=8)
    tilt = len(columns) > 9
    ax.set_xticks(range(len(columns)), columns, fontsize=8, rotation=30 if tilt else 0,
                  ha="right" if tilt else "center")
    ax.tick_params(length=0)
    for i, (_, _, flag) in enumerate(rows, 1):
        if flag:
            ax.get_yticklabels()[i].set_color("crimson")
            ax.add_patch(Rectangle((-0.5, i - 0.5), len(columns), 1, fill=False, edgecolor="crimson",
                                   linewidth=2, zorder=3, gid=f"protects-nothing:{i}"))
    ax.axhline(0.5, color="black", linewidth=1.2)
    if len(columns) > 1:
        ax.axvline(len(columns) - 1.5, color="white", linewidth=4)
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    ticks = [t for t in (1, 2, 5, 10, 20, 50) if t <= spread]
    bar.set_ticks([-t for t in reversed(ticks)] + [0] + ticks, labels=[f"{-t:g}" for t in reversed(ticks)] + ["0"]
                  + [f"+{t:g}" for t in ticks])
    bar.set_label("clone − the normal teacher's clone by the same attack\n(points; linear within ±1, logarithmic past)",
                  fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.text(0.01, 0.01, "Cell: the best clone over the students (%) and its difference from the normal teacher's. "
             "Blue: the defense lowers the clone; red: raises it; grey –: not run.", fontsize=7.5, color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def students_figure(panels: Sequence[dict], title: str = ""):
    """One panel per student: each finished trial's teacher accuracy against that student's best
    clone (over the attacks), faint, the front's numbered as in the front figure, the normal
    teacher's clone of the student as a star and the student alone (plain and label-smoothed)
    as lines. A panel: {"student", "trials": [(teacher acc, clone, colour)],
    "front": [(number, teacher acc, clone, colour)], "normal": (teacher acc, clone),
    "alone", "smoothed"}."""
    plt = _pyplot()
    count = len(panels)
    across = min(count, 3)
    down = math.ceil(count / across)
    fig, axes = plt.subplots(down, across, figsize=(4.6 * across, 4.6 * down + 0.5), dpi=120, squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels, strict=False):
        _student_panel(ax, panel, True)
        ax.set_title(f"student {panel['student']}", fontsize=10)
        ax.set_xlabel("teacher accuracy (%) ↑", fontsize=8)
        ax.set_ylabel(f"{panel['student']}'s best clone (%) ↓", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    for ax, panel in zip(axes.flat, panels, strict=False):
        trials = [p[:2] for p in panel["trials"] if _finite(p[0]) and _finite(p[1])]
        _zoom_and_number(ax, [(p[1], p[2], str(p[0]), p[3]) for p in panel["front"]], panel["normal"],
                         ZOOM_POINTS, trials + [tuple(panel["normal"])],
                         lambda axis, main, panel=panel: _student_panel(axis, panel, main),
                         gid=f"label:{panel['student']}", fontsize=8)
    return fig


def _student_panel(ax, panel: dict, main: bool) -> None:
    def gid(name):
        return f"{name}:{panel['student']}" if main else f"zoom:{name}:{panel['student']}"

    def label(text):
        return text if main else "_nolegend_"

    trials = [p for p in panel["trials"] if _finite(p[0]) and _finite(p[1])]
    ax.scatter([p[0] for p in trials], [p[1] for p in trials], s=16, alpha=0.3,
               color=[p[2] for p in trials], gid=gid("trials"))
    front = [p for p in panel["front"] if _finite(p[1]) and _finite(p[2])]
    ax.plot([p[1] for p in front], [p[2] for p in front], "o", color="black", markerfacecolor="none",
            markersize=8, label=label("front defenses"), gid=gid("front"))
    nx, ny = panel["normal"]
    if _finite(nx) and _finite(ny):
        ax.scatter([nx], [ny], marker="*", s=180, color="gold", edgecolor="black", zorder=5,
                   label=label("normal teacher's clone"), gid=gid("normal"))
    for key, words, style in (("alone", "alone", "--"), ("smoothed", "label-smoothed", ":")):
        if _finite(panel.get(key)):
            ax.axhline(panel[key], linestyle=style, color="gray", linewidth=1,
                       label=label(f"{panel['student']} {words}: {panel[key]:.2f} %"), gid=gid(key))


_CURVE_KINDS = ("teacher", "defense", "attack", "scratch")
_DASHES = ("-", "--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2, 2, 2)), (0, (2, 1)))


def curves_figure(epoch_rows: list[dict], front: Sequence[str] | None = None,
                  labels: dict[str, str] | None = None, best: dict[tuple[str, str], str] | None = None):
    """Training curves, one row per phase-epoch (`epoch_rows`: trial_id (None for an upstream
    phase), phase_key, phase_kind, student_arch, attack, seed, epoch, train_loss, val_acc, …).
    Left, the teachers: validation accuracy (top) and training loss (bottom) per epoch of the
    normal teacher (black) and of each front defense's teacher. Then a column per student: each
    front defense's student under the attack that made that student's best clone (`best`:
    (trial id, student) -> attack; else the attack whose validation accuracy peaked highest),
    against the same student under the same attacks on the normal teacher (grey) and trained
    alone (dotted). `front`: the front's trial ids, numbered 1, 2, … in that order as in the
    front figure (default: every trial the rows name); `labels`: trial id -> its defense and
    knobs. Upstream phases are taken at the seed of the front's own rows. None when no row is
    a teacher's or an attack's."""
    plt = _pyplot()
    rows = _latest_epochs(r for r in epoch_rows if r.get("phase_kind") in _CURVE_KINDS)
    named = list(dict.fromkeys(r["trial_id"] for r in rows if r.get("trial_id") is not None))
    front = list(front) if front is not None else named
    number = {t: n for n, t in enumerate(front, 1)}
    labels, best = labels or {}, dict(best or {})
    mine = [r for r in rows if r.get("trial_id") in number]
    seeds = [r.get("seed") for r in mine] or [r.get("seed") for r in rows if r.get("trial_id") is None]
    seed = min((s for s in seeds if s is not None), default=None)
    upstream = [r for r in rows if r.get("trial_id") is None and (seed is None or r.get("seed") == seed)]
    teachers = [r for r in upstream if r["phase_kind"] == "teacher"] + \
        [r for r in mine if r["phase_kind"] == "defense"]
    attacks = [r for r in upstream + mine if r["phase_kind"] == "attack"]
    if not teachers and not attacks:
        return None
    students = list(dict.fromkeys(r["student_arch"] for r in attacks if r.get("student_arch")))
    if len(number) <= 10:
        colour = {t: plt.get_cmap("tab10")(n - 1) for t, n in number.items()}
    else:  # more than ten distinct colours: a sequence along the front instead
        colour = {t: plt.get_cmap("viridis")(0.9 * (n - 1) / (len(number) - 1)) for t, n in number.items()}
    fig, axes = plt.subplots(2, 1 + len(students), figsize=(4.4 * (1 + len(students)), 6.6), dpi=120,
                             squeeze=False, sharex="col")
    legend: dict[str, object] = {}
    dashes: dict[str, object] = {}  # attack -> its line style on the normal teacher, the same in every column
    tails: dict[int, list[float]] = {}  # column -> validation accuracies past each line's first fifth

    def draw(column, phase_rows, style, name, gid):
        for row, metric in ((0, "val_acc"), (1, "train_loss")):
            points = sorted((r["epoch"], r[metric]) for r in phase_rows if _finite(r.get(metric)))
            if points and metric == "val_acc":
                tails.setdefault(column, []).extend(p[1] for p in points[len(points) // 5:])
            if points:
                (line,) = axes[row][column].plot([p[0] for p in points], [p[1] for p in points], **style,
                                                 label=name, gid=f"{gid}:{metric}")
                legend.setdefault(name, line)

    def who(trial):
        return f"{number[trial]}  {labels.get(trial, trial)}"

    draw(0, [r for r in teachers if r["trial_id"] is None], dict(color="black", linewidth=2),
         "normal teacher", "teacher:normal")
    for trial in front:
        phase = [r for r in teachers if r.get("trial_id") == trial]
        draw(0, phase, dict(color=colour[trial], linewidth=1.2), who(trial), f"teacher:{trial}")
    for column, student in enumerate(students, 1):
        theirs = [r for r in attacks if r.get("student_arch") == student]
        shown = []
        for trial in front:
            runs = _by_attack([r for r in theirs if r.get("trial_id") == trial])
            attack = best.get((trial, student))
            if attack not in runs:
                attack = max(runs, key=lambda a: max((r["val_acc"] for r in runs[a] if _finite(r.get("val_acc"))),
                                                     default=-math.inf), default=None)
            if attack is not None:
                shown.append(attack)
                draw(column, runs[attack], dict(color=colour[trial], linewidth=1.2), who(trial),
                     f"attack:{trial}:{student}:{attack}")
        normal_runs = _by_attack([r for r in theirs if r.get("trial_id") is None])
        for attack in dict.fromkeys(shown):
            style = dashes.setdefault(attack, _DASHES[len(dashes) % len(_DASHES)])
            draw(column, normal_runs.get(attack, []), dict(color="gray", linewidth=1.6, linestyle=style),
                 f"normal teacher, {attack}", f"attack:normal:{student}:{attack}")
        scratch = [r for r in upstream if r["phase_kind"] == "scratch" and r.get("student_arch") == student]
        draw(column, scratch, dict(color="tab:brown", linewidth=1.2, linestyle=(0, (1, 1.5))), "student alone",
             f"scratch:{student}")
        axes[0][column].set_title(f"student {student.split('(', 1)[0]}: best attack per defense", fontsize=9)
    axes[0][0].set_title("teachers", fontsize=9)
    for column in range(axes.shape[1]):
        axes[0][column].set_ylabel("validation accuracy (%)", fontsize=8)
        axes[1][column].set_ylabel("training loss", fontsize=8)
        axes[1][column].set_xlabel("epoch", fontsize=8)
        for row in (0, 1):
            axes[row][column].tick_params(labelsize=7)
            axes[row][column].grid(alpha=0.3)
    for column, values in tails.items():  # the climb of the first epochs cut: the ends compared
        low, high = min(values), max(values)
        axes[0][column].set_ylim(low - 0.05 * max(high - low, 1.0), high + 0.05 * max(high - low, 1.0))
    rows_of_key = math.ceil(len(legend) / 3)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, min(0.45, 0.01 + 0.028 * rows_of_key), 1, 1))
    return fig


def _latest_epochs(rows) -> list[dict]:
    """One row per phase and epoch, the last written (a phase run again after a crash)."""
    kept: dict[tuple, dict] = {}
    for r in rows:
        phase = r.get("phase_key") or (r.get("trial_id"), r.get("phase_kind"), r.get("phase"), r.get("seed"))
        kept[(phase, r.get("trial_id"), r.get("epoch"))] = r
    return list(kept.values())


def _by_attack(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("attack"):
            out.setdefault(r["attack"], []).append(r)
    return out


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.12)
    _pyplot().close(figure)
    return buffer.getvalue()
