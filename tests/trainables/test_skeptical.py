"""The skeptical student (Kundu et al., NeurIPS 2021): its loss against the authors' code and by
hand, its students' exits against the code's networks, its warm-up, and where it may run."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _hand import kl, softmax

from trainables.attacks import attack_suite, create_attack, resolve_attacks
from trainables.data import DatasetSpec
from trainables.exits import MultiExit, create_with_exits, has_exits, models_with_exits, with_exits
from trainables.loop import Schedule
from trainables.losses import skeptical_loss
from trainables.models import create_model
from trainables.phases import ModelSpec, PhaseConfig
from undistill.errors import ConfigError


def loss_fn_kd(outputs, labels, teacher_outputs, epoch, params):
    """Verbatim from ksouvik52/Skeptical2021, train_kd_to_SD.py (the docstring dropped)."""
    alpha = params.alpha
    T = params.temperature
    loc = params.loc
    if (epoch > params.kd_delay):
        KD_loss = nn.KLDivLoss(reduction='batchmean')(F.log_softmax(outputs[loc]/T, dim=1),
                    F.softmax(teacher_outputs/T, dim=1))* (alpha * T * T) + \
              nn.CrossEntropyLoss()(outputs[loc], labels) * (1. - alpha)  +\
              (0.3*nn.KLDivLoss(reduction='batchmean')(F.log_softmax(outputs[1]/T, dim=1),
                    F.softmax(outputs[0]/T, dim=1)) +  0.7*nn.CrossEntropyLoss()(outputs[1], labels)) + \
              nn.CrossEntropyLoss()(outputs[0], labels)
    else:
        KD_loss = nn.CrossEntropyLoss()(outputs[0], labels)
    return KD_loss


def test_the_loss_by_hand_on_one_sample():
    final, deep, shallow, teacher, y, alpha, T = [2.0, 0.0, -1.0], [1.0, 1.5, 0.0], [0.0, 0.5, 1.0], \
        [3.0, 1.0, 0.0], 0, 0.9, 4.0
    ce = lambda z: -math.log(softmax(z)[y])  # noqa: E731
    expected = (alpha * T * T * kl(softmax(teacher, T), softmax(shallow, T)) + (1 - alpha) * ce(shallow)
                + 0.3 * kl(softmax(final, T), softmax(deep, T)) + 0.7 * ce(deep) + ce(final))
    got = skeptical_loss([torch.tensor([z]) for z in (final, deep, shallow)], torch.tensor([teacher]),
                         torch.tensor([y]), alpha=alpha, temperature=T, kd_exit=2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the self-distillation KL goes from the final exit to the deepest auxiliary one, not back
    backwards = expected - 0.3 * kl(softmax(final, T), softmax(deep, T)) + 0.3 * kl(softmax(deep, T),
                                                                                          softmax(final, T))
    assert abs(got.item() - backwards) > 1e-4


@pytest.mark.parametrize("loc", [1, 2, 3])
def test_the_loss_and_its_gradients_equal_the_authors_code(loc):
    gen = torch.Generator().manual_seed(loc)
    outputs = [torch.randn(16, 10, generator=gen, requires_grad=True) for _ in range(4)]
    teacher, labels = torch.randn(16, 10, generator=gen) * 3, torch.randint(0, 10, (16,), generator=gen)
    params = SimpleNamespace(alpha=0.9, temperature=4.0, loc=loc, kd_delay=2)

    theirs = loss_fn_kd(outputs, labels, teacher, 3, params)
    their_grads = torch.autograd.grad(theirs, outputs, allow_unused=True)
    ours = skeptical_loss(outputs, teacher, labels, alpha=0.9, temperature=4.0, kd_exit=loc)
    our_grads = torch.autograd.grad(ours, outputs, allow_unused=True)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for a, b in zip(our_grads, their_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    assert our_grads[0].abs().sum() > 0  # the final exit also learns from the KL it teaches by
    # within the warm-up the code trains the final exit on the labels alone: the attack's warm-up loss
    warm = loss_fn_kd(outputs, labels, teacher, 2, params)
    assert warm.item() == pytest.approx(F.cross_entropy(outputs[0], labels).item())


# the authors' networks' parameter counts (resnet_self.resnet18/50, MobileNetV2_self), 10 and 100 classes
CODE_PARAMETERS = {"resnet18": (12_098_664, 12_283_344), "resnet50": (37_688_936, 38_426_576),
                   "mobilenetv2": (7_312_648, 7_773_808)}


@pytest.mark.parametrize("arch", sorted(CODE_PARAMETERS))
def test_cifar_students_with_exits_have_the_codes_parameters_and_four_exits(arch):
    for classes, expected in zip((10, 100), CODE_PARAMETERS[arch], strict=True):
        model = create_with_exits(arch, classes, (3, 32, 32))
        assert isinstance(model, MultiExit)
        assert sum(p.numel() for p in model.parameters()) == expected
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    exits = model.exits(x)
    assert [tuple(z.shape) for z in exits] == [(2, 100)] * 4
    torch.testing.assert_close(exits[0], model(x))  # the final exit is the network's own output
    torch.testing.assert_close(model(x), model.backbone(x))


def test_mnist1d_students_exits_and_the_ones_without():
    cnn = create_with_exits("cnn1d", 10, (1, 40), width=8)
    mlp = create_with_exits("mlp", 10, (1, 40), hidden=32)
    x = torch.randn(5, 1, 40)
    assert len(cnn.exits(x)) == 3 and len(mlp.exits(x)) == 2
    assert {"cnn1d", "mlp", "resnet18", "resnet50", "mobilenetv2"} <= set(models_with_exits())
    assert not has_exits("shufflenetv2") and not has_exits("resnetc20")
    with pytest.raises(ConfigError, match="no intermediate exits"):
        with_exits("resnetc20", create_model("resnetc20", 10, (3, 32, 32)), 10, (3, 32, 32))
    with pytest.raises(ConfigError, match="model 'mlp' has no intermediate exits"):
        create_with_exits("mlp", 10, (1, 40), depth=1)


def _table(**skeptical):
    return {"kd_temperatures": [4.0], "kd_alpha": 0.9, "skeptical": skeptical}


def test_preset_keys_defaults_and_one_line_errors():
    resolved = resolve_attacks(_table(temperatures=[4, 1.0]))
    assert resolved["skeptical"] == {"temperatures": [1.0, 4.0], "alpha": 0.9, "kd_exit": 2, "kd_delay": 0}
    suite = attack_suite(resolved)
    assert [a.label for a in suite] == ["kd-T4", "skeptical-T1", "skeptical-T4"]
    assert suite[1].needs_exits and not suite[1].trains_on_real_data
    for bad, says in [({}, "missing required key 'temperatures'"), ({"temperatures": []}, "must list temperatures"),
                      ({"temperatures": [4.0], "kd_exit": 0}, "kd_exit must be within \\[1, 100\\], got 0"),
                      ({"temperatures": [4.0], "kd_delay": -1}, "kd_delay must be within \\[0, 100000\\], got -1"),
                      ({"temperatures": [4.0], "alpha": 1.5}, "within \\[0, 1\\]"),
                      ({"temperatures": [4.0], "loc": 2}, "unknown key 'loc'")]:
        with pytest.raises(ConfigError, match=says):
            resolve_attacks(_table(**bad))


def test_a_student_without_exits_cannot_face_it():
    ds = DatasetSpec("mnist1d", num_samples=400)
    schedule = Schedule("adamw", 0.01, 0.0, 1, 64, "constant")
    attack = create_attack("skeptical", temperature=4.0)
    PhaseConfig("attack", ds, ModelSpec.of("cnn1d"), schedule, 0, teacher_model=ModelSpec.of("cnn1d"), attack=attack)
    with pytest.raises(ConfigError, match="needs a student with intermediate exits"):
        PhaseConfig("attack", ds, ModelSpec.of("mlp", depth=1), schedule, 0, teacher_model=ModelSpec.of("cnn1d"),
                    attack=attack)


def test_warm_up_epochs_train_on_labels_then_the_full_loss_and_survive_a_resume():
    from trainables.attacks.skeptical import _WarmUpSteps

    calls = []
    data = SimpleNamespace(train_x=torch.randn(8, 1, 40), train_y=torch.zeros(8, dtype=torch.long),
                           augment=None, prepare=lambda x: x)

    def loss(tag):
        def fn(m, x, y, idx):
            calls.append(tag)
            return m(x).sum() * 0
        return fn

    model = create_with_exits("mlp", 2, (1, 40), hidden=8)  # one auxiliary exit
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = _WarmUpSteps(data, loss("warm"), 8, after=loss("full"), delay=1, wanted_exit=2)
    for _ in range(2):
        steps.epoch(model, opt, lambda: None, torch.Generator())
    assert steps.facts() == {"kd_exit": 1, "distilled_epochs": 0}  # its shallowest; the warm-up only
    resumed = _WarmUpSteps(data, loss("warm"), 8, after=loss("full"), delay=1, wanted_exit=2)
    resumed.load_state_dict(steps.state_dict())  # as a checkpoint brings it back
    assert resumed.facts() == steps.facts()  # even where no epoch is left to run
    resumed.epoch(model, opt, lambda: None, torch.Generator())
    assert calls == ["warm", "warm", "full"]  # epochs 0 and 1 (≤ kd_delay), then past it
    assert resumed.facts() == {"kd_exit": 1, "distilled_epochs": 1}


def test_building_the_exits_leaves_the_backbone_as_the_plain_model_is():
    torch.manual_seed(0)
    plain = create_model("cnn1d", 10, (1, 40), width=8)
    torch.manual_seed(0)
    with_heads = create_with_exits("cnn1d", 10, (1, 40), width=8)
    for (name, a), b in zip(plain.state_dict().items(), with_heads.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics alike


def test_a_confident_final_exit_gives_the_code_nan_gradients_and_ours_finite_ones():
    """Where a final-exit probability underflows to 0 the code's KL target has gradient log 0:
    NaN. Ours takes the target in log space: finite, and the value is the code's."""
    final = torch.tensor([[120.0, 0.0, -5.0], [1.0, 2.0, 0.5]], requires_grad=True)
    deep = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    teacher, labels = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]), torch.tensor([0, 1])
    outputs = [final, deep]
    theirs = loss_fn_kd(outputs, labels, teacher, 1, SimpleNamespace(alpha=0.9, temperature=1.0, loc=1, kd_delay=0))
    (their_grad,) = torch.autograd.grad(theirs, final)
    assert torch.isnan(their_grad).any()
    ours = skeptical_loss(outputs, teacher, labels, alpha=0.9, temperature=1.0, kd_exit=1)
    (our_grad,) = torch.autograd.grad(ours, final)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6) and torch.isfinite(our_grad).all()
    torch.testing.assert_close(our_grad[1], their_grad[1])  # the row without an underflow: the code's


