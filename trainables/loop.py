"""One training loop for every phase: shuffle on the device, step, pick the best epoch on val.

The loop is deterministic for a seed (one explicit generator drives shuffling and augmentation),
writes a resumable checkpoint every `checkpoint_every_s` seconds and at the end, and stops with
status `diverged` as soon as an epoch sees a non-finite loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from undistill.errors import ConfigError
from undistill.tables import check_keys, check_within, is_a

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DeviceData

# loss_fn(model, x, y, idx) -> scalar loss; idx are the batch's row numbers in the training
# split, so a distillation loss can look up teacher logits computed once for the whole set.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

OPTIMIZERS = ("adamw", "adam", "sgd")
# Seconds between mid-training checkpoints: a killed phase loses about this much work, plus the
# epoch it was in. Each save copies model, optimizer and best weights (uploaded, on a bucket).
CHECKPOINT_EVERY_S = 30.0
LR_SCHEDULES = ("onecycle", "multistep", "cosine", "constant")
# The ranges a schedule's numbers must lie in (`check_schedule_table`). MAX_EPOCHS: fifty times
# the longest schedule here (the DAFL code's CIFAR student, 2,000 epochs); a larger count is a
# typo or an --epochs-scale gone wrong, and would only show as a phase that never ends.
MAX_LR = 10.0
MAX_EPOCHS = 100_000
MAX_EPOCHS_WHY = ": fifty times the longest schedule here (DAFL's 2,000 epochs)"
MAX_BATCH = 65_536


@dataclass(frozen=True)
class Schedule:
    optimizer: str = "adamw"  # one of OPTIMIZERS
    lr: float = 1e-2  # peak learning rate (onecycle) or initial one (the others)
    weight_decay: float = 5e-4
    momentum: float = 0.9  # SGD only
    epochs: int = 40
    batch_size: int = 128
    lr_schedule: str = "onecycle"  # one of LR_SCHEDULES
    milestones: tuple[int, ...] = ()  # multistep: epochs at which lr is multiplied by gamma
    gamma: float = 0.1

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_table(cls, table: dict) -> Schedule:
        return cls(**{**table, "milestones": tuple(table.get("milestones", ()))})


# a schedule's keys in a preset, with their TOML types
SCHEDULE_KEYS = {
    "optimizer": str, "lr": float, "weight_decay": float, "momentum": float, "epochs": int,
    "batch_size": int, "lr_schedule": str, "milestones": list, "gamma": float,
}


def check_schedule_table(where: str, table: object) -> dict:
    """A schedule as a preset writes it (`[teacher_schedule]`, a student's, DAFL's), checked:
    one ConfigError line naming the key otherwise."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    check_keys(where, table, SCHEDULE_KEYS, ("optimizer", "lr", "epochs", "batch_size"))
    if table["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer: {table['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if table.get("lr_schedule", "onecycle") not in LR_SCHEDULES:
        raise ConfigError(
            f"{where}.lr_schedule: {table['lr_schedule']!r} is not one of {', '.join(LR_SCHEDULES)}"
        )
    check_within(f"{where}.lr", table["lr"], 0, MAX_LR, low_open=True,
                 why=": past it every optimizer here diverges")
    check_within(f"{where}.weight_decay", table.get("weight_decay", 0.0), 0, 1,
                 why=": an L2 weight past 1 outweighs the loss")
    # torch's SGD refuses a negative momentum; at 1 or above its velocity never decays
    check_within(f"{where}.momentum", table.get("momentum", 0.0), 0, 1, high_open=True)
    check_within(f"{where}.gamma", table.get("gamma", 0.1), 0, 1, low_open=True,
                 why=": the factor lr is multiplied by at each milestone, a decay")
    check_within(f"{where}.epochs", table["epochs"], 1, MAX_EPOCHS, why=MAX_EPOCHS_WHY)
    check_within(f"{where}.batch_size", table["batch_size"], 1, MAX_BATCH,
                 why=": a batch and its activations are held on one device at once")
    milestones = table.get("milestones", [])
    if not all(is_a(m, int) and 0 < m < table["epochs"] for m in milestones):
        raise ConfigError(f"{where}.milestones must be epochs between 1 and epochs−1, got {milestones!r}")
    return dict(table)


def scale_schedule_table(table: dict, factor: float) -> None:
    """A schedule table's epochs and lr milestones times `factor`, in place (`--epochs-scale`)."""
    epochs = max(1, round(table["epochs"] * factor))
    # coinciding milestones are kept: MultiStepLR applies each, so no decay step is lost
    milestones = sorted(round(m * factor) for m in table.get("milestones", []))
    table["epochs"] = epochs
    table["milestones"] = [m for m in milestones if 0 < m < epochs]


class Steps(Protocol):
    """What one epoch of a phase steps through, when it is not its training split (a data-free
    attack's generator, which learns alongside the student). It owns whatever else trains, and
    saves it with the student's checkpoint."""

    steps_per_epoch: int
    # the last epoch's training losses summed on the device (one per student for a group), for
    # the learning curve's mean loss; None: these steps do not measure one
    loss_sum: torch.Tensor | None

    def epoch(self, model: nn.Module, opt: torch.optim.Optimizer, after_step: Callable[[], None],
              gen: torch.Generator) -> torch.Tensor:
        """One epoch of steps of `model` by `opt`, each followed by `after_step()`; returns a
        device flag: did any step see a non-finite loss."""
        ...

    def facts(self, student: int = 0) -> dict:
        """What the phase's result should say of these steps once trained (merged into it);
        `student`: which of a group's students the result is for."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class OnTheSplit:
    """`Steps` whose epoch is the training split itself: nothing else trains, so nothing to
    report or to save beside the student's own checkpoint."""

    loss_sum: torch.Tensor | None = None

    def facts(self, student: int = 0) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class SplitSteps(OnTheSplit):
    """The usual epoch: the training split in a shuffled order, batch by batch, through `loss_fn`."""

    data: DeviceData
    loss_fn: LossFn
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_y) / self.batch_size)

    def epoch(self, model, opt, after_step, gen):
        data, n = self.data, len(self.data.train_y)
        # Non-finite losses are collected on the device and checked once per epoch, so a GPU
        # is not forced to synchronise after every step.
        non_finite = torch.zeros((), dtype=torch.bool, device=data.train_x.device)
        self.loss_sum = torch.zeros((), device=data.train_x.device)
        perm = torch.randperm(n, generator=gen).to(data.train_x.device)
        for i in range(0, n, self.batch_size):
            idx = perm[i : i + self.batch_size]
            x, y = data.train_x[idx], data.train_y[idx]
            x = data.augment(x, gen) if data.augment is not None else data.prepare(x)
            with fast_math(x.device):
                loss = self.loss_fn(model, to_device_layout(x), y, idx)
            non_finite |= ~torch.isfinite(loss)
            self.loss_sum += loss.detach().float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            after_step()
        return non_finite


