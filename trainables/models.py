"""Models by name: `@register_model` on small entry points, `create_model(name, ...)` to build one.

Every entry point takes `num_classes` and `input_shape` (channels, length) plus its own keyword
arguments, which presets may set (`{arch = "cnn1d", width = 16}`).

The image models (`cifar_models`, built on torchvision's) register when a name is not found
among the ones here, or when every model is listed: an MNIST-1D worker never loads torchvision.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from undistill.errors import ConfigError
from undistill.tables import check_within, is_a

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_LAZY_MODULES = ("trainables.cifar_models",)  # imported (and so registered) on first need


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    _load_lazy()
    return sorted(_MODELS)


def _load_lazy() -> None:
    import importlib

    for module in _LAZY_MODULES:
        importlib.import_module(module)


def model_options(name: str) -> dict[str, object]:
    """The keyword arguments `name` accepts, with their defaults."""
    _check_known(name)
    params = inspect.signature(_MODELS[name]).parameters
    return {p: v.default for p, v in params.items() if p not in ("num_classes", "input_shape")}


# The range of each built-in model's option, by its name: (low, high, high end open). Widths to
# 2^16 channels or units, as many layers as a thousand: past them a network takes more memory
# or time than any machine here has (`MAX_PARAMETERS` bounds what they multiply to). An option
# of another name (a model registered elsewhere) is checked for its type alone.
OPTION_RANGES = {"width": (1, 65_536, False), "hidden": (1, 65_536, False), "kernel": (1, 1_001, False),
                 "depth": (0, 1_000, False), "dropout": (0.0, 1.0, True)}
# 30 times the largest network here (ResNeXt-29 8×64d, 34 M parameters): past it a model is a
# slip (a width of 60,000), and building it to check it would take minutes and gigabytes
MAX_PARAMETERS = 1_000_000_000


def check_model_kwargs(name: str, kwargs: dict) -> None:
    """Each option `name` takes, of its default's type (an int where it is an int: 3.0 and
    true are not), within its range; a one-line ConfigError naming the option otherwise."""
    options = model_options(name)
    for key, value in kwargs.items():
        if key not in options:
            raise ConfigError(
                f"model {name!r} has no option {key!r}; it takes: {', '.join(options) or 'none'}"
            )
        default = options[key]
        kind = type(default) if isinstance(default, (bool, int, float, str)) else None
        if kind is not None and not is_a(value, kind):
            raise ConfigError(f"model {name!r} option {key}: expected {kind.__name__}, got "
                              f"{type(value).__name__} {value!r}")
        if kind in (int, float) and key in OPTION_RANGES:
            low, high, high_open = OPTION_RANGES[key]
            check_within(f"model {name!r} option {key}", value, low, high, high_open=high_open)
        elif kind is float and not math.isfinite(value):
            raise ConfigError(f"model {name!r} option {key} must be a finite number, got {value!r}")


def parameter_count(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> int:
    """How many parameters the model has, counted without allocating them (on torch's meta
    device): a model too large to build can be refused before it is built."""
    with torch.device("meta"):
        model = create_model(name, num_classes, input_shape, **kwargs)
    return sum(p.numel() for p in model.parameters())


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    _check_known(name)
    check_model_kwargs(name, kwargs)
    return _MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)


def _check_known(name: str) -> None:
    if name not in _MODELS:
        _load_lazy()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")


def _batch_norm_stacked(layer: nn.BatchNorm1d, at: str, params: dict, buffers: dict,
                        h: torch.Tensor) -> torch.Tensor:
    """`layer` over K students' channels side by side, each with its own statistics: what
    `nn.BatchNorm1d.forward` does, on views of the stacked tensors (its running statistics are
    updated in place, as the module's are)."""
    tracked = buffers[at + "num_batches_tracked"]
    if layer.training:
        tracked.add_(1)
    # momentum None: a cumulative average, as the module keeps it (every student has seen as many batches)
    momentum = layer.momentum if layer.momentum is not None else 1.0 / max(1, int(tracked[0]))
    return F.batch_norm(h, buffers[at + "running_mean"].view(-1), buffers[at + "running_var"].view(-1),
                        params[at + "weight"].flatten(), params[at + "bias"].flatten(), layer.training,
                        momentum, layer.eps)


class _CNN1d(nn.Module):
    """Three strided conv layers, then a linear classifier: (N, C, L) -> (N, classes)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int, kernel: int):
        super().__init__()
        channels, length = input_shape
        self.features = nn.Sequential(
            nn.Conv1d(channels, width, kernel, stride=2, padding=kernel // 2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
        )
        with torch.no_grad():  # infer the flattened size instead of hand-computing strides
            flat = self.features(torch.zeros(1, channels, length)).numel()
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def forward_stacked(self, params: dict, buffers: dict, x: torch.Tensor, k: int) -> torch.Tensor:
        """K copies at once on one batch (`trainables.stacked`): `params` and `buffers` are this
        module's state, each tensor with a leading K dimension; returns (K, N, classes). The K
        students' channels side by side make each layer one convolution: the first shares its
        input (one K-times-wider convolution), the others are grouped by student. 1.4-1.5 times
        faster per step than `vmap` on the CPU (bench/batched.py --ceiling), the same numbers."""
        h = x
        for name, layer in self.features.named_children():
            at = f"features.{name}."
            if isinstance(layer, nn.Conv1d):
                h = F.conv1d(h, params[at + "weight"].flatten(0, 1), params[at + "bias"].flatten(),
                             layer.stride, layer.padding, layer.dilation, groups=1 if h is x else k)
            elif isinstance(layer, nn.BatchNorm1d):
                h = _batch_norm_stacked(layer, at, params, buffers, h)
            else:
                h = layer(h)
        h = h.view(len(h), k, -1).transpose(0, 1)  # (K, N, features): each student's own
        return torch.baddbmm(params["classifier.bias"].unsqueeze(1), h, params["classifier.weight"].transpose(1, 2))


class _MLP(nn.Module):
    """Flatten, then `depth` hidden ReLU layers of `hidden` units."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)  # (not a tensor: the model is also built on the meta device)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_stacked(self, params: dict, buffers: dict, x: torch.Tensor, k: int) -> torch.Tensor:
        """K copies at once (see `_CNN1d.forward_stacked`): the first layer is one K-times-wider
        matmul on the shared input, the others batched matmuls, one per student."""
        linears = [f"net.{name}." for name, layer in self.net.named_children() if isinstance(layer, nn.Linear)]
        h = x.flatten(1)
        for i, at in enumerate(linears):
            weight, bias = params[at + "weight"], params[at + "bias"]
            if i == 0:
                h = F.linear(h, weight.flatten(0, 1), bias.flatten()).view(len(h), k, -1).transpose(0, 1)
            else:
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if i < len(linears) - 1:
                h = torch.relu(h)
        return h


@register_model
def cnn1d(num_classes: int, input_shape: tuple[int, ...], width: int = 64, kernel: int = 5):
    """1-D CNN for MNIST-1D; width 64 is the default teacher, width 16 a small student."""
    return _CNN1d(num_classes, input_shape, width=width, kernel=kernel)


@register_model
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: int = 100, depth: int = 2):
    """Fully connected student; on MNIST-1D it cannot use translation invariance, so it is weak."""
    return _MLP(num_classes, input_shape, hidden=hidden, depth=depth)
