import math
import re
import tomllib

import pytest

from search_spaces import adjust, list_presets, load_preset, start_points
from undistill.errors import ConfigError


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_preset_loads_and_has_start_points(name):
    preset = load_preset(name)
    assert preset.trials >= 1 and preset.students
    assert {p["defense"] for p in start_points(preset)} <= set(preset.defenses)


def _smoke_doc():
    from importlib import resources

    return tomllib.loads((resources.files("search_spaces") / "presets" / "smoke.toml").read_text())


def _write(tmp_path, doc_text):
    path = tmp_path / "mine.toml"
    path.write_text(doc_text)
    return path


def _edit(tmp_path, edit):
    import tomli_w

    doc = _smoke_doc()
    edit(doc)
    return _write(tmp_path, tomli_w.dumps(doc))


BAD = {
    "unknown top key": (lambda d: d.update(epochz=3), "unknown key 'epochz'"),
    "unknown schedule key": (lambda d: d["student_schedule"].update(epoch=3), "did you mean 'epochs'"),
    "unknown arch": (lambda d: d["teacher"].update(arch="resnet999"), "unknown model 'resnet999'"),
    "bad model option": (lambda d: d["students"][0].update(depthh=3), "has no option 'depthh'"),
    "unknown dataset": (lambda d: d["dataset"].update(name="imagenet"), "unknown dataset 'imagenet'"),
    "omega low > high": (lambda d: d["search"]["nasty"].update(omega=[0.05, 0.01]), "low 0.05 is above high 0.01"),
    "omega out of range": (lambda d: d["search"]["nasty"].update(omega=[0.0, 0.01]), "must lie within"),
    "k too large": (lambda d: d["search"]["stingy"].update(k=[1, 10]), "search.stingy.k"),
    "k zero": (lambda d: d["search"]["stingy"].update(k=[0, 3]), "search.stingy.k"),
    "start outside range": (lambda d: d["search"]["stingy"].update(start={"k": 9}, k=[1, 3]),
                            "outside its search range"),
    "wrong type": (lambda d: d["search"].update(trials="many"), "expected int"),
    "no students": (lambda d: d.update(students=[]), "at least one student"),
    "unknown defense": (lambda d: d["search"].update(defenses=["nice"]), "unknown defense 'nice'"),
    "bad optimizer": (lambda d: d["teacher_schedule"].update(optimizer="lion"), "optimizer"),
    "alpha above one": (lambda d: d["attack"].update(kd_alpha=1.5), "kd_alpha"),
    "no temperature": (lambda d: d["attack"].update(kd_temperatures=[]), "must list temperatures"),
    "a temperature twice": (lambda d: d["attack"].update(kd_temperatures=[4, 4.0]), "a temperature twice"),
    "negative temperature": (lambda d: d["attack"].update(kd_temperatures=[-1.0]),
                             "kd_temperatures must be within [0.1, 100], got -1.0"),
    "smoothing of one": (lambda d: d["attack"].update(label_smoothing=1.0), "label_smoothing"),
    "unknown data-free key": (lambda d: d["attack"]["data_free"].update(generator_step=3),
                              "did you mean 'generator_lr'"),
    "no data-free iterations": (lambda d: d["attack"]["data_free"].update(iterations=0),
                                "iterations must be within [1, 100000], got 0"),
    "data-free batch of one": (lambda d: d["attack"]["data_free"].update(
        student_schedule={"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 1}),
        "student_schedule.batch_size must be ≥ 2"),
    "data-free schedule unknown key": (lambda d: d["attack"]["data_free"].update(
        student_schedule={"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 8, "epoch": 3}),
        "attack.data_free.student_schedule: unknown key 'epoch'"),
    "negative data seed": (lambda d: d["dataset"].update(seed=-1), "dataset.seed"),
    "data seed past the generators'": (lambda d: d["dataset"].update(seed=2**32), "dataset.seed must be within"),
    "negative seed": (lambda d: d.update(seed=-1), "seed must be within [0, 4294967295]"),
    "seed past the generators'": (lambda d: d.update(seed=2**32), "seed must be within [0, 4294967295]"),
    "nan in a range": (lambda d: d["search"]["nasty"].update(omega=[math.nan, 0.01]), "must lie within"),
    "inf in a range": (lambda d: d["search"]["nasty"].update(tau_a=[2.0, math.inf]), "must lie within"),
    "empty validation split": (lambda d: d["dataset"].update(num_samples=100, val_fraction=0.01),
                               "val_fraction"),
    "same student twice": (lambda d: d["students"].append(dict(d["students"][0])), "listed twice"),
    "extension not a flag": (lambda d: d["search"].update(extend_ranges="yes"), "search.extend_ranges: expected bool"),
    "full suite not a flag": (lambda d: d["search"].update(full_suite=1), "search.full_suite: expected bool"),
    "focus of no drop": (lambda d: d["search"].update(focus_teacher_drop=0),
                         "search.focus_teacher_drop must be within"),
    "focus not a number": (lambda d: d["search"].update(focus_teacher_drop="wide"),
                           "search.focus_teacher_drop: expected float"),
    "budget beyond a finite space": (lambda d: d["search"].update(defenses=["stingy"], trials=12),
                                     "exceeds the 9 distinct stingy candidates"),
    "a student's schedule without lr": (
        lambda d: d["students"][0].update(schedule={"optimizer": "adam", "epochs": 3, "batch_size": 64}),
        "students[0].schedule: missing required key 'lr'"),
    "a student's schedule with a bad optimizer": (
        lambda d: d["students"][1].update(schedule={**d["student_schedule"], "optimizer": "lion"}),
        "students[1].schedule.optimizer: 'lion'"),
    "a schedule on the teacher": (lambda d: d["teacher"].update(schedule=dict(d["teacher_schedule"])),
                                  "the teacher's schedule is [teacher_schedule]"),
    "an unknown protocol": (lambda d: d.update(protocol="test-set"), "protocol: 'test-set' is not one of"),
    # every number within a range (issue 21): nan, inf, bools and floats for ints never pass
    "nan lr": (lambda d: d["teacher_schedule"].update(lr=math.nan),
               "teacher_schedule.lr must be within (0, 10], got nan"),
    "lr of 100": (lambda d: d["student_schedule"].update(lr=100.0), "student_schedule.lr must be within (0, 10]"),
    "epochs as a float": (lambda d: d["teacher_schedule"].update(epochs=3.0),
                          "teacher_schedule.epochs: expected int, got float 3.0"),
    "epochs past 100,000": (lambda d: d["teacher_schedule"].update(epochs=10**9),
                            "teacher_schedule.epochs must be within [1, 100000], got 1000000000"),
    "a batch past 65,536": (lambda d: d["student_schedule"].update(batch_size=10**20),
                            "student_schedule.batch_size must be within [1, 65536]"),
    "momentum of one": (lambda d: d["teacher_schedule"].update(momentum=1.0),
                        "teacher_schedule.momentum must be within [0, 1), got 1.0"),
    "negative momentum": (lambda d: d["teacher_schedule"].update(momentum=-0.1), "momentum must be within [0, 1)"),
    "gamma of zero": (lambda d: d["teacher_schedule"].update(gamma=0.0),
                      "teacher_schedule.gamma must be within (0, 1]"),
    "infinite weight decay": (lambda d: d["teacher_schedule"].update(weight_decay=math.inf),
                              "teacher_schedule.weight_decay must be within [0, 1], got inf"),
    "a temperature of 1e6": (lambda d: d["attack"].update(unlabelled_temperatures=[1e6]),
                             "attack.unlabelled_temperatures must be within [0.1, 100]"),
    "nan alpha": (lambda d: d["attack"].update(kd_alpha=math.nan), "attack.kd_alpha must be within [0, 1], got nan"),
    "a bool for alpha": (lambda d: d["attack"].update(kd_alpha=True), "attack.kd_alpha: expected float, got bool"),
    "a huge latent": (lambda d: d["attack"]["data_free"].update(latent_dim=10**9),
                      "attack.data_free.latent_dim must be within [1, 10000]"),
    "a generator of one channel": (lambda d: d["attack"]["data_free"].update(generator_width=1),
                                   "attack.data_free.generator_width must be within [2, 1024]"),
    "nan generator lr": (lambda d: d["attack"]["data_free"].update(generator_lr=math.nan),
                         "attack.data_free.generator_lr must be within (0, 10], got nan"),
    "negative loss weight": (lambda d: d["attack"]["data_free"].update(entropy_weight=-5.0),
                             "attack.data_free.entropy_weight must be within [0, 1000]"),
    "a width as a float": (lambda d: d["teacher"].update(width=32.0),
                           "teacher: model 'cnn1d' option width: expected int, got float 32.0"),
    "a width as a bool": (lambda d: d["students"][1].update(width=True),
                          "students[1]: model 'cnn1d' option width: expected int, got bool True"),
    "a width of 70,000": (lambda d: d["teacher"].update(width=70_000),
                          "option width must be within [1, 65536], got 70000"),
    "a billion parameters": (lambda d: d["teacher"].update(width=30_000), "parameters, past 1,000,000,000"),
    "a negative depth": (lambda d: d["students"][0].update(depth=-1), "option depth must be within [0, 1000]"),
    "half the data held out and more": (lambda d: d["dataset"].update(val_fraction=0.9),
                                        "dataset.val_fraction must be within (0, 0.5], got 0.9"),
    "more samples than the memory": (lambda d: d["dataset"].update(num_samples=10**12),
                                     "dataset.num_samples 1000000000000: its arrays need 1.6 PB while they are made"),
    "a float for samples": (lambda d: d["dataset"].update(num_samples=4e3), "dataset.num_samples: expected int"),
    "a million trials and more": (lambda d: d["search"].update(trials=2_000_000),
                                  "search.trials must be within [1, 1000000], got 2000000"),
    "nan CPUs": (lambda d: d["resources"].update(cpus_per_trial=math.nan),
                 "resources.cpus_per_trial must be within (0, 1024], got nan"),
    "negative GPUs": (lambda d: d["resources"].update(gpus_per_trial=-1.0), "resources.gpus_per_trial must be within"),
    "no concurrency": (lambda d: d["resources"].update(concurrency=0), "resources.concurrency must be within [1, "),
    "checkpoints never": (lambda d: d["resources"].update(checkpoint_every_s=math.inf),
                          "resources.checkpoint_every_s must be within [0, 86400], got inf"),
    "a skeptical exit past 100": (lambda d: d["attack"].update(skeptical={"temperatures": [4.0], "kd_exit": 1000}),
                                  "attack.skeptical.kd_exit must be within [1, 100]"),
    "a last batch of one": (lambda d: d["teacher_schedule"].update(batch_size=2879),
                            "teacher_schedule.batch_size 2879: the training split's 2880 samples leave a last "
                            "batch of one"),
    "a student twice, once with its own schedule": (
        lambda d: d["students"].append({**d["students"][0], "schedule": dict(d["student_schedule"])}),
        "its schedule does not make it another student"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configs_name_the_problem(tmp_path, case):
    edit, message = BAD[case]
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_preset(config_file=_edit(tmp_path, edit))


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_preset(config_file=_write(tmp_path, "seed = = 3"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(config_file=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown preset 'mnist2d'"):
        load_preset("mnist2d")


def test_a_valid_user_config_is_named_after_its_file(tmp_path):
    preset = load_preset(config_file=_edit(tmp_path, lambda d: d["search"].update(trials=2)))
    assert preset.name == "mine" and preset.trials == 2


def test_writing_a_default_out_explicitly_changes_nothing(tmp_path):
    def spell_out_defaults(d):
        d["dataset"]["val_fraction"] = 0.1
        d["student_schedule"]["momentum"] = 0.9
        d["search"].update(sampler="front", extend_ranges=True, full_suite=False, focus_teacher_drop=15)

    implicit = load_preset(config_file=_edit(tmp_path, lambda d: None))
    explicit = load_preset(config_file=_edit(tmp_path, spell_out_defaults))
    assert implicit.to_dict() == explicit.to_dict()


@pytest.mark.parametrize("bad", [
    lambda d: d.update(students=[1]),
    lambda d: d["students"][0].update(hidden="wide"),
    lambda d: d["search"].update(defenses=["nasty", "nasty"]),
])
def test_malformed_entries_are_config_errors_not_tracebacks(tmp_path, bad):
    with pytest.raises(ConfigError):
        load_preset(config_file=_edit(tmp_path, bad))


def test_a_config_file_that_is_not_text_is_a_config_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML|cannot be read"):
        load_preset(config_file=path)


# The paper's public settings (paper.md): what each CIFAR preset must carry.
PAPER = {
    "cifar10-resnet18": dict(dataset="cifar10", teacher="resnet18",
                             students=["cnn", "resnetc20", "resnetc32", "resnet18"],
                             epochs=160, milestones=[80, 120], gamma=0.1, T=4.0, nasty=(0.04, 4.0), k=2),
    "cifar100-resnet18": dict(dataset="cifar100", teacher="resnet18",
                              students=["shufflenetv2", "mobilenetv2", "resnet18"],
                              epochs=200, milestones=[60, 120, 160], gamma=0.2, T=20.0, nasty=(0.005, 20.0), k=10),
    "cifar100-resnet50": dict(dataset="cifar100", teacher="resnet50",
                              students=["shufflenetv2", "mobilenetv2", "resnet18"],
                              epochs=200, milestones=[60, 120, 160], gamma=0.2, T=20.0, nasty=(0.005, 20.0), k=10),
    "cifar100-resnext29": dict(dataset="cifar100", teacher="resnext29_8x64d",
                               students=["shufflenetv2", "mobilenetv2", "resnet18"],
                               epochs=200, milestones=[60, 120, 160], gamma=0.2, T=20.0, nasty=(0.005, 20.0), k=10),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_cifar_presets_carry_the_papers_settings(name):
    p, want = load_preset(name), PAPER[name]
    assert p.dataset["name"] == want["dataset"] and p.teacher.arch == want["teacher"]
    assert [s.arch for s in p.students] == want["students"]
    for schedule in (p.teacher_schedule, p.student_schedule):
        assert (schedule["optimizer"], schedule["lr"], schedule["momentum"], schedule["weight_decay"],
                schedule["batch_size"]) == ("sgd", 0.1, 0.9, 0.0005, 128)
        assert (schedule["epochs"], schedule["milestones"], schedule["gamma"]) == (
            want["epochs"], want["milestones"], want["gamma"])
    # the paper's attack is in the suite
    assert want["T"] in p.attack["kd_temperatures"] and p.attack["kd_alpha"] == 0.9
    nasty, stingy = p.space.get("nasty"), p.space.get("stingy")
    assert (nasty.start["omega"], nasty.start["tau_a"]) == want["nasty"]
    assert stingy.start["k"] == want["k"] and stingy.ranges[0].high < p.num_classes
    assert start_points(p)[0] == {"defense": "nasty", "omega": want["nasty"][0], "tau_a": want["nasty"][1]}


def test_the_plain_cnn_trains_on_the_reference_codes_own_schedule():
    """Issue 16: the reference trains its plain CNN with Adam 1e-3, constant, 100 epochs; every
    phase of that student (alone, smoothed, attacked with data) gets it, the other students the
    shared one; a DAFL student trains by DAFL's own schedule, whichever its architecture."""
    from orchestrator.plan import make_plan

    plan = make_plan(load_preset("cifar10-resnet18"))
    by_student, data_free = {}, set()
    for node in (*plan.scratch, *plan.smoothed, *plan.normal_attacks):
        is_dafl = node.config.attack is not None and node.config.attack.name == "dafl"
        (data_free if is_dafl else by_student.setdefault(node.config.model.arch, set())).add(node.config.schedule)
    (cnn,) = by_student.pop("cnn")
    assert (cnn.optimizer, cnn.lr, cnn.weight_decay, cnn.epochs, cnn.batch_size, cnn.lr_schedule) == (
        "adam", 0.001, 0.0, 100, 128, "constant")
    for arch, schedules in by_student.items():
        (shared,) = schedules
        assert (shared.optimizer, shared.epochs, shared.milestones) == ("sgd", 160, (80, 120)), arch
    assert all(t.schedule == cnn for t in plan.attack_templates if t.model.arch == "cnn" and t.attack.name != "dafl")
    (dafl,) = data_free  # the DAFL code's CIFAR student: SGD 0.1, x0.1 at 800 and 1600 of 2000 epochs
    assert (dafl.optimizer, dafl.lr, dafl.epochs, dafl.batch_size, dafl.milestones) == ("sgd", 0.1, 2000, 1024,
                                                                                          (800, 1600))


def test_the_table_6_presets_distil_a_resnet18_data_free_from_a_resnet34_with_the_dafl_codes_settings():
    for name, weights in (("cifar10-resnet34-dafl", (0.05, 5.0, 0.01)), ("cifar100-resnet34-dafl", (0.5, 20.0, 0.1))):
        preset = load_preset(name)
        assert preset.teacher.arch == "resnet34" and [s.arch for s in preset.students] == ["resnet18"]
        data_free = preset.attack["data_free"]
        assert (data_free["one_hot_weight"], data_free["entropy_weight"], data_free["activation_weight"]) == weights
        assert (data_free["latent_dim"], data_free["generator_lr"], data_free["generator_width"],
                data_free["iterations"], data_free["kd_temperature"]) == (1000, 0.02, 128, 120, 1.0)


def test_a_students_own_schedule_is_part_of_what_a_sweep_computes(tmp_path):
    def own(d):
        d["students"][0]["schedule"] = {**d["student_schedule"], "lr": 0.003}

    shared = load_preset(config_file=_edit(tmp_path, lambda d: None))
    mine = load_preset(config_file=_edit(tmp_path, own))
    assert shared.students[0].schedule is None and mine.students[0].schedule["lr"] == 0.003
    assert mine.students[1].schedule is None  # the others keep [student_schedule]
    assert shared.to_dict() != mine.to_dict()  # another config: its own fingerprint and cache keys


def test_epochs_scale_shrinks_every_schedule_and_keeps_every_decay_step():
    from search_spaces import adjust

    quick = adjust(load_preset("cifar10-resnet18"), epochs_scale=0.01, trials=3)
    assert quick.trials == 3 and quick.teacher_schedule["epochs"] == 2
    assert quick.teacher_schedule["milestones"] == [1, 1]  # both ×0.1 steps survive
    assert quick.students[0].schedule["epochs"] == 1  # a student's own schedule too (100 epochs)
    assert quick.attack["data_free"]["student_schedule"]["epochs"] == 20  # DAFL's 2000 epochs too
    assert quick.attack["data_free"]["student_schedule"]["milestones"] == [8, 16]
    assert adjust(load_preset("smoke")) is not None
    with pytest.raises(Exception, match="epochs-scale"):
        adjust(load_preset("smoke"), epochs_scale=0)


def test_full_suite_and_range_extension_are_part_of_what_a_sweep_computes():
    preset = load_preset("mnist1d")
    assert preset.sampler == "front" and preset.extend_ranges and not preset.full_suite
    full = adjust(preset, full_suite=True)
    assert full.full_suite and full.to_dict()["search"]["full_suite"] is True
    assert full.to_dict() != preset.to_dict()  # another config: its own sweep
    assert adjust(preset, full_suite=False) is preset  # the preset's own setting changes nothing
    # defaults are not written out: a sweep recorded before these keys keeps its identity
    assert not {"extend_ranges", "full_suite", "focus_teacher_drop"} & set(preset.to_dict()["search"])


def test_a_narrower_focus_is_another_search(tmp_path):
    narrow = load_preset(config_file=_edit(tmp_path, lambda d: d["search"].update(focus_teacher_drop=5)))
    assert narrow.focus_teacher_drop == 5.0 and narrow.to_dict()["search"]["focus_teacher_drop"] == 5.0
    assert load_preset(config_file=_edit(tmp_path, lambda d: None)).focus_teacher_drop == 15.0


def test_the_papers_protocol_is_another_config_and_reaches_every_phase():
    from orchestrator.plan import make_plan

    honest = load_preset("smoke")
    paper = adjust(honest, protocol="paper")
    assert honest.protocol == "validation" and "protocol" not in honest.to_dict()  # old sweeps keep their identity
    assert paper.protocol == "paper" and paper.to_dict()["protocol"] == "paper"
    honest_plan, paper_plan = make_plan(honest), make_plan(paper)
    assert all(n.config.dataset.protocol == "paper" for n in paper_plan.upstream)
    assert not {n.key for n in honest_plan.upstream} & {n.key for n in paper_plan.upstream}  # nothing shared
    assert adjust(paper, protocol="paper") is paper
