"""K students of one architecture trained as one vectorised model (`torch.func`).

Every attack on one student architecture for one teacher starts from the same initial weights
(the phase's seed), sees the same batches in the same order (one generator drives shuffling and
augmentation) and follows the same schedule; only its loss differs (KD's temperature, say). So
the K students are one model with a leading K dimension on every parameter and buffer
(`stack_module_state`), run with `functional_call` under `vmap`: one data pass and one kernel
launch per layer instead of K. An architecture may give its own `forward_stacked(params,
buffers, x, k)` over that same stacked state (MNIST-1D's students do: their K students as one
wider or grouped layer: 1.1 (mlp) and 1.4-1.5 (cnn1d) times faster than `vmap` per step on the
CPU, the same numbers); then the stack runs that instead of `vmap`. Each student keeps its own
loss, best-epoch selection on the validation split, test accuracy, divergence and weights:
what `loop.train` gives one student, up to floating-point reordering.

Why the optimizer can be shared: AdamW, Adam and SGD with momentum are elementwise, and the
students share the learning rate and its schedule, so one optimizer over the stacked tensors
takes, slice by slice, the step K optimizers would. The summed loss gives each slice the
gradient of its own student's loss alone.

A loss function sees its student as an ordinary callable (`_Student`): `m(x)` returns that
student's logits from one forward of the whole stack on `x`, computed once per batch and shared
by the K losses. A loss that calls its model on other inputs still gets the right logits (the
stack runs on them too), only slower.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DeviceData
from .loop import (
    CHECKPOINT_EVERY_S,
    Epoch,
    LossFn,
    OnEpoch,
    OnTheSplit,
    Schedule,
    Steps,
    TrainResult,
    fast_math,
    is_new_best,
    lr_scheduler_for,
    mean_losses,
    no_lr_step,
    optimizer_for,
    to_device_layout,
)


class NotStackable(Exception):
    """The architecture cannot run under `vmap` (an operation without a batching rule): its
    students train one by one instead."""


def check_stackable(model: nn.Module, sample: torch.Tensor) -> None:
    """Raise `NotStackable` unless two copies of `model` run forward and backward as a stack on
    `sample` (a prepared batch of model inputs); cheap, and done before any training."""
    probe = StackedModel([copy.deepcopy(model), copy.deepcopy(model)])
    probe.train(True)
    try:
        probe.logits(sample).float().sum().backward()
    except (RuntimeError, NotImplementedError, TypeError, KeyError, ValueError) as exc:
        raise NotStackable(f"{type(model).__name__} cannot train as a stack: {exc}") from None


class StackedModel:
    """K copies of one architecture as stacked tensors; `logits(x)` is (K, N, classes)."""

    def __init__(self, models: Sequence[nn.Module], own_forward: bool = True):
        """`own_forward`: run the architecture's `forward_stacked` where it has one (False: always
        `vmap`, for comparison)."""
        self.k = len(models)
        params, buffers = stack_module_state(list(models))
        self.params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self._base = copy.deepcopy(models[0]).to("meta")  # the structure only, no storage
        own = getattr(self._base, "forward_stacked", None) if own_forward else None
        self.forward_name = "own" if own is not None else "vmap"  # what runs the stack

        def one(p, b, x):
            return functional_call(self._base, (p, b), (x,))

        self._stacked = (lambda p, b, x: own(p, b, x, self.k)) if own is not None else vmap(one, in_dims=(0, 0, None))

    def train(self, mode: bool = True) -> None:
        self._base.train(mode)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._stacked(self.params, self.buffers, x)

    def state_dict(self, i: int) -> dict:
        """Student i's weights and buffers, as its own module's `state_dict` holds them."""
        return {n: t[i].detach().to("cpu", copy=True) for n, t in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, i: int, state: dict) -> None:
        with torch.no_grad():
            for n, t in {**self.params, **self.buffers}.items():
                t[i].copy_(state[n].to(t.device))

    def stacked_state(self) -> dict:
        return {n: t.detach().clone() for n, t in {**self.params, **self.buffers}.items()}

    def load_stacked_state(self, state: dict) -> None:
        with torch.no_grad():
            for n, t in {**self.params, **self.buffers}.items():
                t.copy_(state[n].to(t.device))


class ModelGroup:
    """K students of any architectures, with `StackedModel`'s interface: `logits(x)` is (K, N,
    classes), each from its own forward. Students that learn from one shared stream of inputs
    (DAFL's generator, `loop.Steps`) train as a group: the stream is made once, not K times."""

    def __init__(self, models: Sequence[nn.Module]):
        self.models = list(models)
        self.k = len(self.models)
        self.params = {f"{i}.{n}": p for i, m in enumerate(self.models) for n, p in m.named_parameters()}
        self.forward_name = "group"
        for m in self.models:
            if next(m.parameters()).device.type == "cuda":
                m.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> None:
        for m in self.models:
            m.train(mode)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models])

    def state_dict(self, i: int) -> dict:
        return {n: t.detach().to("cpu", copy=True) for n, t in self.models[i].state_dict().items()}

    def load_state_dict(self, i: int, state: dict) -> None:
        self.models[i].load_state_dict(state)

    def stacked_state(self) -> dict:
        return {f"{i}.{n}": t.detach().clone() for i, m in enumerate(self.models) for n, t in m.state_dict().items()}

    def load_stacked_state(self, state: dict) -> None:
        for i, m in enumerate(self.models):
            prefix = f"{i}."
            m.load_state_dict({n[len(prefix):]: t for n, t in state.items() if n.startswith(prefix)})


