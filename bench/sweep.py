"""Orchestrated vs sequential: the same trials, with and without Ray.

1. Runs a real sweep with the orchestrator (`run_sweep`: local Ray, upstream DAG as tasks,
   Tune/Optuna trials) into a fresh storage folder, timing it end to end.
2. Reads back the candidates that sweep evaluated and runs exactly the same phases in a plain
   loop in one process, no Ray: the upstream phases, then each candidate in turn.
3. Prints both wall times, their ratio, and slot utilisation = compute seconds of all phases /
   (wall time × slots), for the orchestrated run.

    python bench/sweep.py --preset smoke
    python bench/sweep.py --preset mnist1d
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--storage", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--sequential-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the sequential loop (default: every core)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()

    import torch

    from orchestrator import SweepOptions, run_sweep
    from orchestrator._driver import trial_context
    from orchestrator._resources import Resources
    from orchestrator._worker import PhaseRuntime, run_job
    from orchestrator.artifacts import ArtifactStore
    from orchestrator.layout import read_json
    from orchestrator.plan import make_plan
    from results import Storage
    from search_spaces import load_preset
    from trainables.candidate import run_candidate
    from undistill.outcomes import Candidate

    preset = load_preset(args.preset)
    root = Path(args.storage or tempfile.mkdtemp(prefix="undistill-bench-"))
    if root.exists() and any(root.iterdir()):
        # cached phases would be counted as compute the orchestrated run never spent
        sys.exit(f"--storage {root} is not empty; the benchmark needs a fresh folder")
    slots = os.cpu_count() or 1

    # 1. orchestrated
    t0 = time.perf_counter()
    outcome = run_sweep(SweepOptions(preset, "bench", str(root / "orchestrated")))
    orchestrated_s = time.perf_counter() - t0
    rows = outcome.trials
    plan = make_plan(preset)
    store = ArtifactStore(Storage(root / "orchestrated"))
    upstream_compute = sum(store.get(n.key)["wall_s"] for n in plan.upstream)
    trial_compute = sum(r["compute_s"] or 0.0 for r in rows)
    utilisation = (upstream_compute + trial_compute) / (orchestrated_s * slots)
    cluster_runs = read_json(Storage(root / "orchestrated"), "bench", "cluster.json")["runs"]

    # 2. sequential, one process, no Ray; by default torch uses every core, as a plain script would
    threads = args.sequential_threads
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # run_phase sets torch's threads from this
    seq_runtime = PhaseRuntime(Storage(root / "sequential"), Resources(threads, 0, students=0))

    def in_process(jobs):
        return [run_job(job, seq_runtime) for job in jobs]

    t0 = time.perf_counter()
    results = {node.key: in_process([node])[0] for node in plan.upstream}
    context = trial_context(plan, results)
    for row in rows:
        run_candidate(Candidate.of(row["defense"], **row["knobs"]), context, in_process, in_process)
    sequential_s = time.perf_counter() - t0

    report = {
        "preset": preset.name,
        "trials": len(rows),
        "upstream_phases": len(plan.upstream),
        "orchestrated_s": round(orchestrated_s, 1),
        "sequential_s": round(sequential_s, 1),
        "ratio_orchestrated_over_sequential": round(orchestrated_s / sequential_s, 3),
        "slots": slots,
        "sequential_threads": threads,
        "slot_utilisation": round(utilisation, 3),
        "concurrency": max(run["concurrency"] for run in cluster_runs),
        "machine": f"{platform.machine()}, {slots} cores, torch {torch.__version__}",
        "date": date.today().isoformat(),
    }
    print(f"preset {preset.name}: {len(rows)} trials + {len(plan.upstream)} upstream phases")
    print(f"orchestrated (Ray, {report['concurrency']} concurrent trials, students side by side): "
          f"{orchestrated_s:8.1f} s")
    print(f"sequential (one process, {threads} torch threads):   {sequential_s:8.1f} s")
    print(f"ratio orchestrated / sequential: {orchestrated_s / sequential_s:.2f}")
    print(f"slot utilisation (orchestrated): {utilisation:.0%} of {slots} slots")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
