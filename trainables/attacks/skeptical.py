"""The skeptical student (Kundu, Sun, Fu, Pedram and Beerel, "Analyzing the Confidentiality of
Undistillable Teachers in Knowledge Distillation", NeurIPS 2021; code: ksouvik52/Skeptical2021,
train_kd_to_SD.py): a student with intermediate exits (`trainables.exits`) takes the teacher's
knowledge at a shallow exit instead of its final one, so that what a nasty teacher hides in its
soft targets reaches only part of the network, while its final exit learns from the labels and
teaches its deepest auxiliary exit. The loss, once `kd_delay + 1` epochs on the labels alone are
done (`epoch > kd_delay`, epochs counted from 0, as the code):

    α·T²·KL(teacher ‖ exit[kd_exit]) + (1 − α)·CE(exit[kd_exit])
      + 0.3·KL(exit[0] ‖ exit[1]) + 0.7·CE(exit[1]) + CE(exit[0])      (`losses.skeptical_loss`)

before it: CE(exit[0]). Exits count as the code's `outputs` list: 0 is the final exit, 1 the
deepest auxiliary one, higher ones shallower; a student with fewer auxiliary exits than
`kd_exit` takes the teacher's knowledge at its shallowest (the result's `kd_exit` says which).
The student is scored, and its best epoch picked, on its final exit, as the code evaluates it.
Its result says which exit was taught (`kd_exit`) and for how many epochs (`distilled_epochs`:
0 where the schedule is no longer than the warm-up, as under a tiny `--epochs-scale`).

A preset asks for it with `[attack.skeptical]`: `temperatures` (one attack each,
`skeptical-T<T>`), `alpha` (0.9), `kd_exit` (2) and `kd_delay` (0). The code publishes no
parameters for its skeptical runs (its experiments folder holds the scratch and nasty ones
only). `kd_exit` 2 is where the repository's framework figure (Fig/framework_new.png) draws the
teacher's loss: the exit after the second of a ResNet's four stages (on MNIST-1D's three-stage
CNN, after its first); α 0.9 is the paper's KD; `kd_delay` 0 is this project's choice. It faces only the students
whose model has exits (mnist1d's cnn1d and mlp of depth ≥ 2; CIFAR's resnet18, resnet50 and
mobilenetv2, as the code builds them) and trains alone, one student at a time.

Not here: the paper's data-free skeptical student (its generator side is not in the published
code, which holds the data-available training only).
"""

from __future__ import annotations

from dataclasses import dataclass

from undistill.tables import check_keys, check_within

from ..loop import MAX_EPOCHS, LossFn, SplitSteps
from ..losses import cross_entropy, skeptical_loss
from ._base import Prepared, register_attack
from .kd import AtTemperature, check_temperatures, teacher_targets

_KEYS = {"temperatures": list, "alpha": float, "kd_exit": int, "kd_delay": int}
DEFAULTS = {"alpha": 0.9, "kd_exit": 2, "kd_delay": 0}


@register_attack
@dataclass(frozen=True)
class Skeptical(AtTemperature):
    alpha: float = DEFAULTS["alpha"]
    kd_exit: int = DEFAULTS["kd_exit"]
    kd_delay: int = DEFAULTS["kd_delay"]

    name = "skeptical"
    preset_keys = {"skeptical": dict}
    trains_on_real_data = False  # its own steps: the loss changes after the warm-up
    needs_exits = True

    @classmethod
    def resolve(cls, table):
        given = table.get("skeptical")
        if given is None:
            return {}
        check_keys("attack.skeptical", given, _KEYS, required=("temperatures",))
        out = {**DEFAULTS, **given}
        out["temperatures"] = check_temperatures("skeptical.temperatures", given["temperatures"])
        check_within("attack.skeptical.alpha", out["alpha"], 0, 1)
        # a student with fewer auxiliary exits is taught at its shallowest: no network here has 100
        check_within("attack.skeptical.kd_exit", out["kd_exit"], 1, 100, why=" (an auxiliary exit, 1 the deepest)")
        check_within("attack.skeptical.kd_delay", out["kd_delay"], 0, MAX_EPOCHS, why=" (epochs, as a schedule's)")
        return {"skeptical": {**out, "alpha": float(out["alpha"])}}

    @classmethod
    def from_table(cls, resolved):
        table = resolved.get("skeptical")
        if not table:
            return []
        return [cls(t, table["alpha"], table["kd_exit"], table["kd_delay"]) for t in table["temperatures"]]

    @classmethod
    def scale_epochs(cls, resolved, factor):
        if resolved.get("skeptical"):
            resolved["skeptical"]["kd_delay"] = round(resolved["skeptical"]["kd_delay"] * factor)

    @property
    def kd_alpha(self) -> float:
        return self.alpha

    def prepare(self, teacher, data, seed, schedule):
        targets, alpha, temperature = teacher_targets(teacher, data), self.alpha, self.temperature

        def warm_up(m, x, y, idx):
            return cross_entropy(m(x), y)

        def distil(m, x, y, idx):
            return skeptical_loss(m.exits(x), targets(x, idx), y, alpha=alpha, temperature=temperature,
                                  kd_exit=steps.kd_exit)

        steps = _WarmUpSteps(data, warm_up, schedule.batch_size, after=distil, delay=self.kd_delay,
                             wanted_exit=self.kd_exit)
        return Prepared(data, steps=steps)


@dataclass
class _WarmUpSteps(SplitSteps):
    """The training split, by `loss_fn` (the warm-up) for epochs 0..delay, then by `after`. The
    epochs done and the exit taught at travel with the checkpoint: a resumed run changes loss
    when the first did, and its result says what the first's would."""

    after: LossFn | None = None
    delay: int = 0
    wanted_exit: int = 1
    epochs_done: int = 0
    kd_exit: int | None = None  # the exit taught at: `wanted_exit`, or the student's shallowest

    def epoch(self, model, opt, after_step, gen):
        self.kd_exit = min(self.wanted_exit, len(model.heads))  # model: a MultiExit
        warm = self.loss_fn
        if self.epochs_done > self.delay:
            self.loss_fn = self.after
        try:
            return super().epoch(model, opt, after_step, gen)
        finally:
            self.loss_fn, self.epochs_done = warm, self.epochs_done + 1

    def facts(self, student: int = 0) -> dict:
        # distilled_epochs 0: a schedule no longer than the warm-up (a tiny --epochs-scale), so
        # the student learnt from the labels alone
        return {"kd_exit": self.kd_exit, "distilled_epochs": max(0, self.epochs_done - self.delay - 1)}

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "kd_exit": self.kd_exit}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done, self.kd_exit = state.get("epochs_done", 0), state.get("kd_exit")
