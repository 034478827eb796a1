"""The attack suite's own pieces: DAFL's generator losses on hand-computed values, KD at the
attacker's temperatures and the label-smoothed baseline, and a tiny real DAFL run."""

import math

import pytest
import torch

from trainables.data import DatasetSpec, load_dataset
from trainables.data_free import (
    DataFreeSpec,
    DataFreeSteps,
    activation_loss,
    generator_losses,
    information_entropy_loss,
    make_generator,
    one_hot_loss,
    penultimate,
)
from trainables.defenses import create_defense
from trainables.loop import Schedule, train
from trainables.losses import cross_entropy, kd_loss
from trainables.models import create_model


def test_one_hot_loss_is_cross_entropy_against_the_teachers_own_argmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # rows: -log softmax at the argmax = log(1 + e^-2) and log(1 + e^-1)
    assert one_hot_loss(logits).item() == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2)


def test_activation_loss_is_minus_the_mean_absolute_feature():
    assert activation_loss(torch.tensor([[1.0, -2.0], [3.0, 0.0]])).item() == pytest.approx(-1.5)


def test_information_entropy_loss_is_minus_the_entropy_of_the_mean_prediction_in_decimal_digits():
    # two samples, each certain of a different class: the mean is uniform, entropy log10 2 (the
    # code's torch.log10)
    certain = torch.tensor([[30.0, 0.0], [0.0, 30.0]])
    assert information_entropy_loss(certain).item() == pytest.approx(-math.log10(2), abs=1e-6)
    # both certain of the same class: entropy 0
    assert information_entropy_loss(torch.tensor([[30.0, 0.0], [30.0, 0.0]])).item() == pytest.approx(0, abs=1e-6)


def test_the_generator_losses_through_a_stingy_teacher_are_finite_and_have_finite_gradients():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.2, 2.0, 0.1, 0.0]], requires_grad=True)
    features = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    seen = create_defense("stingy").transform(logits, {"k": 2})  # class 3 is masked in both rows: mean 0
    spec = DataFreeSpec(one_hot_weight=0.5, activation_weight=0.1, entropy_weight=20.0)
    losses = generator_losses(seen, features, spec)
    mean = torch.softmax(seen, 1).mean(0)
    entropy = sum(p * math.log10(p) for p in mean.tolist() if p > 0)  # 0·log 0 counts 0
    assert losses.entropy.item() == pytest.approx(entropy)
    assert losses.total.item() == pytest.approx(0.5 * one_hot_loss(seen).item() + 0.1 * -1.125 + 20 * entropy)
    losses.total.backward()
    assert torch.isfinite(logits.grad).all()


def test_kd_at_each_temperature_matches_hand_computation():
    student, teacher, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([1])
    for t in (1.0, 4.0, 20.0):
        p = torch.softmax(teacher / t, 1)[0]
        q = torch.softmax(student / t, 1)[0]
        kl = sum(p[i] * math.log(p[i] / q[i]) for i in range(2))
        ce = -math.log(torch.softmax(student, 1)[0, 1])
        want = 0.9 * t * t * kl + 0.1 * ce
        assert kd_loss(student, teacher, y, alpha=0.9, temperature=t).item() == pytest.approx(float(want), rel=1e-5)


def test_the_label_smoothed_baseline_loss_matches_hand_computation():
    # (1 − ε)·(−log p_y) + ε·mean over classes of (−log p_k), with p = softmax([2, 0])
    logp = torch.log_softmax(torch.tensor([2.0, 0.0]), 0)
    want = 0.9 * -logp[0] + 0.1 * -(logp[0] + logp[1]) / 2
    got = cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), label_smoothing=0.1)
    assert got.item() == pytest.approx(want.item())


def test_penultimate_records_the_input_of_the_last_linear_layer():
    model = create_model("mlp", 10, (1, 40), hidden=8, depth=2)
    with penultimate(model) as seen:
        model(torch.randn(3, 1, 40))
    assert seen["features"].shape == (3, 8)


@pytest.mark.parametrize("shape", [(1, 40), (3, 32, 32)])
def test_generators_draw_inputs_of_the_datasets_shape(shape):
    assert make_generator(16, shape)(torch.randn(4, 16)).shape == (4, *shape)


