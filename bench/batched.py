"""Student-epochs per second: K students of one architecture trained as one vectorised model
(`trainables.stacked.train_stacked`) against the same K trained one by one (`loop.train`),
each on its own KD loss from one teacher's logits (temperatures 1, 2, 4, ...), as a trial's
attacks are.

mlp and cnn1d(width=16) train on MNIST-1D (the `mnist1d` preset's split); the CIFAR students
(cnn, resnetc20, shufflenetv2, mobilenetv2) on synthetic CIFAR-shaped data on the device (random
uint8 images, normalised per batch; no augmentation), since throughput does not depend on what
the pixels show. Each measurement trains `--epochs` epochs of `--samples` samples; a rate is
student-epochs (K × epochs) over seconds; the speed-up is batched over one by one, measured
side by side, repeated `--repeats` times (median and range). On CUDA where present.

    python bench/batched.py
    python bench/batched.py --models mlp,cnn1d --ks 1,2,5,10 --repeats 3 --json
    python bench/batched.py --ceiling 5     # ms per step: one by one, the vmap stack, the own forward
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MNIST1D_MODELS = {"mlp": {"hidden": 384}, "cnn1d": {"width": 16}}  # the mnist1d preset's students
REPEATS_CEILING = 3
CIFAR_MODELS = {"cnn": {}, "resnetc20": {}, "shufflenetv2": {}, "mobilenetv2": {}}


def _mnist1d(device):
    from trainables.data import DatasetSpec, load_dataset

    return load_dataset(DatasetSpec(), device, cache_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "undistill-bench")


def _cifar_like(device, samples: int):
    import torch

    from trainables.data import DeviceData

    gen = torch.Generator().manual_seed(0)

    def split(n):
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device)
        return x, torch.randint(0, 10, (n,), generator=gen).to(device)

    (tx, ty), (vx, vy), (ex, ey) = split(samples), split(max(64, samples // 10)), split(max(64, samples // 10))
    return DeviceData(tx, ty, vx, vy, ex, ey, 10, prepare=lambda x: x.float().div(255.0).sub(0.5))


def _losses(data, k: int, device):
    """K KD losses at temperatures 1, 2, 4, ... on fixed random teacher logits."""
    import torch

    from trainables.losses import kd_loss

    teacher = torch.randn(len(data.train_y), data.num_classes, generator=torch.Generator().manual_seed(1)).to(device)

    def kd(temperature):
        def loss_fn(m, x, y, idx):
            return kd_loss(m(x), teacher[idx], y, alpha=0.9, temperature=temperature)
        return loss_fn

    return [kd(2.0 ** i) for i in range(k)]


def _measure(arch: str, options: dict, data, k: int, epochs: int, batch_size: int) -> tuple[float, float]:
    """(one-by-one, batched) student-epochs per second."""
    import torch

    from trainables.loop import Schedule, train
    from trainables.models import create_model
    from trainables.stacked import train_stacked

    device = data.train_x.device
    schedule = Schedule(epochs=epochs, batch_size=batch_size, lr=0.01)
    losses = _losses(data, k, device)

    def fresh():
        torch.manual_seed(0)
        return create_model(arch, data.num_classes, data.input_shape, **options).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    for loss_fn in losses:
        train(fresh(), data, loss_fn, schedule, seed=0)
    sync()
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_stacked([fresh() for _ in losses], data, losses, schedule, seed=0)
    sync()
    together = time.perf_counter() - t0
    return k * epochs / alone, k * epochs / together


def _ceiling(k: int, steps: int) -> list[dict]:
    """Milliseconds per training step of K students on one batch of 256: K single models one
    after another, the stack under `vmap`, and the stack as the sweep runs it (the architecture's
    own `forward_stacked`: one wider or grouped layer for the K students), each with the fused
    optimizer the loop uses. Three rounds, the variants alternated: the median and range of each."""
    import torch

    from trainables.loop import Schedule, optimizer_for
    from trainables.losses import kd_loss
    from trainables.models import create_model
    from trainables.stacked import StackedModel

    b, temperatures = 256, [2.0 ** i for i in range(k)]
    x, y, t = torch.randn(b, 1, 40), torch.randint(0, 10, (b,)), torch.randn(b, 10)
    schedule = Schedule(lr=1e-3)

    def timed(step) -> float:
        for _ in range(5):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps * 1e3

    def measure(arch: str, options: dict) -> dict:
        torch.manual_seed(0)
        single = create_model(arch, 10, (1, 40), **options)
        opt = optimizer_for(single.parameters(), schedule)

        def one():
            loss = kd_loss(single(x), t, y, alpha=0.9, temperature=4.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def stacked_step(own_forward: bool):
            stack = StackedModel([create_model(arch, 10, (1, 40), **options) for _ in range(k)], own_forward)
            stack.train(True)
            stack_opt = optimizer_for(list(stack.params.values()), schedule)

            def step():
                out = stack.logits(x)
                loss = torch.stack([kd_loss(out[i], t, y, alpha=0.9, temperature=temperatures[i])
                                    for i in range(k)]).sum()
                stack_opt.zero_grad(set_to_none=True)
                loss.backward()
                stack_opt.step()
            return step

        variants = {"one_by_one_ms": lambda: k * timed(one), "vmap_ms": lambda: timed(stacked_step(False)),
                    "own_ms": lambda: timed(stacked_step(True))}
        runs = {name: [] for name in variants}
        for _ in range(REPEATS_CEILING):
            for name, run in variants.items():
                runs[name].append(run())
        row = {"model": arch, "k": k, **{n: statistics.median(v) for n, v in runs.items()},
               **{n.replace("_ms", "_range"): [min(v), max(v)] for n, v in runs.items()}}
        alone = row["one_by_one_ms"]
        print(f"{arch:8s} K={k}: {k} single steps {alone:6.2f} ms · vmap stack {row['vmap_ms']:6.2f} ms "
              f"(×{alone / row['vmap_ms']:.2f}) · own forward {row['own_ms']:6.2f} ms "
              f"(×{alone / row['own_ms']:.2f})", file=sys.stderr, flush=True)
        return row

    return [measure(arch, options) for arch, options in MNIST1D_MODELS.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join([*MNIST1D_MODELS, *CIFAR_MODELS]))
    parser.add_argument("--ks", default="1,2,5,10")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1024, help="CIFAR-shaped training samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ceiling", type=int, metavar="K", default=0,
                        help="instead: ms per step of K MNIST-1D students: one by one, vmap, own forward")
    args = parser.parse_args()
    if args.ceiling:
        from trainables.device import configure_threads

        configure_threads()
        rows = _ceiling(args.ceiling, steps=50)
        if args.json:
            print(json.dumps({"rows": rows}, indent=1))
        return

    import torch

    from trainables.device import configure_threads, pick_device

    configure_threads()
    device = pick_device()
    rows = []
    for arch in args.models.split(","):
        if arch in MNIST1D_MODELS:
            data, options, batch = _mnist1d(device), MNIST1D_MODELS[arch], 128
        else:
            data, options, batch = _cifar_like(device, args.samples), CIFAR_MODELS[arch], 128
        label = arch + (f"({','.join(f'{k}={v}' for k, v in options.items())})" if options else "")
        _measure(arch, options, data, 2, 1, batch)  # warm-up: first calls, allocator, kernels
        for k in (int(v) for v in args.ks.split(",")):
            runs = [_measure(arch, options, data, k, args.epochs, batch) for _ in range(args.repeats)]
            speedups = sorted(b / a for a, b in runs)
            rows.append({"model": label, "k": k, "one_by_one": statistics.median(a for a, _ in runs),
                         "batched": statistics.median(b for _, b in runs),
                         "speedup": statistics.median(speedups), "speedup_range": [speedups[0], speedups[-1]]})
            r = rows[-1]
            print(f"{label:18s} K={k:<3d} one by one {r['one_by_one']:8.2f}  batched {r['batched']:8.2f} "
                  f"student-epochs/s  ×{r['speedup']:.2f} [{speedups[0]:.2f}–{speedups[-1]:.2f}]",
                  file=sys.stderr, flush=True)
    meta = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(0),
            "threads": torch.get_num_threads(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "date": date.today().isoformat(), "epochs": args.epochs,
            "repeats": args.repeats}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