class _Student:
    """Student i of a stack, as its loss function calls it: `m(x)` -> its logits."""

    def __init__(self, shared: _SharedForward, i: int):
        self._shared, self._i = shared, i

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared(x)[self._i]


class _SharedForward:
    """The stack's logits on the batch last asked for: K losses, one forward."""

    def __init__(self, model: StackedModel):
        self._model = model
        self._x: torch.Tensor | None = None
        self._out: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x is not self._x:
            self._x, self._out = x, self._model.logits(x)
        return self._out

    def clear(self) -> None:
        self._x = self._out = None


class _StackSteps(OnTheSplit):
    """A stack's epoch on the training split (`loop.Steps`): shuffled batches, student i's loss
    by `loss_fns[i]` from one forward of the whole stack; a flag per student."""

    def __init__(self, data: DeviceData, loss_fns: Sequence[LossFn], batch_size: int, stack: StackedModel):
        self.data, self.loss_fns, self.batch_size = data, list(loss_fns), batch_size
        self.shared = _SharedForward(stack)
        self.students = [_Student(self.shared, i) for i in range(len(self.loss_fns))]
        self.steps_per_epoch = math.ceil(len(data.train_y) / batch_size)

    def epoch(self, logits, opt, after_step, gen):
        data, n = self.data, len(self.data.train_y)
        device = data.train_x.device
        non_finite = torch.zeros(len(self.students), dtype=torch.bool, device=device)
        self.loss_sum = torch.zeros(len(self.students), device=device)
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, self.batch_size):
            idx = perm[i:i + self.batch_size]
            x, y = data.train_x[idx], data.train_y[idx]
            x = data.augment(x, gen) if data.augment is not None else data.prepare(x)
            x = to_device_layout(x)
            with fast_math(device):
                losses = torch.stack([fn(m, x, y, idx).float()
                                      for fn, m in zip(self.loss_fns, self.students, strict=True)])
            self.shared.clear()
            non_finite |= ~torch.isfinite(losses)
            self.loss_sum += losses.detach()
            opt.zero_grad(set_to_none=True)
            # a diverged student's slice is zeroed out of the sum: NaN must not reach the others
            # through shared reductions (there are none, but a zero costs nothing)
            torch.where(non_finite, torch.zeros_like(losses), losses).sum().backward()
            opt.step()
            after_step()
        return non_finite


@torch.no_grad()
def stacked_accuracy(model: StackedModel, x: torch.Tensor, y: torch.Tensor,
                     prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 2048) -> list[float]:
    """Each student's top-1 accuracy in percent."""
    model.train(False)
    correct = torch.zeros(model.k, dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch_size):
        with fast_math(x.device):
            out = model.logits(to_device_layout(prepare(x[i:i + batch_size]))).float()
        correct += (out.argmax(-1) == y[i:i + batch_size]).sum(-1)
    return [100.0 * c / max(1, len(y)) for c in correct.tolist()]


