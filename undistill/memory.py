"""Pausing Python's cyclic garbage collector around work on many rows. Light on purpose: the
CLI's read commands take it before they import anything heavy (imports make objects too)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the span (as it was after); also a decorator.
    Rows hold no reference cycles: the collector would only walk 10^5 of them again and again,
    while they are made and while a reader (`pareto`, `status`) works through them."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
