"""The CIFAR model zoo of the Nasty Teacher paper (Ma et al., ICLR 2021), registered by name.

Every entry point takes `input_shape = (channels, height, width)`, (3, 32, 32) on CIFAR. The
ImageNet designs (ResNet, MobileNetV2, ShuffleNetV2) shrink a 224-pixel image 32-fold before the
classifier: a 7×7 stride-2 stem plus a max-pool take the first factor of 4. On a 32-pixel image
that would leave 8×8 maps for the first stage and 1×1 maps for the last, so their CIFAR
variants use a 3×3 stride-1 stem with no max-pool, as kuangliu/pytorch-cifar,
chenyaofo/pytorch-cifar-models and the Nasty Teacher code (VITA-Group/Nasty-Teacher) do. The
ResNets reuse torchvision's own classes and blocks and change only the stem. MobileNetV2 and
ShuffleNetV2 under the presets' names (`mobilenetv2`, `shufflenetv2`) are the Nasty Teacher
code's own, which differ from torchvision's in stem, strides and biases (the paper's numbers are
about these); torchvision's, made for CIFAR, stay as `mobilenetv2_tv` and `shufflenetv2_tv`. The
CIFAR-only designs (plain CNN, pre-activation ResNetC, ResNeXt-29) follow the Nasty Teacher code.
tests/test_cifar_models.py checks every parameter count against a published figure or,
where none exists, against the reference code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, conv1x1, conv3x3
from torchvision.models.shufflenetv2 import ShuffleNetV2

from undistill.errors import ConfigError

from .models import register_model


def _image_channels(name: str, input_shape: tuple[int, ...], min_size: int = 1) -> int:
    """The channel count of an image shape; a ConfigError for anything else (e.g. 1-D signals)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_size:
        size = f" with height and width ≥ {min_size}" if min_size > 1 else ""
        raise ConfigError(
            f"model {name!r} takes images: input_shape must be (channels, height, width){size}, "
            f"got {tuple(input_shape)}"
        )
    return input_shape[0]


def _stem_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The CIFAR stem: 3×3 at stride 1 keeps every pixel of a 32×32 image for the first stage."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    return conv


def _init_convs(model: nn.Module) -> nn.Module:
    """He (fan-out) initialisation for every conv, the scheme of torchvision and the reference code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


class _PlainCNN(nn.Module):
    """Three [conv3×3, BN, max-pool 2, ReLU] stages at width, 2·width, 4·width channels, then
    FC → 4·width (BN, ReLU, dropout) → classes. Layer order as in the Nasty Teacher's model/net.py."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int, dropout: float):
        super().__init__()
        channels, height, image_width = input_shape
        layers: list[nn.Module] = []
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.MaxPool2d(2)]
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        flat = channels * (height // 8) * (image_width // 8)  # three 2× pools
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 4 * width),
            nn.BatchNorm1d(4 * width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _PreActBlock(nn.Module):
    """(BN, ReLU, conv3×3) twice, added to the input (He et al. 2016, "Identity Mappings", full
    pre-activation); where the shape changes the shortcut is a 1×1 conv, as in the Nasty Teacher's
    model/preresnet.py."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        reshape = stride != 1 or in_planes != planes
        self.shortcut = conv1x1(in_planes, planes, stride) if reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class _PreActResNetC(nn.Module):
    """CIFAR ResNet of depth 6n+2: a 3×3 conv to 16 channels, three stages of n pre-activation
    blocks at 16/32/64 channels (stride 2 into the last two), BN-ReLU, global pool, FC."""

    def __init__(self, depth: int, num_classes: int, channels: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = conv3x3(channels, 16)
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                blocks.append(_PreActBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_planes, num_classes),
        )
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class _ResNeXt29(nn.Module):
    """CIFAR ResNeXt-29 (Xie et al. 2017, Sec. 5.3): a 3×3 conv to 64 channels, three stages of
    three torchvision bottlenecks (grouped 3×3 of `cardinality` groups, `bottleneck_width`
    channels each in the first stage, doubling per stage) with 256/512/1024 outputs, global
    pool, FC. Same layers as the Nasty Teacher's model/resnext.py (from prlz77/ResNeXt.pytorch)."""

    def __init__(self, num_classes: int, channels: int, cardinality: int, bottleneck_width: int):
        super().__init__()
        self.stem = nn.Sequential(_stem_conv(channels, 64), nn.BatchNorm2d(64), nn.ReLU())
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2)):  # outputs planes × 4
            for i in range(3):  # depth 29 = 3 stages × 3 blocks × 3 layers + stem + FC
                block_stride = stride if i == 0 else 1
                downsample = None
                if block_stride != 1 or in_planes != planes * Bottleneck.expansion:
                    out = planes * Bottleneck.expansion
                    downsample = nn.Sequential(
                        conv1x1(in_planes, out, block_stride), nn.BatchNorm2d(out)
                    )
                blocks.append(
                    Bottleneck(
                        in_planes,
                        planes,
                        block_stride,
                        downsample,
                        groups=cardinality,
                        base_width=bottleneck_width,
                    )
                )
                in_planes = planes * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes)
        )
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _cifar_resnet(block: type[nn.Module], layers: list[int], num_classes: int, channels: int):
    """torchvision's ResNet with the CIFAR stem: 3×3 stride-1 conv, no max-pool (kuangliu's layout)."""
    model = ResNet(block, layers, num_classes=num_classes)
    model.conv1 = _stem_conv(channels, 64)
    model.maxpool = nn.Identity()
    return model