def train_stacked(
    models: Sequence[nn.Module],
    data: DeviceData,
    loss_fns: Sequence[LossFn],
    schedule: Schedule,
    seed: int,
    checkpoint: Path | None = None,
    checkpoint_tag: str = "",
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    on_checkpoint: Callable[[Path], None] | None = None,
    steps: Steps | None = None,
    on_epoch: OnEpoch | None = None,
) -> list[TrainResult]:
    """Train `models` (one architecture, the same data) together, student i on `loss_fns[i]`;
    each result as `loop.train` gives it for that student alone. A student whose loss goes
    non-finite stops being selected from that epoch on (`diverged`); the others go on.

    With `steps` (which bring their own inputs and losses, and take a group's stacked logits),
    `models` may be of any architectures: they train as a `ModelGroup` on those steps, and
    `loss_fns` is unused."""
    started = time.perf_counter()
    k = len(models)
    gen = torch.Generator().manual_seed(seed)
    stack = StackedModel(models) if steps is None else ModelGroup(models)
    epoch_steps = steps if steps is not None else _StackSteps(data, loss_fns, schedule.batch_size, stack)
    opt = optimizer_for(list(stack.params.values()), schedule)
    sched, per_step = lr_scheduler_for(opt, schedule, epoch_steps.steps_per_epoch)
    start_epoch = 0
    best_val, best_epoch = [-1.0] * k, [-1] * k
    best_state: list[dict | None] = [None] * k
    diverged_at: list[int | None] = [None] * k
    curves: list[list[Epoch]] = [[] for _ in range(k)]

    ignored = False
    if checkpoint is not None and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        ignored = saved is None
        if saved is not None and saved.get("tag") == checkpoint_tag:
            stack.load_stacked_state(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if sched is not None:
                sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generator"])
            epoch_steps.load_state_dict(saved.get("steps", {}))
            start_epoch = saved["epoch"]
            best_val, best_epoch = saved["best_val"], saved["best_epoch"]
            best_state, diverged_at = saved["best_state"], saved["diverged_at"]
            curves = [[Epoch(**e) for e in curve] for curve in saved.get("curves", curves)]

    def save(epoch: int) -> None:
        if checkpoint is None:
            return
        save_checkpoint({"tag": checkpoint_tag, "epoch": epoch, "model": stack.stacked_state(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched else {},
                         "generator": gen.get_state(), "best_val": best_val, "best_epoch": best_epoch,
                         "best_state": best_state, "diverged_at": diverged_at,
                         "curves": [[asdict(e) for e in curve] for curve in curves],
                         "steps": epoch_steps.state_dict()}, checkpoint)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)

    resumed = {"resumed_from_epoch": start_epoch, "checkpoint_ignored": ignored}
    last_save = time.perf_counter()
    for epoch in range(start_epoch, schedule.epochs):
        epoch_start = time.perf_counter()
        stack.train(True)
        non_finite = epoch_steps.epoch(stack.logits, opt, sched.step if per_step else no_lr_step, gen).expand(k)
        if sched is not None and not per_step:
            sched.step()
        for s in torch.nonzero(non_finite).flatten().tolist():
            if diverged_at[s] is None:
                diverged_at[s] = epoch + 1
        val = stacked_accuracy(stack, data.val_x, data.val_y, data.prepare)
        seconds, losses = time.perf_counter() - epoch_start, mean_losses(epoch_steps, k)
        for s in range(k):
            if diverged_at[s] is None:
                curves[s].append(Epoch(epoch + 1, losses[s], val[s], opt.param_groups[0]["lr"], seconds))
            if diverged_at[s] is None and is_new_best(val[s], best_val[s], data.latest_best):
                best_val[s], best_epoch[s], best_state[s] = val[s], epoch, stack.state_dict(s)
        if on_epoch is not None:
            on_epoch(epoch + 1, schedule.epochs)
        if all(d is not None for d in diverged_at):
            break
        if time.perf_counter() - last_save > checkpoint_every_s:
            save(epoch + 1)
            last_save = time.perf_counter()

    for s in range(k):
        if best_state[s] is not None:
            stack.load_state_dict(s, best_state[s])
    test = stacked_accuracy(stack, data.test_x, data.test_y, data.prepare)
    save(schedule.epochs)
    wall = time.perf_counter() - started
    results = []
    for s in range(k):
        if diverged_at[s] is not None:
            results.append(TrainResult("diverged", best_val[s] if best_epoch[s] >= 0 else math.nan, math.nan,
                                       best_epoch[s], diverged_at[s], wall, **resumed, epochs=tuple(curves[s])))
        else:
            results.append(TrainResult("ok", best_val[s], test[s], best_epoch[s], schedule.epochs, wall,
                                       best_state[s], **resumed, epochs=tuple(curves[s])))
    return results
