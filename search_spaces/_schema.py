"""A preset: what a sweep trains, how, and which defenses it searches; parsed strictly from TOML.

Every problem is reported as one `ConfigError` line naming the key, the bad value and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from undistill.errors import ConfigError
from undistill.space import FOCUS_TEACHER_DROP, DefenseSpace, KnobRange, SearchSpace
from undistill.tables import check_keys as _check_keys
from undistill.tables import check_within as _within
from undistill.tables import is_a as _is

SAMPLERS = ("front", "tpe", "gp", "nsga2", "random")  # front: the default (orchestrator.strategy)
# validation: each phase's best epoch is picked on a split held out of the training set (the honest
# default); paper: as the reference code does, train on the whole training set and pick the best
# epoch on the test set, so that the papers' tables can be compared number for number
PROTOCOLS = ("validation", "paper")


@dataclass(frozen=True)
class ModelEntry:
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    # a student's own schedule (`[students.schedule]`, every default filled in); None: the
    # preset's [student_schedule]
    schedule: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {"arch": self.arch, **self.options, **({"schedule": self.schedule} if self.schedule else {})}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    seed: int
    dataset: dict[str, Any]
    teacher: ModelEntry
    teacher_schedule: dict[str, Any]
    students: tuple[ModelEntry, ...]
    student_schedule: dict[str, Any]
    # the resolved [attack] table: every registered attack's keys (see trainables.attacks),
    # and label_smoothing
    attack: dict[str, Any]
    label_smoothing: float  # the baseline student trained alone with it (0: none)
    trials: int
    sampler: str
    space: SearchSpace  # each searched defense's knob ranges and start point, in order
    num_classes: int
    extend_ranges: bool = True  # `front` may go past a range's end where the front reaches it
    full_suite: bool = False  # every attack on every candidate (else: skipped once it is beaten)
    # the default strategy steers by teachers within this many points of the normal teacher
    focus_teacher_drop: float = FOCUS_TEACHER_DROP
    protocol: str = "validation"  # one of PROTOCOLS
    # [resources]: how a sweep runs, not what it computes, so not part of its identity
    resources: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def defenses(self) -> tuple[str, ...]:
        return self.space.names

    def to_dict(self) -> dict:
        """The preset with every default filled in, as a TOML-shaped document: what a sweep
        stores and fingerprints, so writing a default out explicitly changes nothing. Its
        `[resources]` are left out: they change where a sweep runs, not what it finds."""
        return json.loads(json.dumps(self.resolved, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Strict reading of a TOML mapping

_TOP = {
    "description": str, "seed": int, "protocol": str, "dataset": dict, "teacher": dict, "teacher_schedule": dict,
    "students": list, "student_schedule": dict, "attack": dict, "search": dict, "resources": dict,
}
_DATASET = {"name": str, "num_samples": int, "val_fraction": float, "seed": int}
# and a table per defense. extend_ranges: the default sampler may search past a range's end when
# the front reaches it; full_suite: every attack on every candidate, none skipped once beaten;
# focus_teacher_drop: the default sampler neither models nor widens a range for a teacher that
# lost more accuracy than this (it still runs and counts: it is on the front if nothing beats it).
_SEARCH = {"trials": int, "sampler": str, "defenses": list, "extend_ranges": bool, "full_suite": bool,
           "focus_teacher_drop": float}
# Per process of a trial (its own and each student's); concurrency caps trials at once.
# batch_attacks: the attacks on one student architecture train as one vectorised model (the
# same results up to floating-point reordering: not part of a sweep's identity either).
_RESOURCES = {"cpus_per_trial": float, "gpus_per_trial": float, "concurrency": int,
              "checkpoint_every_s": float, "batch_attacks": bool}
# None: GPUs chosen by the cluster, no concurrency cap, the training loop's checkpoint interval
RESOURCE_DEFAULTS = {"cpus_per_trial": 1.0, "gpus_per_trial": None, "concurrency": None,
                     "checkpoint_every_s": None, "batch_attacks": True}


# The ends of the ranges a preset's numbers are checked against (with why, in the message).
# A million trials of the smoke preset alone, at 15 s each on two cores, would take half a year.
MAX_TRIALS = 1_000_000
MAX_TRIALS_WHY = " (a million trials would take months)"
# MNIST-1D's generator makes about 2,000 samples a second on one core: 10 million take 80 minutes,
# in every process that finds no cached copy
MAX_SAMPLES = 10_000_000
MAX_SAMPLES_WHY = ": MNIST-1D's generator makes about 2,000 a second, so 10 million take 80 minutes"
# [resources]: (low, high, low end open, why). A bundle is placed on one node: none has a thousand
# cores or 64 GPUs. Ray's own rules (a fraction up to 1, else whole) are checked when a sweep
# starts, as they are for the flags (`orchestrator._resources.check_amount`).
_RESOURCE_RANGES = {
    "cpus_per_trial": (0, 1_024, True, ": a bundle is placed on one node"),
    "gpus_per_trial": (0, 64, False, ": a bundle is placed on one node"),
    "concurrency": (1, MAX_TRIALS, False, ""),
    "checkpoint_every_s": (0, 86_400, False, ": a day at most (0 saves after every epoch)"),
}
MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds up to this


def _check_seed(where: str, seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where} must be within [0, {MAX_SEED}] (the generators' seed range), got {seed!r}")


def _range(where: str, value: list, *, integer: bool, low: float, high: float, why: str = "") -> tuple:
    kind = int if integer else float
    if len(value) != 2 or not all(_is(v, kind) for v in value):
        raise ConfigError(f"{where} must be [low, high] of {kind.__name__}s, got {value!r}")
    lo, hi = value
    if lo > hi:
        raise ConfigError(f"{where}: low {lo!r} is above high {hi!r}; write [low, high]")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < low or hi > high:  # nan compares false
        raise ConfigError(f"{where}: {value!r} must lie within [{low}, {high}]{why}")
    return (kind(lo), kind(hi))


def _model(where: str, table: object, num_classes: int, input_shape: tuple[int, ...]) -> ModelEntry:
    """A model entry, checked by building the model once (cheap, on the CPU), so that a bad
    option value fails here rather than inside a Ray worker after the sweep has started."""
    # torch: only when validating
    from trainables.models import MAX_PARAMETERS, create_model, list_models, parameter_count

    if not isinstance(table, dict) or not isinstance(table.get("arch"), str):
        raise ConfigError(f"{where}: expected a table with arch = one of {', '.join(list_models())}")
    options = {k: v for k, v in table.items() if k not in ("arch", "schedule")}
    try:
        # counted first without allocating: a slip such as a width of 60,000 would otherwise be
        # built here, tens of gigabytes, before it could be refused
        count = parameter_count(table["arch"], num_classes, input_shape, **options)
        if count > MAX_PARAMETERS:
            raise ConfigError(f"{table['arch']} with {options} has {count:,} parameters, past {MAX_PARAMETERS:,} "
                              "(30 times the largest network here); make it smaller")
        create_model(table["arch"], num_classes, input_shape, **options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{where}: {table['arch']} cannot be built with {options}: {exc}") from None
    schedule = None
    if "schedule" in table:  # a student's own: a whole schedule, as [student_schedule] is
        from trainables.loop import Schedule

        schedule = {**Schedule().to_dict(), **_schedule(f"{where}.schedule", table["schedule"])}
    return ModelEntry(table["arch"], options, schedule)


def _schedule(where: str, table: dict) -> dict:
    from trainables.loop import check_schedule_table

    return check_schedule_table(where, table)


def parse_preset(name: str, doc: dict) -> Preset:
    """Validate a parsed TOML document and build the `Preset` it describes."""
    from trainables.data import DatasetSpec, check_fits_memory, dataset_shape, list_datasets
    from trainables.loop import Schedule

    _check_keys("preset", doc, _TOP, ("dataset", "teacher", "teacher_schedule", "students",
                                      "student_schedule", "attack", "search"))
    _check_keys("dataset", doc["dataset"], _DATASET, ("name",))
    dataset = {**DatasetSpec().to_dict(), **doc["dataset"]}  # defaults filled in, then checked
    if dataset["name"] not in list_datasets():
        raise ConfigError(f"dataset.name: unknown dataset {dataset['name']!r}; known: {', '.join(list_datasets())}")
    # at most half held out: the rest trains
    _within("dataset.val_fraction", dataset["val_fraction"], 0, 0.5, low_open=True,
            why=": the share of the training set held out to pick each phase's best epoch")
    if dataset["num_samples"] < 100:
        raise ConfigError(f"dataset.num_samples must be ≥ 100, got {dataset['num_samples']!r}")
    check_fits_memory(dataset["name"], dataset["num_samples"])  # with the numbers, before the range's end
    _within("dataset.num_samples", dataset["num_samples"], 100, MAX_SAMPLES, why=MAX_SAMPLES_WHY)
    if dataset["num_samples"] * dataset["val_fraction"] < 20:
        raise ConfigError("dataset.val_fraction × num_samples must be ≥ 20: the validation split "
                          "picks every phase's best epoch")
    _check_seed("dataset.seed", dataset["seed"])
    _check_seed("seed", doc.get("seed", 0))
    num_classes, input_shape = dataset_shape(dataset["name"])

    if isinstance(doc["teacher"], dict) and "schedule" in doc["teacher"]:
        raise ConfigError("teacher.schedule: the teacher's schedule is [teacher_schedule]; move it there")
    teacher = _model("teacher", doc["teacher"], num_classes, input_shape)
    if not doc["students"]:
        raise ConfigError("students: list at least one student ([[students]] with an arch)")
    students = tuple(_model(f"students[{i}]", s, num_classes, input_shape)
                     for i, s in enumerate(doc["students"]))
    # rows and baselines tell students apart by architecture and options: a schedule of its own
    # does not make another student
    labels = [json.dumps({"arch": s.arch, **s.options}, sort_keys=True) for s in students]
    if len(set(labels)) != len(labels):
        raise ConfigError("students: the same architecture with the same options is listed twice; "
                          "list each student once (its schedule does not make it another student)")
    teacher_schedule = _schedule("teacher_schedule", doc["teacher_schedule"])
    student_schedule = _schedule("student_schedule", doc["student_schedule"])

    attack = _attack(doc["attack"])
    _check_exits(attack, students)

    search = doc["search"]
    from trainables.defenses import list_defenses

    _check_keys("search", search, {**_SEARCH, **dict.fromkeys(list_defenses(), dict)}, ("trials",))
    trials = search["trials"]
    _within("search.trials", trials, 1, MAX_TRIALS, why=MAX_TRIALS_WHY)
    resources = doc.get("resources", {})
    _check_keys("resources", resources, _RESOURCES)
    resources = {**RESOURCE_DEFAULTS, **resources}
    for key, (low, high, low_open, why) in _RESOURCE_RANGES.items():
        if resources[key] is not None:
            _within(f"resources.{key}", resources[key], low, high, low_open=low_open, why=why)
    sampler = search.get("sampler", "front")
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    focus = search.get("focus_teacher_drop", FOCUS_TEACHER_DROP)
    if not (math.isfinite(focus) and 0 < focus <= 100):
        raise ConfigError(f"search.focus_teacher_drop must be within (0, 100] accuracy points, got {focus!r}")
    space = _space(search, num_classes)
    finite = [d.candidates() for d in space]
    if all(n is not None for n in finite) and trials > sum(finite):
        where = ", ".join(f"search.{d.defense}.{r.name}" for d in space for r in d.ranges)
        raise ConfigError(f"search.trials = {trials} exceeds the {sum(finite)} distinct "
                          f"{' and '.join(space.names)} candidates in {where}; lower trials")
    protocol = doc.get("protocol", "validation")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)} (validation: best "
                          "epoch on a held-out split; paper: the reference code's, best epoch on the test set)")
    _check_last_batch(DatasetSpec(**dataset, protocol=protocol), [
        ("teacher_schedule", teacher_schedule), ("student_schedule", student_schedule),
        *((f"students[{i}].schedule", s.schedule) for i, s in enumerate(students) if s.schedule)])
    resolved = {
        "seed": doc.get("seed", 0),
        # written out only when not the default: a sweep recorded before it existed keeps its identity
        **({"protocol": protocol} if protocol != "validation" else {}),
        "dataset": dataset,
        "teacher": teacher.to_dict(),
        "teacher_schedule": {**Schedule().to_dict(), **teacher_schedule},
        "students": [s.to_dict() for s in students],
        "student_schedule": {**Schedule().to_dict(), **student_schedule},
        "attack": attack,
        "search": {"trials": trials, "sampler": sampler, "defenses": list(space.names),
                   # written out only when not the default: a sweep recorded before these
                   # keys existed keeps its identity (and can be resumed)
                   **({"extend_ranges": False} if search.get("extend_ranges", True) is False else {}),
                   **({"full_suite": True} if search.get("full_suite", False) else {}),
                   **({"focus_teacher_drop": float(focus)} if focus != FOCUS_TEACHER_DROP else {}),
                   **{d.defense: d.table() for d in space}},
    }
    return Preset(
        name=name,
        description=doc.get("description", ""),
        seed=doc.get("seed", 0),
        dataset=resolved["dataset"],
        teacher=teacher,
        teacher_schedule=resolved["teacher_schedule"],
        students=students,
        student_schedule=resolved["student_schedule"],
        attack=attack,
        label_smoothing=attack["label_smoothing"],
        trials=trials,
        sampler=sampler,
        space=space,
        num_classes=num_classes,
        extend_ranges=resolved["search"].get("extend_ranges", True),
        full_suite=resolved["search"].get("full_suite", False),
        focus_teacher_drop=float(focus),
        protocol=protocol,
        resources=resources,
        resolved=resolved,
    )


def _check_last_batch(spec, schedules: list[tuple[str, dict]]) -> None:
    """A schedule that trains on the training split must not leave a last batch of one sample:
    BatchNorm on a network's features (the plain CNN's classifier) cannot train on one, and the
    phase would fail mid-epoch, after the sweep had started. (DAFL's batches are generated, whole.)"""
    from trainables.data import training_split_size

    samples = training_split_size(spec)
    for where, table in schedules:
        size = table["batch_size"]
        if samples % size == 1:
            raise ConfigError(f"{where}.batch_size {size}: the training split's {samples} samples leave a last "
                              "batch of one, on which BatchNorm cannot train; give another batch size")


def _attack(table: object) -> dict:
    """The attack suite's table, resolved: each registered attack reads its own keys (KD's
    temperatures, the data-free attack's generator, ...), and the label-smoothing baseline."""
    from trainables.attacks import attack_keys, attack_suite, resolve_attacks

    if not isinstance(table, dict):
        raise ConfigError("attack: expected a table")
    keys, required = attack_keys()
    _check_keys("attack", table, {**keys, "label_smoothing": float}, required)
    smoothing = table.get("label_smoothing", 0.0)
    if not 0 <= smoothing < 1:
        raise ConfigError(f"attack.label_smoothing must be within [0, 1), got {smoothing!r}")
    out = resolve_attacks(table)
    out["label_smoothing"] = float(smoothing)
    attack_suite(out)  # two attacks with one name would be one column of results
    return out


def _check_exits(attack: dict, students) -> None:
    """An attack that trains through intermediate exits (the skeptical student) needs at least
    one student whose model has them; the others are left out of it (`orchestrator.plan`)."""
    from trainables.attacks import attack_suite
    from trainables.exits import has_exits, models_with_exits

    needing = [a.label for a in attack_suite(attack) if a.needs_exits]
    if needing and not any(has_exits(s.arch, s.options) for s in students):
        raise ConfigError(f"attack {needing[0]!r} needs a student with intermediate exits and the preset has "
                          f"none (models with them: {', '.join(models_with_exits())})")


def _space(search: dict, num_classes: int) -> SearchSpace:
    """Each searched defense's `[search.<defense>]` table: a `[low, high]` range for each of the
    knobs its defense declares, within the knob's bounds, and an optional start point."""
    from trainables.defenses import get_defense, list_defenses

    given = [d for d in list_defenses() if d in search]
    defenses = tuple(search.get("defenses", given))
    for d in defenses:
        if not isinstance(d, str):
            raise ConfigError(f"search.defenses: expected names, got {d!r}")
        try:
            get_defense(d)
        except ConfigError as exc:
            raise ConfigError(f"search.defenses: {exc}") from None
    if not defenses or len(set(defenses)) != len(defenses):
        raise ConfigError(f"search.defenses: list each defense once, at least one; got {list(defenses)} "
                          f"(known: {', '.join(list_defenses())})")
    spaces = []
    for name in defenses:
        cls = get_defense(name)
        knobs = cls().knobs(num_classes)
        table = search.get(name)
        if table is None:
            ranges = " and ".join(f"{k.name} = [lo, hi]" for k in knobs)
            raise ConfigError(f"search.{name}: missing; give {ranges}")
        where = f"search.{name}"
        _check_keys(where, table, {**{k.name: list for k in knobs}, "start": dict}, tuple(k.name for k in knobs))
        ranges = tuple(KnobRange(k, *_range(f"{where}.{k.name}", table[k.name], integer=k.integer,
                                            low=k.low, high=k.high, why=k.why)) for k in knobs)
        start = table.get("start")
        if start is not None:
            _check_keys(f"{where}.start", start, {k.name: int if k.integer else float for k in knobs},
                        tuple(k.name for k in knobs))
            for r in ranges:
                _inside(f"{where}.start.{r.name}", start[r.name], (r.low, r.high))
        spaces.append(DefenseSpace(name, ranges, start, colour=cls.colour, trains_teacher=cls.trains_teacher))
    return SearchSpace(tuple(spaces))


def _inside(where: str, value: float, bounds: tuple) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where} = {value!r} lies outside its search range {list(bounds)!r}")
