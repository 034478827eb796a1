"""The front board trials prune against, on a real local Ray: it keeps the non-dominated
points, remembers the clones of trials attacked in full, and a new run of a sweep of the same
name starts from an empty one."""

import time

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_board_keeps_the_front_and_a_new_run_starts_empty(local_ray):
    from orchestrator._board import find_board, open_board

    board = open_board("s")
    for point, clones in (((95.0, 90.0), {"kd-T4 cnn": 90.0}), ((94.0, 91.0), None), ((96.0, 89.0), None),
                          ((93.0, 80.0), {"kd-T4 cnn": 80.0})):
        board.add.remote(point, clones)
    assert sorted(ray.get(board.front.remote())) == [(93.0, 80.0), (96.0, 89.0)]
    assert ray.get(board.seen.remote()) == [{"kd-T4 cnn": 90.0}, {"kd-T4 cnn": 80.0}]
    assert find_board("s") is not None and find_board("other") is None
    again = open_board("s")  # the same name again in this Ray session: a fresh, empty board
    assert ray.get(again.front.remote()) == [] and ray.get(find_board("s").front.remote()) == []


def test_a_lost_board_means_every_attack_runs(local_ray):
    from orchestrator._board import open_board
    from orchestrator._trial import _pruning
    from orchestrator.plan import make_plan
    from search_spaces import load_preset
    from trainables.candidate import TrialContext

    board = open_board("lost")
    ray.get(board.add.remote((95.0, 90.0), {"kd-T4 cnn": 90.0}))

    plan = make_plan(load_preset("mnist1d"))
    context = TrialContext("teacher", 97.0, plan.defenses, plan.defense_template, plan.attack_templates)
    pruning = _pruning(context, "lost", students=2, batch=False)
    assert pruning is not None and pruning.front() == [(95.0, 90.0)]
    ray.kill(board)
    deadline = time.time() + 30  # the kill is asynchronous: wait until the board is gone
    while time.time() < deadline:
        try:
            ray.get(board.front.remote())
        except ray.exceptions.RayActorError:
            break
        time.sleep(0.1)
    # mid-trial: no front to be beaten by, so the remaining attacks run
    assert pruning.front() == []
    # a trial starting now finds no board, or one it cannot reach: it runs every attack
    assert _pruning(context, "lost", students=2, batch=False) is None


def test_the_board_is_pinned_to_the_drivers_node(local_ray, monkeypatch):
    """Pinned, not merely placed there by chance (one node here): a worker node lost mid-sweep
    must not take the board with it (test_faults removes such a node on a real cluster)."""
    from orchestrator import _board

    asked = []
    options = _board.FrontBoard.options

    def spy(**kwargs):
        asked.append(kwargs)
        return options(**kwargs)

    monkeypatch.setattr(_board.FrontBoard, "options", spy)
    _board.open_board("pinned")
    (strategy,) = [a["scheduling_strategy"] for a in asked]
    assert strategy.node_id == ray.get_runtime_context().get_node_id() and strategy.soft is False
