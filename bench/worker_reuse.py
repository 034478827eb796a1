"""How many worker processes Ray starts for a trial's child tasks, with Ray's default reaping of
idle workers and with `kill_idle_workers_interval_ms = 0` (what a local sweep uses).

8 trials, 2 at a time, each holding 3 one-CPU bundles: busy 4 s (its "teacher"), then 2 child
tasks (its "students") that import torch and sleep 1 s. Prints the distinct child-task processes.

    python bench/worker_reuse.py default
    python bench/worker_reuse.py keep
"""

import os
import sys
import time

import ray
from ray import tune


def student(i):
    import torch  # noqa: F401  (what a real phase pays on a fresh worker)

    time.sleep(1)
    return os.getpid()


def trial(config):
    time.sleep(4)
    task = ray.remote(max_retries=2)(student)
    pids = ray.get([task.options(num_cpus=1).remote(i) for i in range(2)])
    tune.report({"pids": str(pids)})


def main(mode: str) -> None:
    system = {} if mode == "default" else {"kill_idle_workers_interval_ms": 0}
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False, _system_config=system)
    tuner = tune.Tuner(
        tune.with_resources(trial, tune.PlacementGroupFactory([{"CPU": 1}] * 3)),
        param_space={"x": tune.grid_search(list(range(8)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(verbose=0),
    )
    pids = set()
    for result in tuner.fit():
        pids |= set(eval(result.metrics["pids"]))
    print(f"{mode}: {len(pids)} worker processes for 16 child tasks")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default")
