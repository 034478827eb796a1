"""From a preset to phase configs, and the DAG of phases that do not depend on searched knobs.

An attack is KD at one of the attacker's temperatures, or data-free KD (DAFL); every student
meets every attack.

    teacher ──► attack(student_i, normal)          once per sweep config, cached by content key
    scratch(student_i), smoothed(student_i)         once per sweep config: the no-teacher baselines
    teacher ──► [trial] nasty(ω, τ_A) ──► attack(student_i, nasty)
    teacher ──► [trial] attack(student_i, stingy k)
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces import Preset
from trainables.candidate import attack_name
from trainables.data import DatasetSpec
from trainables.data_free import DataFreeSpec
from trainables.loop import Schedule
from trainables.phases import ModelSpec, PhaseConfig, PhaseJob

Node = PhaseJob  # an upstream node of the DAG is a phase job like any other


def _schedule(table: dict) -> Schedule:
    return Schedule(**{**table, "milestones": tuple(table.get("milestones", ()))})


def _dataset(preset: Preset) -> DatasetSpec:
    return DatasetSpec(**preset.dataset)


def _model(entry) -> ModelSpec:
    return ModelSpec.of(entry.arch, **entry.options)


@dataclass(frozen=True)
class Plan:
    teacher: Node
    scratch: tuple[Node, ...]  # each student from labels alone
    smoothed: tuple[Node, ...]  # each student from labels alone with label smoothing (may be empty)
    normal_attacks: tuple[Node, ...]  # every attack template on the normal teacher
    nasty_template: PhaseConfig | None
    attack_templates: tuple[PhaseConfig, ...]  # student × attack, the defended teacher still unset

    @property
    def upstream(self) -> tuple[Node, ...]:
        """Every upstream node, each after the nodes it depends on."""
        return (self.teacher, *self.scratch, *self.smoothed, *self.normal_attacks)


def make_plan(preset: Preset) -> Plan:
    dataset, seed = _dataset(preset), preset.seed
    teacher_model = _model(preset.teacher)
    teacher_schedule = _schedule(preset.teacher_schedule)
    student_schedule = _schedule(preset.student_schedule)

    teacher_cfg = PhaseConfig("teacher", dataset, teacher_model, teacher_schedule, seed)
    teacher = Node("teacher", teacher_cfg, teacher_cfg.key())

    scratch, smoothed, normal_attacks, templates = [], [], [], []
    for entry in preset.students:
        student = _model(entry)
        cfg = PhaseConfig("scratch", dataset, student, student_schedule, seed)
        scratch.append(Node(f"scratch {student.label}", cfg, cfg.key()))
        if preset.label_smoothing:
            cfg = PhaseConfig("scratch", dataset, student, student_schedule, seed,
                              label_smoothing=preset.label_smoothing)
            smoothed.append(Node(f"smoothed {student.label}", cfg, cfg.key()))
        attacks = [PhaseConfig("kd", dataset, student, student_schedule, seed, teacher_model=teacher_model,
                               kd_temperature=t, kd_alpha=preset.kd_alpha) for t in preset.kd_temperatures]
        if preset.data_free is not None:
            spec = {k: v for k, v in preset.data_free.items() if k != "kd_temperature"}
            attacks.append(PhaseConfig("dafl", dataset, student, student_schedule, seed,
                                       teacher_model=teacher_model,
                                       kd_temperature=preset.data_free["kd_temperature"],
                                       kd_alpha=1.0,  # no data, no labels: soft targets only
                                       data_free=DataFreeSpec(**spec)))
        for cfg in attacks:
            templates.append(cfg)
            normal_attacks.append(Node(attack_name(cfg), cfg, cfg.key(teacher.key), teacher.key))

    # The nasty teacher trains like the normal one, from scratch, with the same architecture.
    nasty = None
    if preset.nasty is not None:
        nasty = PhaseConfig("nasty", dataset, teacher_model, teacher_schedule, seed,
                            teacher_model=teacher_model)
    return Plan(teacher, tuple(scratch), tuple(smoothed), tuple(normal_attacks), nasty, tuple(templates))
