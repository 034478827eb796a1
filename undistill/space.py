"""What a defense's knobs are, and the part of them a sweep searches.

A defense declares its `Knob`s (trainables.defenses); a preset narrows each to a searched range
(search_spaces), and the sweep stores the result, a `DefenseSpace` per defense, in its record
(`sweep.json`), so that results can show and check knobs without knowing any defense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .errors import ConfigError

# `search.focus_teacher_drop`'s default, in accuracy points: how far below the normal teacher a
# defended one may fall and still steer the default search, or count as a front point that a
# range's end should move for. Wide enough for every defense of the papers (they cost their
# teachers 0-1.6 points) and for the strongest in mnist1d's ranges (10.5, BENCHMARKS.md), narrow
# enough that a teacher left at a third of its accuracy steers nothing.
FOCUS_TEACHER_DROP = 15.0


def focus_drop(focus_teacher_drop: float, max_teacher_drop: float | None) -> float:
    """The drop that bounds the focus: the preset's, or `--max-teacher-drop` when tighter."""
    return focus_teacher_drop if max_teacher_drop is None else min(focus_teacher_drop, max_teacher_drop)

def check_max_teacher_drop(max_teacher_drop: float | None) -> None:
    """`--max-teacher-drop` (of `sweep`, `pareto` and `confirm`): points a teacher may lose, within
    [0, 100); nan and inf are refused."""
    if max_teacher_drop is not None and not (0 <= max_teacher_drop < 100):
        raise ConfigError(f"--max-teacher-drop {max_teacher_drop} must be within [0, 100) points")


EDGE_SHARE = 0.05  # "at the end of a range": within its outer 5 %, on the scale it is searched on