def _conv_bn(c_in: int, c_out: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
             act: type[nn.Module] | None = None) -> list[nn.Module]:
    """A biased convolution (as every one in the reference's MobileNetV2 and ShuffleNetV2), its
    BatchNorm, and an activation if given."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups),
              nn.BatchNorm2d(c_out)]
    return layers + ([act(inplace=True)] if act is not None else [])


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1×1 (ratio `expand`), depthwise 3×3, project 1×1 without an
    activation; the input is added back where the shape allows."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.body = nn.Sequential(*_conv_bn(c_in, hidden, 1, act=nn.ReLU6),
                                  *_conv_bn(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, act=nn.ReLU6),
                                  *_conv_bn(hidden, c_out, 1))
        self.add_input = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.add_input else out


# (expansion, output channels, blocks, first block's stride), the reference's stages
_MOBILENETV2_REFERENCE_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                 (6, 96, 3, 1), (6, 160, 3, 1), (6, 320, 1, 1)]


class _ReferenceMobileNetV2(nn.Module):
    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        blocks, c_in = [], 32
        for expand, c_out, repeat, stride in _MOBILENETV2_REFERENCE_STAGES:
            for i in range(repeat):
                blocks.append(_InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        self.features = nn.Sequential(*_conv_bn(channels, 32, 1, padding=1, act=nn.ReLU6), *blocks,
                                      *_conv_bn(c_in, 1280, 1, act=nn.ReLU6))
        self.classifier = nn.Conv2d(1280, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1)).flatten(1)


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit. Where it keeps the shape, half the channels pass through and the other
    half go through 1×1, depthwise 3×3, 1×1; where it downsamples (or widens), both branches see
    every channel and each makes half the output. Then the halves are interleaved."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.split = stride == 1 and c_in == c_out
        if self.split:
            half = c_in // 2
            self.shortcut = nn.Sequential()
            self.branch = nn.Sequential(*_conv_bn(half, half, 1, act=nn.ReLU),
                                        *_conv_bn(half, half, 3, padding=1, groups=half),
                                        *_conv_bn(half, half, 1, act=nn.ReLU))
        else:
            self.shortcut = nn.Sequential(*_conv_bn(c_in, c_in, 3, stride=stride, padding=1, groups=c_in),
                                          *_conv_bn(c_in, c_out // 2, 1, act=nn.ReLU))
            self.branch = nn.Sequential(*_conv_bn(c_in, c_in, 1, act=nn.ReLU),
                                        *_conv_bn(c_in, c_in, 3, stride=stride, padding=1, groups=c_in),
                                        *_conv_bn(c_in, c_out // 2, 1, act=nn.ReLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        passed, through = x.chunk(2, dim=1) if self.split else (x, x)
        return _channel_shuffle(torch.cat([self.shortcut(passed), self.branch(through)], dim=1), 2)


class _ReferenceShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, channels: int, widths=(116, 232, 464, 1024), units=(4, 8, 4)):
        super().__init__()
        layers, c_in = _conv_bn(channels, 24, 3, padding=1), 24
        for width, count in zip(widths[:3], units, strict=True):
            layers += [_ShuffleUnit(c_in if i == 0 else width, width, 2 if i == 0 else 1) for i in range(count)]
            c_in = width
        self.features = nn.Sequential(*layers, *_conv_bn(c_in, widths[3], 1, act=nn.ReLU))
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# torchvision's MobileNetV2 table (expansion t, channels c, repeats n, stride s) with the 24-channel
# stage at stride 1 instead of 2: with the stride-1 stem, 32×32 inputs end at 4×4 maps.
_MOBILENETV2_CIFAR_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],  # ImageNet: stride 2
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


@register_model
def cnn(num_classes: int, input_shape: tuple[int, ...], width: int = 32, dropout: float = 0.0):
    """The Nasty Teacher paper's plain CNN student (width 32: FC 2048 → 128 → classes on CIFAR);
    dropout 0 as in its CIFAR-10 configs. Three 2× max-pools need images of at least 8×8."""
    _image_channels("cnn", input_shape, min_size=8)
    return _PlainCNN(num_classes, tuple(input_shape), width=width, dropout=dropout)


@register_model
def resnetc20(num_classes: int, input_shape: tuple[int, ...]):
    """Pre-activation CIFAR ResNet-20 (He et al. 2016, "Identity Mappings"): 3 × 3 blocks at
    16/32/64 channels, about 0.27 M parameters; a small student of the paper."""
    return _PreActResNetC(20, num_classes, _image_channels("resnetc20", input_shape))


@register_model
def resnetc32(num_classes: int, input_shape: tuple[int, ...]):
    """Pre-activation CIFAR ResNet-32: as resnetc20 with 5 blocks per stage."""
    return _PreActResNetC(32, num_classes, _image_channels("resnetc32", input_shape))


@register_model
def resnet18(num_classes: int, input_shape: tuple[int, ...]):
    """ResNet-18 (He et al. 2016) with the CIFAR stem; the paper's CIFAR-10 teacher."""
    channels = _image_channels("resnet18", input_shape)
    return _cifar_resnet(BasicBlock, [2, 2, 2, 2], num_classes, channels)


