"""CIFAR through torchvision's own classes from a local folder in the official format, held on
the device as uint8, and augmented there."""

import numpy as np
import pytest
import torch
from tiny_cifar import write_cifar10, write_cifar100

from trainables import cifar_data
from trainables.data import DatasetSpec, load_dataset
from undistill.errors import ConfigError


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root)
    write_cifar100(root)
    return root


@pytest.mark.parametrize("name,classes,train", [("cifar10", 10, 250), ("cifar100", 100, 300)])
def test_cifar_loads_through_torchvision_onto_the_device_as_uint8(roots, name, classes, train):
    data = load_dataset(DatasetSpec(name=name, val_fraction=0.2), torch.device("cpu"), data_root=roots)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (3, 32, 32)
    assert len(data.train_y) + len(data.val_y) == train and len(data.val_y) == round(train * 0.2)
    assert len(data.test_y) == 100 and data.num_classes == classes
    assert data.augment is not None
    batch = data.prepare(data.test_x[:8])
    assert batch.dtype == torch.float32 and abs(batch.mean().item()) < 2


@pytest.mark.parametrize("name,train", [("cifar10", 250), ("cifar100", 300)])
def test_the_papers_protocol_normalises_both_cifars_as_the_reference_code(roots, name, train):
    """VITA-Group/Nasty-Teacher's data loader normalises CIFAR-10 and CIFAR-100 alike, with its
    CIFAR-10 figures; under `protocol = "paper"` so do we, train on all of it and select on test."""
    data = load_dataset(DatasetSpec(name=name, protocol="paper"), torch.device("cpu"), data_root=roots)
    assert len(data.train_y) == train and torch.equal(data.val_x, data.test_x) and data.latest_best
    pixel = data.test_x[:1]
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
    assert torch.allclose(data.prepare(pixel), (pixel.float() / 255 - mean) / std, atol=1e-5)


