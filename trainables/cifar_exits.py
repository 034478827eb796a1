"""Intermediate exits of the CIFAR students the skeptical-student paper uses, as its code builds
them (ksouvik52/Skeptical2021): ResNet-18 and ResNet-50 (`resnet_self.py`) and MobileNetV2
(`mobilenetv2_self.py`). The backbones are this project's networks of the same names, whose
layers match the code's (the CIFAR-stem ResNets; the reference MobileNetV2 with its 34×34 maps),
so only the heads are added; their order, channels, strides and pooling are the code's.
"""

from __future__ import annotations

from torch import nn

from .cifar_models import _MOBILENETV2_REFERENCE_STAGES
from .exits import AttentionExit, MultiExit, StridedAttention, register_exits, sep_conv


def _resnet_exits(model, num_classes, input_shape) -> MultiExit:
    """After layer1, layer2 and layer3: a strided mask (SepConv at stride 2, BN, ReLU, bilinear
    upsampling ×2, sigmoid), then SepConvs at stride 2 doubling the channels up to layer4's
    (`scala1..3`), a 4×4 average pool and a linear classifier (`fc1..3`). He (fan-out) init on
    every convolution, as the code."""
    expansion = model.fc.in_features // 512
    heads = []
    for stage in (1, 2, 3):
        channels = 64 * 2 ** (stage - 1) * expansion
        scala = [sep_conv(channels * 2 ** i, channels * 2 ** (i + 1), 2, dims=2) for i in range(4 - stage)]
        head = nn.Sequential(*scala, nn.AvgPool2d(4, 4), nn.Flatten(), nn.Linear(512 * expansion, num_classes))
        heads.append(AttentionExit(head, StridedAttention(channels, dims=2)))
    for m in nn.ModuleList(heads).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return MultiExit(model, ["layer1", "layer2", "layer3"], heads)


register_exits("resnet18")(_resnet_exits)
register_exits("resnet50")(_resnet_exits)


@register_exits("mobilenetv2")
def _mobilenetv2_exits(model, num_classes, input_shape) -> MultiExit:
    """After the 24-, 64- and 160-channel stages: a mask (SepConv at stride 1, BN, ReLU, sigmoid),
    SepConvs up to 1280 channels (the first of the shallowest at stride 2), a 5×5 average pool
    and a 1×1 convolution as the classifier, as the final exit has."""
    ends, block = {}, 0
    for _expand, c_out, repeat, _stride in _MOBILENETV2_REFERENCE_STAGES:
        block += repeat
        ends[c_out] = 3 + block - 1  # the stem's conv, BN and ReLU6 come first in `features`
    widths = {24: [64, 160, 320, 640, 1280], 64: [160, 320, 640, 1280], 160: [320, 640, 1280]}
    heads = []
    for c_in, outs in widths.items():
        scala, c = [], c_in
        for i, c_out in enumerate(outs):
            scala.append(sep_conv(c, c_out, 2 if c_in == 24 and i == 0 else 1, dims=2))
            c = c_out
        attention = nn.Sequential(sep_conv(c_in, c_in, 1, dims=2), nn.BatchNorm2d(c_in), nn.ReLU(), nn.Sigmoid())
        head = nn.Sequential(*scala, nn.AvgPool2d(5, 5), nn.Conv2d(1280, num_classes, 1), nn.Flatten())
        heads.append(AttentionExit(head, attention))
    return MultiExit(model, [f"features.{ends[c]}" for c in widths], heads)
