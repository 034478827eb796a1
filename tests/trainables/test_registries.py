"""The defense and attack registries: names, every registered entry on hand values, and a new
defense and a new attack added by this file alone (registered here, nothing else touched) and
run through a real sweep on a real local Ray."""

import math
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from trainables.attacks import (
    Attack,
    Prepared,
    attack_suite,
    create_attack,
    get_attack,
    list_attacks,
    register_attack,
    resolve_attacks,
)
from trainables.attacks._base import TeacherView, unregister_attack
from trainables.data import DatasetSpec, load_dataset
from trainables.defenses import Defense, create_defense, get_defense, list_defenses, register_defense
from trainables.defenses._base import unregister_defense
from undistill.errors import ConfigError
from undistill.space import Knob


def test_the_built_ins_are_registered_in_the_order_results_list_them():
    assert list_defenses()[:2] == ["nasty", "stingy"] and list_attacks()[:3] == ["kd", "unlabelled", "dafl"]


def test_a_name_registered_twice_raises_and_an_unknown_one_names_close_matches():
    with pytest.raises(ValueError, match="registered twice"):
        register_defense(get_defense("nasty"))
    with pytest.raises(ValueError, match="registered twice"):
        register_attack(get_attack("kd"))
    with pytest.raises(ConfigError, match=r"unknown defense 'nsty'; did you mean nasty"):
        create_defense("nsty")
    with pytest.raises(ConfigError, match=r"unknown attack 'kdd'; did you mean kd"):
        create_attack("kdd")


@pytest.mark.parametrize("name", list_defenses())
def test_every_defense_declares_its_knobs_and_makes_its_teacher(name):
    defense = create_defense(name)
    knobs = defense.knobs(10)
    assert knobs and len({k.name for k in knobs}) == len(knobs)
    assert all(k.low < k.high and k.symbol for k in knobs)
    values = {k.name: (k.low * k.high) ** 0.5 if k.log else (k.low + k.high) / 2 for k in knobs}
    values = {k.name: k.cast(round(values[k.name])) if k.integer else values[k.name] for k in knobs}
    torch.manual_seed(0)
    z = torch.randn(6, 10, requires_grad=True)
    if defense.trains_teacher:  # the defended teacher's loss: finite, with gradients into it
        from types import SimpleNamespace

        from trainables.defenses import NormalTeacher

        x, y = torch.randn(6, 4), torch.arange(6) % 10
        frozen, defended = torch.nn.Linear(4, 10).requires_grad_(False), torch.nn.Linear(4, 10)
        data = SimpleNamespace(train_x=x, train_y=y, prepare=lambda batch: batch)
        normal = NormalTeacher(lambda batch, idx: frozen(batch), frozen, data)
        loss = defense.teacher_loss(values, normal)(defended, x, y, torch.arange(6))
        loss.backward()
        assert torch.isfinite(loss) and defended.weight.grad.abs().sum() > 0
    if defense.transforms_logits:  # what the attacker sees: same shape, same predictions
        seen = defense.transform(z.detach(), values)
        assert seen.shape == z.shape and torch.equal(seen.argmax(1), z.argmax(1))


SUITE = resolve_attacks({"kd_temperatures": [1.0, 4.0], "kd_alpha": 0.9,
                         "data_free": {"latent_dim": 8, "generator_width": 8, "iterations": 2,
                                       "student_schedule": {"optimizer": "adam", "lr": 1e-3, "epochs": 1,
                                                            "batch_size": 8}}})


@pytest.mark.parametrize("attack", attack_suite(SUITE), ids=lambda a: a.label)
def test_every_attack_gives_a_student_its_data_and_a_finite_loss(attack):
    from trainables.models import create_model

    data = load_dataset(DatasetSpec(num_samples=400), torch.device("cpu"))
    torch.manual_seed(0)
    teacher, student = create_model("cnn1d", 10, data.input_shape, width=8), create_model("mlp", 10, data.input_shape)
    teacher.eval()
    prepared = attack.prepare(TeacherView(teacher, lambda z: z), data, seed=0, schedule=None)
    assert prepared.data is data  # every attack is scored on the real splits
    if prepared.steps is None:  # it trains on the real split, through its loss
        idx = torch.arange(16)
        loss = prepared.loss_fn(student, data.train_x[idx], data.train_y[idx], idx)
        assert torch.isfinite(loss) and loss.requires_grad
    else:  # it brings its own steps (DAFL: a generator and the student, together)
        before = [p.detach().clone() for p in student.parameters()]
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        assert not prepared.steps.epoch(student, opt, lambda: None, torch.Generator().manual_seed(0))
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert attack.to_dict()["name"] == attack.name and attack.label.split("-")[0] == attack.name


# ---------------------------------------------------------------------------------------------
# A defense and an attack that are not in the tree: this module is all they need.


