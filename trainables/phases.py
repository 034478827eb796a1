"""The four kinds of phase. Each reads top to bottom: config, data, model, loss, loop, result.

    teacher  normal teacher, cross-entropy on labels
    scratch  a student from labels alone (the no-teacher baselines, plain or label-smoothed)
    defense  a defended teacher trained from scratch against the frozen normal teacher, with the
             loss its defense gives (`cfg.defense`, a registered `trainables.defenses.Defense`)
    attack   a student made from a frozen teacher, seen through its defense's transform if it
             has one, by a registered attack (`cfg.attack`, a `trainables.attacks.Attack`)

`run_phase` is pure: no Ray. It returns a JSON-able result and, for teachers, writes
`model.pt` (best-val weights) into the output folder. A phase's defense and attack are the
registered entries themselves, not names: they travel with the config to whichever process
runs it, so an entry registered in one process (a test's, a user's) runs in every worker.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from undistill.errors import ConfigError

from .data import DatasetSpec, load_dataset
from .device import configure_threads, pick_device
from .loop import CHECKPOINT_EVERY_S, OnEpoch, Schedule, TrainResult, batched_logits, to_device_layout, train
from .losses import cross_entropy
from .models import check_model_kwargs, create_model

if TYPE_CHECKING:
    from .attacks import Attack
    from .defenses import Defense

PHASES = ("teacher", "scratch", "defense", "attack")
# Bump when a change alters what a phase computes: it is part of every artifact key, so cached
# results from older code are not reused.
PHASE_CODE_VERSION = 5  # 5: fused optimizers; mobilenetv2 and shufflenetv2 are the reference's networks
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs: hashable, stable

    @classmethod
    def of(cls, arch: str, **options) -> ModelSpec:
        check_model_kwargs(arch, options)
        return cls(arch, tuple(sorted(options.items())))

    @property
    def label(self) -> str:
        """`cnn1d` or `cnn1d(width=16)`: the name results use for this architecture."""
        if not self.options:
            return self.arch
        return f"{self.arch}({','.join(f'{k}={v}' for k, v in self.options)})"

    def build(self, num_classes: int, input_shape: tuple[int, ...], *, exits: bool = False) -> torch.nn.Module:
        """The model; with its intermediate exits (`trainables.exits`) where `exits`."""
        if exits:
            from .exits import create_with_exits

            return create_with_exits(self.arch, num_classes, input_shape, **dict(self.options))
        return create_model(self.arch, num_classes, input_shape, **dict(self.options))

    def to_dict(self) -> dict:
        return {"arch": self.arch, **dict(self.options)}


@dataclass(frozen=True)
class PhaseConfig:
    phase: str  # one of PHASES
    dataset: DatasetSpec
    model: ModelSpec
    schedule: Schedule
    seed: int
    teacher_model: ModelSpec | None = None  # defense, attack: the frozen network's architecture
    # defense: the defense trained; attack: the defense whose transform the attacker sees the
    # teacher through (None: the teacher as it is)
    defense: Defense | None = None
    knobs: tuple[tuple[str, float], ...] = ()  # that defense's knobs, sorted (name, value)
    attack: Attack | None = None  # attack: how the student is made
    label_smoothing: float = 0.0  # teacher, scratch

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ConfigError(f"unknown phase {self.phase!r}; known: {', '.join(PHASES)}")
        needs_teacher = self.phase in ("defense", "attack")
        if needs_teacher != (self.teacher_model is not None):
            raise ConfigError(f"phase {self.phase!r} {'needs' if needs_teacher else 'takes no'} teacher")
        if (self.phase == "attack") != (self.attack is not None):
            raise ConfigError("an attack goes with phase 'attack', and only with it")
        if self.phase == "defense" and not (self.defense is not None and self.defense.trains_teacher):
            raise ConfigError("phase 'defense' needs a defense that trains its teacher")
        if self.student_exits:
            from .exits import check_has_exits

            check_has_exits(self.model.arch, dict(self.model.options), label=self.model.label,
                            who=f"attack {self.attack.label!r}")

    @property
    def student_exits(self) -> bool:
        """Whether the phase's model is built with its intermediate exits (its attack reads them)."""
        return self.attack is not None and self.attack.needs_exits

    @property
    def method(self) -> str:
        """What the phase runs: `teacher`, `scratch`, or its defense's or attack's name."""
        if self.phase == "defense":
            return self.defense.name
        return self.attack.name if self.phase == "attack" else self.phase

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "dataset": self.dataset.to_dict(),
            "model": self.model.to_dict(),
            "schedule": self.schedule.to_dict(),
            "seed": self.seed,
            "teacher_model": self.teacher_model.to_dict() if self.teacher_model else None,
            "defense": self.defense.name if self.defense is not None else None,
            "knobs": dict(self.knobs),
            "attack": self.attack.to_dict() if self.attack is not None else None,
            "label_smoothing": self.label_smoothing,
        }

    def key(self, teacher_key: str | None = None) -> str:
        """Content key: the phase's full config, its teacher's key and the code version."""
        blob = json.dumps(
            {"config": self.to_dict(), "teacher": teacher_key, "code": PHASE_CODE_VERSION},
            sort_keys=True,
        )
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