OnEpoch = Callable[[int, int], None]  # (epochs done, epochs in all), after each epoch


@dataclass(frozen=True)
class Epoch:
    """One epoch of a phase, for its learning curve (kept in its result as `epochs`)."""

    epoch: int  # 1-based
    train_loss: float | None  # the mean over the epoch's steps (None: its steps measure none)
    val_acc: float  # percent, on the split that picks the best epoch
    lr: float  # at the epoch's end
    seconds: float  # its wall time, training and validation



def mean_losses(steps: Steps, students: int = 1) -> list[float | None]:
    """The last epoch's mean training loss of each of `students` (one sync); None where the
    steps measure none or it is not finite."""
    if steps.loss_sum is None:
        return [None] * students
    means = (steps.loss_sum.float() / max(1, steps.steps_per_epoch)).expand(students).tolist()
    return [x if math.isfinite(x) else None for x in means]


@dataclass
class TrainResult:
    status: str  # "ok" or "diverged"
    val_acc: float  # percent, at the best epoch
    test_acc: float  # percent, of the best-val weights; NaN when diverged
    best_epoch: int
    epochs_run: int
    wall_s: float
    state_dict: dict | None = field(default=None, repr=False)  # best-val weights, on CPU
    resumed_from_epoch: int = 0  # epochs a checkpoint had already done (0: trained from the start)
    # a checkpoint was there but unusable (torn, corrupted, or written by older code): ignored
    checkpoint_ignored: bool = False
    epochs: tuple[Epoch, ...] = ()  # the learning curve, resumed epochs included


def fast_math(device: torch.device):
    """bf16 autocast on CUDA GPUs with bf16 tensor cores (compute capability 8.0 and up: half
    the activation memory, faster convolutions); float32 elsewhere: older GPUs run bf16
    convolutions on slow fallback kernels, and on the CPU results must stay exact."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device_layout(x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last on CUDA, the layout its convolution kernels prefer."""
    if x.device.type == "cuda" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
                   batch_size: int = 2048) -> torch.Tensor:
    """`model`'s float32 logits for stored inputs `x`, prepared and run batch by batch."""
    out = []
    for i in range(0, len(x), batch_size):
        with fast_math(x.device):
            out.append(model(to_device_layout(prepare(x[i : i + batch_size]))).float())
    return torch.cat(out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> float:
    """Top-1 accuracy in percent; `prepare` turns stored inputs into model inputs."""
    model.eval()
    correct = (batched_logits(model, x, prepare).argmax(1) == y).sum().item()
    return 100.0 * correct / max(1, len(y))


def is_new_best(val_acc: float, best_val: float, latest_best: bool) -> bool:
    """Whether an epoch scoring `val_acc` replaces the best so far: a higher score, or under the
    papers' protocol (`DeviceData.latest_best`) an equal one too (the reference code's `>=`)."""
    return val_acc > best_val or (latest_best and val_acc == best_val)


def optimizer_for(params, s: Schedule) -> torch.optim.Optimizer:
    """The schedule's optimizer over `params` (each of these is elementwise: `stacked` relies on it).

    Fused (one kernel for every tensor's update) where torch has one for the parameters' device:
    on the CPU a training step of MNIST-1D's students takes 5-15 % less time than with the
    per-tensor loop (bench/batched.py --ceiling), on a GPU it saves launches."""
    params = list(params)
    fused = {"fused": True} if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                              for p in params) else {}
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, **fused)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay, **fused)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                               nesterov=False, **fused)
    raise ConfigError(f"unknown optimizer {s.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")


