"""Where the running driver writes: the storage it was given now (`--storage`), and the Optuna
study's storage resolved from it.

Tune pickles its callbacks and its searcher into the experiment's state with whatever they held
when the sweep started, absolute paths and a `sqlite:////old/path/study.db` URL included. A
sweep that was copied, moved or synced elsewhere would then write half its rows and Optuna
records into the folder it came from. So a restored driver never trusts those: `SweepCallback`
and `DefenseSearch` resolve where to write from here, which the driver sets for the span of
`Tuner.fit()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna

from undistill.storage import Storage


@dataclass(frozen=True)
class Here:
    storage: Storage  # the sweep's storage as given now
    study_storage: optuna.storages.BaseStorage  # the study's, resolved from it (see `_study`)
    room: int = 0  # bytes a trial writes: less free than this stops the run (see `_disk`)


_here: Here | None = None


@contextmanager
def driving(here: Here) -> Iterator[Here]:
    """Bind where this driver writes while Tune runs (restores included)."""
    global _here
    previous, _here = _here, here
    try:
        yield here
    finally:
        _here = previous


def here() -> Here | None:
    """Where the running driver writes; None outside `driving` (a benchmark's bare callback)."""
    return _here
