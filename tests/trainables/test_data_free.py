"""The attack suite's own pieces: DAFL's generator losses on hand-computed values, KD at the
attacker's temperatures and the label-smoothed baseline, and a tiny real DAFL run."""

import math

import pytest
import torch

from trainables.data import DatasetSpec, load_dataset
from trainables.data_free import (
    DataFreeSpec,
    activation_loss,
    data_free_split,
    generator_loss,
    information_entropy_loss,
    make_generator,
    one_hot_loss,
    penultimate,
    train_generator,
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


def test_information_entropy_loss_is_minus_the_entropy_of_the_mean_prediction():
    # two samples, each certain of a different class: the mean is uniform, entropy log 2
    certain = torch.tensor([[30.0, 0.0], [0.0, 30.0]])
    assert information_entropy_loss(certain).item() == pytest.approx(-math.log(2), abs=1e-6)
    # both certain of the same class: entropy 0
    assert information_entropy_loss(torch.tensor([[30.0, 0.0], [30.0, 0.0]])).item() == pytest.approx(0, abs=1e-6)


def test_the_generator_loss_through_a_stingy_teacher_is_finite_and_has_finite_gradients():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.2, 2.0, 0.1, 0.0]], requires_grad=True)
    features = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    seen = create_defense("stingy").transform(logits, {"k": 2})  # class 3 is masked in both rows: mean 0
    spec = DataFreeSpec(activation_weight=0.1, entropy_weight=5.0)
    loss = generator_loss(seen, features, spec)
    mean = torch.softmax(seen, 1).mean(0)
    want = (one_hot_loss(seen) + 0.1 * -1.125 + 5 * sum(p * math.log(p) for p in mean.tolist() if p > 0))
    assert loss.item() == pytest.approx(want.item())
    loss.backward()
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


def test_the_generators_loss_decreases_on_a_tiny_run(teacher_and_data):
    teacher, data = teacher_and_data
    samples, losses = train_generator(teacher, _identity, data.input_shape,
                                      DataFreeSpec(generator_steps=60, batch_size=64), 500, 0,
                                      torch.device("cpu"))
    assert samples.shape == (500, *data.input_shape)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.5, (first, last)  # measured: -9.93 -> -10.65


def test_the_data_free_split_keeps_real_evaluation_data_and_only_synthetic_training_data(teacher_and_data):
    teacher, data = teacher_and_data
    split, seen, stats = data_free_split(data, teacher, _identity,
                                         DataFreeSpec(generator_steps=30, batch_size=64), 0)
    assert split.train_x.shape == data.train_x.shape and not torch.equal(split.train_x, data.train_x)
    assert torch.equal(split.val_x, data.val_x) and torch.equal(split.test_y, data.test_y)
    assert seen.shape == (len(split.train_y), 10) and torch.equal(seen.argmax(1), split.train_y)
    assert stats["generator_loss_last"] < stats["generator_loss_first"]
    assert stats["synthetic_classes"] >= 5  # the entropy term spreads samples over the classes


def test_the_synthetic_set_has_every_sample_asked_for_and_holds_only_them(teacher_and_data):
    teacher, data = teacher_and_data
    # 5 steps of 8 samples cannot give 100: the generator's end point draws the rest
    samples, _ = train_generator(teacher, _identity, data.input_shape,
                                 DataFreeSpec(generator_steps=5, batch_size=8), 100, 0, torch.device("cpu"))
    assert samples.shape == (100, *data.input_shape) and torch.isfinite(samples).all()
    # each step keeps a copy of its slice, not a view that holds the whole batch
    many, _ = train_generator(teacher, _identity, data.input_shape,
                              DataFreeSpec(generator_steps=20, batch_size=64), 40, 0, torch.device("cpu"))
    assert many.untyped_storage().nbytes() == many.numel() * 4


def test_the_plan_runs_every_attack_on_every_student_and_the_baselines_upstream():
    from orchestrator.plan import make_plan
    from search_spaces import load_preset

    preset = load_preset("smoke")
    plan = make_plan(preset)
    attacks = [(c.attack.label, c.model.label, c.attack.kd_alpha) for c in plan.attack_templates]
    assert attacks == [(a, s, 1.0 if a == "dafl" else 0.9) for s in ("mlp(hidden=32)", "cnn1d(width=8)")
                       for a in ("kd-T4", "kd-T20", "dafl")]
    assert [n.config.label_smoothing for n in plan.smoothed] == [0.1, 0.1]
    assert [n.name for n in plan.upstream][:5] == ["teacher", "scratch mlp(hidden=32)", "scratch cnn1d(width=8)",
                                                   "smoothed mlp(hidden=32)", "smoothed cnn1d(width=8)"]
    assert all(n.teacher_key == plan.teacher.key for n in plan.normal_attacks) and len(plan.normal_attacks) == 6


def _identity(z):
    return z
