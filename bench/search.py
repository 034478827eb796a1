"""Which search finds the front for least compute: hypervolume against trials and against
phase-seconds, over sampler seeds.

Every sampler a sweep offers (`search.sampler` / `--sampler`: `front`, the default, and TPE, GP,
NSGA-II, random) and the paper's way (a hand grid over ω and τ_A, no stingy teacher) get the
same budget on the `mnist1d` preset's search space. Each Optuna sampler runs exactly as in a
sweep: `orchestrator.search.DefenseSearch` itself (the sampler from `make_sampler`, start points,
repeats redrawn, what Optuna is told), on a study in memory, with `--concurrency` trials in
flight (a trial is asked for while others still run).

The objective is a table of real trial outcomes (`bench/search_table.py`): each proposal gets
the outcome of the nearest grid point (ω and τ_A on a log scale, k exactly), every student ×
attack of it measured once with the preset's own phases, with its seconds. A trial is replayed
as a sweep runs it: with pruning (the default; `--full-suite` for none), its attacks in waves of
the preset's students, strongest first (`trainables.pruning.attack_order`, learned from the
normal teacher and the trials attacked in full so far), stopping once the clones so far are
dominated by the front known when the trial started. The grid runs every attack (the paper's
way; `grid+prune` is the grid with pruning). Compute is phase-seconds: a trial's teacher plus
the students it ran.

Hypervolume is the sweep's (`results.report.reference_point`: teacher accuracy 0, the normal
teacher's best clone), shown as a share of the whole table's: what an exhaustive search of every
point of the table, past the preset's ω range too, finds. With `--attainable in-range` only the
preset's ranges count, for the table and for every search: a trial past them (range extension)
spends its trial and seconds and adds nothing, so extension is judged by what it costs there.

    python bench/search.py [--trials 24] [--seeds 20] [--first-seed 0] [--samplers default,grid,tpe,random]
        [--concurrency 2] [--budget-seconds 600,1200,...] [--plot FILE] [--json]

`--json` prints `{"<sampler>": {"<trials>": mean share %, ...}, ...}` to stdout (with
`--budget-seconds`: keyed by phase-seconds), the tables go to stderr.
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
from dataclasses import dataclass, replace
from functools import cache
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_table import OMEGAS, PRESET, TABLE, TAUS, same_phases  # noqa: E402  (bench/ is the script's folder)

from results.plots import hypervolume_curve  # noqa: E402
from trainables.pruning import attack_order, dominated, waves  # noqa: E402

SAMPLERS = ("default", "grid", "tpe", "random")  # and gp, nsga2, front-fixed, grid+prune, grid-WxT
# The paper's way: a few weights at a few temperatures, run exhaustively (24 candidates).
HAND_GRID = [{"defense": "nasty", "omega": w, "tau_a": t}
             for w in (0.002, 0.004, 0.008, 0.015, 0.025, 0.04) for t in (2.0, 4.0, 10.0, 20.0)]
CHECKPOINTS = (4, 8, 12, 16, 20, 24)


@dataclass(frozen=True)
class Replayed:
    """One trial as a sweep would have run it."""

    params: dict
    status: str  # ok | dominated
    teacher_acc: float
    student_acc: float  # the best clone of the attacks run (a lower bound when dominated)
    seconds: float  # phase-seconds: its teacher and the students it ran
    students_run: int
    past: bool  # the proposal lay past the table's grid (it got the grid's edge)

    in_range: bool = True  # its outcome is of a grid point within the preset's ranges

    def row(self, in_range_only: bool = False) -> dict:
        """For the hypervolume: a trial past the preset's ranges counts for nothing when only the
        preset's ranges count (it still spent its trial and its seconds)."""
        counts = self.status == "ok" and (self.in_range or not in_range_only)
        return {"status": "ok" if counts else "dominated",
                "teacher_acc": self.teacher_acc, "student_acc": self.student_acc}


def log_grid(preset, name: str) -> list[dict]:
    """`grid-WxT`: W values of ω by T of τ_A, log-spaced over the preset's ranges, ends included;
    how much a grid's result owes to which values it happens to hold."""
    w, t = (int(n) for n in name.removeprefix("grid-").split("x"))
    omega, tau_a = preset.space.get("nasty").ranges
    (w_lo, w_hi), (t_lo, t_hi) = (omega.low, omega.high), (tau_a.low, tau_a.high)
    return [{"defense": "nasty", "omega": w_lo * (w_hi / w_lo) ** (i / (w - 1)),
             "tau_a": t_lo * (t_hi / t_lo) ** (j / (t - 1))} for i in range(w) for j in range(t)]


