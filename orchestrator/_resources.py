"""What a trial holds on the cluster, and how many trials the cluster can hold at once.

A trial gets a placement group of `1 + students` equal bundles: bundle 0 for the trial's own
process (it trains the nasty teacher), one per student (the students run side by side as child
tasks of the trial, inside its group). `--cpus-per-trial` and `--gpus-per-trial` size each bundle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from undistill.errors import ConfigError

_PRECISION = 1e-4  # Ray keeps resource amounts to four decimals


def check_amount(flag: str, value: float, *, allow_zero: bool) -> float:
    """A resource amount Ray can honour: a fraction up to 1, or a whole number above."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{flag} {value:g} must be {'≥' if allow_zero else '>'} 0")
    if value > 1 and abs(value - round(value)) > _PRECISION:
        raise ConfigError(f"{flag} {value:g}: Ray shares a GPU or CPU only in fractions up to 1; "
                          f"above 1 give a whole number ({math.floor(value)} or {math.ceil(value)})")
    if 0 < value < _PRECISION:
        raise ConfigError(f"{flag} {value:g} is below Ray's resource precision ({_PRECISION:g})")
    return float(value)


@dataclass(frozen=True)
class Resources:
    cpus: float  # per bundle: the trial's process and each student's
    gpus: float  # per bundle; 0 runs on CPU
    students: int  # child tasks per trial

    @property
    def bundles(self) -> int:
        return 1 + self.students

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}

    def task_options(self) -> dict:
        """`ray.remote(...).options(**these)` for a phase that runs in one bundle."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    def placement_group_factory(self):
        from ray import tune

        return tune.PlacementGroupFactory([self.bundle() for _ in range(self.bundles)])

    def describe(self) -> str:
        share = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "")
        return f"{self.bundles} × ({share}): the trial and {self.students} students side by side"

    def slots(self, node: dict[str, float]) -> int:
        """How many bundles fit on a node with these total resources."""
        fit = math.floor(node.get("CPU", 0.0) / self.cpus + _PRECISION)
        if self.gpus:
            whole = math.floor(node.get("GPU", 0.0) + _PRECISION)
            # a fraction must fit inside one GPU: 0.4 fits twice per GPU, not 2.5 times
            fit = min(fit, whole * math.floor(1 / self.gpus + _PRECISION) if self.gpus <= 1
                      else whole // round(self.gpus))
        return fit

    def capacity(self, nodes: list[dict[str, float]]) -> int:
        """Trials the cluster holds at once (bundles of one trial may sit on several nodes)."""
        return sum(self.slots(n) for n in nodes) // self.bundles

    def local_cpus(self) -> int:
        """CPU slots for a local Ray we start: as many trials as the machine has cores (per
        `cpus`). A trial keeps about `cpus` cores busy, first its nasty teacher, then its
        students side by side while its own process waits, so it gets a core's worth of slots
        for each of its bundles."""
        return max(os.cpu_count() or 1, math.ceil(self.cpus)) * self.bundles
