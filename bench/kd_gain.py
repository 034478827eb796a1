"""Does KD from the normal teacher help a student? For each seed, a student of the `mnist1d`
preset trained alone and by every KD attack of the suite on the normal teacher (the sweep's
upstream phases, run in this process on one thread, cached by key in `--storage`): its best
KD attack's accuracy minus alone's. The preset's MLP width was chosen with this.

    python bench/kd_gain.py --seeds 0,1,2,3                       # the preset's students as they are
    python bench/kd_gain.py --seeds 0,1,2,3 --student mlp --set hidden=256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mnist1d")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--student", help="only this architecture (default: every student)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=INT",
                        help="an option of that student, e.g. hidden=384 (repeatable)")
    parser.add_argument("--storage", help="phase cache (default: a new temporary folder)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    from orchestrator._resources import Resources
    from orchestrator._worker import PhaseRuntime, run_batch, run_job
    from orchestrator.plan import make_plan
    from search_spaces import load_preset, parse_preset
    from trainables.phases import batch_groups
    from undistill.storage import Storage

    doc = load_preset(args.preset).to_dict()  # every default filled in: a preset document again
    if args.student:
        doc["students"] = [s for s in doc["students"] if s["arch"] == args.student]
        if not doc["students"]:
            sys.exit(f"--student {args.student}: not a student of preset {args.preset}")
        for item in args.set:
            key, _, value = item.partition("=")
            doc["students"][0][key] = int(value)
    storage = Storage(Path(args.storage or tempfile.mkdtemp(prefix="undistill-kd-gain-")))
    runtime = PhaseRuntime(storage, Resources(1, 0, students=0))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        plan = make_plan(parse_preset(args.preset, {**doc, "seed": seed}))
        run_job(plan.teacher, runtime)
        for scratch in plan.scratch:
            student = scratch.config.model.label
            alone = run_job(scratch, runtime)["test_acc"]
            kd = [n for n in plan.normal_attacks if n.config.model.label == student and n.config.attack.name == "kd"]
            found = {}
            for group in batch_groups(kd):
                found.update((j.key, r) for j, r in zip(group, run_batch(group, runtime), strict=True))
            by_attack = {j.config.attack.label: found[j.key]["test_acc"] for j in kd}
            best = max(by_attack, key=by_attack.get)
            rows.append({"seed": seed, "student": student, "alone": alone, "kd": by_attack,
                         "best": best, "gain": round(by_attack[best] - alone, 2)})
            print(f"seed {seed}  {student:18s} alone {alone:6.2f}  best KD {by_attack[best]:6.2f} ({best})  "
                  f"gain {rows[-1]['gain']:+.2f}", file=sys.stderr, flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