class Table:
    """The outcome of the grid point nearest a candidate, and the normal teacher's clones."""

    def __init__(self, doc: dict):
        self.omegas, self.taus = doc["omegas"], doc["taus"]
        self.reference = tuple(doc["reference"])
        self.normal_teacher_acc = doc["normal_teacher_acc"]  # the default sampler's focus is measured from it
        self._by_key = {self._key(o): o for o in doc["outcomes"]}
        self.normal = {f"{a['attack']} {a['student']}": a["student_acc"] for a in doc["normal_attacks"]}
        self.attainable = math.nan  # the hypervolume an exhaustive search finds (see `_setup`)

    def outcome(self, params: dict) -> tuple[dict, bool]:
        """The outcome, and whether the proposal lay past the grid's extent."""
        if params["defense"] == "nasty":
            omega, tau = params["omega"], params["tau_a"]
            snapped = {"defense": "nasty", "omega": _nearest_log(self.omegas, omega),
                       "tau_a": _nearest_log(self.taus, tau)}
            past = omega > self.omegas[-1] * 1.05 or omega < self.omegas[0] / 1.05 \
                or tau > self.taus[-1] * 1.05 or tau < self.taus[0] / 1.05
        else:
            snapped, past = {"defense": "stingy", "k": int(params["k"])}, False
        return self._by_key[self._key(snapped)], past

    @staticmethod
    def _key(o: dict) -> tuple:
        return (o["defense"], o.get("omega"), o.get("tau_a"), o.get("k"))


def _nearest_log(grid: list[float], x: float) -> float:
    i = bisect.bisect_left(grid, x)
    near = grid[max(0, i - 1):i + 1]
    return min(near, key=lambda g: abs(math.log(g / x)))


def replay(outcome: dict, params: dict, past: bool, front: list[tuple[float, float]], seen: list[dict],
           normal: dict, wave: int, prune: bool) -> Replayed:
    """The trial as a sweep runs it (see the module's docstring)."""
    clones = {f"{s['attack']} {s['student']}": s for s in outcome["students"]}
    order = attack_order(list(clones), normal, seen) if prune else list(clones)
    teacher = outcome["teacher_acc"]
    seconds, run, best, status = outcome.get("teacher_wall_s") or 0.0, 0, -math.inf, "ok"
    groups = waves(order, wave)
    for i, group in enumerate(groups):
        for name in group:
            s = clones[name]
            seconds += s["wall_s"]
            run += 1
            if s["status"] == "ok" and s["student_acc"] is not None:
                best = max(best, s["student_acc"])
        if prune and i < len(groups) - 1 and dominated((teacher, best), front):
            status = "dominated"
            break
    in_range = outcome["defense"] != "nasty" or (outcome["omega"] in OMEGAS and outcome["tau_a"] in TAUS)
    return Replayed(params, status, teacher, best, seconds, run, past, in_range)


def run_sampler(name: str, seed: int, table: Table, preset, trials: int, concurrency: int,
                prune: bool) -> list[Replayed]:
    """The trials of one search, in the order they finished."""
    wave = len(preset.students)
    finished: list[Replayed] = []
    seen: list[dict] = []  # the clones of each trial attacked in full, for the attacks' order

    def front() -> list[tuple[float, float]]:
        ok = [r for r in finished if r.status == "ok"]
        return [(r.teacher_acc, r.student_acc) for r in ok]

    def run(params: dict, known_front) -> Replayed:
        outcome, past = table.outcome(params)
        done = replay(outcome, params, past, known_front, seen, table.normal, wave, prune)
        if done.status == "ok":
            seen.append({f"{s['attack']} {s['student']}": s["student_acc"] for s in outcome["students"]})
        return done

    if name.startswith("grid"):
        base = name.removesuffix("+prune")
        order = list(HAND_GRID if base == "grid" else log_grid(preset, base))
        random.Random(seed).shuffle(order)  # run side by side, a grid finishes in any order
        running: deque = deque()
        for params in order[:trials]:
            running.append((params, front()))
            if len(running) == concurrency:
                finished.append(run(*running.popleft()))
        finished += [run(*r) for r in running]
        return finished

    import optuna

    from orchestrator.search import DefenseSearch

    sampler = preset.sampler if name == "default" else name
    if sampler == "front-fixed":  # the default strategy without range extension
        preset, sampler = replace(preset, extend_ranges=False), "front"
    search = DefenseSearch(replace(preset, sampler=sampler, seed=seed), f"{name}-{seed}",
                           optuna.storages.InMemoryStorage(), max_teacher_drop=None,
                           normal_teacher_acc=table.normal_teacher_acc)
    running = deque()
    while len(finished) < trials:
        while len(running) < concurrency and len(finished) + len(running) < trials:
            trial_id = f"t{len(finished) + len(running)}"
            running.append((trial_id, search.suggest(trial_id), front()))
        trial_id, params, known_front = running.popleft()
        done = run(params, known_front)
        search.on_trial_complete(trial_id, {"status": done.status, "teacher_acc": done.teacher_acc,
                                            "student_acc": done.student_acc, "teacher_drop": 0.0,
                                            "final": True})
        finished.append(done)
    return finished