@dataclass(frozen=True)
class Knob:
    """One knob of a defense: its name (the Optuna parameter and the key in results), how it is
    shown, and what values it may take at all (the hard bounds a searched range lies within)."""

    name: str  # "omega"
    symbol: str  # "ω": how results show it
    low: float  # hard bounds, inclusive
    high: float
    integer: bool = False
    log: bool = False  # searched on a log scale
    why: str = ""  # appended to the out-of-bounds message: why the bounds are what they are

    def show(self, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return str(int(value)) if self.integer else f"{value:.4g}"

    def cast(self, value):
        """A stored value (results keep every knob as a float) as this knob's type."""
        return int(value) if self.integer and value is not None and math.isfinite(value) else value

    def to_dict(self) -> dict:
        return {"name": self.name, "symbol": self.symbol, "low": self.low, "high": self.high,
                "integer": self.integer, "log": self.log}


@dataclass(frozen=True)
class KnobRange:
    """A knob and the range of it a sweep searches."""

    knob: Knob
    low: float
    high: float

    @property
    def name(self) -> str:
        return self.knob.name

    def scaled(self, value: float) -> float:
        """The value on the scale the knob is searched on (log or linear)."""
        return math.log(value) if self.knob.log else value

    def unscaled(self, value: float) -> float:
        return math.exp(value) if self.knob.log else value

    @property
    def width(self) -> float:
        return self.scaled(self.high) - self.scaled(self.low)

    def end_of(self, value: float) -> str | None:
        """"top" or "bottom" when the value lies within the range's outer `EDGE_SHARE` at that
        end (on its search scale), else None; None for integer knobs, whose range is usually
        their whole, and for empty ranges."""
        if self.knob.integer or self.high <= self.low or not math.isfinite(value):
            return None
        if self.knob.log and value <= 0:
            return None
        x, share = self.scaled(value), EDGE_SHARE * self.width
        if abs(x - self.scaled(self.high)) <= share:
            return "top"
        if abs(x - self.scaled(self.low)) <= share:
            return "bottom"
        return None

    def widened(self, end: str, step: float) -> KnobRange:
        """The range with one end moved out by `step` (on the search scale), no further than the
        knob's hard bounds."""
        if end == "top":  # (the bounds are exact: exp(log(x)) may land a hair past them)
            return replace(self, high=min(self.knob.high, self.unscaled(self.scaled(self.high) + step)))
        return replace(self, low=max(self.knob.low, self.unscaled(self.scaled(self.low) - step)))

    def to_dict(self) -> dict:
        return {**self.knob.to_dict(), "low": self.low, "high": self.high,
                "bounds": [self.knob.low, self.knob.high]}


@dataclass(frozen=True)
class DefenseSpace:
    """One defense family of a sweep: its searched knob ranges and its paper-like start point."""

    defense: str
    ranges: tuple[KnobRange, ...]
    start: dict[str, float] | None = None
    colour: str = "tab:gray"  # its colour in plots
    trains_teacher: bool = False  # a phase trains its teacher (else: the normal one, transformed)

    @property
    def knobs(self) -> tuple[Knob, ...]:
        return tuple(r.knob for r in self.ranges)

    def knob(self, name: str) -> Knob | None:
        return next((k for k in self.knobs if k.name == name), None)

    def describe(self, knobs: dict, sep: str = " ", eq: str = "=") -> str:
        """The knob set as results show it: `ω=0.015 τ_A=4`, `k=2`."""
        return sep.join(f"{k.symbol}{eq}{k.show(knobs.get(k.name))}" for k in self.knobs)

    def candidates(self) -> int | None:
        """How many distinct candidates the space holds: a number for integer knobs only."""
        if not all(r.knob.integer for r in self.ranges):
            return None
        return math.prod(int(r.high) - int(r.low) + 1 for r in self.ranges)

    def table(self) -> dict:
        """As a preset's `[search.<defense>]` table (what the sweep's identity holds)."""
        out = {r.name: [r.low, r.high] for r in self.ranges}
        return {**out, **({"start": dict(self.start)} if self.start else {})}

    def to_dict(self) -> dict:
        return {"defense": self.defense, "knobs": [r.to_dict() for r in self.ranges],
                "start": self.start, "colour": self.colour, "trains_teacher": self.trains_teacher}

    @classmethod
    def from_dict(cls, d: dict) -> DefenseSpace:
        # records before range extension kept no hard bounds: the searched range stands for them
        ranges = tuple(KnobRange(Knob(k["name"], k.get("symbol", k["name"]), *k.get("bounds", (k["low"], k["high"])),
                                      bool(k.get("integer")), bool(k.get("log"))), k["low"], k["high"])
                       for k in d["knobs"])
        return cls(d["defense"], ranges, d.get("start"), d.get("colour", "tab:gray"),
                   bool(d.get("trains_teacher")))

    @classmethod
    def from_table(cls, defense: str, table: dict) -> DefenseSpace:
        """From a stored `[search.<defense>]` table alone (a sweep recorded before its space
        was): each `[low, high]` is a knob, integer if both ends are, searched on a log scale if
        not (what every defense did then)."""
        ranges = []
        for name, value in table.items():
            if name == "start" or not (isinstance(value, list) and len(value) == 2):
                continue
            integer = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            knob = Knob(name, name, value[0], value[1], integer=integer, log=not integer)
            ranges.append(KnobRange(knob, value[0], value[1]))
        return cls(defense, tuple(ranges), table.get("start"))

    def with_start(self, start: dict | None) -> DefenseSpace:
        return replace(self, start=start)


@dataclass(frozen=True)
class SearchSpace:
    """Every defense family a sweep searches, in order."""

    defenses: tuple[DefenseSpace, ...] = field(default_factory=tuple)

    def __iter__(self):
        return iter(self.defenses)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.defense for d in self.defenses)

    def get(self, defense: str | None) -> DefenseSpace | None:
        return next((d for d in self.defenses if d.defense == defense), None)

    def knob_names(self) -> tuple[str, ...]:
        """Every knob name, in the order the defenses declare them (a column each in tables)."""
        out: list[str] = []
        for d in self.defenses:
            out += [k.name for k in d.knobs if k.name not in out]
        return tuple(out)

    def knob(self, name: str) -> Knob | None:
        return next((k for d in self.defenses for k in d.knobs if k.name == name), None)

    def describe(self, defense: str | None, knobs: dict, sep: str = " ", eq: str = "=") -> str:
        space = self.get(defense)
        return space.describe(knobs, sep, eq) if space else ""

    def to_list(self) -> list[dict]:
        return [d.to_dict() for d in self.defenses]

    @classmethod
    def from_list(cls, items: list[dict]) -> SearchSpace:
        return cls(tuple(DefenseSpace.from_dict(d) for d in items))
