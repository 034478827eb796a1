"""Data-free distillation as DAFL publishes it (Chen et al., "Data-Free Learning of Student
Networks", ICCV 2019; code: huawei-noah/Efficient-Computing, Data-Efficient-Model-Compression/
DAFL/DAFL-train.py).

The attacker has no data, only the (defended) teacher. Every iteration a generator draws a fresh
batch from noise; the teacher, as the attacker sees it, scores it, and one summed loss trains
both networks at once:

    generator:  oh · CE(z_t, argmax z_t)               one-hot: inputs it classifies confidently
              + ie · Σ_c p̄_c log10 p̄_c                 information entropy (log10, as the code):
                                                         every class generated alike
              + a · (−mean |f_t|)                      activation: inputs that excite the
                                                         penultimate features f_t
    student:    T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) on the same batch, detached (T = 1 there)

Because the student's term sees the batch and the teacher's logits detached, the generator's
trajectory does not depend on the student: one generator can feed several students at once
(`DataFreeSteps` takes a group's stacked logits as readily as one student's). An epoch is
`iterations` such steps (120 in the code); the student's optimizer and lr schedule are its
phase's schedule (the code's steps per epoch, as MultiStepLR does; one-cycle per step).

DAFL is a white-box attack, as published: the generator learns through the teacher's gradients
and its penultimate features. A defense that only transforms the logits (stingy) is applied to
the logits the attacker's losses read; its features stay the teacher's own.

Departures, each deliberate: the student's best epoch is chosen on the real validation split (the
code picks it on the test set; `protocol = "paper"` does the same); the mean prediction is clamped
at 1e-12 before the log, so that a class a stingy teacher masks in the whole batch counts 0·log 0 = 0
(the code would give NaN; the values agree wherever every class has some mass); on a CUDA GPU
the networks run under bf16 autocast like every phase here (the code: float32). A checkpoint
holds the generator and its Adam state too (about 100 MB at latent 1,000). For 1-D signals
(MNIST-1D) the generator is the code's with 1-D convolutions; `generator_width` may narrow it
(the code's is 128 channels wide; the mnist1d preset's 32, as good there at a third of the cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from undistill.errors import ConfigError

from .loop import fast_math, to_device_layout
from .losses import kd_loss

# the generator's BatchNorm after each convolution: `nn.BatchNorm2d(128, 0.8)` in the code, whose
# second argument is eps (a heavy smoothing of the batch statistics that its results rely on)
GENERATOR_BN_EPS = 0.8


@dataclass(frozen=True)
class DataFreeSpec:
    """The generator's side of DAFL; the defaults are the code's own (its MNIST run)."""

    latent_dim: int = 100
    # channels of the generator's first convolution (its second has half): the code's 128; a
    # narrower one costs width² less, what a 40-sample signal may not need
    generator_width: int = 128
    generator_lr: float = 0.2  # Adam, torch's default betas
    one_hot_weight: float = 1.0  # --oh
    entropy_weight: float = 5.0  # --ie
    activation_weight: float = 0.1  # --a
    iterations: int = 120  # generator-and-student steps per epoch
    kd_temperature: float = 1.0  # the student's distillation temperature (the code: 1)


@dataclass(frozen=True)
class GeneratorLosses:
    """DAFL's three generator terms, unweighted, and their weighted sum."""

    one_hot: torch.Tensor
    entropy: torch.Tensor
    activation: torch.Tensor
    total: torch.Tensor

    def items(self) -> dict[str, float]:
        return {name: getattr(self, name).item() for name in ("one_hot", "entropy", "activation", "total")}


def one_hot_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's outputs against their own argmax: confident samples."""
    return F.cross_entropy(logits.float(), logits.argmax(1))


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """Minus the mean absolute penultimate activation: samples that excite the teacher."""
    return -features.float().abs().mean()


