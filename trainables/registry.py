"""Registries by name, timm-style: a duplicate name raises, an unknown one lists close matches."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from undistill.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "defense", "attack": how messages name an entry
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget `name` (a test's own entry, once the test is done)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
        return self._entries[name]

    def names(self) -> list[str]:
        """In registration order: built-ins first, in the order results list them."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
