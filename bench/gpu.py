"""The GPU check: one command that, on one GPU in under 8 minutes, says whether undistill's
phases run there and how fast, so that the few minutes a GPU machine is at hand are used well.
Pure PyTorch (the phase code under `trainables/`, no Ray, no Optuna, no mnist1d): the GPU
machine has torch, torchvision, numpy, pyarrow and click only.

    python bench/gpu.py --out DIR            # on a GPU: the full check (≤ 8 minutes on an H200)
    python bench/gpu.py --smoke --out DIR    # the same code paths on the CPU in seconds (CI)

It writes DIR/gpu.json and prints a short table:
1. the device: name, compute capability, memory, torch and CUDA versions;
2. every phase kind (`teacher`, `nasty`, `kd`, stingy `kd`, `dafl`) end to end through
   `run_phase` on synthetic images in CIFAR-10's on-disk format (50,000, made on the spot), one
   short epoch each, its checkpoint written and then resumed, its results checked finite;
3. training images/s and peak memory of every model of the CIFAR presets at batch 128: float32
   against bf16 autocast, channels-last on and off, cuDNN deterministic against benchmark mode;
4. P = 1, 2, 4, 8 phase processes packed onto the one GPU, each with its memory capped to 1/P
   as a fractional-GPU worker's is: their total images/s, and whether any cap was exceeded.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# every model the CIFAR presets train (teachers and students)
MODELS = ("cnn", "resnetc20", "resnetc32", "resnet18", "resnet34", "resnet50", "resnext29_8x64d", "mobilenetv2",
          "shufflenetv2")
PACKING = (1, 2, 4, 8)
BATCH = 128


def device_facts(torch) -> dict:
    facts = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
             "date": date.today().isoformat()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(device="cuda", name=props.name, capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                     memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version())
    else:
        facts.update(device="cpu", name=platform.processor() or platform.machine(), cpus=torch.get_num_threads())
    return facts


# ---------------------------------------------------------------- 2. every phase kind, end to end
def run_phases(work: Path, smoke: bool) -> list[dict]:
    """Each phase kind once, through `run_phase`, on synthetic CIFAR-10; then again on its own
    checkpoint, which must resume at its end and give the same test accuracy."""
    from tiny_cifar import write_cifar10

    from trainables.attacks import create_attack
    from trainables.data import DatasetSpec
    from trainables.defenses import create_defense
    from trainables.loop import Schedule
    from trainables.phases import ModelSpec, PhaseConfig, run_phase

    root = write_cifar10(work / "data", train=400 if smoke else 50_000, test=100 if smoke else 10_000)
    dataset = DatasetSpec("cifar10")
    teacher = ModelSpec.of("cnn", width=8) if smoke else ModelSpec.of("resnet18")
    student = ModelSpec.of("cnn", width=8) if smoke else ModelSpec.of("resnetc20")
    sgd = Schedule(optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, epochs=1, batch_size=BATCH,
                   lr_schedule="constant")
    kd = create_attack("kd", temperature=4.0, alpha=0.9)
    dafl = create_attack("dafl", **_dafl_params(smoke))
    stingy, nasty = create_defense("stingy"), create_defense("nasty")
    phases = [
        ("teacher", PhaseConfig("teacher", dataset, teacher, sgd, 0), None),
        ("nasty", PhaseConfig("defense", dataset, teacher, sgd, 0, teacher_model=teacher, defense=nasty,
                              knobs=(("omega", 0.04), ("tau_a", 4.0))), "teacher"),
        ("kd", PhaseConfig("attack", dataset, student, sgd, 0, teacher_model=teacher, attack=kd), "nasty"),
        ("stingy kd", PhaseConfig("attack", dataset, student, sgd, 0, teacher_model=teacher, defense=stingy,
                                  knobs=(("k", 2),), attack=kd), "teacher"),
        ("dafl", PhaseConfig("attack", dataset, student, dafl.schedule, 0, teacher_model=teacher, attack=dafl),
         "teacher"),
    ]
    out = []
    for name, cfg, needs in phases:
        folder, checkpoint = work / name.replace(" ", "_"), work / f"{name.replace(' ', '_')}.ckpt"
        weights = work / needs.replace(" ", "_") / "model.pt" if needs else None
        started = time.perf_counter()
        first = run_phase(cfg, folder, teacher_weights=weights, data_root=root, checkpoint=checkpoint,
                          checkpoint_every_s=0.0)
        wall = time.perf_counter() - started
        again = run_phase(cfg, folder, teacher_weights=weights, data_root=root, checkpoint=checkpoint)
        finite = first["test_acc"] is not None and math.isfinite(first["test_acc"])
        resumed = again["resumed_from_epoch"] == first["epochs_run"] and again["test_acc"] == first["test_acc"]
        out.append({"phase": name, "model": first["model"], "status": first["status"], "test_acc": first["test_acc"],
                    "wall_s": round(wall, 2), "train_s": round(first["train_s"], 2), "finite": finite,
                    "resumed": resumed, "ok": first["status"] == "ok" and finite and resumed})
    return out


def _dafl_params(smoke: bool) -> dict:
    from trainables.data_free import DataFreeSpec
    from trainables.loop import Schedule

    spec = DataFreeSpec(latent_dim=32 if smoke else 1000, generator_width=16 if smoke else 128,
                        generator_lr=0.02, iterations=2 if smoke else 20)
    schedule = Schedule(optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, epochs=1,
                        batch_size=16 if smoke else 256, lr_schedule="constant")
    return {"spec": spec, "schedule": schedule}


# ---------------------------------------------------------------- 3. images/s per model and setting
def throughput(torch, model_name: str, *, bf16: bool, channels_last: bool, deterministic: bool, steps: int,
               smoke: bool) -> dict:
    """Train `steps` batches of 128 random CIFAR-shaped images (after 3 warm-up steps), as a
    phase does (SGD with momentum, cross-entropy; bf16 under autocast, losses in float32)."""
    import torch.nn.functional as F

    from trainables.models import create_model

    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic
    options = {"width": 8} if smoke and model_name == "cnn" else {}
    model = create_model(model_name, 100, (3, 32, 32), **options).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(BATCH, 3, 32, 32, device=device).to(memory_format=layout)
    y = torch.randint(0, 100, (BATCH,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {"model": model_name, "bf16": bf16, "channels_last": channels_last, "deterministic": deterministic,
            "images_per_s": round(steps * BATCH / seconds, 1), "peak_mib": round(peak, 1) if peak else None}


# ---------------------------------------------------------------- 4. P processes on one GPU
def _packed_worker(fraction, model_name, steps, smoke, barrier, results):
    import os

    import torch

    from trainables.device import pick_device

    torch.set_num_threads(max(1, int((os.cpu_count() or 1) * fraction)))  # the CPUs shared as Ray would
    try:
        pick_device(fraction if torch.cuda.is_available() else None)  # caps this process to its share
        barrier.wait()
        # as a phase runs: deterministic cuDNN (pick_device sets it), bf16 where the GPU has it
        bf16 = torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)
        row = throughput(torch, model_name, bf16=bf16, channels_last=torch.cuda.is_available(),
                         deterministic=True, steps=steps, smoke=smoke)
        results.put({"images_per_s": row["images_per_s"], "peak_mib": row["peak_mib"], "exceeded": False})
    except torch.cuda.OutOfMemoryError as exc:
        results.put({"images_per_s": 0.0, "peak_mib": None, "exceeded": True, "error": str(exc).splitlines()[0]})


def packing(model_name: str, steps: int, smoke: bool, counts) -> list[dict]:
    ctx = mp.get_context("spawn")
    out = []
    for p in counts:
        barrier, results = ctx.Barrier(p), ctx.Queue()
        procs = [ctx.Process(target=_packed_worker, args=(1.0 / p, model_name, steps, smoke, barrier, results))
                 for _ in range(p)]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        rows = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        out.append({"processes": p, "model": model_name, "memory_cap": round(1.0 / p, 3),
                    "total_images_per_s": round(sum(r["images_per_s"] for r in rows), 1),
                    "per_process_images_per_s": [r["images_per_s"] for r in rows],
                    "peak_mib": [r["peak_mib"] for r in rows], "cap_exceeded": any(r["exceeded"] for r in rows),
                    "wall_s": round(time.perf_counter() - started, 1)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny models and data: the code paths, in seconds")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per throughput measurement")
    args = parser.parse_args(argv)

    import torch

    smoke = args.smoke
    models = ["cnn", "resnetc20"] if smoke else args.models.split(",")
    steps = args.steps or (2 if smoke else 20)
    report = {"device": device_facts(torch), "smoke": smoke, "batch": BATCH}
    print(f"device: {report['device']['name']} ({report['device']['device']}), torch {torch.__version__}", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report["phases"] = run_phases(Path(tmp), smoke)
    for row in report["phases"]:
        print(f"  phase {row['phase']:<10} {row['model']:<16} {row['status']:<8} test {row['test_acc']:6.2f}  "
              f"{row['wall_s']:7.1f}s  resumed {row['resumed']}  {'ok' if row['ok'] else 'FAILED'}", flush=True)

    settings = [(bf16, cl, det) for bf16 in (False, True) for cl in (False, True) for det in (True, False)]
    report["throughput"] = []
    for name in models:
        for bf16, cl, det in settings:
            row = throughput(torch, name, bf16=bf16, channels_last=cl, deterministic=det, steps=steps, smoke=smoke)
            report["throughput"].append(row)
        rows = [r for r in report["throughput"] if r["model"] == name]
        print(f"  {name:<16} images/s " + "  ".join(
            f"{'bf16' if r['bf16'] else 'fp32'}{'+cl' if r['channels_last'] else ''}"
            f"{'+det' if r['deterministic'] else '+bench'} {r['images_per_s']:.0f}" for r in rows), flush=True)

    report["packing"] = packing("cnn" if smoke else "resnet18", steps, smoke, (1, 2) if smoke else PACKING)
    for row in report["packing"]:
        print(f"  packed P={row['processes']} {row['model']}: {row['total_images_per_s']:.0f} images/s in all, "
              f"cap {row['memory_cap']} exceeded: {row['cap_exceeded']}", flush=True)

    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(r["ok"] for r in report["phases"]) and not any(r["cap_exceeded"] for r in report["packing"])
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "gpu.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out / "gpu.json")
    print(f"{'ok' if report['ok'] else 'FAILED'} in {report['wall_s']:.0f}s: {args.out / 'gpu.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
