"""Data-free distillation in the style of DAFL (Chen et al., ICCV 2019).

The attacker has no data, only the (defended) teacher. A generator learns to produce inputs that
the teacher, as the attacker sees it, classifies confidently (one-hot loss), that excite its
penultimate layer (activation loss), and that spread evenly over the classes (information-entropy
loss). The student is then distilled on the generator's samples only.

The two steps run one after the other: the generator trains against the frozen teacher, then
draws a fixed synthetic training set, on which the usual training loop distils the student (so
checkpoints, divergence and best-epoch selection work as in every phase). The student's best
epoch is chosen on the real validation split: that favours the attacker, so the clone measured is
if anything stronger than a data-free attacker's.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceData
from .loop import batched_logits


@dataclass(frozen=True)
class DataFreeSpec:
    latent_dim: int = 64
    generator_steps: int = 400  # Adam steps of the generator against the teacher
    batch_size: int = 256
    lr: float = 1e-3
    activation_weight: float = 0.1  # DAFL's α
    entropy_weight: float = 5.0  # DAFL's β
    samples: int = 0  # synthetic training set; 0: as many as the real training split


def one_hot_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's outputs against their own argmax: confident samples."""
    return F.cross_entropy(logits.float(), logits.argmax(1))


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """Minus the mean absolute penultimate activation: samples that excite the teacher."""
    return -features.float().abs().mean()


def information_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Minus the entropy of the batch's mean class distribution: every class generated alike.
    A class a stingy teacher masks in the whole batch has mean 0: the clamp keeps 0·log 0 = 0
    and its gradient finite."""
    mean = F.softmax(logits.float(), dim=1).mean(0)
    return (mean * mean.clamp_min(1e-12).log()).sum()


def generator_loss(logits: torch.Tensor, features: torch.Tensor, spec: DataFreeSpec) -> torch.Tensor:
    return (one_hot_loss(logits) + spec.activation_weight * activation_loss(features)
            + spec.entropy_weight * information_entropy_loss(logits))


class _Generator1d(nn.Module):
    """z -> (C, L) signal, standardised per channel like the real data."""

    def __init__(self, latent_dim: int, shape: tuple[int, int]):
        super().__init__()
        channels, length = shape
        self.shape = shape
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
            nn.Linear(256, channels * length),
        )
        self.out = nn.BatchNorm1d(channels, affine=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z).view(-1, *self.shape))


class _Generator2d(nn.Module):
    """DAFL's CIFAR generator: z -> 128 maps at a quarter size, two upsampling conv blocks,
    tanh, then a normalisation without affine parameters."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int]):
        super().__init__()
        channels, height, width = shape
        self.init = (height // 4, width // 4)
        self.fc = nn.Linear(latent_dim, 128 * self.init[0] * self.init[1])
        self.net = nn.Sequential(
            nn.BatchNorm2d(128), nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, padding=1), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
            nn.Conv2d(64, channels, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 128, *self.init))


def make_generator(latent_dim: int, input_shape: tuple[int, ...]) -> nn.Module:
    if len(input_shape) == 2:
        return _Generator1d(latent_dim, input_shape)
    if len(input_shape) == 3:
        return _Generator2d(latent_dim, input_shape)
    raise ValueError(f"no generator for inputs of shape {input_shape}")


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


def train_generator(teacher: nn.Module, transform, input_shape: tuple[int, ...], spec: DataFreeSpec,
                    count: int, seed: int, device: torch.device) -> tuple[torch.Tensor, list[float]]:
    """Train a generator against the frozen teacher (seen through `transform`) for
    `spec.generator_steps` steps; returns `count` of the samples it produced along the way, and
    its loss at each step.

    In DAFL the student learns from every step's batch as the generator moves: a generator at its
    end point alone draws one prototype per class, which teaches a student little (measured on
    MNIST-1D: 10–20 % clones). So the synthetic set is drawn evenly from the whole trajectory.
    """
    torch.manual_seed(seed)
    generator = make_generator(spec.latent_dim, input_shape).to(device)
    opt = torch.optim.Adam(generator.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # samples kept per step; copies, so a step's whole batch is not held through its slice
    keep = min(spec.batch_size, math.ceil(count / max(1, spec.generator_steps)))
    losses, kept = [], []
    generator.train()
    with penultimate(teacher) as seen:
        for _ in range(spec.generator_steps):
            z = torch.randn(spec.batch_size, spec.latent_dim, generator=gen).to(device)
            x = generator(z)
            logits = transform(teacher(x))
            loss = generator_loss(logits, seen["features"], spec)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            kept.append(x[:keep].detach().clone())
    samples = torch.cat(kept)[:count] if kept else torch.empty(0, *input_shape, device=device)
    if len(samples) < count:  # fewer steps × batch than samples wanted: the end point draws the rest
        generator.eval()
        with torch.no_grad():
            extra = [generator(torch.randn(min(spec.batch_size, count - n), spec.latent_dim,
                                           generator=gen).to(device))
                     for n in range(len(samples), count, spec.batch_size)]
        samples = torch.cat([samples, *extra])
    return samples.float(), losses


def data_free_split(data: DeviceData, teacher: nn.Module, transform, spec: DataFreeSpec, seed: int
                    ) -> tuple[DeviceData, torch.Tensor, dict]:
    """The attacker's data: synthetic training inputs (labelled by the teacher's argmax, which a
    distillation with α = 1 never reads) and the real validation and test splits, every split
    already in model-input form; the teacher's logits on the synthetic inputs, as the attacker
    sees them (what the student is distilled on); and the generator's first and last losses."""
    device = data.train_x.device
    count = spec.samples or len(data.train_y)
    train_x, losses = train_generator(teacher, transform, data.input_shape, spec, count, seed, device)
    seen = transform(batched_logits(teacher, train_x, lambda x: x))
    train_y = seen.argmax(1)
    split = replace(data, train_x=train_x, train_y=train_y, val_x=data.prepare(data.val_x),
                    test_x=data.prepare(data.test_x), augment=None, prepare=lambda x: x)
    tail = max(1, len(losses) // 10)
    stats = {"generator_loss_first": losses[0] if losses else math.nan,
             "generator_loss_last": sum(losses[-tail:]) / tail if losses else math.nan,
             "synthetic_classes": int(torch.bincount(train_y, minlength=data.num_classes).gt(0).sum())}
    return split, seen, stats
