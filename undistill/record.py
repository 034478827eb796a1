"""A sweep's stored record, `<sweep>/sweep.json`: one type, one reader.

It holds the sweep's identity (the resolved preset and the search's limits, fingerprinted), how
it runs (what `resume` keeps), and its search space as the defenses declared it (results show
and check knobs from it without knowing any defense).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from importlib import metadata

from .errors import DamagedSweepError
from .space import FOCUS_TEACHER_DROP, DefenseSpace, SearchSpace, focus_drop


def versions() -> dict[str, str | None]:
    """The versions a sweep records: Python and the libraries its numbers depend on."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for pkg in ("undistill", "torch", "ray", "optuna", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass(frozen=True)
class RunOptions:
    """How a sweep runs, resolved when it started; fixed once its trials have."""

    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    concurrency: int | None = None  # trials at once, as resolved against the cluster
    concurrency_cap: int | None = None  # as asked for (None: what the cluster holds)
    study_storage: str | None = None
    shared_storage: bool = False
    data_root: str | None = None
    checkpoint_every_s: float | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> RunOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# 2: the record holds the sweep's space, its rows knobs as a map, its phases the registered
# entries (issue 13). A started sweep of an older format cannot go on: its Tune state pickles
# the older types.
RECORD_FORMAT = 2


@dataclass(frozen=True)
class SweepRecord:
    name: str
    preset_name: str
    preset: dict  # the resolved preset, as a TOML-shaped document: the sweep's identity
    max_teacher_drop: float | None
    fingerprint: str
    trials: int
    run: RunOptions = field(default_factory=RunOptions)
    created_at: str = ""
    versions: dict = field(default_factory=dict)
    space: SearchSpace = field(default_factory=SearchSpace)
    format: int = RECORD_FORMAT
    # the ranges the search went over: the preset's, widened where it went past their ends
    # (`orchestrator.strategy`); None until a run of the search has ended
    searched: SearchSpace | None = None
    # trainables.phases.PHASE_CODE_VERSION of the code that started it (None: older than the field)
    phase_code: int | None = None

    @property
    def searched_space(self) -> SearchSpace:
        """What the sweep searched so far: `searched` once recorded, else the preset's space."""
        return self.searched if self.searched is not None else self.space

    @property
    def identity(self) -> dict:
        return {"preset": self.preset, "max_teacher_drop": self.max_teacher_drop}

    @property
    def search(self) -> dict:
        """The preset's resolved `[search]` table."""
        return self.preset.get("search", {})

    @property
    def focus_teacher_drop(self) -> float:
        """Points of teacher accuracy past which a defended teacher steers nothing (the default
        search's focus, `search.focus_teacher_drop`; `--max-teacher-drop` when tighter)."""
        return focus_drop(float(self.search.get("focus_teacher_drop", FOCUS_TEACHER_DROP)), self.max_teacher_drop)

    def to_json(self) -> dict:
        return {"name": self.name, "preset_name": self.preset_name, "identity": self.identity,
                "fingerprint": self.fingerprint, "trials": self.trials, "run": self.run.to_dict(),
                "created_at": self.created_at, "versions": self.versions,
                "space": self.space.to_list(), "format": self.format,
                **({"searched": self.searched.to_list()} if self.searched is not None else {}),
                **({"phase_code": self.phase_code} if self.phase_code is not None else {})}

    @classmethod
    def from_json(cls, d: object, where: str) -> SweepRecord:
        """The record in `d` (sweep.json parsed), or a DamagedSweepError naming `where`."""
        try:
            if not isinstance(d, dict):
                raise TypeError(f"a {type(d).__name__}, not a table")
            identity = d.get("identity", {})
            preset = identity.get("preset", {})
            if not isinstance(preset, dict) or not isinstance(d.get("run", {}), dict):
                raise TypeError("identity.preset and run must be tables")
            if "space" in d:
                space = SearchSpace.from_list(d["space"])
            else:  # recorded before sweeps stored their space: read it off the search table
                search = preset.get("search", {})
                names = search.get("defenses") or [k for k, v in search.items() if isinstance(v, dict)]
                space = SearchSpace(tuple(DefenseSpace.from_table(name, search.get(name, {}))
                                          for name in names))
            return cls(name=str(d.get("name", "")), preset_name=str(d.get("preset_name", "")),
                       preset=preset, max_teacher_drop=identity.get("max_teacher_drop"),
                       fingerprint=str(d.get("fingerprint", "")), trials=int(d["trials"]),
                       run=RunOptions.from_dict(d.get("run", {})), created_at=str(d.get("created_at", "")),
                       versions=dict(d.get("versions") or {}), space=space, format=int(d.get("format", 1)),
                       searched=SearchSpace.from_list(d["searched"]) if "searched" in d else None,
                       phase_code=int(d["phase_code"]) if d.get("phase_code") is not None else None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedSweepError(f"{where} is not a sweep record ({type(exc).__name__}: {exc}); "
                                    "restore it from a backup or start the sweep under another "
                                    "--name") from None
