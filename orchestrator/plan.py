"""From a preset to phase configs, and the DAG of phases that do not depend on searched knobs.

    teacher ──► kd(student_i, normal)      once per sweep config, cached by content key
    scratch(student_i)                      once per sweep config, cached by content key
    teacher ──► [trial] nasty(ω, τ_A) ──► kd(student_i, nasty)
    teacher ──► [trial] kd(student_i, stingy k)
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces import Preset
from trainables.data import DatasetSpec
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
    scratch: tuple[Node, ...]
    normal_kd: tuple[Node, ...]
    nasty_template: PhaseConfig | None
    kd_templates: tuple[PhaseConfig, ...]

    @property
    def upstream(self) -> tuple[Node, ...]:
        """Every upstream node, each after the nodes it depends on."""
        return (self.teacher, *self.scratch, *self.normal_kd)


def make_plan(preset: Preset) -> Plan:
    dataset, seed = _dataset(preset), preset.seed
    teacher_model = _model(preset.teacher)
    teacher_schedule = _schedule(preset.teacher_schedule)
    student_schedule = _schedule(preset.student_schedule)

    teacher_cfg = PhaseConfig("teacher", dataset, teacher_model, teacher_schedule, seed)
    teacher = Node("teacher", teacher_cfg, teacher_cfg.key())

    scratch, normal_kd, kd_templates = [], [], []
    for entry in preset.students:
        student = _model(entry)
        cfg = PhaseConfig("scratch", dataset, student, student_schedule, seed)
        scratch.append(Node(f"scratch {student.label}", cfg, cfg.key()))
        kd = PhaseConfig("kd", dataset, student, student_schedule, seed, teacher_model=teacher_model,
                         kd_temperature=preset.kd_temperature, kd_alpha=preset.kd_alpha)
        kd_templates.append(kd)
        normal_kd.append(Node(f"kd {student.label}", kd, kd.key(teacher.key), teacher.key))

    # The nasty teacher trains like the normal one, from scratch, with the same architecture.
    nasty = None
    if preset.nasty is not None:
        nasty = PhaseConfig("nasty", dataset, teacher_model, teacher_schedule, seed,
                            teacher_model=teacher_model)
    return Plan(teacher, tuple(scratch), tuple(normal_kd), nasty, tuple(kd_templates))
