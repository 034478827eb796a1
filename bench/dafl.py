"""How good a data-free attacker is DAFL on a preset? For each seed, the preset's normal teacher
(cached by key in `--storage`) and DAFL's clone of it for each student, run in this process on
one thread as a sweep's upstream phases run: the clone's test accuracy, its best epoch, and the
phase's seconds. `--set` and `--schedule` change the preset's [attack.data_free] table and its
student schedule, to compare settings.

    python bench/dafl.py --seeds 0,1                                   # the preset as it is
    python bench/dafl.py --set generator_lr=1e-4 --schedule epochs=20 --student cnn1d
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mnist1d")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--student", help="only this architecture (default: every student)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a key of [attack.data_free], e.g. generator_lr=1e-4 (repeatable)")
    parser.add_argument("--schedule", action="append", default=[], metavar="KEY=VALUE",
                        help="a key of its student_schedule, e.g. epochs=20 (repeatable)")
    parser.add_argument("--storage", help="phase cache (default: a new temporary folder)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    from orchestrator._resources import Resources
    from orchestrator._worker import PhaseRuntime, run_job
    from orchestrator.plan import make_plan
    from search_spaces import load_preset, parse_preset
    from undistill.storage import Storage

    doc = load_preset(args.preset).to_dict()  # every default filled in: a preset document again
    data_free = doc["attack"].get("data_free")
    if data_free is None:
        sys.exit(f"preset {args.preset} has no [attack.data_free] table")
    for item in args.set:
        key, _, value = item.partition("=")
        data_free[key] = _value(value)
    for item in args.schedule:
        key, _, value = item.partition("=")
        data_free["student_schedule"][key] = _value(value)
    if args.student:
        doc["students"] = [s for s in doc["students"] if s["arch"] == args.student]
        if not doc["students"]:
            sys.exit(f"--student {args.student}: not a student of preset {args.preset}")
    storage = Storage(Path(args.storage or tempfile.mkdtemp(prefix="undistill-dafl-")))
    runtime = PhaseRuntime(storage, Resources(1, 0, students=0))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        plan = make_plan(parse_preset(args.preset, {**doc, "seed": seed}))
        teacher = run_job(plan.teacher, runtime)
        for node in plan.normal_attacks:
            if node.config.attack.name != "dafl":
                continue
            result = run_job(node, runtime)
            generator = result.get("generator", {})
            rows.append({"seed": seed, "student": result["model"], "test_acc": result["test_acc"],
                         "val_acc": result["val_acc"], "best_epoch": result["best_epoch"],
                         "epochs": result["epochs_run"], "train_s": round(result["train_s"], 1),
                         "teacher_acc": teacher["test_acc"], "generator": generator})
            print(f"seed {seed}  {result['model']:18s} DAFL {result['test_acc']:6.2f} "
                  f"(val {result['val_acc']:.2f}, best epoch {result['best_epoch']} of {result['epochs_run']})  "
                  f"{result['train_s']:6.1f} s  teacher {teacher['test_acc']:.2f}  "
                  f"classes {generator.get('synthetic_classes')}", file=sys.stderr, flush=True)
    print(json.dumps({"data_free": data_free, "rows": rows}))


if __name__ == "__main__":
    main()