def test_the_image_generator_is_the_codes_with_its_parameter_count():
    # DAFL's CIFAR generator at --latent_dim 1000 --channels 3: 1000·8192 + 8192 (l1), 256 (BN),
    # 147,584 + 256 (conv, BN), 73,792 + 128 (conv, BN), 1,731 (conv); the last BN has no
    # parameters. Counted from the code's Generator class.
    generator = make_generator(1000, (3, 32, 32))
    assert sum(p.numel() for p in generator.parameters()) == 8_423_939
    eps = [m.eps for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert eps == [1e-5, 0.8, 0.8, 1e-5]  # nn.BatchNorm2d(128, 0.8): eps, the code's second argument


class _TinyNet(torch.nn.Module):
    """A small CIFAR-shaped network with the code's `forward(x, out_feature=True)` interface,
    which its ResNets use to hand the generator their penultimate features."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.hidden = torch.nn.Linear(4 * 8 * 8, 16)
        self.linear = torch.nn.Linear(16, classes)

    def forward(self, x, out_feature=False):
        feature = torch.relu(self.hidden(torch.relu(self.bn(self.conv(x))).flatten(1)))
        out = self.linear(feature)
        return (out, feature) if out_feature else out


def _reference_steps(generator, teacher, net, z_batches, oh, ie, a, lr_g, lr_s):
    """DAFL-train.py's loop body, transcribed (CIFAR: Adam for the generator, SGD for the
    student), over batches of noise `z_batches`."""
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=lr_g)
    optimizer_s = torch.optim.SGD(net.parameters(), lr=lr_s, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def kdloss(y, teacher_scores):
        p = torch.nn.functional.log_softmax(y, dim=1)
        q = torch.nn.functional.softmax(teacher_scores, dim=1)
        return torch.nn.functional.kl_div(p, q, reduction="sum") / y.shape[0]  # size_average=False

    for z in z_batches:
        net.train()
        optimizer_g.zero_grad()
        optimizer_s.zero_grad()
        gen_imgs = generator(z)
        outputs_t, features_t = teacher(gen_imgs, out_feature=True)
        pred = outputs_t.data.max(1)[1]
        loss_activation = -features_t.abs().mean()
        loss_one_hot = criterion(outputs_t, pred)
        softmax_o_t = torch.nn.functional.softmax(outputs_t, dim=1).mean(dim=0)
        loss_information_entropy = (softmax_o_t * torch.log10(softmax_o_t)).sum()
        loss = loss_one_hot * oh + loss_information_entropy * ie + loss_activation * a
        loss_kd = kdloss(net(gen_imgs.detach()), outputs_t.detach())
        loss += loss_kd
        loss.backward()
        optimizer_g.step()
        optimizer_s.step()


def _hand_terms(logits: torch.Tensor, features: torch.Tensor, student: torch.Tensor) -> dict[str, float]:
    """The three generator terms and the student's KD term at T = 1, in plain Python floats."""
    rows, students = logits.tolist(), student.tolist()
    one_hot = kd = 0.0
    mean = [0.0] * len(rows[0])
    for row, srow in zip(rows, students, strict=True):
        top = max(row)
        norm = sum(math.exp(v - top) for v in row)
        probs = [math.exp(v - top) / norm for v in row]
        one_hot -= math.log(max(probs))  # CE against its own argmax
        stop = max(srow)
        snorm = sum(math.exp(v - stop) for v in srow)
        kd += sum(p * (math.log(p) - math.log(math.exp(v - stop) / snorm)) for p, v in zip(probs, srow, strict=True))
        mean = [m + p / len(rows) for m, p in zip(mean, probs, strict=True)]
    flat = [abs(v) for row in features.tolist() for v in row]
    return {"one_hot": one_hot / len(rows), "entropy": sum(p * math.log10(p) for p in mean),
            "activation": -sum(flat) / len(flat), "kd": kd / len(rows)}


