"""Real trial outcomes on a grid of the mnist1d preset's search space: the objective of
`bench/search.py`.

A trial of the embedded default costs about half a minute of both cores here (a nasty teacher
and 10 attacked students), so comparing five samplers over many seeds with real trials would take
a day. Instead every candidate on a grid covering the preset's whole space (every ω × τ_A pair of
`OMEGAS` × `TAUS`, every k) is evaluated once for real, with the preset's own phases exactly as a
sweep runs them, and `bench/search.py` answers each sampler's proposal with the outcome of the
nearest grid point.

    python bench/search_table.py [--storage DIR] [--workers 2]

Phases go through the artifact store in `--storage`, so an interrupted run picks up where it
stopped, and a folder that already holds an mnist1d sweep lends it its upstream phases. The
table is written to `bench/data/mnist1d_outcomes.json` after every candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESET = "mnist1d"
TABLE = Path(__file__).resolve().parent / "data" / f"{PRESET}_outcomes.json"
# The preset's ranges, about 1.4–2× apart for ω and 1.5–2.5× for τ_A (both searched on a log
# scale): the values of the paper's hand grid (see bench/search.py) and τ_A = 6. A candidate
# costs about 2 core-minutes here, so this grid of 30 (and 9 k, and 10 past the range) is what
# an hour of both cores buys.
OMEGAS = (0.002, 0.004, 0.008, 0.015, 0.025, 0.04)
TAUS = (2.0, 4.0, 6.0, 10.0, 20.0)
# Past the top of the preset's ω range, where the front runs into it: what a search that
# extends its range (up to the knob's hard bounds) finds there. Not part of the preset's space.
OMEGAS_PAST = (0.055, 0.075)
OUTCOME_KEYS = ("status", "teacher_acc", "student_acc", "best_student", "best_attack", "compute_s",
                "teacher_wall_s")
TABLE_FORMAT = 2  # 2: every student × attack and the seconds of each phase

_worker: dict = {}


def grid_candidates(preset) -> list[dict]:
    """The preset's space on the grid, then the points past its ω range."""
    nasty = [{"defense": "nasty", "omega": w, "tau_a": t} for w in OMEGAS for t in TAUS]
    (k,) = preset.space.get("stingy").ranges
    low, high = int(k.low), int(k.high)
    past = [{"defense": "nasty", "omega": w, "tau_a": t} for w in OMEGAS_PAST for t in TAUS]
    return nasty + [{"defense": "stingy", "k": k} for k in range(low, high + 1)] + past


def _start_worker(storage: str, context) -> None:
    # one core per candidate: trainables.device sets torch's threads from this
    os.environ["OMP_NUM_THREADS"] = "1"
    from orchestrator._resources import Resources
    from orchestrator._worker import PhaseRuntime
    from results import Storage

    _worker["runtime"] = PhaseRuntime(Storage(storage), Resources(1, 0, students=0))
    _worker["context"] = context


def _evaluate(params: dict) -> dict:
    from orchestrator._worker import run_job
    from trainables.candidate import run_candidate
    from undistill.outcomes import Candidate

    def in_process(jobs):
        return [run_job(job, _worker["runtime"]) for job in jobs]

    outcome = run_candidate(Candidate.from_params(params), _worker["context"], in_process, in_process)
    # every clone, so that a benchmark can replay the attacks in any order and stop early
    students = [{"student": s.student_arch, "attack": s.attack, "status": s.status,
                 "student_acc": s.student_acc, "wall_s": s.wall_s} for s in outcome.students]
    return {**params, **{k: getattr(outcome, k) for k in OUTCOME_KEYS}, "students": students}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=str(Path(tempfile.gettempdir()) / "undistill-search-table"),
                        help="artifact store of the phases (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="candidates at once, one core each (default: every core)")
    args = parser.parse_args()

    from orchestrator._driver import trial_context
    from orchestrator._worker import run_job
    from orchestrator.plan import make_plan
    from search_spaces import load_preset

    preset = load_preset(PRESET)
    plan = make_plan(preset)
    _start_worker(args.storage, None)
    t0 = time.perf_counter()
    upstream = {node.key: run_job(node, _worker["runtime"]) for node in plan.upstream}
    context = trial_context(plan, upstream)

    table = _read(preset)
    done = {_key(o) for o in table["outcomes"]}
    todo = [c for c in grid_candidates(preset) if _key(c) not in done]
    print(f"{len(done)} candidates in the table, {len(todo)} to evaluate", file=sys.stderr)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(args.storage, context)) as pool:
        futures = [pool.submit(_evaluate, c) for c in todo]
        for i, future in enumerate(as_completed(futures), 1):
            outcome = future.result()
            table["outcomes"].append(outcome)
            _write(table)
            print(f"[{i}/{len(todo)}] {outcome} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    import torch
    table["normal_teacher_acc"] = upstream[plan.teacher.key]["test_acc"]
    # the sweep's hypervolume reference (results.report.reference_point): the normal teacher's
    # best clone over every student and attack
    table["reference"] = [0.0, max(upstream[n.key]["test_acc"] for n in plan.normal_attacks)]
    # what each attack does to each student of the normal teacher, and its seconds: the order
    # a sweep runs attacks in is learned from these
    table["normal_attacks"] = [{"student": n.config.model.label, "attack": n.config.attack.label,
                                "student_acc": upstream[n.key]["test_acc"], "wall_s": upstream[n.key]["wall_s"]}
                               for n in plan.normal_attacks]
    table["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    table["date"] = date.today().isoformat()
    table["omegas"], table["taus"] = sorted(OMEGAS + OMEGAS_PAST), list(TAUS)
    grid = {_key(c) for c in grid_candidates(preset)}
    table["outcomes"] = [o for o in table["outcomes"] if _key(o) in grid]  # an earlier, other grid's
    table["outcomes"].sort(key=lambda o: (o["defense"], o.get("omega") or 0, o.get("tau_a") or 0, o.get("k") or 0))
    _write(table)
    print(f"wrote {TABLE} ({len(table['outcomes'])} candidates)", file=sys.stderr)


def _key(params: dict) -> tuple:
    return (params["defense"], params.get("omega"), params.get("tau_a"), params.get("k"))


def same_phases(fingerprint: dict, preset) -> bool:
    """Whether a table made with the preset `fingerprint` (its `to_dict()`) holds this preset's
    outcomes: everything but how it is searched."""
    return ({k: v for k, v in fingerprint.items() if k != "search"}
            == {k: v for k, v in preset.to_dict().items() if k != "search"})


def _read(preset) -> dict:
    fingerprint = preset.to_dict()
    if TABLE.exists():
        table = json.loads(TABLE.read_text())
        if same_phases(table["preset"], preset) and table.get("format") == TABLE_FORMAT:
            return table
        print(f"{TABLE} was made with another {PRESET} preset or format: starting it again", file=sys.stderr)
    return {"format": TABLE_FORMAT, "preset": fingerprint, "omegas": sorted(OMEGAS + OMEGAS_PAST),
            "taus": list(TAUS), "outcomes": []}


def _write(table: dict) -> None:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, default=str) + "\n")
    os.replace(tmp, TABLE)


if __name__ == "__main__":
    main()
