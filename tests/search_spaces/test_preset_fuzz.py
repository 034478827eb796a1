"""Drawn presets (issue 21): the smoke preset with a few of its numbers replaced by drawn values,
nan, inf, negatives, huge ones, floats where ints are meant, bools and strings among them. Either
reading it refuses it in one ConfigError line, or every kind of phase it plans starts and
finishes its first epoch.

"Its first epoch" cheaply and without Ray: each distinct kind of phase the plan holds (the normal
teacher, each student alone and label-smoothed, each attack on the normal teacher, each defense
that trains a teacher, each defense that transforms the teacher's answers) runs through
`run_phase`, the code a sweep's workers run, with every drawn hyperparameter as drawn and only
the sizes capped: one epoch, at most 300 samples (a validation split of a tenth at least, so
that it is not empty once capped), DAFL at two iterations of at most 64 generated samples. The
lr schedules are also built with the drawn epochs, as a sweep builds them. A phase may diverge
(a drawn lr of 10): that is an outcome a sweep reports, not a crash.
"""

from __future__ import annotations

import copy
import math
import tempfile
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from undistill.errors import ConfigError

SMOKE = tomllib.loads((resources.files("search_spaces") / "presets" / "smoke.toml").read_text())

# Every number the smoke preset holds, and some it leaves to their defaults: (path, its type, a
# value it plausibly has: the preset's, or the default).
FIELDS = [
    (("seed",), int, 0),
    (("dataset", "num_samples"), int, 4000), (("dataset", "val_fraction"), float, 0.1), (("dataset", "seed"), int, 42),
    (("teacher", "width"), int, 32), (("teacher", "kernel"), int, 5),
    (("students", 0, "hidden"), int, 32), (("students", 0, "depth"), int, 2), (("students", 1, "width"), int, 8),
    *((("teacher_schedule", key), kind, typical) for key, kind, typical in (
        ("lr", float, 0.01), ("weight_decay", float, 5e-4), ("epochs", int, 12), ("batch_size", int, 128),
        ("momentum", float, 0.9), ("gamma", float, 0.1))),
    *((("student_schedule", key), kind, typical) for key, kind, typical in (
        ("lr", float, 0.01), ("epochs", int, 12), ("batch_size", int, 128))),
    (("attack", "kd_temperatures", 0), float, 4.0), (("attack", "kd_alpha"), float, 0.9),
    (("attack", "unlabelled_temperatures", 0), float, 4.0), (("attack", "label_smoothing"), float, 0.1),
    *((("attack", "data_free", key), kind, typical) for key, kind, typical in (
        ("generator_width", int, 16), ("generator_lr", float, 0.001), ("iterations", int, 20), ("latent_dim", int, 100),
        ("one_hot_weight", float, 1.0), ("entropy_weight", float, 5.0), ("activation_weight", float, 0.1),
        ("kd_temperature", float, 1.0))),
    *((("attack", "data_free", "student_schedule", key), kind, typical) for key, kind, typical in (
        ("lr", float, 0.005), ("epochs", int, 4), ("batch_size", int, 64), ("weight_decay", float, 0.0))),
    (("search", "trials"), int, 4), (("search", "focus_teacher_drop"), float, 15.0),
    (("search", "nasty", "omega", 0), float, 0.01), (("search", "nasty", "tau_a", 1), float, 8.0),
    (("search", "nasty", "start", "omega"), float, 0.1), (("search", "stingy", "k", 1), int, 9),
    (("search", "stingy", "start", "k"), int, 2),
    (("resources", "cpus_per_trial"), float, 1.0), (("resources", "gpus_per_trial"), float, 0.0),
    (("resources", "concurrency"), int, 2), (("resources", "checkpoint_every_s"), float, 30.0),
]

# what users mistype: no number, no end, the wrong sign, far too much, the wrong type
ODD = [math.nan, math.inf, -math.inf, 0, -1, -0.5, 1e-300, 1e12, 10**20, 2**63, 1e300, True, False, "4", 3.0,
       [1]]