@dataclass(frozen=True)
class PhaseJob:
    """A phase to run: its config, its content key and the key of the teacher it needs, if any.
    Runners (in-process, Ray tasks, child tasks of a trial) find finished phases by key.

    `teacher_job` is how to compute that teacher again (its own `teacher_job` names the normal
    teacher's, for a defended one): a runner that finds the teacher's artifact lost or damaged
    recomputes it instead of failing. It is no part of the phase's identity: the key hashes the
    config and the teacher's key only, and jobs compare without it."""

    name: str  # human label: "teacher", "scratch mlp", "kd-T4 cnn1d(width=16)"
    config: PhaseConfig
    key: str
    teacher_key: str | None = None
    teacher_job: PhaseJob | None = field(default=None, compare=False, repr=False)


def provenance() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "phase_code_version": PHASE_CODE_VERSION,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "hostname": platform.node(),
    }


def _load_frozen(spec: ModelSpec, weights: Path, num_classes: int, input_shape, device):
    model = spec.build(num_classes, input_shape).to(device)
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


@torch.no_grad()
def _frozen_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen teacher on a (prepared, augmented) training batch: no graph, as float32."""
    return model(x).float()


def run_phase(
    cfg: PhaseConfig,
    out_dir: Path,
    *,
    teacher_weights: Path | None = None,
    data_cache: Path | None = None,
    checkpoint: Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    gpu_fraction: float | None = None,
    data_root: Path | None = None,
    on_epoch: OnEpoch | None = None,
) -> dict:
    """Run one phase and return its result; teachers also leave `out_dir/model.pt`.

    `checkpoint` (with `on_checkpoint` and `checkpoint_every_s`, see `loop.train`) makes the
    phase resumable mid-way;
    `gpu_fraction` is the share of a GPU this process holds (its memory is capped to it);
    `on_epoch(done, total)` runs after each epoch.
    """
    started = time.perf_counter()
    configure_threads()
    device = pick_device(gpu_fraction)  # None (no scheduler): a visible GPU
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # data
    data = load_dataset(cfg.dataset, device, cache_dir=data_cache, data_root=data_root)

    # model: the same seed gives the same initial weights
    torch.manual_seed(cfg.seed)
    # (with its exits where its attack trains through them; the memory layout: loop.train)
    model = cfg.model.build(data.num_classes, data.input_shape, exits=cfg.student_exits).to(device)

    # loss
    frozen = None
    if cfg.teacher_model is not None:
        if teacher_weights is None:
            raise ConfigError(f"phase {cfg.phase!r} needs the teacher's weights")
        frozen = _load_frozen(cfg.teacher_model, teacher_weights, data.num_classes, data.input_shape, device)
    extra: dict[str, Any] = {}
    steps = None  # the training split's batches, unless an attack brings its own
    if cfg.phase in ("teacher", "scratch"):
        smoothing = cfg.label_smoothing

        def loss_fn(m, x, y, idx):
            return cross_entropy(m(x), y, label_smoothing=smoothing)

    elif cfg.phase == "defense":  # the frozen network is the normal teacher
        # without augmentation every epoch shows it the same inputs: ask it once
        normal_logits = batched_logits(frozen, data.train_x, data.prepare) if data.augment is None else None

        def normal(x, idx):
            return normal_logits[idx] if normal_logits is not None else _frozen_logits(frozen, x)

        from .defenses import NormalTeacher

        loss_fn = cfg.defense.teacher_loss(dict(cfg.knobs), NormalTeacher(normal, frozen, data))

    else:  # attack
        view, extra["teacher_acc_seen"] = _attacker_view(cfg, frozen, data)
        prepared = cfg.attack.prepare(view, data, cfg.seed, cfg.schedule)
        data, loss_fn, steps = prepared.data, prepared.loss_fn, prepared.steps
        extra.update(prepared.facts)

    # loop
    result = train(model, data, loss_fn, cfg.schedule, cfg.seed, checkpoint=checkpoint,
                   checkpoint_tag=cfg.key(), checkpoint_every_s=checkpoint_every_s,
                   on_checkpoint=on_checkpoint, steps=steps, on_epoch=on_epoch)
    if steps is not None:
        extra.update(steps.facts())

    # result
    if result.status == "ok" and cfg.phase in ("teacher", "defense"):
        tmp = out_dir / (MODEL_FILE + ".tmp")
        torch.save(result.state_dict, tmp)
        tmp.replace(out_dir / MODEL_FILE)
    return _phase_result(cfg, result, time.perf_counter() - started,
                         **({"batched": False} if cfg.phase == "attack" else {}), **extra)


def _phase_result(cfg: PhaseConfig, result: TrainResult, wall_s: float, **extra) -> dict:
    """A phase's JSON-able result: what its loop gave, and `extra` facts."""
    return {
        "phase": cfg.method,
        "status": result.status,
        "model": cfg.model.label,
        "test_acc": None if math.isnan(result.test_acc) else result.test_acc,
        "val_acc": result.val_acc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from_epoch,
        "checkpoint_ignored": result.checkpoint_ignored,
        "train_s": result.wall_s,
        "wall_s": wall_s,
        "epochs": [asdict(e) for e in result.epochs],  # the learning curve
        "config": cfg.to_dict(),
        "provenance": provenance(),
        **extra,
    }