@dataclass(frozen=True)
class SmoothedTeacher(Defense):
    """A teacher trained with label smoothing ε: its softened outputs carry less of the
    between-class structure KD relies on (Müller et al., "When does label smoothing help?",
    NeurIPS 2019)."""

    name = "smoothed-teacher"
    trains_teacher = True

    def knobs(self, num_classes):
        return (Knob("epsilon", "ε", 0.0, 0.9),)

    def teacher_loss(self, knobs, normal):
        epsilon = float(knobs["epsilon"])
        return lambda m, x, y, idx: F.cross_entropy(m(x), y, label_smoothing=epsilon)


@dataclass(frozen=True)
class HardLabels(Attack):
    """An attacker that gets the teacher's top-1 answer only, and trains on it as a label."""

    name = "hard-labels"
    preset_keys = {"hard_labels": bool}

    @classmethod
    def resolve(cls, table):
        return {"hard_labels": table["hard_labels"]} if "hard_labels" in table else {}

    @classmethod
    def from_table(cls, resolved):
        return [cls()] if resolved.get("hard_labels") else []

    def prepare(self, teacher, data, seed, schedule):
        answers = teacher.on(data.train_x, data.prepare).argmax(1)
        return Prepared(data, lambda m, x, y, idx: F.cross_entropy(m(x), answers[idx]))


@pytest.fixture
def toys():
    import ray.cloudpickle

    register_defense(SmoothedTeacher)
    register_attack(HardLabels)
    # Ray ships the entries to its workers by value: they do not import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    unregister_defense(SmoothedTeacher.name)
    unregister_attack(HardLabels.name)


TOY_PRESET = """
[dataset]
name = "mnist1d"
num_samples = 2000

[teacher]
arch = "cnn1d"
width = 16

[teacher_schedule]
optimizer = "adamw"
lr = 0.01
epochs = 4
batch_size = 128

[[students]]
arch = "mlp"
hidden = 32

[student_schedule]
optimizer = "adamw"
lr = 0.01
epochs = 4
batch_size = 128

[attack]
kd_temperatures = [4.0]
kd_alpha = 0.9
hard_labels = true

[search]
trials = 3
defenses = ["smoothed-teacher", "stingy"]
full_suite = true  # every attack on every candidate: the new attack must run on each

[search.smoothed-teacher]
epsilon = [0.05, 0.5]
start = { epsilon = 0.3 }

[search.stingy]
k = [1, 9]
start = { k = 2 }
"""


@pytest.mark.slow
def test_a_new_defense_and_attack_run_in_a_sweep_from_this_module_alone(toys, tmp_path):
    from orchestrator import SweepOptions, run_sweep
    from results import ResultStore, Storage
    from search_spaces import load_preset

    config = tmp_path / "toys.toml"
    config.write_text(TOY_PRESET)
    preset = load_preset(config_file=config)
    assert preset.space.names == ("smoothed-teacher", "stingy")
    outcome = run_sweep(SweepOptions(preset, "toys", str(tmp_path / "sweeps")))

    store = ResultStore(Storage(tmp_path / "sweeps"), "toys")
    trials, students = store.trial_rows(), store.student_rows()
    assert len(outcome.trials) == len(trials) == 3 and all(t["status"] == "ok" for t in trials)
    smoothed = [t for t in trials if t["defense"] == "smoothed-teacher"]
    assert smoothed and all(0.05 <= t["knobs"]["epsilon"] <= 0.5 and set(t["knobs"]) == {"epsilon"}
                            for t in smoothed)
    assert any(t["knobs"] == {"epsilon": 0.3} for t in smoothed)  # its start point ran
    # the smoothed teacher is its own, trained in the trial: not the normal teacher
    assert all(t["teacher_acc"] != t["normal_teacher_acc"] for t in smoothed)
    # every student by both attacks, the new one with its own label, on every trial
    assert {s["attack"] for s in students} == {"kd-T4", "hard-labels"}
    assert len(students) == 3 * 2 and all(s["status"] == "ok" and 0 < s["student_acc"] <= 100
                                          for s in students)
    assert all(s["normal_kd_acc"] is not None for s in students)  # its normal-teacher baseline ran upstream
    for t in trials:  # the objective: the best clone over both attacks
        mine = [s["student_acc"] for s in students if s["trial_id"] == t["trial_id"]]
        assert math.isclose(t["student_acc"], max(mine))
    # the record holds the new defense's space, so results show its knob without knowing it
    from orchestrator.layout import read_sweep
    from results import render

    record = read_sweep(Storage(tmp_path / "sweeps"), "toys")
    assert record.space.get("smoothed-teacher").knobs[0].symbol == "ε"
    table = render(outcome.front, "table", space=record.space)
    assert "epsilon" in table.splitlines()[0] and "k" in table.splitlines()[0].split()
