"""The driver's per-trial bookkeeping as a sweep grows: the callback's work for one finished trial
(its Parquet write, progress and front from the rows kept in memory) against what the callback
did before issue 13 on top of the same write: read every trial row back, twice.

    python bench/driver_callback.py --trials 1000 --every 250

Side by side in one run, on the same files: at each checkpoint, the median over `--repeats` of
(a) one `SweepCallback` record and (b) the two full reads the earlier callback added per trial.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import contextlib
    import io

    from orchestrator._driver import SweepCallback
    from results import ResultStore, Storage
    from search_spaces import load_preset
    from undistill.outcomes import Baselines, Candidate, CandidateOutcome, Placement, StudentOutcome, SweepColumns

    preset = load_preset("mnist1d")
    students = tuple(StudentOutcome(arch, attack, 4.0, 0.9, "ok", 90.0, Baselines(91.0, 91.5, 93.0), 10, 5.0)
                     for arch in ("mlp", "cnn1d(width=16)")
                     for attack in ("kd-T1", "kd-T4", "kd-T10", "kd-T20", "dafl"))
    columns = SweepColumns("mnist1d", "cnn1d(width=64)", 0, "mnist1d", "f", {}, 97.5, students)
    storage = Storage(tempfile.mkdtemp(prefix="undistill-callback-"))
    store = ResultStore(storage, "bench")
    callback = SweepCallback("bench", storage, columns, args.trials, preset.space)
    callback.setup()

    def trial(i: int):
        outcome = CandidateOutcome(Candidate.of("stingy", k=1 + i % 9), "ok", 97.5, 97.5, 80.0 + (i * 7) % 15,
                                   "mlp", "kd-T4", students=students,
                                   ran=Placement(started_at=time.time() - 60, finished_at=time.time()))
        return SimpleNamespace(trial_id=f"t{i:05d}", config={"defense": "stingy", "k": 1 + i % 9},
                               last_result={"final": True, "outcome": outcome})

    print("| trials written | one record now (ms) | + two full reads, as before (ms) |")
    print("| --- | --- | --- |")
    written = 0
    for checkpoint in range(args.every, args.trials + 1, args.every):
        with contextlib.redirect_stderr(io.StringIO()):  # the progress lines
            while written < checkpoint - args.repeats:
                callback.on_trial_complete(written, [], trial(written))
                written += 1
            now, reads = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                callback.on_trial_complete(written, [], trial(written))
                now.append(time.perf_counter() - t0)
                written += 1
                t0 = time.perf_counter()
                store.trial_rows()
                store.trial_rows()
                reads.append(time.perf_counter() - t0)
        print(f"| {written} | {statistics.median(now) * 1e3:.1f} | "
              f"{statistics.median(reads) * 1e3:.0f} |", flush=True)
    print(f"\n{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, {date.today()}; "
          f"median of {args.repeats} per row")


if __name__ == "__main__":
    main()
