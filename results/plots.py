"""The two figures of a sweep's report, drawn with matplotlib (Agg: no display needed).

    front_figure        teacher accuracy against best clone accuracy, every finished trial
                        coloured by defense family, the front joined, the normal teacher, the
                        no-teacher baselines and the preset's paper point marked
    hypervolume_figure  the front's hypervolume after each trial, in finishing order

Each returns the figure; `png(figure)` gives its bytes. The artists carry labels (`gid`) so tests
can read the plotted data back.
"""

from __future__ import annotations

import io

from .pareto import _finite, hypervolume, pareto_front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def front_figure(trials: list[dict], front: list[dict], *, normal: tuple[float, float],
                 baselines: dict[str, float], paper_point: dict | None = None,
                 colours: dict[str, str] | None = None, replicated=(), title: str = ""):
    """`normal`: (normal teacher accuracy, its best clone); `baselines`: label -> clone accuracy
    drawn as horizontal lines (the students alone); `paper_point`: the trial row of the preset's
    paper-like start point, if it ran; `colours`: defense -> its colour (the sweep's space);
    `replicated`: the front on the means over seeds (`replicates.Replicated`), drawn at its means
    with its 95 % intervals as error bars on both axes."""
    colours = colours or {}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    done = [t for t in trials if t["status"] == "ok" and _finite(t["teacher_acc"]) and _finite(t["student_acc"])]
    for family in sorted({t["defense"] for t in done}):
        mine = [t for t in done if t["defense"] == family]
        ax.scatter([t["teacher_acc"] for t in mine], [t["student_acc"] for t in mine], s=28,
                   alpha=0.75, color=colours.get(family, "tab:gray"), label=f"{family} ({len(mine)})",
                   gid=f"trials:{family}")
    ordered = sorted(front, key=lambda t: t["teacher_acc"])
    ax.plot([t["teacher_acc"] for t in ordered], [t["student_acc"] for t in ordered], "-o", color="black",
            markerfacecolor="none", markersize=10, linewidth=1, label=f"front ({len(front)})", gid="front")
    if replicated:
        def bars(estimates):
            return [[e.mean - e.low if e.low is not None else 0.0 for e in estimates],
                    [e.high - e.mean if e.high is not None else 0.0 for e in estimates]]

        teachers, clones = [c.teacher_acc for c in replicated], [c.student_acc for c in replicated]
        seeds = max(len(c.seeds) for c in replicated)
        ax.errorbar([e.mean for e in teachers], [e.mean for e in clones], xerr=bars(teachers), yerr=bars(clones),
                    fmt="s", color="tab:purple", markersize=5, capsize=3, linewidth=1, zorder=4,
                    label=f"front on the means of {seeds} seeds, 95 % intervals", gid="replicated")
    ax.scatter([normal[0]], [normal[1]], marker="*", s=220, color="gold", edgecolor="black", zorder=5,
               label="normal teacher", gid="normal")
    if paper_point is not None:
        ax.scatter([paper_point["teacher_acc"]], [paper_point["student_acc"]], marker="D", s=70,
                   facecolor="none", edgecolor="tab:green", linewidth=2, zorder=6,
                   label="paper's point", gid="paper")
    for (label, value), style in zip(sorted(baselines.items()), ("--", ":", "-."), strict=False):
        if _finite(value):
            ax.axhline(value, linestyle=style, color="gray", linewidth=1, label=label, gid=f"baseline:{label}")
    ax.set_xlabel("teacher accuracy (%) ↑")
    ax.set_ylabel("best clone accuracy (%) ↓")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


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


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()