def test_cifar_presets_give_it_the_students_with_exits_only_and_a_preset_without_any_fails(tmp_path):
    from orchestrator.plan import make_plan
    from search_spaces import load_preset

    plan = make_plan(load_preset("cifar100-resnet18"))  # ShuffleNetV2, MobileNetV2, ResNet-18
    faced = {t.model.arch for t in plan.attack_templates if t.attack.name == "skeptical"}
    assert faced == {"mobilenetv2", "resnet18"}
    temps = {t.attack.temperature for t in plan.attack_templates if t.attack.name == "skeptical"}
    assert temps == {1.0, 4.0, 10.0, 20.0}
    assert {t.model.arch for t in plan.attack_templates if t.attack.name == "kd"} == {
        "shufflenetv2", "mobilenetv2", "resnet18"}
    assert "ast" in load_preset("cifar10-resnet18").space.names

    from tests._presets import SMOKE
    text = SMOKE.replace('arch = "mlp"\nhidden = 32', 'arch = "mlp"\nhidden = 32\ndepth = 1')
    text = text.replace('arch = "cnn1d"\nwidth = 8', 'arch = "mlp"\nhidden = 16\ndepth = 1')
    text = text.replace("[search]", "[attack.skeptical]\ntemperatures = [4.0]\n\n[search]", 1)
    config = tmp_path / "flat.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="needs a student with intermediate exits and the preset has none"):
        load_preset(config_file=config)  # when the preset is read: before Ray or any phase
