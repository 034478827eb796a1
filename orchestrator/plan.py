"""From a preset to phase configs, and the DAG of phases that do not depend on searched knobs.

The attacks are the preset's suite (`trainables.attacks.attack_suite`); every student meets
every attack, but an attack that trains through intermediate exits (the skeptical student) meets
only the students whose model has them.

    teacher ──► attack(student_i, normal)          once per sweep config, cached by content key
    scratch(student_i), smoothed(student_i)         once per sweep config: the no-teacher baselines
    teacher ──► [trial] defense(knobs) ──► attack(student_i, defended)   a defense that trains
    teacher ──► [trial] attack(student_i, teacher seen through the defense's transform)
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces import Preset
from trainables.attacks import attack_suite
from trainables.candidate import attack_name
from trainables.data import DatasetSpec
from trainables.defenses import Defense, create_defense
from trainables.exits import has_exits
from trainables.loop import Schedule
from trainables.phases import ModelSpec, PhaseConfig, PhaseJob

Node = PhaseJob  # an upstream node of the DAG is a phase job like any other


def _schedule(table: dict) -> Schedule:
    return Schedule.from_table(table)


def _dataset(preset: Preset) -> DatasetSpec:
    return DatasetSpec(**preset.dataset, protocol=preset.protocol)


def _model(entry) -> ModelSpec:
    return ModelSpec.of(entry.arch, **entry.options)


@dataclass(frozen=True)
class Plan:
    teacher: Node
    scratch: tuple[Node, ...]  # each student from labels alone
    smoothed: tuple[Node, ...]  # each student from labels alone with label smoothing (may be empty)
    normal_attacks: tuple[Node, ...]  # every attack template on the normal teacher
    defenses: dict[str, Defense]  # the searched defenses' registered entries, by name
    defense_template: PhaseConfig | None  # a defended teacher's phase, defense and knobs unset
    attack_templates: tuple[PhaseConfig, ...]  # student × attack, the defended teacher still unset

    @property
    def upstream(self) -> tuple[Node, ...]:
        """Every upstream node, each after the nodes it depends on."""
        return (self.teacher, *self.scratch, *self.smoothed, *self.normal_attacks)


def make_plan(preset: Preset) -> Plan:
    dataset, seed = _dataset(preset), preset.seed
    teacher_model = _model(preset.teacher)
    teacher_schedule = _schedule(preset.teacher_schedule)
    suite = attack_suite(preset.attack)

    teacher_cfg = PhaseConfig("teacher", dataset, teacher_model, teacher_schedule, seed)
    teacher = Node("teacher", teacher_cfg, teacher_cfg.key())

    scratch, smoothed, normal_attacks, templates = [], [], [], []
    for entry in preset.students:
        student = _model(entry)
        student_schedule = _schedule(entry.schedule or preset.student_schedule)
        cfg = PhaseConfig("scratch", dataset, student, student_schedule, seed)
        scratch.append(Node(f"scratch {student.label}", cfg, cfg.key()))
        if preset.label_smoothing:
            cfg = PhaseConfig("scratch", dataset, student, student_schedule, seed,
                              label_smoothing=preset.label_smoothing)
            smoothed.append(Node(f"smoothed {student.label}", cfg, cfg.key()))
        for attack in suite:
            if attack.needs_exits and not has_exits(student.arch, dict(student.options)):
                continue  # no exit to teach at (the preset was checked to have a student with one)
            cfg = PhaseConfig("attack", dataset, student, attack.student_schedule(student_schedule), seed,
                              teacher_model=teacher_model, attack=attack)
            templates.append(cfg)
            normal_attacks.append(Node(attack_name(cfg), cfg, cfg.key(teacher.key), teacher.key, teacher))

    defenses = {name: create_defense(name) for name in preset.space.names}
    template = None
    if any(d.trains_teacher for d in defenses.values()):
        # A defended teacher trains like the normal one, from scratch, with the same architecture;
        # the placeholder defense is replaced by each candidate's (see `candidate_jobs`).
        trained = next(d for d in defenses.values() if d.trains_teacher)
        template = PhaseConfig("defense", dataset, teacher_model, teacher_schedule, seed,
                               teacher_model=teacher_model, defense=trained)
    return Plan(teacher, tuple(scratch), tuple(smoothed), tuple(normal_attacks), defenses, template,
                tuple(templates))