@register_model
def resnet34(num_classes: int, input_shape: tuple[int, ...]):
    """ResNet-34 with the CIFAR stem; the paper's data-free KD teacher."""
    channels = _image_channels("resnet34", input_shape)
    return _cifar_resnet(BasicBlock, [3, 4, 6, 3], num_classes, channels)


@register_model
def resnet50(num_classes: int, input_shape: tuple[int, ...]):
    """ResNet-50 (torchvision's bottleneck, stride on the 3×3) with the CIFAR stem; a CIFAR-100 teacher."""
    channels = _image_channels("resnet50", input_shape)
    return _cifar_resnet(Bottleneck, [3, 4, 6, 3], num_classes, channels)


@register_model
def resnext29_8x64d(num_classes: int, input_shape: tuple[int, ...]):
    """ResNeXt-29 8×64d (Xie et al. 2017): cardinality 8, bottleneck width 64; the paper's
    strongest CIFAR-100 teacher, about 34.4 M parameters."""
    channels = _image_channels("resnext29_8x64d", input_shape)
    return _ResNeXt29(num_classes, channels, cardinality=8, bottleneck_width=64)


@register_model
def mobilenetv2(num_classes: int, input_shape: tuple[int, ...]):
    """MobileNetV2 as the Nasty Teacher code has it (VITA-Group/Nasty-Teacher model/mobilenetv2.py,
    the CIFAR-100 student of the paper's Table 2): a 1×1 stem with padding 1 (34×34 maps), the
    24-channel stage at stride 2 and the 160-channel one at stride 1, biases on every
    convolution, a 1×1 convolution as the classifier, PyTorch's default initialisation.
    2,254,090 / 2,369,380 parameters for 10 / 100 classes."""
    return _ReferenceMobileNetV2(num_classes, _image_channels("mobilenetv2", input_shape))


@register_model
def shufflenetv2(num_classes: int, input_shape: tuple[int, ...]):
    """ShuffleNetV2 1.0× as the Nasty Teacher code has it (VITA-Group/Nasty-Teacher
    model/shufflenetv2.py, a CIFAR-100 student of the paper's Table 2): a 3×3 stem without ReLU
    or max-pool, stages of 4, 8 and 4 units, biases on every convolution, PyTorch's default
    initialisation. 1,268,646 / 1,360,896 parameters for 10 / 100 classes."""
    return _ReferenceShuffleNetV2(num_classes, _image_channels("shufflenetv2", input_shape))


@register_model
def mobilenetv2_tv(num_classes: int, input_shape: tuple[int, ...]):
    """MobileNetV2 1.0× (Sandler et al. 2018), torchvision's, made for 32×32 inputs as in
    chenyaofo/pytorch-cifar-models and kuangliu/pytorch-cifar: stride-1 stem and the 24-channel
    stage at stride 1 (total downsampling 8× instead of 32×). Not the paper's network
    (`mobilenetv2` is): other strides, stem and biases."""
    channels = _image_channels("mobilenetv2_tv", input_shape)
    # no dropout, as in kuangliu's CIFAR version: dropout draws from the global generator,
    # which phase checkpoints do not save, so a resumed phase would not match an unbroken one
    model = MobileNetV2(
        num_classes=num_classes, inverted_residual_setting=_MOBILENETV2_CIFAR_SETTING, dropout=0.0
    )
    model.features[0][0] = _stem_conv(channels, model.features[0][0].out_channels)
    return model


@register_model
def shufflenetv2_tv(num_classes: int, input_shape: tuple[int, ...]):
    """ShuffleNetV2 1.0× (Ma et al. 2018), torchvision's, made for 32×32 inputs as in
    chenyaofo/pytorch-cifar-models and kuangliu/pytorch-cifar: stride-1 stem and no max-pool
    (total downsampling 8× instead of 32×). Not the paper's network (`shufflenetv2` is)."""
    channels = _image_channels("shufflenetv2_tv", input_shape)
    model = ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], num_classes=num_classes)
    model.conv1[0] = _stem_conv(channels, 24)
    model.maxpool = nn.Identity()
    return model
