"""Which sampler finds the front in fewest trials: hypervolume after each trial, over seeds.

Every sampler a sweep offers (`search.sampler` / `--sampler`: TPE, GP, NSGA-II, random) and
the paper's way (a hand grid over ω and τ_A, no stingy teacher) get the same budget on the
`mnist1d` preset's search space. Each Optuna sampler runs exactly as in a sweep (the sampler
from `orchestrator.search.make_sampler`, the preset's start points enqueued first, repeats
redrawn, what Optuna is told: `DefenseSearch` itself, on a study in memory), with
`--concurrency` trials in flight (a trial is asked for while others still run).

The objective is a table of real trial outcomes (`bench/search_table.py`): each proposed
candidate gets the outcome of the nearest grid point (ω and τ_A on a log scale, k exactly),
measured once with the preset's own phases. The hypervolume is the sweep's own
(`results.report.reference_point`: teacher accuracy 0, the normal teacher's best clone) and is
also shown as a share of the whole table's hypervolume, what an exhaustive search would find.

    python bench/search.py [--trials 24] [--seeds 20] [--concurrency 2] [--plot FILE] [--json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import statistics
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import cache
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_table import PRESET, TABLE  # noqa: E402  (bench/ is the script's folder)

from results.plots import hypervolume_curve  # noqa: E402

SAMPLERS = ("tpe", "gp", "nsga2", "random", "grid")  # and grid-WxT, see `log_grid`
# The paper's way: a few weights at a few temperatures, run exhaustively (24 candidates).
HAND_GRID = [{"defense": "nasty", "omega": w, "tau_a": t}
             for w in (0.002, 0.004, 0.008, 0.015, 0.025, 0.04) for t in (2.0, 4.0, 10.0, 20.0)]
CHECKPOINTS = (4, 8, 12, 16, 20, 24)


def log_grid(preset, name: str) -> list[dict]:
    """`grid-WxT`: W values of ω by T of τ_A, log-spaced over the preset's ranges, ends included;
    how much a grid's result owes to which values it happens to hold."""
    w, t = (int(n) for n in name.removeprefix("grid-").split("x"))
    omega, tau_a = preset.space.get("nasty").ranges
    (w_lo, w_hi), (t_lo, t_hi) = (omega.low, omega.high), (tau_a.low, tau_a.high)
    return [{"defense": "nasty", "omega": w_lo * (w_hi / w_lo) ** (i / (w - 1)),
             "tau_a": t_lo * (t_hi / t_lo) ** (j / (t - 1))} for i in range(w) for j in range(t)]


class Table:
    """The outcome of the grid point nearest a candidate."""

    def __init__(self, doc: dict):
        self.omegas, self.taus = doc["omegas"], doc["taus"]
        self.reference = tuple(doc["reference"])
        self._by_key = {self._key(o): o for o in doc["outcomes"]}
        self.attainable = math.nan  # the hypervolume of every searchable outcome (see `_setup`)

    def outcome(self, params: dict) -> dict:
        if params["defense"] == "nasty":
            snapped = {"defense": "nasty", "omega": _nearest_log(self.omegas, params["omega"]),
                       "tau_a": _nearest_log(self.taus, params["tau_a"])}
        else:
            snapped = {"defense": "stingy", "k": int(params["k"])}
        return self._by_key[self._key(snapped)]

    @staticmethod
    def _key(o: dict) -> tuple:
        return (o["defense"], o.get("omega"), o.get("tau_a"), o.get("k"))


def _nearest_log(grid: list[float], x: float) -> float:
    i = bisect.bisect_left(grid, x)
    near = grid[max(0, i - 1):i + 1]
    return min(near, key=lambda g: abs(math.log(g / x)))