def test_crop_and_flip_match_a_reference_done_by_hand():
    normalise = cifar_data.Normalise("cifar10", torch.device("cpu"))
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = cifar_data.CropFlip(normalise)(x, torch.Generator().manual_seed(7))
    # the same draws, in the same order, from the same seed
    gen = torch.Generator().manual_seed(7)
    dy = torch.randint(0, 9, (6,), generator=gen)
    dx = torch.randint(0, 9, (6,), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(6):
        window = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if flip[i]:
            window = window[:, :, ::-1]
        expected = normalise(torch.from_numpy(window.copy())[None])[0]
        assert torch.equal(out[i], expected), i
    assert flip.any() and not flip.all()  # both branches were checked


def test_a_missing_data_root_names_the_download_command(tmp_path):
    with pytest.raises(ConfigError, match="data download cifar10 --root DIR"):
        cifar_data.check_root("cifar10", None)
    with pytest.raises(ConfigError, match="lacks data_batch_1"):
        cifar_data.check_root("cifar10", tmp_path)


@pytest.mark.slow
def test_the_cifar10_preset_scaled_down_runs_end_to_end(tmp_path):
    """`cifar10-resnet18` as users run it, on tiny data in CIFAR's format, one epoch per phase."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow.parquet as pq

    root = Path(__file__).resolve().parents[2]
    data = write_cifar10(tmp_path / "data", train=120, test=50)
    storage = tmp_path / "sweeps"
    # the preset with the paper's one attack, KD at T = 4, and the skeptical student at T = 4
    # (DAFL on images: test_a_dafl_phase_...)
    preset = (root / "search_spaces" / "presets" / "cifar10-resnet18.toml").read_text()
    suite = "kd_temperatures = [1.0, 4.0, 10.0, 20.0]"
    generator = preset[preset.index("[attack.data_free]"):preset.index("[search]")]
    assert suite in preset
    config = tmp_path / "cifar10-resnet18.toml"
    unlabelled = "unlabelled_temperatures = [1.0, 4.0, 10.0, 20.0]\n"
    assert unlabelled in preset
    skeptical = "\ntemperatures = [1.0, 4.0, 10.0, 20.0]"  # [attack.skeptical]'s: kept, at T = 4 alone
    assert preset.count(skeptical) == 1
    config.write_text(preset.replace(suite, "kd_temperatures = [4.0]").replace(skeptical, "\ntemperatures = [4.0]")
                      .replace(generator, "").replace(unlabelled, ""))
    run = subprocess.run(
        [sys.executable, str(root / "cli.py"), "sweep", "--config", str(config), "--data-root",
         str(data), "--epochs-scale", "0.00625", "--trials", "2", "--cpus-per-trial", "1",
         "--storage", str(storage), "--format", "json"],
        capture_output=True, text=True, timeout=900, cwd=root,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)  # the front
    results = storage / "cifar10-resnet18-x0.00625" / "results"
    trials = pq.read_table(results / "trials").to_pylist()
    students = pq.read_table(results / "students").to_pylist()
    assert len(trials) == 2 and {t["defense"] for t in trials} == {"nasty", "stingy"}
    # a trial its first wave of clones already shows beaten ends `dominated`, its other attacks skipped
    assert all(t["status"] in ("ok", "dominated") and 0 <= t["teacher_acc"] <= 100 for t in trials), [
        t["status"] for t in trials]
    assert sorted({s["student_arch"] for s in students}) == ["cnn", "resnet18", "resnetc20", "resnetc32"]
    # KD on every student; the skeptical student on the one with exits (ResNet-18, the code's heads)
    assert {(s["attack"], s["student_arch"]) for s in students if s["attack"] != "kd-T4"} == {
        ("skeptical-T4", "resnet18")}
    assert len(students) == 2 * (4 + 1) and all(s["status"] in ("ok", "skipped") for s in students), [
        (s["attack"], s["student_arch"], s["status"]) for s in students]
    assert any(s["attack"] == "skeptical-T4" and s["status"] == "ok" for s in students)
    report = subprocess.run([sys.executable, str(root / "cli.py"), "report", "cifar10-resnet18-x0.00625",
                             "--storage", str(storage), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=120, cwd=root)
    assert report.returncode == 0 and (tmp_path / "report" / "report.md").is_file(), report.stderr

    # no data root: one line naming the download command, before anything starts
    missing = subprocess.run(
        [sys.executable, str(root / "cli.py"), "sweep", "--preset", "cifar10-resnet18",
         "--storage", str(storage)], capture_output=True, text=True, timeout=120, cwd=root)
    assert missing.returncode == 2 and "python cli.py data download cifar10" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_dafl_phase_distils_an_image_student_from_generated_images_only(tmp_path):
    """The data-free attack on CIFAR-shaped data: the image generator, the teacher's features,
    the student trained on generated images (three joint steps) and scored on the real test split."""
    from trainables.attacks import create_attack
    from trainables.data import DatasetSpec
    from trainables.data_free import DataFreeSpec
    from trainables.loop import Schedule
    from trainables.phases import ModelSpec, PhaseConfig, run_phase

    root = write_cifar10(tmp_path / "data", train=120, test=50)
    spec, cnn, schedule = DatasetSpec(name="cifar10"), ModelSpec.of("cnn"), Schedule(epochs=1, batch_size=32)
    teacher = run_phase(PhaseConfig("teacher", spec, cnn, schedule, 0), tmp_path / "t", data_root=root)
    generator = DataFreeSpec(latent_dim=16, iterations=3)
    dafl = PhaseConfig("attack", spec, ModelSpec.of("resnetc20"), Schedule(epochs=1, batch_size=8), 0,
                       teacher_model=cnn, attack=create_attack("dafl", spec=generator,
                                                               schedule=Schedule(epochs=1, batch_size=8)))
    result = run_phase(dafl, tmp_path / "s", teacher_weights=tmp_path / "t" / "model.pt", data_root=root)
    assert teacher["status"] == result["status"] == "ok" and 0 <= result["test_acc"] <= 100
    assert result["generator"]["synthetic_classes"] >= 1 and "teacher_acc_seen" in result
