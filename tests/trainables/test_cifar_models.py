"""The CIFAR model zoo: registered, the published parameter counts, trainable on 32×32 images."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainables.models import create_model, list_models
from undistill.errors import ConfigError

CIFAR = (3, 32, 32)
CIFAR_MODELS = [
    "cnn",
    "resnetc20",
    "resnetc32",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnext29_8x64d",
    "mobilenetv2",
    "shufflenetv2",
    "mobilenetv2_tv",
    "shufflenetv2_tv",
]


def cifar_count(
    imagenet_count: int, stem_out: int, stem_kernel: int, fc_in: int, classes: int
) -> int:
    """torchvision's ImageNet count with its k×k stem made 3×3 and its 1000-way FC made `classes`-way
    (the CIFAR variants change nothing else that holds parameters)."""
    return imagenet_count - 3 * stem_out * (stem_kernel**2 - 9) - (fc_in + 1) * (1000 - classes)


# torchvision 0.29 `num_params` of the ImageNet models (torchvision/models/resnet.py,
# mobilenetv2.py, shufflenetv2.py: ResNet18_Weights.IMAGENET1K_V1.meta["num_params"] etc.).
TV_RESNET18, TV_RESNET34, TV_RESNET50 = 11_689_512, 21_797_672, 25_557_032
TV_MOBILENET_V2, TV_SHUFFLENET_V2_X1_0 = 3_504_872, 2_278_604

# (model, classes) -> expected counts: an int is exact, a string like "11.2M" is a published figure
# compared at its own precision.
PARAM_COUNTS = {
    # No published count: computed from the reference, VITA-Group/Nasty-Teacher model/net.py with
    # num_channels 32 (experiments/CIFAR10/baseline/cnn/params.json):
    # convs 896 + 18,496 + 73,856, BNs 64 + 128 + 256, FC 262,272, BN1d 256, FC 128·C + C.
    ("cnn", 10): [357_514],
    ("cnn", 100): [369_124],
    # Exact: computed from VITA-Group/Nasty-Teacher model/preresnet.py (PreResNet(20) / (32)).
    # Rounded: chenyaofo/pytorch-cifar-models README "Model Zoo" (resnet20 0.27 / 0.28,
    # resnet32 0.47 / 0.47 M): a post-activation ResNet-20/32 with the same convs and FC,
    # equal to ours at 0.01 M. (He et al. 2015, Table 6, give 0.27 M / 0.46 M for ResNet-20/32
    # with parameter-free shortcuts; the 1×1 shortcut convs here add 2,560.)
    ("resnetc20", 10): [272_282, "0.27M"],
    ("resnetc20", 100): [278_132, "0.28M"],
    ("resnetc32", 10): [466_714, "0.47M"],
    ("resnetc32", 100): [472_564, "0.47M"],
    # Exact: torchvision's count, 7×7 stem → 3×3, FC 1000 → C (kuangliu/pytorch-cifar's ResNet
    # has the same layers). Rounded: weiaicunzai/pytorch-cifar100 README, results table
    # (cifar100: resnet18 11.2M, resnet34 21.3M, resnet50 23.7M).
    ("resnet18", 10): [cifar_count(TV_RESNET18, 64, 7, 512, 10)],  # 11,173,962
    ("resnet18", 100): [cifar_count(TV_RESNET18, 64, 7, 512, 100), "11.2M"],
    ("resnet34", 10): [cifar_count(TV_RESNET34, 64, 7, 512, 10)],  # 21,282,122
    ("resnet34", 100): [cifar_count(TV_RESNET34, 64, 7, 512, 100), "21.3M"],
    ("resnet50", 10): [cifar_count(TV_RESNET50, 64, 7, 2048, 10)],  # 23,520,842
    ("resnet50", 100): [cifar_count(TV_RESNET50, 64, 7, 2048, 100), "23.7M"],
    # bearpaw/pytorch-classification README, CIFAR table: "ResNeXt-29, 8x64 | 34.43" M, counted
    # on CIFAR-10, same code as the Nasty Teacher's model/resnext.py (both from prlz77).
    # Xie et al. 2017, Table 7, round it to 34.4M. 100 classes: 90 more FC rows of 1024 + 1.
    ("resnext29_8x64d", 10): ["34.43M", 34_426_698],
    ("resnext29_8x64d", 100): [34_426_698 + 90 * 1025],
    # Exact: counted on the reference, VITA-Group/Nasty-Teacher model/mobilenetv2.py
    # (MobileNetV2(class_num=C)) and model/shufflenetv2.py (ShuffleNetV2(class_num=C)); with
    # the reference's weights loaded, ours give its outputs bit for bit (checked by hand: the
    # reference's code stays out of this repository).
    ("mobilenetv2", 10): [2_254_090],
    ("mobilenetv2", 100): [2_369_380],
    ("shufflenetv2", 10): [1_268_646],
    ("shufflenetv2", 100): [1_360_896],
    # Exact: torchvision's count (3×3 stem already), FC 1000 → C. Rounded:
    # chenyaofo/pytorch-cifar-models README "Model Zoo": mobilenetv2_x1_0 2.24 (CIFAR-10) /
    # 2.35 (CIFAR-100) M, shufflenetv2_x1_0 1.26 / 1.36 M; its models are torchvision's with
    # the same CIFAR strides.
    ("mobilenetv2_tv", 10): [cifar_count(TV_MOBILENET_V2, 32, 3, 1280, 10), "2.24M"],
    ("mobilenetv2_tv", 100): [cifar_count(TV_MOBILENET_V2, 32, 3, 1280, 100), "2.35M"],
    ("shufflenetv2_tv", 10): [cifar_count(TV_SHUFFLENET_V2_X1_0, 24, 3, 1024, 10), "1.26M"],
    ("shufflenetv2_tv", 100): [cifar_count(TV_SHUFFLENET_V2_X1_0, 24, 3, 1024, 100), "1.36M"],
}


@pytest.fixture(
    scope="module",  # each model is built once per class count and shared by the tests below
    params=[(name, classes) for name in CIFAR_MODELS for classes in (10, 100)],
    ids=lambda case: f"{case[0]}-{case[1]}",
)
def built(request):
    name, classes = request.param
    torch.manual_seed(0)
    return name, classes, create_model(name, num_classes=classes, input_shape=CIFAR)


def test_every_cifar_model_is_registered():
    assert set(CIFAR_MODELS) <= set(list_models())


def test_parameter_count_matches_the_reference(built):
    name, classes, model = built
    count = sum(p.numel() for p in model.parameters())
    for expected in PARAM_COUNTS[name, classes]:
        if isinstance(expected, str):  # "11.2M": compare at the figure's own precision
            digits = len(expected.rstrip("M").partition(".")[2])
            assert f"{count / 1e6:.{digits}f}M" == expected, (name, classes, count)
        else:
            assert count == expected, (name, classes, count)


def test_forward_and_backward_on_a_cifar_batch(built):
    _, classes, model = built
    model.train()
    out = model(torch.randn(2, *CIFAR))
    assert out.shape == (2, classes)
    loss = F.cross_entropy(out, torch.tensor([0, classes - 1]))
    assert torch.isfinite(loss)
    loss.backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == CIFAR[0]  # the layer that sees the image
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_options_and_shapes_are_checked():
    with pytest.raises(ConfigError, match="has no option 'widht'"):
        create_model("resnet18", 10, CIFAR, widht=2)
    with pytest.raises(ConfigError, match="it takes: width, dropout"):
        create_model("cnn", 10, CIFAR, depth=4)
    with pytest.raises(ConfigError, match=r"takes images: input_shape must be \(channels, height"):
        create_model("mobilenetv2", 10, (1, 40))
    with pytest.raises(ConfigError, match="height and width ≥ 8"):
        create_model("cnn", 10, (3, 4, 4))


def test_cnn_options_change_the_network():
    small = create_model("cnn", 10, CIFAR, width=16, dropout=0.5)
    assert small.classifier[1].in_features == 64 * 4 * 4  # 4 × width channels on 4×4 maps
    assert small.classifier[4].p == 0.5
    gray = create_model("resnet18", 10, (1, 28, 28))  # other image shapes work too
    assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 10)