def run_sampler(name: str, seed: int, table: Table, preset, trials: int, concurrency: int) -> list[dict]:
    """The outcomes of one search, in the order its trials finished."""
    if name.startswith("grid"):
        order = list(HAND_GRID if name == "grid" else log_grid(preset, name))
        random.Random(seed).shuffle(order)  # run side by side, a grid finishes in any order
        return [table.outcome(p) for p in order[:trials]]

    import optuna

    from orchestrator.search import DefenseSearch

    # the sweep's own searcher (start points, repeats redrawn, what Optuna is told), on a study
    # in memory; a preset's seed seeds its sampler
    search = DefenseSearch(replace(preset, sampler=name, seed=seed), f"{name}-{seed}",
                           optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    running: deque = deque()
    outcomes: list[dict] = []
    while len(outcomes) < trials:
        while len(running) < concurrency and len(outcomes) + len(running) < trials:
            trial_id = f"t{len(outcomes) + len(running)}"
            running.append((trial_id, search.suggest(trial_id)))
        trial_id, params = running.popleft()
        outcome = table.outcome(params)
        search.on_trial_complete(trial_id, {**outcome, "final": True})
        outcomes.append(outcome)
    return outcomes


@cache
def _setup(path: Path, defenses: str | None) -> tuple[Table, object]:
    """The table and the preset, searching only `defenses` when given."""
    import optuna

    from search_spaces import load_preset

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    doc = json.loads(path.read_text())
    preset = load_preset(PRESET)
    if doc["preset"] != preset.to_dict() or "reference" not in doc:
        sys.exit(f"{path} is unfinished or was made with another {PRESET} preset: "
                 "run python bench/search_table.py")
    if defenses:
        chosen = tuple(defenses.split(","))
        preset = replace(preset, space=replace(preset.space, defenses=tuple(
            d for d in preset.space if d.defense in chosen)))
    table = Table(doc)
    searchable = [o for o in doc["outcomes"] if o["defense"] in preset.defenses]
    table.attainable = hypervolume_curve(searchable, table.reference)[-1]
    return table, preset


def _curve(name: str, seed: int, path: Path, defenses: str | None, trials: int,
           concurrency: int) -> tuple[list[float], float]:
    """One search's hypervolume after each trial, % of the table's; and the seconds it took."""
    table, preset = _setup(path, defenses)
    t0 = time.perf_counter()
    outcomes = run_sampler(name, seed, table, preset, trials, concurrency)
    spent = time.perf_counter() - t0
    return [100 * hv / table.attainable for hv in hypervolume_curve(outcomes, table.reference)], spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="trials in flight, as in a sweep (default: 2, a 2-core machine's)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--defenses", help="search only these (comma-separated; default: the "
                                           "preset's nasty,stingy); nasty alone is the paper's space")
    parser.add_argument("--table", type=Path, default=TABLE, help="outcomes (default: %(default)s)")
    parser.add_argument("--plot", help="write hypervolume against trials to this PNG")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="searches at once (default: every core)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()

    if not args.table.exists():
        sys.exit(f"{args.table} is missing: run python bench/search_table.py first")
    table, preset = _setup(args.table, args.defenses)
    attainable = table.attainable

    jobs = [(name, seed) for name in args.samplers.split(",") for seed in range(args.seeds)]
    curves: dict[str, list[list[float]]] = {name: [] for name, _ in jobs}
    seconds: dict[str, float] = dict.fromkeys(curves, 0.0)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_curve, *zip(*[(name, seed, args.table, args.defenses, args.trials, args.concurrency)
                                        for name, seed in jobs], strict=True))
        for (name, _), (curve, spent) in zip(jobs, done, strict=True):
            curves[name].append(curve)
            seconds[name] += spent
    for name, spent in seconds.items():
        print(f"{name}: {spent / (args.seeds * args.trials):.2f} s per trial asked and told",
              file=sys.stderr)

    marks = [n for n in CHECKPOINTS if n <= args.trials] or [args.trials]
    print(f"defenses {', '.join(preset.defenses)}: hypervolume, % of the table's ({attainable:.1f}), "
          f"mean ± sd over {args.seeds} seeds [worst seed], {args.concurrency} trials in flight")
    print("| sampler | " + " | ".join(f"{n} trials" for n in marks) + " |")
    print("| --- |" + " --- |" * len(marks))
    summary = {}
    for name, runs in curves.items():
        cells, summary[name] = [], {}
        for n in marks:
            values = [run[min(n, len(run)) - 1] for run in runs]
            mean, sd = statistics.fmean(values), statistics.pstdev(values)
            summary[name][n] = {"mean": mean, "sd": sd, "min": min(values)}
            cells.append(f"{mean:.1f} ± {sd:.1f} [{min(values):.1f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.plot:
        _plot(curves, args.plot, f"{PRESET}, defenses {', '.join(preset.defenses)}")
    if args.json:
        print(json.dumps({"defenses": preset.defenses, "attainable": attainable, "seeds": args.seeds,
                          "trials": args.trials,
                          "concurrency": args.concurrency, "summary": summary,
                          "seconds_per_trial": {n: t / (args.seeds * args.trials) for n, t in seconds.items()}}))


def _plot(curves: dict[str, list[list[float]]], path: str, title: str) -> None:
    from results.plots import _pyplot

    fig, ax = _pyplot().subplots(figsize=(7, 4), dpi=120)
    for name, runs in curves.items():
        x = range(1, len(runs[0]) + 1)
        columns = list(zip(*runs, strict=True))
        mean = [statistics.fmean(c) for c in columns]
        low = [sorted(c)[len(c) // 4] for c in columns]
        high = [sorted(c)[(3 * len(c)) // 4] for c in columns]
        ax.plot(x, mean, label=name)
        ax.fill_between(x, low, high, alpha=0.15)
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume, % of the table's")
    ax.set_title(f"{title}: mean over seeds, band = quartiles", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
