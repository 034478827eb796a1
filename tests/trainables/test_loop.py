"""The training loop on real MNIST-1D data: determinism, resume, divergence."""

import io
import math

import pytest
import torch

from trainables.checkpoint import MAGIC, load_checkpoint
from trainables.data import DatasetSpec, load_dataset
from trainables.loop import Schedule, train
from trainables.losses import cross_entropy
from trainables.models import create_model

SPEC = DatasetSpec(num_samples=600)
SCHEDULE = Schedule(epochs=4, batch_size=64, lr=0.01)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_dataset(SPEC, torch.device("cpu"), cache_dir=tmp_path_factory.mktemp("data"))


def _ce(model, x, y, idx):
    return cross_entropy(model(x), y)


def _fresh(seed=0):
    torch.manual_seed(seed)
    return create_model("cnn1d", 10, (1, 40), width=8)


def test_splits_are_disjoint_and_sized(data):
    assert len(data.val_y) == 48 and len(data.train_y) == 480 - 48 and len(data.test_y) == 120
    assert data.train_x.shape[1:] == (1, 40)
    train = {tuple(row.flatten().tolist()) for row in data.train_x}
    assert not any(tuple(row.flatten().tolist()) in train for row in data.val_x)


def test_same_seed_same_result(data):
    a = train(_fresh(), data, _ce, SCHEDULE, seed=3)
    b = train(_fresh(), data, _ce, SCHEDULE, seed=3)
    assert a.status == "ok" and a.test_acc == b.test_acc and a.best_epoch == b.best_epoch
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(data, tmp_path):
    whole = train(_fresh(), data, _ce, SCHEDULE, seed=1)
    interrupted = tmp_path / "interrupted.ckpt"
    calls = {"n": 0}

    def stop_after_two_epochs(model, x, y, idx):
        calls["n"] += 1
        if calls["n"] > 2 * math.ceil(len(data.train_y) / SCHEDULE.batch_size):
            raise KeyboardInterrupt
        return _ce(model, x, y, idx)

    with pytest.raises(KeyboardInterrupt):
        train(_fresh(), data, stop_after_two_epochs, SCHEDULE, seed=1, checkpoint=interrupted,
              checkpoint_tag="t", checkpoint_every_s=-1.0)
    assert load_checkpoint(interrupted)["epoch"] == 2
    resumed = train(_fresh(seed=99), data, _ce, SCHEDULE, seed=1, checkpoint=interrupted,
                    checkpoint_tag="t")
    assert resumed.resumed_from_epoch == 2 and not resumed.checkpoint_ignored
    assert resumed.test_acc == whole.test_acc
    for k in whole.state_dict:
        assert torch.equal(whole.state_dict[k], resumed.state_dict[k])
    # the learning curve travels with the checkpoint: the resumed run's is the whole run's
    def numbers(curve):
        return [(e.epoch, e.train_loss, e.val_acc, e.lr) for e in curve]

    assert numbers(resumed.epochs) == numbers(whole.epochs)


def test_the_learning_curve_has_each_epochs_loss_accuracy_lr_and_seconds(data):
    schedule = Schedule(epochs=4, batch_size=64, lr=0.05, lr_schedule="cosine")
    result = train(_fresh(), data, _ce, schedule, seed=1)
    assert [e.epoch for e in result.epochs] == [1, 2, 3, 4]
    assert all(e.seconds > 0 and 0 <= e.val_acc <= 100 for e in result.epochs)
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss  # it learns
    assert max(e.val_acc for e in result.epochs) == result.val_acc
    lrs = [e.lr for e in result.epochs]  # at each epoch's end, down the cosine
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    # the loss is the mean over the epoch's steps: the first epoch's, by hand, from the same start
    model = _fresh()
    model.train()
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=5e-4)  # the schedule's
    perm, losses = torch.randperm(len(data.train_y), generator=gen), []
    for i in range(0, len(perm), 64):
        idx = perm[i:i + 64]
        loss = _ce(model, data.train_x[idx], data.train_y[idx], idx)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert result.epochs[0].train_loss == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_a_checkpoint_of_another_run_is_ignored(data, tmp_path):
    ckpt = tmp_path / "x.ckpt"
    # another run: other seed, other lr, so its weights would change the result if loaded
    train(_fresh(seed=5), data, _ce, Schedule(epochs=4, batch_size=64, lr=0.05), seed=2,
          checkpoint=ckpt, checkpoint_tag="other")
    fresh = train(_fresh(), data, _ce, SCHEDULE, seed=1)
    again = train(_fresh(), data, _ce, SCHEDULE, seed=1, checkpoint=ckpt, checkpoint_tag="mine")
    assert again.test_acc == fresh.test_acc