def _same_space(fingerprint: dict, preset) -> bool:
    """Whether a table made with the preset `fingerprint` covers this preset's search space
    (its defenses and their ranges; not how it is searched: sampler, budget, focus)."""
    mine = preset.to_dict()["search"]
    return all(fingerprint.get("search", {}).get(k) == mine.get(k) for k in ("defenses", *mine["defenses"]))


@cache
def _setup(path: Path, defenses: str | None, attainable: str) -> tuple[Table, object]:
    """The table and the preset, searching only `defenses` when given."""
    import optuna

    from search_spaces import load_preset

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    doc = json.loads(path.read_text())
    preset = load_preset(PRESET)
    if "reference" not in doc or "normal_attacks" not in doc or not _same_space(doc["preset"], preset):
        sys.exit(f"{path} is unfinished, of an older format, or was made for another {PRESET} "
                 "search space: run python bench/search_table.py")
    if not same_phases(doc["preset"], preset):
        # the search replays the table's outcomes: what it compares holds for the preset they came from
        mine = preset.to_dict()
        changed = sorted(k for k in {*doc["preset"], *mine} - {"search"} if doc["preset"].get(k) != mine.get(k))
        print(f"note: {path.name} holds the outcomes of an earlier {PRESET} preset (it differs in "
              f"{', '.join(changed)}); the searches replay those", file=sys.stderr)
    if defenses:
        chosen = tuple(defenses.split(","))
        preset = replace(preset, space=replace(preset.space, defenses=tuple(
            d for d in preset.space if d.defense in chosen)))
    table = Table(doc)
    counted = [o for o in doc["outcomes"] if o["defense"] in preset.defenses
               and (attainable == "all" or o["defense"] != "nasty"
                    or (o["omega"] in OMEGAS and o["tau_a"] in TAUS))]
    table.attainable = hypervolume_curve(counted, table.reference)[-1]
    return table, preset


def _search(name: str, seed: int, path: Path, defenses: str | None, attainable: str, trials: int,
            concurrency: int, prune: bool) -> tuple[list[float], list[float], int, int, float]:
    """One search: its hypervolume after each trial (% of the attainable), the phase-seconds
    spent by then, students trained, proposals past the table, and the driver's seconds."""
    table, preset = _setup(path, defenses, attainable)
    t0 = time.perf_counter()
    done = run_sampler(name, seed, table, preset, trials, concurrency,
                       prune and not name.startswith("grid") or name.endswith("+prune"))
    spent = time.perf_counter() - t0
    rows = [r.row(in_range_only=attainable == "in-range") for r in done]
    shares = [100 * hv / table.attainable for hv in hypervolume_curve(rows, table.reference)]
    seconds = list(_cumulative(r.seconds for r in done))
    return shares, seconds, sum(r.students_run for r in done), sum(r.past for r in done), spent


def _cumulative(values):
    total = 0.0
    for v in values:
        total += v
        yield total


def _share_at(shares: list[float], seconds: list[float], budget: float) -> float:
    """The share reached within `budget` phase-seconds (0 before the first trial ends)."""
    i = bisect.bisect_right(seconds, budget)
    return shares[i - 1] if i else 0.0


