"""Dominance pruning of attacks: stop attacking a candidate once it cannot reach the front.

A candidate's clone accuracy is the maximum over its attacks, so it can only rise as more
attacks finish, while its teacher's accuracy is fixed once the teacher is trained. If the clones
finished so far already make it dominated by a point of the sweep's front (a teacher at least as
accurate and a clone at most as accurate, one of them strictly), no later attack can put it on
the front: the remaining attacks are skipped. Attacks run in waves, strongest first, so that the
bound rises fast.

Pure functions: the trial (`candidate.run_candidate`) and the benchmark that replays a table of
outcomes (`bench/search.py`) make the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

Point = tuple[float, float]  # (teacher accuracy, clone accuracy), percent


def dominated(point: Point, front: Iterable[Point]) -> bool:
    """Some front point has a teacher at least as accurate and a clone at most as accurate, and
    is better in one of the two: `point` cannot be on the front, and a higher clone accuracy
    only makes that worse."""
    teacher, clone = point
    if not (math.isfinite(teacher) and math.isfinite(clone)):
        return False
    return any(t >= teacher and c <= clone and (t > teacher or c < clone)
               for t, c in front if math.isfinite(t) and math.isfinite(c))


def attack_order(names: Sequence[str], normal: Mapping[str, float | None],
                 seen: Iterable[Mapping[str, float | None]] = ()) -> list[str]:
    """Attacks (one student by one attack each, `names`) strongest first.

    How strong an attack is: how far its clone falls short of the best clone of the same
    teacher, averaged over the normal teacher (`normal`: name -> clone accuracy) and every
    candidate attacked in full so far (`seen`). The stable sort keeps `names`' order on ties.
    """
    shortfalls: dict[str, list[float]] = {n: [] for n in names}
    for clones in [normal, *seen]:
        finite = {n: a for n, a in clones.items() if n in shortfalls and a is not None and math.isfinite(a)}
        if not finite:
            continue
        best = max(finite.values())
        for n in names:
            # an attack that made no clone of this teacher counts as the weakest
            shortfalls[n].append(best - finite[n] if n in finite else 100.0)
    mean = {n: (sum(v) / len(v) if v else 100.0) for n, v in shortfalls.items()}
    return sorted(names, key=lambda n: mean[n])


def waves(names: Sequence[str], size: int, rest_together: bool = False) -> list[list[str]]:
    """`names` in groups of `size` (the attacks a trial runs side by side), in order.
    `rest_together`: the first group, then all the others at once (a trial that trains the
    attacks on one student as one stack: a wider wave costs little more than a narrow one)."""
    size = max(1, size)
    if rest_together:
        return [list(names[:size]), list(names[size:])] if len(names) > size else [list(names)]
    return [list(names[i:i + size]) for i in range(0, len(names), size)]


@dataclass(frozen=True)
class Pruning:
    """What a trial needs to prune its attacks: the order to run them in, how many run at once,
    and the sweep's front as it is when a wave ends (a callable: the front moves while a trial
    runs)."""

    order: tuple[str, ...]  # attack names (`candidate.attack_name`), strongest first
    wave: int  # attacks per wave: the trial's student bundles
    front: Callable[[], Sequence[Point]]
    rest_together: bool = False  # after the first wave, the rest in one (see `waves`)