def test_dafl_steps_on_cifar_shaped_data_are_the_codes_term_by_term():
    """Three joint steps with the code's CIFAR-10 weights (one-hot 0.05, entropy 5, activation
    0.01) and optimizers, on tiny CIFAR-shaped networks: each loss term of the first step equals
    its hand computation from the teacher's outputs, and after three steps the generator and the
    student hold the weights the code's loop gives them."""
    import copy

    from trainables.loop import optimizer_for

    spec = DataFreeSpec(latent_dim=32, generator_lr=0.02, one_hot_weight=0.05, entropy_weight=5.0,
                        activation_weight=0.01, iterations=3)
    schedule = Schedule(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=8,
                        lr_schedule="multistep", milestones=(800, 1600), epochs=2000)
    torch.manual_seed(0)
    teacher, student = _TinyNet().eval(), _TinyNet()
    for p in teacher.parameters():
        p.requires_grad_(False)
    steps = DataFreeSteps(teacher, lambda z: z, (3, 32, 32), spec, schedule.batch_size, seed=5,
                          device=torch.device("cpu"))
    generator0, student0 = copy.deepcopy(steps.generator), copy.deepcopy(student)
    # the first step's batch, scored by hand before anything trains
    z = torch.randn(8, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        images = copy.deepcopy(generator0).train()(z)
        logits, features = teacher(images, out_feature=True)
        hand = _hand_terms(logits, features, copy.deepcopy(student0).train()(images))
    hand["total"] = 0.05 * hand["one_hot"] + 5 * hand["entropy"] + 0.01 * hand["activation"]

    opt = optimizer_for(student.parameters(), schedule)
    non_finite = steps.epoch(student, opt, lambda: None, torch.Generator().manual_seed(0))
    assert not non_finite
    for term, value in hand.items():
        assert steps.first[term] == pytest.approx(value, rel=1e-5, abs=1e-6), term

    # the code's loop on the same start and the same noise
    noise = torch.Generator().manual_seed(5)
    batches = [torch.randn(8, 32, generator=noise) for _ in range(3)]
    _reference_steps(generator0, teacher, student0, batches, oh=0.05, ie=5, a=0.01, lr_g=0.02, lr_s=0.1)
    for ours, theirs in ((steps.generator, generator0), (student, student0)):
        mine, code = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == code.keys()  # the generator's names are the code's: its weights load
        for name in mine:
            assert torch.allclose(mine[name].float(), code[name].float(), rtol=1e-4, atol=1e-6), name


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory):
    data = load_dataset(DatasetSpec(num_samples=1200), torch.device("cpu"),
                        cache_dir=tmp_path_factory.mktemp("data"))
    torch.manual_seed(0)
    teacher = create_model("cnn1d", 10, data.input_shape, width=16)
    train(teacher, data, lambda m, x, y, i: cross_entropy(m(x), y), Schedule(epochs=6, batch_size=64), 0)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, data


TINY = DataFreeSpec(generator_width=32, generator_lr=1e-3, iterations=20)
TINY_SCHEDULE = Schedule(optimizer="adam", lr=5e-3, weight_decay=0.0, epochs=4, batch_size=64, lr_schedule="constant")


def _dafl_student(teacher, data, spec=TINY, schedule=TINY_SCHEDULE, seed=0, **kwargs):
    torch.manual_seed(seed)
    student = create_model("cnn1d", 10, data.input_shape, width=8)
    steps = DataFreeSteps(teacher, _identity, data.input_shape, spec, schedule.batch_size, seed, torch.device("cpu"))
    return student, steps, train(student, data, None, schedule, seed, steps=steps, **kwargs)


def test_a_tiny_dafl_run_trains_generator_and_student_together(teacher_and_data):
    teacher, data = teacher_and_data
    _, steps, result = _dafl_student(teacher, data)
    assert result.status == "ok" and result.epochs_run == 4
    facts = steps.facts()["generator"]
    assert facts["loss_last"] < facts["loss_first"], facts
    assert facts["synthetic_classes"] >= 5  # the entropy term spreads samples over the classes
    assert result.test_acc > 20  # ten classes: a clone from generated signals alone beats chance


class _StopAfterTwo(DataFreeSteps):
    """DAFL's steps, interrupted as their third epoch starts (as a kill would)."""

    epochs_run = 0

    def epoch(self, *args):
        self.epochs_run += 1
        if self.epochs_run > 2:
            raise KeyboardInterrupt
        return super().epoch(*args)


def test_a_resumed_dafl_run_goes_on_with_its_generator_where_it_stopped(teacher_and_data, tmp_path):
    teacher, data = teacher_and_data
    whole, _, done = _dafl_student(teacher, data)
    checkpoint = tmp_path / "dafl.ckpt"

    torch.manual_seed(0)
    stopped = _StopAfterTwo(teacher, _identity, data.input_shape, TINY, 64, 0, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):
        train(create_model("cnn1d", 10, data.input_shape, width=8), data, None, TINY_SCHEDULE, 0,
              steps=stopped, checkpoint=checkpoint, checkpoint_tag="t", checkpoint_every_s=-1.0)
    # a fresh process: other initial weights for both networks, all replaced by the checkpoint's
    _, steps, resumed = _dafl_student(teacher, data, seed=99, checkpoint=checkpoint, checkpoint_tag="t")
    assert resumed.resumed_from_epoch == 2 and resumed.test_acc == done.test_acc
    for name, value in done.state_dict.items():
        assert torch.equal(value, resumed.state_dict[name]), name


