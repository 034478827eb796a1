"""Reading a large sweep's results: `pareto` and `status` at 10,000 trials.

Writes a synthetic sweep of `--trials` trials (2 students × 6 attacks each: 12 student rows a
trial, with placements, spans and a spread of accuracies and knobs) into a temporary storage, the
way the driver does: one `write_trial` per trial, `compact()` every `--every` trials and once at
the end. Beside it, the same rows for `--loose` trials left as per-trial files (the layout before
compaction). Then, over `--repeats` runs each, median and range of:

- `python cli.py pareto NAME --storage S` and `python cli.py status NAME --storage S`, end to end
  (a fresh process each: interpreter, imports, reads, output);
- the in-process read those commands do (`ResultStore.sweep_rows`), and the scan alone
  (`ResultStore.trials` and `students`: Arrow tables, no Python rows);
- `python -c pass` and `python cli.py --help`, the floor under any command.

    python bench/results.py --trials 10000 --loose 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENTS = ("mlp", "cnn1d(width=16)")
ATTACKS = (("kd-T1", 1.0, 0.9), ("kd-T4", 4.0, 0.9), ("kd-T10", 10.0, 0.9), ("kd-T20", 20.0, 0.9),
           ("unlabelled-T4", 4.0, 1.0), ("dafl", 1.0, 1.0))
NODES = [(f"{i:02d}" + "ab" * 27, f"node-{i}") for i in range(4)]


def write_sweep(storage, name: str, trials: int, every: int | None) -> tuple[float, list[tuple[int, int, float]]]:
    """Sweep `name` with `trials` trials as the driver writes it; compacted every `every` trials
    and at the end unless None. Returns the seconds it took, and each compaction's (trials
    written, files merged, seconds)."""
    from orchestrator.layout import write_json
    from results import ResultStore, trial_rows
    from search_spaces import load_preset
    from undistill.outcomes import (
        Baselines,
        Candidate,
        CandidateOutcome,
        Placement,
        StudentOutcome,
        SweepColumns,
    )
    from undistill.record import RunOptions, SweepRecord, versions

    preset = load_preset("mnist1d")
    identity = {"preset": preset.to_dict(), "max_teacher_drop": None}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    record = SweepRecord(name=name, preset_name="mnist1d", preset=identity["preset"], max_teacher_drop=None,
                         fingerprint=fingerprint, trials=trials, run=RunOptions(1.0, 0.25, 8),
                         created_at="2026-12-03T00:00:00+00:00", versions=versions(), space=preset.space)
    write_json(storage, name, "sweep.json", record.to_json())
    write_json(storage, name, "state.json", {"finished": True})
    write_json(storage, name, "cluster.json", {"runs": [{"started_at": "2026-12-03T00:00:00+00:00", "nodes": [
        {"node_id": node, "hostname": host, "CPU": 16, "cores": 16, "GPU": 4} for node, host in NODES]}]})
    baselines = {s: Baselines(70.0 + 10 * i, 70.5 + 10 * i, 72.0 + 10 * i) for i, s in enumerate(STUDENTS)}
    normal = 97.5
    columns = SweepColumns("mnist1d", "cnn1d(width=64)", 0, "mnist1d", fingerprint, versions(), normal,
                           tuple(StudentOutcome(s, a, t, al, "error", None, baselines[s], -1, 0.0)
                                 for s in STUDENTS for a, t, al in ATTACKS))
    store = ResultStore(storage, name)
    rng = random.Random(20)
    t0, clock, compactions = time.perf_counter(), 1.7e9, []
    for i in range(trials):
        node, host = NODES[i % len(NODES)]
        if i % 3:
            candidate = Candidate.of("nasty", omega=round(rng.uniform(0.001, 0.1), 4),
                                     tau_a=round(rng.uniform(1, 40), 2))
        else:
            candidate = Candidate.of("stingy", k=float(rng.randint(1, 10)))
        drop = rng.expovariate(1.0)
        status = "ok" if i % 10 else rng.choice(("dominated", "infeasible", "error"))
        start = clock + i * 6.0
        students = tuple(
            StudentOutcome(s, a, t, al, "ok" if status in ("ok", "dominated") else "skipped",
                           round(baselines[s].normal_kd_acc - rng.uniform(0, 30) + drop, 2), baselines[s],
                           rng.randint(5, 60), 4.0, batched=a.startswith("kd"),
                           ran=Placement(node_id=node, hostname=host, gpu_ids=("0",), cpus=1.0, gpus=0.25,
                                         placement_group="pg" + str(i), started_at=start + 20.0 + j,
                                         finished_at=start + 60.0 + j))
            for j, (s, (a, t, al)) in enumerate((s, a) for s in STUDENTS for a in ATTACKS))
        best = max(students, key=lambda x: x.student_acc)
        outcome = CandidateOutcome(
            candidate, status, round(normal - drop, 2), normal, best.student_acc, best.student_arch, best.attack,
            compute_s=500.0, teacher_wall_s=20.0, students=students,
            ran=Placement(node_id=node, hostname=host, gpu_ids=("0",), cpus=1.0, gpus=0.25,
                          placement_group="pg" + str(i), started_at=start, finished_at=start + 70.0))
        error = "boom" if status == "error" else None
        store.write_trial(*trial_rows(sweep=name, trial_id=f"{i:05d}_{rng.getrandbits(32):08x}", candidate=None,
                                      outcome=None if error else outcome, context=columns, error=error))
        if every and (i + 1) % every == 0:
            compactions.append(_compaction(store, i + 1, every))
    if every:  # the finished sweep, as the driver leaves it: one part per table
        compactions.append(_compaction(store, trials, 1, max_parts=1))
    return time.perf_counter() - t0, compactions


def _compaction(store, written: int, min_files: int, max_parts: int | None = None) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    merged = store.compact(min_files=min_files, **({"max_parts": max_parts} if max_parts else {}))
    return written, merged, time.perf_counter() - t0


def _timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return seconds


def _summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s ({min(times):.2f}–{max(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000, help="trials of the compacted sweep")
    parser.add_argument("--loose", type=int, default=2_000, help="trials of the uncompacted sweep (0: none)")
    parser.add_argument("--every", type=int, default=64, help="compact every this many trials (as the driver: 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", help="folder for the sweeps (default: a new temporary one); "
                                          "sweeps already there are reused")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from results import ResultStore, Storage

    storage = Storage(args.storage or tempfile.mkdtemp(prefix="undistill-results-"))
    sweeps = [(f"compacted{args.trials}", args.trials, args.every)]
    if args.loose:
        sweeps.append((f"loose{args.loose}", args.loose, None))
    for name, trials, every in sweeps:
        if not storage.exists(name, "sweep.json"):
            seconds, compactions = write_sweep(storage, name, trials, every)
            print(f"wrote {name}: {trials} trials in {seconds:.0f} s", file=sys.stderr)
            for written, merged, took in compactions:
                print(f"  compact() at {written} trials: {merged} files merged in {took:.2f} s", file=sys.stderr)
    python = [sys.executable]
    rows = [("`python -c pass`", [_timed([*python, "-c", "pass"]) for _ in range(args.repeats)]),
            ("`python cli.py --help`", [_timed([*python, "cli.py", "--help"]) for _ in range(args.repeats)])]
    for name, trials, _ in sweeps:
        store = ResultStore(storage, name)
        files = {kind: len(storage.list(name, "results", kind, suffix=".parquet")) for kind in ("trials", "students")}
        layout = f"{trials:,} trials, {files['trials'] + files['students']:,} files"
        scan, read, loop = [], [], []
        paths = [storage.path(name, "results", kind, file) for kind in ("trials", "students")
                 for file in storage.list(name, "results", kind, suffix=".parquet")]
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            [pq.read_table(path) for path in paths]
            loop.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.trials(), store.students()
            scan.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = store.sweep_rows()
            read.append(time.perf_counter() - t0)
        assert len(got.trials) == trials and len(got.students) == 12 * trials, (len(got.trials), len(got.students))
        rows.append((f"{layout}: a loop of `pq.read_table`, file by file (the reader before)", loop))
        rows.append((f"{layout}: scan (`trials()` + `students()`, Arrow)", scan))
        rows.append((f"{layout}: `sweep_rows()` (Python rows)", read))
        for command in ("pareto", "status"):
            argv = [*python, "cli.py", command, name, "--storage", storage.location]
            rows.append((f"{layout}: `cli.py {command}`", [_timed(argv) for _ in range(args.repeats)]))
    print(f"| what | median (range) of {args.repeats} |")
    print("| --- | --- |")
    for what, times in rows:
        print(f"| {what} | {_summary(times)} |")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import pyarrow

    print(f"\n{platform.machine()}, {len(os.sched_getaffinity(0))} cores ({cpu}), Python "
          f"{platform.python_version()}, pyarrow {pyarrow.__version__}, {date.today()}; storage {storage.location}")


if __name__ == "__main__":
    main()