def _value(kind, typical):
    """An odd value (a quarter), a small one of the field's type or a float where an int is meant
    (a quarter), or the plausible one scaled (half): so that a fair share of presets is accepted."""
    small = (st.one_of(st.integers(-3, 300), st.integers(-3, 300).map(float)) if kind is int
             else st.floats(-1.0, 200.0, allow_nan=False))
    scaled = st.sampled_from([0.25, 0.5, 1, 2, 4]).map(lambda f: kind(max(1, round(typical * f)) if kind is int
                                                                       else typical * f))
    return st.one_of(scaled, scaled, small, st.sampled_from(ODD))


# one to three fields, each once (the first of a drawn order: no draw is retried), a value for each
edits = st.tuples(st.permutations(range(len(FIELDS))), st.integers(1, 3)).flatmap(
    lambda drawn: st.tuples(*(st.tuples(st.just(i), _value(*FIELDS[i][1:])) for i in drawn[0][:drawn[1]])))


def _set(doc: dict, path: tuple, value) -> None:
    *parents, last = path
    for key in parents:
        doc = doc.setdefault(key, {}) if isinstance(key, str) else doc[key]
    doc[last] = value


def _tiny(cfg):
    """The phase with its sizes capped (see the module's docstring), its hyperparameters kept."""
    data = cfg.dataset
    if data.num_samples > 300:
        data = replace(data, num_samples=300, val_fraction=max(data.val_fraction, 0.1))
    attack = cfg.attack
    schedule = replace(cfg.schedule, epochs=1)
    if attack is not None and attack.name == "dafl":
        schedule = replace(schedule, batch_size=min(schedule.batch_size, 64))
        attack = replace(attack, spec=replace(attack.spec, iterations=min(attack.spec.iterations, 2)),
                         schedule=schedule)
    return replace(cfg, dataset=data, schedule=schedule, attack=attack)


def _start_every_phase(preset, out: Path) -> None:
    import torch

    from orchestrator.plan import make_plan
    from trainables.loop import lr_scheduler_for, optimizer_for
    from trainables.phases import run_phase

    plan = make_plan(preset)
    configs = [n.config for n in plan.upstream]
    for cfg in configs:  # the lr schedules as a sweep builds them: with the drawn epochs
        steps = math.ceil(cfg.dataset.num_samples / cfg.schedule.batch_size)
        lr_scheduler_for(optimizer_for([torch.nn.Parameter(torch.zeros(2))], cfg.schedule), cfg.schedule, steps)

    def run(cfg, name, teacher=None):
        return run_phase(_tiny(cfg), out / name, teacher_weights=teacher)

    teacher = run(plan.teacher.config, "teacher")
    for i, node in enumerate((*plan.scratch, *plan.smoothed)):
        run(node.config, f"scratch{i}")
    if teacher["status"] != "ok":  # a sweep stops here: "the normal teacher diverged"
        return
    weights = out / "teacher" / "model.pt"
    first = {}  # each attack once: the first student it faces
    for node in plan.normal_attacks:
        first.setdefault(node.config.attack.name, node.config)
    for name, cfg in first.items():
        run(cfg, f"attack-{name}", weights)
    for space in preset.space:
        knobs = tuple(sorted((space.start or {r.name: r.low for r in space.ranges}).items()))
        defense = plan.defenses[space.defense]
        if defense.trains_teacher:
            run(replace(plan.defense_template, defense=defense, knobs=knobs), f"defense-{space.defense}", weights)
        if defense.transforms_logits:
            run(replace(next(iter(first.values())), defense=defense, knobs=knobs), f"seen-{space.defense}", weights)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(edits)
def test_a_drawn_preset_is_refused_in_one_line_or_starts_every_phase(drawn):
    from orchestrator import SweepOptions
    from search_spaces._schema import parse_preset

    doc = copy.deepcopy(SMOKE)
    for i, value in drawn:
        _set(doc, FIELDS[i][0], value)
    try:
        preset = parse_preset("drawn", doc)
        SweepOptions(preset, "drawn", "unused").resources()  # [resources] as a sweep reads them
    except ConfigError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, message
        event("refused")
        return
    event("accepted")
    with tempfile.TemporaryDirectory() as out:
        _start_every_phase(preset, Path(out))