def _seconds_to(shares: list[float], seconds: list[float], target: float) -> float:
    """Phase-seconds until the share first reaches `target` (inf: never within the budget)."""
    return next((s for share, s in zip(shares, seconds, strict=True) if share >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds S, S+1, ... (default: 0)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="trials in flight, as in a sweep (default: 2, a 2-core machine's)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--defenses", help="search only these (comma-separated; default: the "
                                           "preset's nasty,stingy); nasty alone is the paper's space")
    parser.add_argument("--full-suite", action="store_true", help="no pruning: every attack on every trial")
    parser.add_argument("--attainable", choices=("all", "in-range"), default="all",
                        help="100 %%: the whole table's hypervolume, or the preset's ranges' only")
    parser.add_argument("--budget-seconds", help="comma-separated phase-seconds: the share within each")
    parser.add_argument("--target", type=float, default=90.0,
                        help="report the phase-seconds to reach this share (default: %(default)s)")
    parser.add_argument("--table", type=Path, default=TABLE, help="outcomes (default: %(default)s)")
    parser.add_argument("--plot", help="write hypervolume against trials and phase-seconds to this PNG")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="searches at once (default: every core)")
    parser.add_argument("--json", action="store_true", help="print the means as JSON on stdout")
    args = parser.parse_args()

    if not args.table.exists():
        sys.exit(f"{args.table} is missing: run python bench/search_table.py first")
    table, preset = _setup(args.table, args.defenses, args.attainable)
    names = args.samplers.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(name, seed) for name in names for seed in seeds]
    runs: dict[str, list] = {name: [] for name in names}
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_search, *zip(*[(name, seed, args.table, args.defenses, args.attainable, args.trials,
                                         args.concurrency, not args.full_suite) for name, seed in jobs], strict=True))
        for (name, _), result in zip(jobs, done, strict=True):
            runs[name].append(result)

    out = sys.stderr if args.json else sys.stdout
    what = "the whole table's" if args.attainable == "all" else "the preset's ranges'"
    print(f"defenses {', '.join(preset.defenses)}: hypervolume, % of {what} ({table.attainable:.1f}), "
          f"mean ± sd over seeds {seeds.start}–{seeds.stop - 1} [worst seed], {args.concurrency} trials in "
          f"flight, {'every attack' if args.full_suite else 'attacks pruned once beaten (the grid: every attack)'}",
          file=out)
    summary: dict[str, dict] = {}
    if args.budget_seconds:
        marks = [float(b) for b in args.budget_seconds.split(",")]
        value = {name: [[_share_at(sh, sec, b) for b in marks] for sh, sec, *_ in rs] for name, rs in runs.items()}
        label = [f"{b:g} s" for b in marks]
    else:
        marks = [n for n in CHECKPOINTS if n <= args.trials] or [args.trials]
        value = {name: [[sh[min(n, len(sh)) - 1] for n in marks] for sh, *_ in rs] for name, rs in runs.items()}
        label = [f"{n} trials" for n in marks]
    print("| search | " + " | ".join(label) + f" | phase-s to {args.target:g} % | students per trial |", file=out)
    print("| --- |" + " --- |" * (len(marks) + 2), file=out)
    for name, rs in runs.items():
        cells = []
        summary[name] = {}
        for j, mark in enumerate(marks):
            values = [v[j] for v in value[name]]
            mean, sd = statistics.fmean(values), statistics.pstdev(values)
            summary[name][f"{mark:g}"] = round(mean, 2)
            cells.append(f"{mean:.1f} ± {sd:.1f} [{min(values):.1f}]")
        reach = [_seconds_to(sh, sec, args.target) for sh, sec, *_ in rs]
        reached = [r for r in reach if math.isfinite(r)]
        cells.append(f"{statistics.median(reach):.0f} median, {statistics.fmean(reached):.0f} mean of "
                     f"{len(reached)}/{len(reach)} reaching it" if reached else "never")
        cells.append(f"{statistics.fmean(r[2] for r in rs) / args.trials:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", file=out)
        past = sum(r[3] for r in rs)
        if past:
            print(f"  {name}: {past} of {len(rs) * args.trials} proposals lay past the table's grid "
                  "(they got its edge's outcome)", file=sys.stderr)
        print(f"  {name}: {statistics.fmean(r[4] for r in rs) / args.trials:.3f} s of driver time per trial",
              file=sys.stderr)
    if args.plot:
        _plot(runs, args.plot, f"{PRESET}, defenses {', '.join(preset.defenses)}")
    if args.json:
        print(json.dumps(summary))


def _plot(runs: dict[str, list], path: str, title: str) -> None:
    from results.plots import _pyplot

    fig, (by_trials, by_seconds) = _pyplot().subplots(1, 2, figsize=(11, 4), dpi=120)
    for name, rs in runs.items():
        shares = [r[0] for r in rs]
        columns = list(zip(*shares, strict=True))
        x = range(1, len(columns) + 1)
        (line,) = by_trials.plot(x, [statistics.fmean(c) for c in columns], label=name)
        by_trials.fill_between(x, [sorted(c)[len(c) // 4] for c in columns],
                               [sorted(c)[(3 * len(c)) // 4] for c in columns], alpha=0.15)
        end = min(r[1][-1] for r in rs)
        grid = [end * i / 100 for i in range(1, 101)]
        by_seconds.plot([g / 60 for g in grid], [statistics.fmean(_share_at(sh, sec, g) for sh, sec, *_ in rs)
                                                  for g in grid], color=line.get_color(), label=name)
    by_trials.set_xlabel("trials finished")
    by_seconds.set_xlabel("phase-minutes spent (teacher + students trained)")
    for ax in (by_trials, by_seconds):
        ax.set_ylabel("hypervolume, % of the table's")
        ax.grid(alpha=0.3)
    by_trials.legend()
    fig.suptitle(f"{title}: mean over seeds (band: quartiles)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
