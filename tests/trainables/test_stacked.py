"""K students trained as one vectorised model (`trainables.stacked`) against the same students
trained one by one (`loop.train`), on real MNIST-1D data: the same accuracies (within 0.5
points) and the same weights up to floating-point reordering, BatchNorm included; divergence of
one student leaves the others alone; a killed batch resumes from its checkpoint."""

import math

import pytest
import torch

from trainables.data import DatasetSpec, load_dataset
from trainables.loop import Schedule, train
from trainables.losses import cross_entropy, kd_loss
from trainables.models import create_model
from trainables.stacked import train_stacked

SPEC = DatasetSpec(num_samples=3000)
SCHEDULE = Schedule(epochs=4, batch_size=64, lr=0.003)
# Every weight of a stack matches one by one to float32 rounding (measured: exactly, on the CPU
# here), except where no true gradient exists: a convolution's bias right before BatchNorm
# (BatchNorm subtracts it out again), whose gradient is rounding noise that Adam normalises into
# full steps, differently each way, and the running means that track that bias. Those drift by
# up to 0.05 after these 4 epochs, and the students' test logits with them by up to 0.004 (at
# lr 0.01, up to 0.2 and 0.15: enough to move a near-chance student's accuracy by 0.7 points).
WEIGHT_TOLERANCE = 1e-3
NO_TRUE_GRADIENT = ("features.0.bias", "features.3.bias", "features.6.bias")  # cnn1d's, before its BatchNorms


def _compared(name: str) -> bool:
    return name not in NO_TRUE_GRADIENT and not name.endswith("running_mean")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset(SPEC, torch.device("cpu"), cache_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def teacher_logits(data):
    torch.manual_seed(5)
    teacher = create_model("cnn1d", 10, (1, 40), width=16)
    train(teacher, data, _ce, Schedule(epochs=3, batch_size=64, lr=0.01), seed=5)
    teacher.eval()
    with torch.no_grad():
        return teacher(data.train_x)


def _ce(model, x, y, idx):
    return cross_entropy(model(x), y)


def _kd(logits, temperature):
    def loss_fn(model, x, y, idx):
        return kd_loss(model(x), logits[idx], y, alpha=0.9, temperature=temperature)
    return loss_fn


def _fresh(arch, seed=0):
    torch.manual_seed(seed)
    return create_model(arch, 10, (1, 40), **({"width": 8} if arch == "cnn1d" else {"hidden": 32}))


@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])  # cnn1d: BatchNorm's running statistics, stacked
def test_a_stack_trains_each_student_as_one_by_one_would(data, teacher_logits, arch):
    losses = [_kd(teacher_logits, t) for t in (1.0, 4.0, 10.0)] + [_ce]
    stacked = train_stacked([_fresh(arch) for _ in losses], data, losses, SCHEDULE, seed=2)
    for loss_fn, together in zip(losses, stacked, strict=True):
        alone = train(_fresh(arch), data, loss_fn, SCHEDULE, seed=2)
        assert together.status == alone.status == "ok"
        assert abs(together.test_acc - alone.test_acc) <= 0.5
        assert abs(together.val_acc - alone.val_acc) <= 0.5
        if together.best_epoch == alone.best_epoch:  # the same epoch's weights: compare them
            for name, weights in alone.state_dict.items():
                if _compared(name):
                    assert torch.allclose(together.state_dict[name].float(), weights.float(),
                                          atol=WEIGHT_TOLERANCE, rtol=0), name
    # and the students differ from one another: each had its own loss
    assert not torch.equal(stacked[0].state_dict[next(iter(stacked[0].state_dict))],
                           stacked[-1].state_dict[next(iter(stacked[-1].state_dict))])


def test_the_last_epochs_weights_match_one_by_one_exactly_enough(data, teacher_logits):
    """Best-epoch selection aside: after the same steps, the same weights."""
    schedule = Schedule(epochs=2, batch_size=64, lr=0.01, lr_schedule="constant")
    loss_fn = _kd(teacher_logits, 4.0)
    (together,) = train_stacked([_fresh("cnn1d")], data, [loss_fn], schedule, seed=4)
    alone = train(_fresh("cnn1d"), data, loss_fn, schedule, seed=4)
    assert together.best_epoch == alone.best_epoch
    # each student's learning curve is its own, as alone
    assert [e.epoch for e in together.epochs] == [e.epoch for e in alone.epochs] == [1, 2]
    for a, b in zip(together.epochs, alone.epochs, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3) and a.lr == b.lr
        # the same weights to within WEIGHT_TOLERANCE (below) may still put a validation sample
        # lying on a tie between two classes either side: two of its 240 samples, 0.83 points,
        # on this machine's CPU (AMD EPYC), none on the one this test was written on
        assert abs(a.val_acc - b.val_acc) <= 1.0
    worst = max((together.state_dict[n].float() - w.float()).abs().max().item()
                for n, w in alone.state_dict.items() if _compared(n))
    assert worst <= WEIGHT_TOLERANCE


