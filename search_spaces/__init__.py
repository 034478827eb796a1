"""Presets (dataset, architectures, schedules, attack) and each defense's search space.

Public surface: `load_preset`, `list_presets`, `Preset`, `suggest_candidate`, `start_points`.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path

from undistill.errors import ConfigError
from undistill.tables import check_within

from ._schema import MAX_TRIALS, MAX_TRIALS_WHY, PROTOCOLS, SAMPLERS, Preset, parse_preset

__all__ = ["PROTOCOLS", "SAMPLERS", "Preset", "adjust", "list_presets", "load_preset", "start_points",
           "suggest_candidate"]


def _preset_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files(__package__) / "presets"
    return {p.name[: -len(".toml")]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description."""
    out = {}
    for name, path in sorted(_preset_files().items()):
        doc = tomllib.loads(path.read_text())
        out[name] = doc.get("description", "")
    return out


def load_preset(name: str | None = None, config_file: str | Path | None = None) -> Preset:
    """A built-in preset by name, or a user's TOML file (named after the file)."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text, name = path.read_text(encoding="utf-8"), name or path.stem
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read as UTF-8 text ({exc})") from None
    else:
        files = _preset_files()
        if name not in files:
            raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(files))} "
                              "(or pass --config FILE)")
        text = files[name].read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file or name}: not valid TOML ({exc})") from None
    return parse_preset(name, doc)


def suggest_candidate(trial, preset: Preset) -> dict:
    """Optuna define-by-run space: one defense and its knobs, conditional on the defense, each
    knob as its defense declares it (integer or not, log scale or not), in its searched range.

    Works on an `optuna.Trial` (or Ray's captor of one); returns nothing extra, every value is
    suggested so the study records it. A sampler with `searched_space(study, trial)` (the
    default, `orchestrator.strategy.FrontSampler`) gives ranges widened past the preset's.
    """
    defense = trial.suggest_categorical("defense", list(preset.space.names))
    space = preset.space
    searched = getattr(trial.study.sampler, "searched_space", None)
    if searched is not None:  # a sampler that widens ranges (the default) says how far
        space = searched(trial.study, trial)
    for r in space.get(defense).ranges:
        if r.knob.integer:
            trial.suggest_int(r.name, int(r.low), int(r.high), log=r.knob.log)
        else:
            trial.suggest_float(r.name, r.low, r.high, log=r.knob.log)
    return {}


def start_points(preset: Preset) -> list[dict]:
    """The preset's paper-like candidates, evaluated before the sampler takes over."""
    return [{"defense": d.defense, **d.start} for d in preset.space if d.start]


def adjust(preset: Preset, *, epochs_scale: float = 1.0, trials: int | None = None,
           sampler: str | None = None, full_suite: bool | None = None,
           protocol: str | None = None) -> Preset:
    """The preset with every schedule's epochs (and lr milestones), the data-free attack's
    included, times `epochs_scale`, with `trials` trials and searched by `sampler`: a
    quick look at a paper-scale preset, or another search of the same space (`full_suite`: every
    attack on every candidate; `protocol`: see `PROTOCOLS`). The result is
    another config (its own identity), validated like any preset."""
    if not (math.isfinite(epochs_scale) and epochs_scale > 0):
        raise ConfigError(f"--epochs-scale {epochs_scale} must be a finite number > 0")
    if trials is not None:
        check_within("--trials", trials, 1, MAX_TRIALS, why=MAX_TRIALS_WHY)
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if (epochs_scale == 1.0 and trials is None and sampler in (None, preset.sampler)
            and full_suite in (None, preset.full_suite) and protocol in (None, preset.protocol)):
        return preset
    doc = preset.to_dict()
    doc["description"] = preset.description
    doc["resources"] = {k: v for k, v in preset.resources.items() if v is not None}
    from trainables.attacks import scale_attack_epochs
    from trainables.loop import MAX_EPOCHS, MAX_EPOCHS_WHY, scale_schedule_table

    own = [(f"students[{i}].schedule", student["schedule"]) for i, student in enumerate(doc["students"])
           if "schedule" in student]
    data_free = doc["attack"].get("data_free")
    every = [("teacher_schedule", doc["teacher_schedule"]), ("student_schedule", doc["student_schedule"]), *own,
             *([("attack.data_free.student_schedule", data_free["student_schedule"])] if data_free else [])]
    for where, schedule in every:
        # checked before scaling: the flag is named, and a count past a float's range never rounded
        if schedule["epochs"] * epochs_scale > MAX_EPOCHS:
            raise ConfigError(f"--epochs-scale {epochs_scale:g} makes {where}.epochs "
                              f"{schedule['epochs'] * epochs_scale:.4g}, past {MAX_EPOCHS}{MAX_EPOCHS_WHY}; "
                              "give a smaller scale")
    for schedule in [doc["teacher_schedule"], doc["student_schedule"], *(table for _, table in own)]:
        scale_schedule_table(schedule, epochs_scale)
    scale_attack_epochs(doc["attack"], epochs_scale)  # the data-free attack's student schedule
    if trials is not None:
        doc["search"]["trials"] = trials
    if sampler is not None:
        doc["search"]["sampler"] = sampler
    if full_suite is not None:
        doc["search"]["full_suite"] = full_suite
    if protocol is not None:
        doc["protocol"] = protocol
    return parse_preset(preset.name, doc)