def test_the_plan_runs_every_attack_on_every_student_and_the_baselines_upstream():
    from orchestrator.plan import make_plan
    from search_spaces import load_preset

    preset = load_preset("smoke")
    plan = make_plan(preset)
    attacks = [(c.attack.label, c.model.label, c.attack.kd_alpha) for c in plan.attack_templates]
    assert attacks == [(a, s, 0.9 if a.startswith("kd-") else 1.0) for s in ("mlp(hidden=32)", "cnn1d(width=8)")
                       for a in ("kd-T4", "kd-T20", "unlabelled-T4", "dafl")]
    assert [n.config.label_smoothing for n in plan.smoothed] == [0.1, 0.1]
    assert [n.name for n in plan.upstream][:5] == ["teacher", "scratch mlp(hidden=32)", "scratch cnn1d(width=8)",
                                                   "smoothed mlp(hidden=32)", "smoothed cnn1d(width=8)"]
    assert all(n.teacher_key == plan.teacher.key for n in plan.normal_attacks) and len(plan.normal_attacks) == 8


def _identity(z):
    return z


def test_dafl_on_several_students_trains_them_as_one_group_each_as_it_would_alone(tmp_path):
    """The generator never sees the students, so one generator serves them all: the DAFL phases
    of one teacher on different student architectures are one group (on the CPU too), and each
    student's result is the one it gets alone."""
    from trainables.attacks import create_attack
    from trainables.phases import ModelSpec, PhaseConfig, PhaseJob, batch_groups, run_attack_batch, run_phase

    spec, teacher_model = DatasetSpec(num_samples=600), ModelSpec.of("cnn1d", width=8)
    cache, weights = tmp_path / "data", tmp_path / "teacher" / "model.pt"
    run_phase(PhaseConfig("teacher", spec, teacher_model, Schedule(epochs=2, batch_size=64), 0), tmp_path / "teacher",
              data_cache=cache)
    schedule = Schedule(optimizer="adam", lr=5e-3, weight_decay=0.0, epochs=3, batch_size=32)
    dafl = create_attack("dafl", spec=DataFreeSpec(generator_width=16, generator_lr=1e-3, iterations=5),
                         schedule=schedule)
    cfgs = [PhaseConfig("attack", spec, ModelSpec.of(arch, **options), schedule, 0, teacher_model=teacher_model,
                        attack=dafl) for arch, options in (("mlp", {"hidden": 16}), ("cnn1d", {"width": 8}))]
    jobs = [PhaseJob(c.model.label, c, c.key("t"), "t") for c in cfgs]
    assert [len(group) for group in batch_groups(jobs)] == [2]
    together = run_attack_batch(cfgs, teacher_weights=weights, data_cache=cache)
    for cfg, grouped in zip(cfgs, together, strict=True):
        alone = run_phase(cfg, tmp_path / cfg.model.arch, teacher_weights=weights, data_cache=cache)
        assert grouped["batched"] and not alone["batched"] and grouped["batch_size"] == 2
        assert (grouped["test_acc"], grouped["best_epoch"]) == (alone["test_acc"], alone["best_epoch"])
        assert grouped["generator"] == alone["generator"]  # the same generator, and its KD loss


def test_a_resumed_dafl_group_goes_on_with_its_generator_where_it_stopped(teacher_and_data, tmp_path):
    from trainables.stacked import train_stacked

    teacher, data = teacher_and_data

    def group(seed):
        torch.manual_seed(seed)
        models = [create_model("mlp", 10, data.input_shape, hidden=16),
                  create_model("cnn1d", 10, data.input_shape, width=8)]
        return models, DataFreeSteps(teacher, _identity, data.input_shape, TINY, 64, 0, torch.device("cpu"))

    models, steps = group(0)
    whole = train_stacked(models, data, [None, None], TINY_SCHEDULE, 0, steps=steps)
    checkpoint = tmp_path / "group.ckpt"

    models, _ = group(0)
    stopped = _StopAfterTwo(teacher, _identity, data.input_shape, TINY, 64, 0, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):
        train_stacked(models, data, [None, None], TINY_SCHEDULE, 0, steps=stopped, checkpoint=checkpoint,
                      checkpoint_tag="g", checkpoint_every_s=-1.0)
    models, steps = group(99)  # other initial weights: all replaced by the checkpoint's
    resumed = train_stacked(models, data, [None, None], TINY_SCHEDULE, 0, steps=steps, checkpoint=checkpoint,
                            checkpoint_tag="g")
    for done, again in zip(whole, resumed, strict=True):
        assert again.resumed_from_epoch == 2 and again.test_acc == done.test_acc
        for name, value in done.state_dict.items():
            assert torch.equal(value, again.state_dict[name]), name