def information_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Σ_c p̄_c log10 p̄_c over the batch's mean class distribution p̄ (minus its entropy, in
    decimal digits as in the code): minimised when every class is generated alike."""
    mean = F.softmax(logits.float(), dim=1).mean(0)
    return (mean * torch.log10(mean.clamp_min(1e-12))).sum()


def generator_losses(logits: torch.Tensor, features: torch.Tensor, spec: DataFreeSpec) -> GeneratorLosses:
    one_hot, entropy, activation = one_hot_loss(logits), information_entropy_loss(logits), activation_loss(features)
    total = (spec.one_hot_weight * one_hot + spec.entropy_weight * entropy
             + spec.activation_weight * activation)
    return GeneratorLosses(one_hot, entropy, activation, total)


class _Generator1d(nn.Module):
    """The code's generator with 1-D convolutions: z -> 128 channels at a quarter length, two
    nearest-neighbour upsamplings each followed by conv, BN(eps 0.8), LeakyReLU, then a conv to
    the signal's channels, tanh, and a BatchNorm without affine parameters."""

    def __init__(self, latent_dim: int, shape: tuple[int, int], width: int = 128):
        super().__init__()
        channels, length = shape
        self.init, self.width = length // 4, width
        self.l1 = nn.Linear(latent_dim, width * self.init)
        self.conv_blocks0 = nn.BatchNorm1d(width)
        self.conv_blocks1 = nn.Sequential(
            nn.Conv1d(width, width, 3, padding=1), nn.BatchNorm1d(width, GENERATOR_BN_EPS), nn.LeakyReLU(0.2))
        self.conv_blocks2 = nn.Sequential(
            nn.Conv1d(width, width // 2, 3, padding=1), nn.BatchNorm1d(width // 2, GENERATOR_BN_EPS),
            nn.LeakyReLU(0.2),
            nn.Conv1d(width // 2, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm1d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_blocks0(self.l1(z).view(len(z), self.width, self.init))
        x = self.conv_blocks1(F.interpolate(x, scale_factor=2))
        return self.conv_blocks2(F.interpolate(x, scale_factor=2))


class _Generator2d(nn.Module):
    """DAFL's generator, layer for layer (and with the code's attribute names, so its state dict
    loads): z -> 128 maps at a quarter size, BN, two upsample-conv-BN(eps 0.8)-LeakyReLU blocks,
    a conv to the image's channels, tanh, and a BatchNorm without affine parameters."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], width: int = 128):
        super().__init__()
        channels, height, side = shape
        self.init, self.width = (height // 4, side // 4), width
        self.l1 = nn.Sequential(nn.Linear(latent_dim, width * self.init[0] * self.init[1]))
        self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(width))
        self.conv_blocks1 = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=1, padding=1), nn.BatchNorm2d(width, GENERATOR_BN_EPS),
            nn.LeakyReLU(0.2))
        self.conv_blocks2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, stride=1, padding=1), nn.BatchNorm2d(width // 2, GENERATOR_BN_EPS),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, stride=1, padding=1), nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_blocks0(self.l1(z).view(len(z), self.width, *self.init))
        x = self.conv_blocks1(F.interpolate(x, scale_factor=2))
        return self.conv_blocks2(F.interpolate(x, scale_factor=2))


def make_generator(latent_dim: int, input_shape: tuple[int, ...], width: int = 128) -> nn.Module:
    """DAFL's generator for inputs of `input_shape` ((C, L) signals or (C, H, W) images, whose
    length, height and width must be multiples of 4: it upsamples twice by 2), `width` channels
    wide (the code's 128)."""
    if len(input_shape) not in (2, 3):
        raise ConfigError(f"DAFL has no generator for inputs of shape {input_shape}")
    if any(size % 4 for size in input_shape[1:]):
        raise ConfigError(f"DAFL's generator makes inputs whose sides are multiples of 4, not {input_shape}")
    if len(input_shape) == 2:
        return _Generator1d(latent_dim, input_shape, width)
    return _Generator2d(latent_dim, input_shape, width)


@contextmanager
def penultimate(model: nn.Module):
    """Record the input of the model's last linear layer (its penultimate features) on each call:
    yields a dict whose "features" holds the latest."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: dict[str, torch.Tensor] = {}
    handle = last.register_forward_hook(lambda module, args, out: seen.__setitem__("features", args[0]))
    try:
        yield seen
    finally:
        handle.remove()


class DataFreeSteps:
    """DAFL's epochs (`loop.Steps`): `spec.iterations` joint steps of a generator and the student,
    the generator against the frozen `teacher` seen through `transform`, on batches of
    `batch_size` fresh samples. The generator, its optimizer and its noise are part of the
    student's checkpoint, so a resumed phase goes on where it stopped."""

    loss_sum: torch.Tensor | None = None

    def __init__(self, teacher: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor],
                 input_shape: tuple[int, ...], spec: DataFreeSpec, batch_size: int, seed: int,
                 device: torch.device):
        if batch_size < 2:  # the generator's BatchNorm needs two samples
            raise ConfigError(f"DAFL needs batches of at least 2 samples, not {batch_size}")
        self.teacher, self.transform, self.spec, self.batch_size = teacher, transform, spec, batch_size
        self.steps_per_epoch = spec.iterations
        with torch.random.fork_rng(devices=[]):  # the generator's initial weights: its own seed
            torch.manual_seed(seed)
            self.generator = make_generator(spec.latent_dim, input_shape, spec.generator_width).to(device)
        if device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=spec.generator_lr)
        self.noise = torch.Generator(device=device).manual_seed(seed)
        self.first: dict[str, float] | None = None  # the first step's losses
        self._saved_facts: dict = {}  # what a checkpoint said, until a step says more
        self.last: tuple[GeneratorLosses, torch.Tensor, torch.Tensor] | None = None  # and the latest's

    def step_losses(self, model: Callable[[torch.Tensor], torch.Tensor]
                    ) -> tuple[GeneratorLosses, torch.Tensor, torch.Tensor]:
        """One fresh batch: the generator's losses, the student's distillation loss on it, and
        the teacher's (seen) logits. `model` gives one student's logits (N, classes), or a
        group's (K, N, classes): then the distillation losses are K, one per student."""
        z = torch.randn(self.batch_size, self.spec.latent_dim, generator=self.noise, device=self.noise.device)
        with fast_math(z.device), penultimate(self.teacher) as seen:
            images = to_device_layout(self.generator(z))
            logits = self.transform(self.teacher(images).float())
            generator = generator_losses(logits, seen["features"], self.spec)
            student = model(images.detach())
        # the code's kdloss: KL(softmax(z_t) ‖ softmax(z_s)) summed over classes, averaged over
        # the batch; kd_loss at α = 1 is that at T = 1 (its label term has weight 0)
        target, labels, temperature = logits.detach(), logits.argmax(1), self.spec.kd_temperature
        if student.dim() == 3:
            kd = torch.stack([kd_loss(one, target, labels, alpha=1.0, temperature=temperature) for one in student])
        else:
            kd = kd_loss(student, target, labels, alpha=1.0, temperature=temperature)
        return generator, kd, logits

    def epoch(self, model, opt, after_step, gen):
        """See `loop.Steps`; for a group (`model` gives (K, N, classes)) the flag is one per
        student, and a student whose loss went non-finite stops adding to the others' step."""
        non_finite = None
        self.loss_sum = None  # the student's (KD) loss: the curve is the clone's
        for _ in range(self.steps_per_epoch):
            generator, kd, logits = self.step_losses(model)
            bad = ~torch.isfinite(kd) | ~torch.isfinite(generator.total)
            non_finite = bad if non_finite is None else non_finite | bad
            self.loss_sum = kd.detach().float() + (0.0 if self.loss_sum is None else self.loss_sum)
            # as the code: one backward, each optimizer its own part (the images reach the
            # students detached); a group's diverged student adds 0, not NaN
            loss = generator.total + (torch.where(torch.isfinite(kd), kd, 0.0).sum() if kd.dim() else kd)
            self.optimizer.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            opt.step()
            after_step()
            if self.first is None:
                self.first = {**generator.items(), "kd": kd.tolist()}  # a float, or one per student
            detached = GeneratorLosses(*(getattr(generator, f).detach() for f in GeneratorLosses.__dataclass_fields__))
            self.last = (detached, kd.detach(), logits.detach())
        if non_finite is None:
            return torch.zeros((), dtype=torch.bool, device=self.noise.device)
        return non_finite

    def facts(self, student: int = 0) -> dict:
        """For the phase's result: the generator's losses at the first and the latest step (and
        the distillation loss of `student`, its place in a group), and how many classes the
        teacher saw in the latest batch."""
        if self.last is None:
            saved = self._saved_facts.get("generator")
            return {"generator": {**saved, "last": {**saved["last"], "kd": _pick(saved["last"]["kd"], student)}}
                    } if saved else {}
        generator, kd, logits = self.last
        classes = int(torch.bincount(logits.argmax(1), minlength=logits.shape[1]).gt(0).sum())
        first = self.first or {}
        return {"generator": {"loss_first": first.get("total", math.nan), "loss_last": generator.total.item(),
                              "last": {**generator.items(), "kd": _pick(kd.tolist(), student)},
                              "synthetic_classes": classes}}

    def state_dict(self) -> dict:
        # its facts too: a phase resumed after its last epoch runs no step that could give them
        facts = {}
        if self.last is not None:
            facts = self.facts()
            facts["generator"]["last"]["kd"] = self.last[1].tolist()  # every student's
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "noise": self.noise.get_state(), "first": self.first, "facts": facts or self._saved_facts}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.generator.load_state_dict(state["generator"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.noise.set_state(state["noise"])
            self.first, self._saved_facts = state["first"], state.get("facts", {})


def _pick(value, student: int):
    """One student's share of a value that is a float, or a list of one per student of a group."""
    return value[student] if isinstance(value, list) else value
