"""A preset: what a sweep trains, how, and which defenses it searches; parsed strictly from TOML.

Every problem is reported as one `ConfigError` line naming the key, the bad value and the fix.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from trainables.errors import ConfigError

DEFENSES = ("nasty", "stingy")
SAMPLERS = ("tpe", "gp", "nsga2", "random")


@dataclass(frozen=True)
class ModelEntry:
    arch: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"arch": self.arch, **self.options}


@dataclass(frozen=True)
class NastySpace:
    omega: tuple[float, float]  # log-uniform
    tau_a: tuple[float, float]  # log-uniform
    start: dict[str, float] | None  # the paper-like point, enqueued first


@dataclass(frozen=True)
class StingySpace:
    k: tuple[int, int]  # inclusive integer range
    start: dict[str, int] | None


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
    kd_temperatures: tuple[float, ...]  # one KD attack per temperature the attacker picks
    kd_alpha: float
    label_smoothing: float  # the baseline student trained alone with it (0: none)
    data_free: dict[str, Any] | None  # the DAFL attack's generator (DataFreeSpec fields), or None
    trials: int
    sampler: str
    defenses: tuple[str, ...]
    nasty: NastySpace | None
    stingy: StingySpace | None
    num_classes: int
    # [resources]: how a sweep runs, not what it computes, so not part of its identity
    resources: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict:
        """The preset with every default filled in, as a TOML-shaped document: what a sweep
        stores and fingerprints, so writing a default out explicitly changes nothing. Its
        `[resources]` are left out: they change where a sweep runs, not what it finds."""
        return json.loads(json.dumps(self.resolved, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Strict reading of a TOML mapping

_TOP = {
    "description": str, "seed": int, "dataset": dict, "teacher": dict, "teacher_schedule": dict,
    "students": list, "student_schedule": dict, "attack": dict, "search": dict, "resources": dict,
}
_SCHEDULE = {
    "optimizer": str, "lr": float, "weight_decay": float, "momentum": float, "epochs": int,
    "batch_size": int, "lr_schedule": str, "milestones": list, "gamma": float,
}
_DATASET = {"name": str, "num_samples": int, "val_fraction": float, "seed": int}
_ATTACK = {"kd_temperatures": list, "kd_alpha": float, "label_smoothing": float, "data_free": dict}
_DATA_FREE = {"latent_dim": int, "generator_steps": int, "batch_size": int, "lr": float,
              "activation_weight": float, "entropy_weight": float, "samples": int,
              "kd_temperature": float}
_SEARCH = {"trials": int, "sampler": str, "defenses": list, "nasty": dict, "stingy": dict}
# Per process of a trial (its own and each student's); concurrency caps trials at once.
_RESOURCES = {"cpus_per_trial": float, "gpus_per_trial": float, "concurrency": int,
              "checkpoint_every_s": float}
# None: GPUs chosen by the cluster, no concurrency cap, the training loop's checkpoint interval
RESOURCE_DEFAULTS = {"cpus_per_trial": 1.0, "gpus_per_trial": None, "concurrency": None,
                     "checkpoint_every_s": None}
_NASTY = {"omega": list, "tau_a": list, "start": dict}
_STINGY = {"k": list, "start": dict}


def _check_keys(where: str, table: dict, allowed: dict, required: tuple[str, ...] = ()) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where}: missing required key {key!r}")
    for key, kind in allowed.items():
        if key in table and not _is(table[key], kind):
            raise ConfigError(
                f"{where}.{key}: expected {kind.__name__}, got {type(table[key]).__name__} "
                f"{table[key]!r}"
            )


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # TOML writes 4 for 4.0: accept integers where floats are meant
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} must be {'≥' if allow_zero else '>'} 0, got {value!r}")


def _range(where: str, value: list, *, integer: bool, low: float, high: float, why: str = "") -> tuple:
    kind = int if integer else float
    if len(value) != 2 or not all(_is(v, kind) for v in value):
        raise ConfigError(f"{where} must be [low, high] of {kind.__name__}s, got {value!r}")
    lo, hi = value
    if lo > hi:
        raise ConfigError(f"{where}: low {lo!r} is above high {hi!r}; write [low, high]")
    if lo < low or hi > high:
        raise ConfigError(f"{where}: {value!r} must lie within [{low}, {high}]{why}")
    return (kind(lo), kind(hi))


def _model(where: str, table: object, num_classes: int, input_shape: tuple[int, ...]) -> ModelEntry:
    """A model entry, checked by building the model once (cheap, on the CPU), so that a bad
    option value fails here rather than inside a Ray worker after the sweep has started."""
    from trainables.models import create_model, list_models  # torch: only when validating

    if not isinstance(table, dict) or not isinstance(table.get("arch"), str):
        raise ConfigError(f"{where}: expected a table with arch = one of {', '.join(list_models())}")
    options = {k: v for k, v in table.items() if k != "arch"}
    try:
        create_model(table["arch"], num_classes, input_shape, **options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{where}: {table['arch']} cannot be built with {options}: {exc}") from None
    return ModelEntry(table["arch"], options)


def _schedule(where: str, table: dict) -> dict:
    from trainables.loop import LR_SCHEDULES, OPTIMIZERS

    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    _check_keys(where, table, _SCHEDULE, ("optimizer", "lr", "epochs", "batch_size"))
    if table["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer: {table['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if table.get("lr_schedule", "onecycle") not in LR_SCHEDULES:
        raise ConfigError(
            f"{where}.lr_schedule: {table['lr_schedule']!r} is not one of {', '.join(LR_SCHEDULES)}"
        )
    _positive(f"{where}.lr", table["lr"])
    _positive(f"{where}.weight_decay", table.get("weight_decay", 0.0), allow_zero=True)
    for key in ("epochs", "batch_size"):
        if table[key] < 1:
            raise ConfigError(f"{where}.{key} must be ≥ 1, got {table[key]!r}")
    milestones = table.get("milestones", [])
    if not all(_is(m, int) and 0 < m < table["epochs"] for m in milestones):
        raise ConfigError(f"{where}.milestones must be epochs between 1 and epochs−1, got {milestones!r}")
    return dict(table)


def parse_preset(name: str, doc: dict) -> Preset:
    """Validate a parsed TOML document and build the `Preset` it describes."""
    from trainables.data import DatasetSpec, dataset_shape, list_datasets
    from trainables.loop import Schedule

    _check_keys("preset", doc, _TOP, ("dataset", "teacher", "teacher_schedule", "students",
                                      "student_schedule", "attack", "search"))
    _check_keys("dataset", doc["dataset"], _DATASET, ("name",))
    dataset = {**DatasetSpec().to_dict(), **doc["dataset"]}  # defaults filled in, then checked
    if dataset["name"] not in list_datasets():
        raise ConfigError(f"dataset.name: unknown dataset {dataset['name']!r}; known: {', '.join(list_datasets())}")
    if not 0 < dataset["val_fraction"] < 1:
        raise ConfigError(f"dataset.val_fraction must be between 0 and 1, got {dataset['val_fraction']!r}")
    if dataset["num_samples"] < 100:
        raise ConfigError(f"dataset.num_samples must be ≥ 100, got {dataset['num_samples']!r}")
    if dataset["num_samples"] * dataset["val_fraction"] < 20:
        raise ConfigError("dataset.val_fraction × num_samples must be ≥ 20: the validation split "
                          "picks every phase's best epoch")
    if dataset["seed"] < 0:
        raise ConfigError(f"dataset.seed must be ≥ 0, got {dataset['seed']!r}")
    num_classes, input_shape = dataset_shape(dataset["name"])

    teacher = _model("teacher", doc["teacher"], num_classes, input_shape)
    if not doc["students"]:
        raise ConfigError("students: list at least one student ([[students]] with an arch)")
    students = tuple(_model(f"students[{i}]", s, num_classes, input_shape)
                     for i, s in enumerate(doc["students"]))
    labels = [json.dumps(s.to_dict(), sort_keys=True) for s in students]
    if len(set(labels)) != len(labels):
        raise ConfigError("students: the same architecture with the same options is listed twice; "
                          "list each student once")
    teacher_schedule = _schedule("teacher_schedule", doc["teacher_schedule"])
    student_schedule = _schedule("student_schedule", doc["student_schedule"])

    attack = _attack(doc["attack"])

    search = doc["search"]
    _check_keys("search", search, _SEARCH, ("trials",))
    trials = search["trials"]
    if trials < 1:
        raise ConfigError(f"search.trials must be ≥ 1, got {trials!r}")
    resources = doc.get("resources", {})
    _check_keys("resources", resources, _RESOURCES)
    resources = {**RESOURCE_DEFAULTS, **resources}
    if resources["concurrency"] is not None and resources["concurrency"] < 1:
        raise ConfigError(f"resources.concurrency must be ≥ 1, got {resources['concurrency']!r}")
    if resources["checkpoint_every_s"] is not None:
        _positive("resources.checkpoint_every_s", resources["checkpoint_every_s"], allow_zero=True)
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    defenses = tuple(search.get("defenses", list(DEFENSES)))
    for d in defenses:
        if d not in DEFENSES:
            raise ConfigError(f"search.defenses: unknown defense {d!r}; known: {', '.join(DEFENSES)}")
    if not defenses or len(set(defenses)) != len(defenses):
        raise ConfigError(f"search.defenses: list each defense once, at least one; got {list(defenses)}")

    nasty = stingy = None
    if "nasty" in defenses:
        table = search.get("nasty")
        if table is None:
            raise ConfigError("search.nasty: missing; give omega = [lo, hi] and tau_a = [lo, hi]")
        _check_keys("search.nasty", table, _NASTY, ("omega", "tau_a"))
        omega = _range("search.nasty.omega", table["omega"], integer=False, low=1e-6, high=10.0)
        tau_a = _range("search.nasty.tau_a", table["tau_a"], integer=False, low=0.1, high=100.0)
        start = table.get("start")
        if start is not None:
            _check_keys("search.nasty.start", start, {"omega": float, "tau_a": float}, ("omega", "tau_a"))
            _inside("search.nasty.start.omega", start["omega"], omega)
            _inside("search.nasty.start.tau_a", start["tau_a"], tau_a)
        nasty = NastySpace(omega, tau_a, start)
    if "stingy" in defenses:
        table = search.get("stingy")
        if table is None:
            raise ConfigError(f"search.stingy: missing; give k = [lo, hi] with 1 ≤ k < {num_classes}")
        _check_keys("search.stingy", table, _STINGY, ("k",))
        k = _range("search.stingy.k", table["k"], integer=True, low=1, high=num_classes - 1,
                   why=f": the teacher keeps its k largest of {num_classes} logits, so 1 ≤ k < {num_classes}")
        start = table.get("start")
        if start is not None:
            _check_keys("search.stingy.start", start, {"k": int}, ("k",))
            _inside("search.stingy.start.k", start["k"], k)
        stingy = StingySpace(k, start)

    if defenses == ("stingy",) and trials > stingy.k[1] - stingy.k[0] + 1:
        raise ConfigError(f"search.trials = {trials} exceeds the {stingy.k[1] - stingy.k[0] + 1} "
                          "distinct stingy candidates in search.stingy.k; lower trials")
    resolved = {
        "seed": doc.get("seed", 0),
        "dataset": dataset,
        "teacher": teacher.to_dict(),
        "teacher_schedule": {**Schedule().to_dict(), **teacher_schedule},
        "students": [s.to_dict() for s in students],
        "student_schedule": {**Schedule().to_dict(), **student_schedule},
        "attack": attack,
        "search": {"trials": trials, "sampler": sampler,
                   "defenses": list(defenses)},
    }
    if nasty:
        resolved["search"]["nasty"] = {"omega": list(nasty.omega), "tau_a": list(nasty.tau_a),
                                       **({"start": nasty.start} if nasty.start else {})}
    if stingy:
        resolved["search"]["stingy"] = {"k": list(stingy.k), **({"start": stingy.start} if stingy.start else {})}
    return Preset(
        name=name,
        description=doc.get("description", ""),
        seed=doc.get("seed", 0),
        dataset=resolved["dataset"],
        teacher=teacher,
        teacher_schedule=resolved["teacher_schedule"],
        students=students,
        student_schedule=resolved["student_schedule"],
        kd_temperatures=tuple(attack["kd_temperatures"]),
        kd_alpha=attack["kd_alpha"],
        label_smoothing=attack["label_smoothing"],
        data_free=attack.get("data_free"),
        trials=trials,
        sampler=sampler,
        defenses=defenses,
        nasty=nasty,
        stingy=stingy,
        num_classes=num_classes,
        resources=resources,
        resolved=resolved,
    )


def _attack(table: object) -> dict:
    """The attack suite, resolved: KD at each temperature, the optional data-free attack, and the
    label-smoothing baseline."""
    from trainables.data_free import DataFreeSpec

    if not isinstance(table, dict):
        raise ConfigError("attack: expected a table")
    _check_keys("attack", table, _ATTACK, ("kd_temperatures", "kd_alpha"))
    temperatures = table["kd_temperatures"]
    if not temperatures or not all(_is(t, float) for t in temperatures):
        raise ConfigError(f"attack.kd_temperatures must list temperatures, got {temperatures!r}")
    for t in temperatures:
        _positive("attack.kd_temperatures", t)
    if len({f"{t:g}" for t in temperatures}) != len(temperatures):  # attacks are named kd-T<t:g>
        raise ConfigError(f"attack.kd_temperatures lists a temperature twice: {temperatures!r}")
    if not 0 <= table["kd_alpha"] <= 1:
        raise ConfigError(f"attack.kd_alpha must be within [0, 1], got {table['kd_alpha']!r}")
    smoothing = table.get("label_smoothing", 0.0)
    if not 0 <= smoothing < 1:
        raise ConfigError(f"attack.label_smoothing must be within [0, 1), got {smoothing!r}")
    out = {"kd_temperatures": sorted(float(t) for t in temperatures), "kd_alpha": float(table["kd_alpha"]),
           "label_smoothing": float(smoothing)}
    data_free = table.get("data_free")
    if data_free is not None:
        _check_keys("attack.data_free", data_free, _DATA_FREE)
        for key, least in (("latent_dim", 1), ("generator_steps", 1), ("batch_size", 2)):
            if key in data_free and data_free[key] < least:  # the generator's BatchNorm needs 2
                raise ConfigError(f"attack.data_free.{key} must be ≥ {least}, got {data_free[key]!r}")
        for key in ("lr", "kd_temperature"):
            if key in data_free:
                _positive(f"attack.data_free.{key}", data_free[key])
        for key in ("activation_weight", "entropy_weight", "samples"):
            if key in data_free:
                _positive(f"attack.data_free.{key}", data_free[key], allow_zero=True)
        given = {k: float(v) if _DATA_FREE[k] is float else v for k, v in data_free.items()}
        out["data_free"] = {**asdict(DataFreeSpec()), "kd_temperature": DATA_FREE_TEMPERATURE, **given}
    return out


# DAFL distils at this temperature unless the preset's [attack.data_free] says otherwise
DATA_FREE_TEMPERATURE = 4.0


def _inside(where: str, value: float, bounds: tuple) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where} = {value!r} lies outside its search range {list(bounds)!r}")
