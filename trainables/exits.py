"""Students with intermediate exits: a network plus auxiliary classifiers on its early stages,
the self-distillation students of the skeptical-student attack (Kundu et al., "Analyzing the
Confidentiality of Undistillable Teachers in Knowledge Distillation", NeurIPS 2021; code
ksouvik52/Skeptical2021, `resnet_self.py` and `mobilenetv2_self.py`, after Zhang et al.'s "Be
Your Own Teacher", ICCV 2019).

`MultiExit` wraps a registered model, unchanged: its `forward` is the model's own (the final
exit, what the student is scored on), and `exits(x)` gives every exit's logits, the final one
first and then the auxiliary ones from the deepest to the shallowest, the order of the code's
`[out4, out3, out2, out1]`. A convolutional network's auxiliary exit reads a stage's output
through an attention mask (a separable convolution, BatchNorm, ReLU, a sigmoid: `feature ·
mask`, as the code) and a `scala` of separable convolutions that brings it down to the final
stage's resolution, then a classifier; an MLP's, through hidden layers as deep as the backbone
still has ahead.

Exits by name, like models: `@register_exits("resnet18")` on a builder `(model, num_classes,
input_shape) -> MultiExit`; `create_with_exits(name, ...)` builds one, as `create_model` a model. The CIFAR networks'
exits (`cifar_exits`) register on first need, as their models do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from undistill.errors import ConfigError

from .models import create_model, model_options

_EXITS: dict[str, Callable[..., MultiExit]] = {}
_APPLIES: dict[str, Callable[[dict], bool]] = {}  # arch -> which of its options have exits
_LAZY_MODULES = ("trainables.cifar_exits",)


class MultiExit(nn.Module):
    """`backbone` with an auxiliary head on the output of each module named in `taps` (from the
    input side: the shallowest first)."""

    def __init__(self, backbone: nn.Module, taps: list[str], heads: list[nn.Module]):
        super().__init__()
        if len(taps) != len(heads) or not taps:
            raise ValueError("a MultiExit needs one head per tap, and at least one")
        self.backbone, self.taps, self.heads = backbone, list(taps), nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[final, deepest auxiliary, ..., shallowest auxiliary] logits on one batch."""
        seen: dict[str, torch.Tensor] = {}
        hooks = [self.backbone.get_submodule(tap).register_forward_hook(
            lambda _module, _inputs, output, tap=tap: seen.__setitem__(tap, output)) for tap in self.taps]
        try:
            final = self.backbone(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [final] + [head(seen[tap]) for tap, head in reversed(list(zip(self.taps, self.heads, strict=True)))]


class AttentionExit(nn.Module):
    """One auxiliary exit: `head(feature · attention(feature))`, or `head(feature)` without one."""

    def __init__(self, head: nn.Module, attention: nn.Module | None = None):
        super().__init__()
        self.attention, self.head = attention, head

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            feature = self.attention(feature) * feature
        return self.head(feature)


def sep_conv(c_in: int, c_out: int, stride: int, dims: int, kernel: int = 3) -> nn.Sequential:
    """The code's `SepConv`: depthwise (strided) and pointwise, BN, ReLU, then depthwise and
    pointwise again to `c_out`, BN, ReLU; `dims` 1 for signals, 2 for images."""
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    pad = kernel // 2
    return nn.Sequential(
        conv(c_in, c_in, kernel, stride=stride, padding=pad, groups=c_in, bias=False),
        conv(c_in, c_in, 1, bias=False), norm(c_in), nn.ReLU(),
        conv(c_in, c_in, kernel, stride=1, padding=pad, groups=c_in, bias=False),
        conv(c_in, c_out, 1, bias=False), norm(c_out), nn.ReLU(),
    )


class _Resize(nn.Module):
    """Back to the size of the feature the mask multiplies (the code: `Upsample(scale_factor=2)`
    after a stride-2 convolution, the same wherever the size is even)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return nn.functional.interpolate(x, size=size, mode=self.mode)


class StridedAttention(nn.Module):
    """The ResNet exits' mask: SepConv at stride 2, BN, ReLU, upsampled back, sigmoid."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.body = nn.Sequential(sep_conv(channels, channels, 2, dims), norm(channels), nn.ReLU())
        self.resize = _Resize("linear" if dims == 1 else "bilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.resize(self.body(x), x.shape[2:]))


def register_exits(arch: str, applies: Callable[[dict], bool] = lambda options: True):
    """`applies(options)`: whether the model built with those options has an exit (an MLP of
    one hidden layer has none)."""
    def wrap(builder: Callable[..., MultiExit]) -> Callable[..., MultiExit]:
        if arch in _EXITS:
            raise ValueError(f"exits for model {arch!r} are registered twice")
        _EXITS[arch], _APPLIES[arch] = builder, applies
        return builder
    return wrap


def _mlp_default_depth() -> int:
    return model_options("mlp")["depth"]


def _load_lazy() -> None:
    for module in _LAZY_MODULES:
        importlib.import_module(module)


def has_exits(arch: str, options: dict | None = None) -> bool:
    """Whether `arch`, built with `options`, has intermediate exits."""
    if arch not in _EXITS:
        _load_lazy()
    return arch in _EXITS and _APPLIES[arch](options or {})


def models_with_exits() -> list[str]:
    _load_lazy()
    return sorted(_EXITS)


def check_has_exits(arch: str, options: dict | None = None, *, label: str | None = None,
                    who: str | None = None) -> None:
    """A one-line ConfigError unless `arch` with `options` has exits; `who` needs them."""
    if not has_exits(arch, options):
        problem = (f"{who} needs a student with intermediate exits; model {label or arch!r} has none" if who
                   else f"model {label or arch!r} has no intermediate exits")
        raise ConfigError(f"{problem} (models with them: {', '.join(models_with_exits())})")


def with_exits(arch: str, model: nn.Module, num_classes: int, input_shape: tuple[int, ...]) -> MultiExit:
    check_has_exits(arch)
    return _EXITS[arch](model, num_classes, tuple(input_shape))


def create_with_exits(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> MultiExit:
    """`models.create_model` with the model's intermediate exits; a ConfigError for one without."""
    check_has_exits(name, kwargs)
    return with_exits(name, create_model(name, num_classes, input_shape, **kwargs), num_classes, input_shape)


@register_exits("cnn1d")
def _cnn1d_exits(model, num_classes, input_shape) -> MultiExit:
    """After each of the first two conv stages (of three): the ResNet exits' design in 1-D, a
    strided mask and one stride-2 SepConv per stage still ahead, so that each head sees maps
    as long as the final classifier's, and a linear classifier on them as the final one has."""
    stages = [i for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
    width = model.features[0].out_channels  # every stage's (no forward pass: BatchNorm stays untouched)
    heads = []
    for k in range(len(stages) - 1):
        ahead = len(stages) - 1 - k
        scala = [sep_conv(width, width, 2, dims=1) for _ in range(ahead)]
        head = nn.Sequential(*scala, nn.Flatten(), nn.Linear(model.classifier.in_features, num_classes))
        heads.append(AttentionExit(head, StridedAttention(width, dims=1)))
    return MultiExit(model, [f"features.{i}" for i in stages[:-1]], heads)


@register_exits("mlp", applies=lambda options: options.get("depth", _mlp_default_depth()) >= 2)
def _mlp_exits(model, num_classes, input_shape) -> MultiExit:
    """After each hidden layer but the last: as many hidden layers of the same width as the
    backbone has still ahead, then a linear classifier (no mask: a vector has no positions)."""
    relus = [name for name, m in model.net.named_children() if isinstance(m, nn.ReLU)]
    if len(relus) < 2:
        raise ConfigError("model 'mlp' needs depth ≥ 2 for an intermediate exit")
    hidden = model.net[-1].in_features
    heads = []
    for k in range(len(relus) - 1):
        layers: list[nn.Module] = []
        for _ in range(len(relus) - 1 - k):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        heads.append(AttentionExit(nn.Sequential(*layers, nn.Linear(hidden, num_classes))))
    return MultiExit(model, [f"net.{name}" for name in relus[:-1]], heads)