def _attacker_view(cfg: PhaseConfig, frozen: torch.nn.Module, data) -> tuple[Any, float]:
    """The frozen teacher as the attacker sees it (through the defense's transform, if any), and
    what it scores so on the test split (stingy keeps top-1: the same as the teacher)."""
    from .attacks import TeacherView

    defense, knobs = cfg.defense, dict(cfg.knobs)
    view = TeacherView(frozen, (lambda z: defense.transform(z, knobs)) if defense is not None else _identity)
    correct = (view.on(data.test_x, data.prepare).argmax(1) == data.test_y).sum().item()
    return view, 100.0 * correct / len(data.test_y)


def stacking_pays(cfg: PhaseConfig, on_gpu: bool) -> bool:
    """Whether training this phase in a stack is faster than alone (bench/batched.py): on a GPU
    it saves launches; on the CPU only models without 2-D convolutions gain (MNIST-1D's: 1.4-2.3×
    at 5-10 students, BENCHMARKS.md), because `vmap` turns a 2-D convolution into a grouped one, which runs
    1.2-4× slower there than the same convolutions one by one (the CIFAR students)."""
    from .data import dataset_shape

    return on_gpu or len(dataset_shape(cfg.dataset.name)[1]) < 3


def batch_groups(jobs: list[PhaseJob], on_gpu: bool = False) -> list[list[PhaseJob]]:
    """`jobs` in groups that can each train together (see `batchable`), in order of first
    appearance; a phase that cannot, or for which a stack does not pay (`stacking_pays`), is a
    group of its own. A group that shares its attack's steps (DAFL's generator) always pays."""
    groups: dict[tuple, list[PhaseJob]] = {}
    for job in jobs:
        stack = _stack_key(job.config)
        pays = stack is not None and (_shares_steps(job.config) or stacking_pays(job.config, on_gpu))
        key = ("stack", stack, job.teacher_key) if pays else ("alone", job.key)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def batchable(cfgs: list[PhaseConfig]) -> bool:
    """Attack phases that can train together: as one stack (`stacked`), one student
    architecture, seed and schedule, one teacher seen through one defense, attacks that train
    on the real split; or as one group, one attack whose steps the students share (DAFL), on
    several student architectures, and the rest as for a stack."""
    keys = {_stack_key(c) for c in cfgs}
    return None not in keys and len(keys) == 1


