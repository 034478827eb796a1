"""The sweep's front where running trials can read it: a small named Ray actor the driver
keeps current, so that a trial can stop attacking a candidate once it is beaten
(`trainables.pruning`). It holds what pruning needs and nothing else: each finished trial's
(teacher, clone) point and, for trials attacked in full, every attack's clone (the attacks'
order is learned from them).

The driver owns it (it goes when the driver goes) and fills it again from the stored rows when
it starts, so a resumed sweep prunes against everything already finished. It lives on the
driver's own node: a worker node lost mid-sweep must not take the board with it. Should the
board still be gone, trials run their attacks in full (`_trial`): pruning only ever saves work.
"""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainables.pruning import Point, dominated


@ray.remote(num_cpus=0)  # one call at a time: adds do not interleave
class FrontBoard:
    def __init__(self):
        self._front: list[Point] = []
        self._seen: list[dict[str, float]] = []

    def add(self, point: Point | None, clones: dict[str, float] | None = None) -> None:
        if point is not None and not dominated(point, self._front) and point not in self._front:
            self._front = [p for p in self._front if not dominated(p, [point])] + [point]
        if clones:
            self._seen.append(dict(clones))

    def front(self) -> list[Point]:
        return list(self._front)

    def seen(self) -> list[dict[str, float]]:
        return list(self._seen)


def board_name(sweep: str) -> str:
    return f"undistill-front-{sweep}"


def open_board(sweep: str):
    """The sweep's board, new and empty (the driver fills it): one left by an earlier run of a
    sweep of that name in this Ray session (another storage, say) is killed first, so that no
    trial prunes against another sweep's points."""
    earlier = find_board(sweep)
    if earlier is not None:
        ray.kill(earlier)
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    board = FrontBoard.options(name=board_name(sweep), scheduling_strategy=here)
    for _ in range(50):  # the name is freed once Ray has handled the kill
        try:
            return board.remote()
        except ValueError:
            time.sleep(0.1)
    return board.remote()


def find_board(sweep: str):
    """The sweep's board from a trial, or None when there is none (a sweep run in full)."""
    try:
        return ray.get_actor(board_name(sweep))
    except ValueError:
        return None