def test_a_diverging_student_leaves_the_others_alone(data, teacher_logits):
    def exploding(model, x, y, idx):
        return cross_entropy(model(x), y) * float("inf")

    good = _kd(teacher_logits, 4.0)
    bad_first, good_after = train_stacked([_fresh("mlp"), _fresh("mlp")], data, [exploding, good], SCHEDULE, seed=2)
    alone = train(_fresh("mlp"), data, good, SCHEDULE, seed=2)
    assert bad_first.status == "diverged" and math.isnan(bad_first.test_acc) and bad_first.epochs_run == 1
    assert bad_first.epochs == () and len(good_after.epochs) == SCHEDULE.epochs  # its curve ends there
    assert good_after.status == "ok" and abs(good_after.test_acc - alone.test_acc) <= 0.5


def test_a_killed_batch_resumes_from_its_checkpoint(data, teacher_logits, tmp_path):
    losses = [_kd(teacher_logits, 1.0), _kd(teacher_logits, 10.0)]
    whole = train_stacked([_fresh("cnn1d") for _ in losses], data, losses, SCHEDULE, seed=1)
    checkpoint = tmp_path / "batch.ckpt"
    calls = {"n": 0}
    steps_per_epoch = math.ceil(len(data.train_y) / SCHEDULE.batch_size)

    def dies_in_epoch_three(model, x, y, idx):
        calls["n"] += 1
        if calls["n"] > 2 * steps_per_epoch + 1:
            raise KeyboardInterrupt  # the process is killed mid-epoch
        return losses[0](model, x, y, idx)

    with pytest.raises(KeyboardInterrupt):
        train_stacked([_fresh("cnn1d") for _ in losses], data, [dies_in_epoch_three, losses[1]], SCHEDULE, seed=1,
                      checkpoint=checkpoint, checkpoint_tag="batch", checkpoint_every_s=0.0)
    resumed = train_stacked([_fresh("cnn1d") for _ in losses], data, losses, SCHEDULE, seed=1,
                            checkpoint=checkpoint, checkpoint_tag="batch")
    for a, b in zip(whole, resumed, strict=True):
        assert b.resumed_from_epoch == 2 and a.test_acc == b.test_acc and a.best_epoch == b.best_epoch
        for name in a.state_dict:
            assert torch.equal(a.state_dict[name], b.state_dict[name])


def test_an_architecture_vmap_cannot_run_is_refused_before_training():
    """Dropout draws random numbers, which `vmap` refuses by default: such students train one by
    one (`run_batch` falls back; their rows say `batched: false`)."""
    from trainables.stacked import NotStackable, check_stackable

    check_stackable(_fresh("cnn1d"), torch.randn(2, 1, 40))  # BatchNorm and all: fine
    with pytest.raises(NotStackable, match="cannot train as a stack"):
        check_stackable(create_model("cnn", 10, (3, 32, 32), width=8, dropout=0.5), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("arch, options", [("mlp", {"hidden": 32}), ("mlp", {"hidden": 16, "depth": 3}),
                                           ("cnn1d", {"width": 8}), ("cnn1d", {"width": 6, "kernel": 7})])
def test_an_architectures_own_stacked_forward_is_vmaps(arch, options):
    """mlp and cnn1d run their stacks by their own `forward_stacked` (faster than vmap): the same
    logits, the same gradients for every student, and BatchNorm's running statistics updated
    alike, in training and in evaluation."""
    from trainables.stacked import StackedModel

    x = torch.randn(64, 1, 40, generator=torch.Generator().manual_seed(3))
    models = []
    for seed in range(3):  # different students, so that a mixed-up slice would show
        torch.manual_seed(seed)
        models.append(create_model(arch, 10, (1, 40), **options))
    own, vmapped = StackedModel(models), StackedModel(models, own_forward=False)
    assert (own.forward_name, vmapped.forward_name) == ("own", "vmap")
    for training in (True, False):
        own.train(training), vmapped.train(training)
        a, b = own.logits(x), vmapped.logits(x)
        assert a.shape == (3, 64, 10)
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
        if training:
            weights = torch.randn(3, 1, 10)  # a different loss per student
            (a * weights).sum().backward()
            (b * weights).sum().backward()
            for name in own.params:
                assert torch.allclose(own.params[name].grad, vmapped.params[name].grad, atol=1e-4, rtol=1e-4), name
        for name in own.buffers:
            assert torch.allclose(own.buffers[name].float(), vmapped.buffers[name].float(), atol=1e-6), name
    # and a student's slice is that student: its weights and statistics, in its own module
    alone = create_model(arch, 10, (1, 40), **options)
    alone.load_state_dict(own.state_dict(1))
    alone.eval()
    assert torch.allclose(own.logits(x)[1], alone(x), atol=1e-5)