def lr_scheduler_for(opt, s: Schedule, steps_per_epoch: int):
    """(scheduler, steps per batch?) — onecycle moves every batch, the others every epoch."""
    if s.lr_schedule == "onecycle":
        total = s.epochs * steps_per_epoch
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total), True
    if s.lr_schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, list(s.milestones), gamma=s.gamma), False
    if s.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs), False
    if s.lr_schedule == "constant":
        return None, False
    raise ConfigError(f"unknown lr_schedule {s.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


def no_lr_step() -> None:  # an lr schedule stepped per epoch, not per step
    pass


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def train(
    model: nn.Module,
    data: DeviceData,
    loss_fn: LossFn,
    schedule: Schedule,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_tag: str = "",
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    on_checkpoint: Callable[[Path], None] | None = None,
    steps: Steps | None = None,
    on_epoch: OnEpoch | None = None,
) -> TrainResult:
    """Train `model` in place; on return it holds the best-val weights (unless it diverged).

    Each epoch steps through the training split with `loss_fn`, or through `steps` when given
    (then `loss_fn` is unused). `checkpoint_tag` identifies the run (the phase's config key): a
    checkpoint with another tag is from a different run and is ignored rather than resumed.
    `on_checkpoint(path)` runs after each save, e.g. to copy the checkpoint to shared storage;
    `on_epoch(done, total)` after each epoch (a live progress display).
    """
    started = time.perf_counter()
    steps = steps if steps is not None else SplitSteps(data, loss_fn, schedule.batch_size)
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer_for(model.parameters(), schedule)
    sched, per_step = lr_scheduler_for(opt, schedule, steps.steps_per_epoch)
    device = data.val_x.device
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    start_epoch, best_val, best_epoch, best_state = 0, -1.0, -1, None
    curve: list[Epoch] = []

    ignored = False
    if checkpoint is not None and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        ignored = saved is None  # unusable: starting over is always correct
        if saved is not None and saved.get("tag") == checkpoint_tag:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if sched is not None:
                sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generator"])
            steps.load_state_dict(saved.get("steps", {}))
            start_epoch, best_val, best_epoch = saved["epoch"], saved["best_val"], saved["best_epoch"]
            best_state = saved["best_state"]
            curve = [Epoch(**e) for e in saved.get("curve", [])]

    def save(epoch: int) -> None:
        if checkpoint is None:
            return
        save_checkpoint(
            {
                "tag": checkpoint_tag,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else {},
                "generator": gen.get_state(),
                "steps": steps.state_dict(),
                "best_val": best_val,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "curve": [asdict(e) for e in curve],
            },
            checkpoint,
        )
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)

    resumed = {"resumed_from_epoch": start_epoch, "checkpoint_ignored": ignored}
    last_save = time.perf_counter()
    for epoch in range(start_epoch, schedule.epochs):
        epoch_start = time.perf_counter()
        model.train()
        non_finite = steps.epoch(model, opt, sched.step if per_step else no_lr_step, gen)
        if sched is not None and not per_step:
            sched.step()
        if non_finite.item():
            return TrainResult("diverged", best_val if best_epoch >= 0 else math.nan, math.nan,
                               best_epoch, epoch + 1, time.perf_counter() - started, **resumed,
                               epochs=tuple(curve))
        val_acc = accuracy(model, data.val_x, data.val_y, prepare=data.prepare)
        curve.append(Epoch(epoch + 1, mean_losses(steps)[0], val_acc, opt.param_groups[0]["lr"],
                           time.perf_counter() - epoch_start))
        if on_epoch is not None:
            on_epoch(epoch + 1, schedule.epochs)
        if is_new_best(val_acc, best_val, data.latest_best):
            best_val, best_epoch, best_state = val_acc, epoch, _cpu_copy(model.state_dict())
        if time.perf_counter() - last_save > checkpoint_every_s:
            save(epoch + 1)
            last_save = time.perf_counter()

    if best_state is not None:
        model.load_state_dict(best_state)
    test_acc = accuracy(model, data.test_x, data.test_y, prepare=data.prepare)
    save(schedule.epochs)
    return TrainResult("ok", best_val, test_acc, best_epoch, schedule.epochs,
                       time.perf_counter() - started, best_state, **resumed, epochs=tuple(curve))