def _truncate(ckpt):
    ckpt.write_bytes(ckpt.read_bytes()[:100])


def _flip_a_weight(ckpt):
    # One byte in the middle of the payload: the file still unpickles, only its checksum knows.
    blob = bytearray(ckpt.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    ckpt.write_bytes(bytes(blob))
    payload = io.BytesIO(bytes(blob[len(MAGIC) + 32:]))
    assert torch.load(payload, weights_only=True)["epoch"] == SCHEDULE.epochs  # torch can't tell


@pytest.mark.parametrize("damage", [_truncate, _flip_a_weight], ids=["truncated", "corrupted"])
def test_a_checkpoint_ignored_is_recomputed_not_used(data, tmp_path, damage):
    ckpt = tmp_path / "x.ckpt"
    train(_fresh(), data, _ce, SCHEDULE, seed=1, checkpoint=ckpt, checkpoint_tag="t")
    damage(ckpt)
    assert load_checkpoint(ckpt) is None
    fresh = train(_fresh(), data, _ce, SCHEDULE, seed=1)
    steps = []

    def counting(model, x, y, idx):
        steps.append(1)
        return _ce(model, x, y, idx)

    again = train(_fresh(), data, counting, SCHEDULE, seed=1, checkpoint=ckpt, checkpoint_tag="t")
    # every epoch was trained again (a usable checkpoint at the end would have skipped them all)
    assert len(steps) == SCHEDULE.epochs * math.ceil(len(data.train_y) / SCHEDULE.batch_size)
    assert again.checkpoint_ignored and again.resumed_from_epoch == 0
    assert again.test_acc == fresh.test_acc


def test_non_finite_loss_ends_the_run_as_diverged(data):
    def exploding(model, x, y, idx):
        return cross_entropy(model(x), y) * float("inf")

    result = train(_fresh(), data, exploding, SCHEDULE, seed=0)
    assert result.status == "diverged" and math.isnan(result.test_acc) and result.epochs_run == 1


def test_generated_and_cached_data_have_the_same_layout(tmp_path):
    """CPU convolutions round differently for other strides: both paths must match exactly."""
    from trainables import data as data_module

    spec = DatasetSpec(num_samples=300, seed=7)
    fresh = load_dataset(spec, torch.device("cpu"), cache_dir=tmp_path)  # generates, writes cache
    data_module._MEMO.clear()
    cached = load_dataset(spec, torch.device("cpu"), cache_dir=tmp_path)  # reads the .npz
    for name in ("train_x", "val_x", "test_x"):
        a, b = getattr(fresh, name), getattr(cached, name)
        assert torch.equal(a, b) and a.stride() == b.stride() == torch.empty(a.shape).stride()


def test_the_papers_protocol_trains_on_every_training_sample_and_selects_on_test(tmp_path):
    """`protocol = "paper"`: as the reference code, no split is held out of the training set and
    the best epoch is picked on the test set; the generated samples are the same."""
    paper = load_dataset(DatasetSpec(num_samples=600, protocol="paper"), torch.device("cpu"), cache_dir=tmp_path)
    honest = load_dataset(SPEC, torch.device("cpu"), cache_dir=tmp_path)
    assert len(paper.train_y) == 480
    assert torch.equal(paper.val_x, paper.test_x) and torch.equal(paper.val_y, paper.test_y)
    assert torch.equal(paper.test_x, honest.test_x)
    # every honest training and validation sample trains under the paper's protocol
    trained = {tuple(row.flatten().tolist()) for row in paper.train_x}
    assert all(tuple(row.flatten().tolist()) in trained for row in torch.cat([honest.train_x, honest.val_x]))
    # the protocol is part of a phase's identity only when it is not the default
    assert "protocol" not in SPEC.to_dict() and DatasetSpec(protocol="paper").to_dict()["protocol"] == "paper"


@pytest.mark.parametrize("latest", [False, True])
def test_of_equally_good_epochs_the_first_is_kept_or_under_the_papers_protocol_the_last(data, latest):
    """The reference code keeps a new best on `>=`: the latest of equal epochs."""
    from dataclasses import replace

    torch.manual_seed(0)
    frozen = create_model("mlp", 10, (1, 40), hidden=16)  # no BatchNorm: at lr 0 nothing moves
    result = train(frozen, replace(data, latest_best=latest), _ce,
                   Schedule(epochs=3, batch_size=64, lr=0.0, lr_schedule="constant"), seed=0)
    assert result.best_epoch == (2 if latest else 0)
