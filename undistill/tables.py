"""Strict reading of TOML tables: every problem is one `ConfigError` line naming the key, the
bad value and the fix. Presets use it, and so does every attack that reads its own part of a
preset's `[attack]` table."""

from __future__ import annotations

import difflib
import math
from typing import Any

from .errors import ConfigError


def check_keys(where: str, table: dict, allowed: dict, required: tuple[str, ...] = ()) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where}: missing required key {key!r}")
    for key, kind in allowed.items():
        if key in table and not is_a(table[key], kind):
            raise ConfigError(
                f"{where}.{key}: expected {kind.__name__}, got {type(table[key]).__name__} "
                f"{table[key]!r}"
            )


def is_a(value: Any, kind: type) -> bool:
    if kind is float:  # TOML writes 4 for 4.0: accept integers where floats are meant
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} must be {'≥' if allow_zero else '>'} 0, got {value!r}")


def check_within(where: str, value: float, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False, why: str = "") -> None:
    """A one-line ConfigError unless `value` is a number within [low, high] (an end open where
    asked: `(0, 10]`); nan and inf never are, nor a bool. `why` ends the message: why the range is what it is."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # (an int too large for a float is finite and compares exactly: no math.isfinite on it)
    if not (number and (isinstance(value, int) or math.isfinite(value))
            and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
        span = f"{'(' if low_open else '['}{show_bound(low)}, {show_bound(high)}{')' if high_open else ']'}"
        raise ConfigError(f"{where} must be within {span}, got {value!r}{why}")


def show_bound(x: float) -> str:
    """A range's end as people write it: 100000, not 1e+05; 0.1, not 0.1000000001."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"
