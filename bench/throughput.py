"""Training throughput (images/s) of the CIFAR data paths: undistill's device-resident pipeline
(uint8 images on the device, crop/flip/normalise there per batch) against a torchvision
DataLoader with 2 worker processes (the usual RandomCrop + RandomHorizontalFlip + ToTensor +
Normalize), for each model, on the CPU here and on CUDA where present.

The data is a CIFAR-10 folder in the official format with synthetic images (this machine has no
internet), so the numbers measure the pipeline and the model, not accuracy. Each measurement
trains `--steps` batches of `--batch-size` after 2 warm-up batches; "data only" draws batches
without a model.

    python bench/throughput.py
    python bench/throughput.py --models cnn,resnet18 --steps 20 --json
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODELS = "cnn,resnetc20,resnetc32,resnet18,mobilenetv2,shufflenetv2"


def _device_batches(data, batch_size, gen):
    import torch

    n = len(data.train_y)
    while True:
        perm = torch.randperm(n, generator=gen).to(data.train_x.device)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield data.augment(data.train_x[idx], gen), data.train_y[idx]


def _loader_batches(root, batch_size, device):
    import torch
    from torchvision import transforms

    from trainables.cifar_data import _CLASSES, _STATS

    mean, std = _STATS["cifar10"]
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    dataset = _CLASSES["cifar10"](str(root), train=True, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=2, pin_memory=device.type == "cuda")
    while True:
        iterator = iter(loader)
        try:
            for x, y in iterator:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        finally:  # closing the generator stops the workers before the next measurement
            iterator._shutdown_workers()


def _measure(batches, model, device, steps: int, batch_size: int) -> float:
    import torch

    from trainables.loop import fast_math, to_device_layout

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if model is not None else None
    if model is not None and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    for step in range(steps + 2):
        if step == 2:  # after warm-up (workers started, kernels chosen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = next(batches)
        if model is None:
            continue
        with fast_math(device):
            loss = torch.nn.functional.cross_entropy(model(to_device_layout(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from tiny_cifar import write_cifar10

    from trainables.data import DatasetSpec, load_dataset
    from trainables.device import pick_device
    from trainables.models import create_model

    root = write_cifar10(Path(tempfile.mkdtemp(prefix="undistill-cifar-")), train=5000, test=100)
    devices = [torch.device("cpu")] + ([pick_device()] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        data = load_dataset(DatasetSpec(name="cifar10"), device, data_root=root)
        for name in ["data only", *args.models.split(",")]:
            row = {"device": device.type, "model": name}
            for pipeline in ("device-resident", "DataLoader, 2 workers"):
                torch.manual_seed(0)
                model = None if name == "data only" else create_model(name, 10, (3, 32, 32)).to(device)
                if model is not None:
                    model.train()
                batches = (_device_batches(data, args.batch_size, torch.Generator().manual_seed(0))
                           if pipeline == "device-resident" else _loader_batches(root, args.batch_size, device))
                row[pipeline] = round(_measure(batches, model, device, args.steps, args.batch_size), 1)
                batches.close()
            row["speed-up"] = round(row["device-resident"] / row["DataLoader, 2 workers"], 2)
            rows.append(row)
            print(f"{device.type:<5} {name:<14} device-resident {row['device-resident']:>9.1f} img/s   "
                  f"DataLoader {row['DataLoader, 2 workers']:>9.1f} img/s   ×{row['speed-up']}", flush=True)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"torch threads {torch.get_num_threads()}"
               + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(f"machine: {machine}; date {date.today().isoformat()}; batch {args.batch_size}, "
          f"{args.steps} timed steps")
    if args.json:
        print(json.dumps({"machine": machine, "date": date.today().isoformat(), "rows": rows}))


if __name__ == "__main__":
    main()