def _shares_steps(cfg: PhaseConfig) -> bool:
    return cfg.phase == "attack" and cfg.attack.students_share_steps


def _stack_key(cfg: PhaseConfig) -> str | None:
    """What phases of one stack share: everything but the attack; of one group, everything but
    the student's architecture (None: it trains alone)."""
    if cfg.phase != "attack":
        return None
    if cfg.attack.trains_on_real_data:
        return json.dumps({k: v for k, v in cfg.to_dict().items() if k != "attack"}, sort_keys=True)
    if cfg.attack.students_share_steps:
        return "group " + json.dumps({k: v for k, v in cfg.to_dict().items() if k != "model"}, sort_keys=True)
    return None


def run_attack_batch(
    cfgs: list[PhaseConfig],
    *,
    teacher_weights: Path,
    data_cache: Path | None = None,
    checkpoint: Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    checkpoint_tag: str = "",
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    gpu_fraction: float | None = None,
    data_root: Path | None = None,
    on_epoch: OnEpoch | None = None,
) -> list[dict]:
    """Run `batchable` attack phases together: a stack as one vectorised model, a group on one
    stream of its attack's steps (`stacked.train_stacked`); each result as `run_phase` gives it
    for that phase alone, with `batched` true. `checkpoint_tag` names the batch (its phases'
    keys): a checkpoint of another batch is not resumed."""
    from .stacked import check_stackable, train_stacked

    if not batchable(cfgs):
        raise ConfigError("run_attack_batch: these phases cannot train together; run them one by one")
    started = time.perf_counter()
    configure_threads()
    device = pick_device(gpu_fraction)
    first = cfgs[0]
    group = _shares_steps(first)

    # data
    data = load_dataset(first.dataset, device, cache_dir=data_cache, data_root=data_root)

    # models: each seeded as it is alone, so every student starts from the weights it has there
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        models.append(cfg.model.build(data.num_classes, data.input_shape).to(device))

    # losses: the teacher, seen through the defense, asked once for all of them
    frozen = _load_frozen(first.teacher_model, teacher_weights, data.num_classes, data.input_shape, device)
    view, seen = _attacker_view(first, frozen, data)
    steps = None
    if group:  # one attack: its steps (a generator) serve every student
        prepared = first.attack.prepare(view, data, first.seed, first.schedule)
        steps, loss_fns, facts = prepared.steps, [None] * len(cfgs), [prepared.facts] * len(cfgs)
    else:
        loss_fns, facts = [], []
        for cfg in cfgs:
            prepared = cfg.attack.prepare(view, data, cfg.seed, cfg.schedule)
            if prepared.data is not data or prepared.loss_fn is None or prepared.steps is not None:
                raise ConfigError(f"attack {cfg.attack.label!r} says it trains on the real split but "
                                  "brought its own data or steps; set its trains_on_real_data = False")
            loss_fns.append(prepared.loss_fn)
            facts.append(prepared.facts)
        # an architecture vmap cannot run raises NotStackable here, before any training
        check_stackable(models[0], to_device_layout(data.prepare(data.train_x[:2])))

    # loop
    results = train_stacked(models, data, loss_fns, first.schedule, first.seed, checkpoint=checkpoint,
                            checkpoint_tag=checkpoint_tag, checkpoint_every_s=checkpoint_every_s,
                            on_checkpoint=on_checkpoint, steps=steps, on_epoch=on_epoch)

    # results
    wall = time.perf_counter() - started
    # wall_s: its share of the batch, so that compute adds up as one by one
    return [_phase_result(cfg, result, wall / len(cfgs), batch_wall_s=wall, batched=True, batch_size=len(cfgs),
                          teacher_acc_seen=seen, **extra, **(steps.facts(i) if steps is not None else {}))
            for i, (cfg, result, extra) in enumerate(zip(cfgs, results, facts, strict=True))]
