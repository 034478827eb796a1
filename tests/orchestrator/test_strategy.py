"""The default search strategy (`orchestrator.strategy.FrontSampler`) through the sweep's own
searcher on real Optuna studies: range ends first, the stingy teacher's k enumerated, ranges
widened where the front reaches their end (and recorded), and a resumed sweep that goes on
where it stopped."""

import itertools
import math

import optuna
import pytest

from orchestrator._study import open_study_storage
from orchestrator.search import DefenseSearch, candidate_key
from orchestrator.strategy import FrontSampler, searched_ranges
from results import Storage
from search_spaces import load_preset


def _outcome(params: dict, stingy: float = 90.0) -> dict:
    """A smooth world: a stronger nasty teacher (ω up) costs the teacher and the clones alike;
    strongest at the top of ω's range, so the front runs into it. Stingy: k = 2 is best, its
    clone `stingy`."""
    if params["defense"] == "stingy":
        teacher, clone = 96.0, stingy + abs(params["k"] - 2)
    else:
        # below ω = 0.05 no better than the normal teacher (and so off the front)
        strength = math.log(params["omega"] / 0.05) + 0.2 * math.log(params["tau_a"] / 2.0)
        teacher = 97.0 - 0.8 * max(strength, 0.0)
        clone = 92.0 - 2.0 * strength if strength > 0 else 92.0 - 0.1 * strength
    return dict(final=True, status="ok", teacher_acc=teacher, student_acc=clone, teacher_drop=96.0 - teacher)


def _drive(search, n: int, start: int = 0, concurrency: int = 2, stingy: float = 90.0) -> list[dict]:
    seen, running = [], []
    for i in range(start, start + n):
        running.append((f"t{i}", search.suggest(f"t{i}")))
        if len(running) == concurrency or i == start + n - 1:
            while running:
                tid, params = running.pop(0)
                seen.append(params)
                search.on_trial_complete(tid, _outcome(params, stingy))
    return seen


def test_start_points_then_the_corners_of_the_nasty_box():
    preset = load_preset("smoke")
    search = DefenseSearch(preset, "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    seen = _drive(search, 6)
    assert seen[:2] == [{"defense": "nasty", "omega": 0.1, "tau_a": 4.0}, {"defense": "stingy", "k": 2}]
    (omega, tau_a) = preset.space.get("nasty").ranges
    corners = {(w, t) for w in (omega.low, omega.high) for t in (tau_a.low, tau_a.high)}
    assert {(p["omega"], p["tau_a"]) for p in seen[2:6]} == corners


def test_k_is_enumerated_around_its_best_value_not_sampled():
    search = DefenseSearch(load_preset("smoke"), "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    stingy = [p["k"] for p in _drive(search, 16, stingy=84.0) if p["defense"] == "stingy"]
    # k = 2 first, then its neighbours; no further: they land off the front
    assert stingy == [2, 1, 3]
    # a stingy teacher that carries no share of the front gets no trial past its start point
    search = DefenseSearch(load_preset("smoke"), "w", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    assert [p["k"] for p in _drive(search, 16, stingy=91.0) if p["defense"] == "stingy"] == [2]


def test_the_range_widens_where_the_front_reaches_its_end_and_the_study_records_it(tmp_path):
    preset = load_preset("smoke")
    storage = open_study_storage(None, Storage(tmp_path), "s")
    search = DefenseSearch(preset, "s", storage, max_teacher_drop=None)
    seen = _drive(search, 16)
    omega = preset.space.get("nasty").ranges[0]
    past = [p["omega"] for p in seen if p["defense"] == "nasty" and p["omega"] > omega.high]
    assert past and max(past) <= omega.knob.high  # past the preset's top, within ω's bounds
    assert len({candidate_key(p) for p in seen}) == len(seen) == 16
    study = optuna.load_study(study_name="s", storage=storage)
    searched = searched_ranges(preset.space, study.get_trials()).get("nasty").ranges[0]
    assert searched.high >= max(past) and searched.low == omega.low  # the weak end stays put
    # the bottom of τ_A's range is where this world's front is too; k's range is k's whole
    assert searched_ranges(preset.space, study.get_trials()).get("stingy") == preset.space.get("stingy")


def test_without_range_extension_every_candidate_stays_in_the_preset_space():
    from dataclasses import replace

    preset = replace(load_preset("smoke"), extend_ranges=False)
    search = DefenseSearch(preset, "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    for p in _drive(search, 16):
        ranges = preset.space.get(p["defense"]).ranges
        assert all(r.low <= p[r.name] <= r.high for r in ranges)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_resumed_search_repeats_nothing_and_loses_no_budget(tmp_path, concurrency):
    """Tune saves the searcher, the driver dies, a new one restores it on the same study: the
    strategy's state is the study's trials, so the search goes on as if nothing happened."""
    preset = load_preset("smoke")
    search = DefenseSearch(preset, "s", open_study_storage(None, Storage(tmp_path), "s"), max_teacher_drop=None)
    first = _drive(search, 7, concurrency=concurrency)
    search.save(str(tmp_path / "searcher.pkl"))
    restored = DefenseSearch(preset, "s", open_study_storage(None, Storage(tmp_path), "s"), max_teacher_drop=None)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(restored._ot_study.sampler, FrontSampler)
    second = _drive(restored, 9, start=7, concurrency=concurrency)
    keys = [candidate_key(p) for p in first + second]
    assert len(set(keys)) == len(keys) == 16
    done = [t for t in restored._ot_study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 16  # every trial of the budget ran and was told, none twice
    # and the same search without a restart proposes the same candidates (the state is the study's)
    alone = DefenseSearch(preset, "t", open_study_storage(None, Storage(tmp_path), "t"), max_teacher_drop=None)
    again = _drive(alone, 7, concurrency=concurrency) + _drive(alone, 9, start=7, concurrency=concurrency)
    assert [candidate_key(p) for p in again] == keys


def test_a_dominated_trial_is_told_its_lower_bound():
    search = DefenseSearch(load_preset("smoke"), "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    search.suggest("a")
    search.on_trial_complete("a", dict(final=True, status="dominated", teacher_acc=90.0, student_acc=85.0,
                                       teacher_drop=6.0))
    (trial,) = search._ot_study.get_trials()
    assert trial.state.name == "COMPLETE" and trial.values == [90.0, 85.0]
    assert trial.user_attrs["status"] == "dominated"


def test_extensions_stick_and_go_on_step_by_step():
    """A point past the preset's top that beats the one at the top moves the end on again; the
    range never falls back to the preset's (the searched one is what trials were asked within)."""
    preset = load_preset("smoke")
    search = DefenseSearch(preset, "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    tops = []
    for i in range(20):
        params = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", _outcome(params))
        tops.append(search._ot_study.sampler.searched_space(search._ot_study).get("nasty").ranges[0].high)
    assert tops == sorted(tops)  # never shrinks
    omega = preset.space.get("nasty").ranges[0]
    assert tops[-1] > omega.unscaled(omega.scaled(omega.high) + 1.5 * 0.25 * omega.width)  # two steps or more


def test_teachers_below_the_focus_floor_widen_no_range():
    """A teacher that lost more than `search.focus_teacher_drop` steers nothing: the range moves
    past ω's top once, for the teachers still within the focus there, and no further, however
    low the clones past it fall (without a floor it goes on, see the test above)."""
    from dataclasses import replace

    preset = replace(load_preset("smoke"), focus_teacher_drop=1.0)
    # this world's teachers: 95.2 at ω's top and τ_A's bottom, below 95 past the top
    search = DefenseSearch(preset, "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None,
                           normal_teacher_acc=96.0)
    tops, seen = [], []
    for i in range(20):
        params = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", _outcome(params))
        seen.append(params)
        tops.append(search._ot_study.sampler.searched_space(search._ot_study).get("nasty").ranges[0].high)
    omega = preset.space.get("nasty").ranges[0]
    one_step = omega.unscaled(omega.scaled(omega.high) + 0.25 * omega.width)
    assert tops[-1] == pytest.approx(one_step)
    # and the model does not chase them: most trials stay where teachers are within the focus
    below = [p for p in seen if p["defense"] == "nasty" and _outcome(p)["teacher_acc"] < 95.0]
    assert len(below) <= 5


def test_a_candidate_that_keeps_failing_is_not_asked_for_again():
    search = DefenseSearch(load_preset("smoke"), "s", optuna.storages.InMemoryStorage(), max_teacher_drop=None)
    asked = []
    for i in range(5):
        asked.append(candidate_key(search.suggest(f"t{i}")))
        search.on_trial_complete(f"t{i}", None, error=True)  # every trial errors
    # once more after a failure (a killed driver fails its trial too), then never again
    assert asked[0] == asked[1] and asked[2] == asked[3] and len({asked[0], asked[2], asked[4]}) == 3


def test_a_finite_family_without_a_start_point_starts_in_its_middle(tmp_path):
    import tomllib
    from importlib import resources

    import tomli_w

    doc = tomllib.loads((resources.files("search_spaces") / "presets" / "smoke.toml").read_text())
    del doc["search"]["stingy"]["start"]
    path = tmp_path / "nostart.toml"
    path.write_text(tomli_w.dumps(doc))
    search = DefenseSearch(load_preset(config_file=path), "s", optuna.storages.InMemoryStorage(),
                           max_teacher_drop=None)
    seen = _drive(search, 8, stingy=80.0)
    assert {"defense": "stingy", "k": 5} in seen  # k in [1, 9]: its middle, then its neighbours
    assert sum(p["defense"] == "stingy" for p in seen) >= 2


@pytest.mark.parametrize("max_teacher_drop", [None, 15.0])
def test_past_a_collapse_the_search_bisects_towards_its_edge(max_teacher_drop):
    """A step past ω's top that lands on collapsed teachers (below the focus floor: on the
    sweep's front for their failing clones, or gated as infeasible under --max-teacher-drop) is
    not walked over again: the model's box ends halfway back towards the last teacher within
    the focus, and then halfway again."""
    preset = load_preset("smoke")
    omega = preset.space.get("nasty").ranges[0]
    cliff = omega.unscaled(omega.scaled(omega.high) + 0.1 * omega.width)  # a tenth of a range past the top

    def world(params):
        out = _outcome(params)
        if params["defense"] == "nasty" and params["omega"] > cliff:
            out.update(teacher_acc=50.0, student_acc=30.0, teacher_drop=46.0)
            if max_teacher_drop is not None:  # the gate: no attacks, no clone
                out.update(status="infeasible", student_acc=math.nan)
        return out

    search = DefenseSearch(preset, "s", optuna.storages.InMemoryStorage(), max_teacher_drop=max_teacher_drop,
                           normal_teacher_acc=96.0)
    past = []
    for i in range(24):
        params = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", world(params))
        if params["defense"] == "nasty" and params["omega"] > omega.high:
            past.append(params["omega"])
    collapsed = [w for w in past if w > cliff]
    assert past and collapsed and past.index(collapsed[0]) == 0  # the first step overshoots
    # then each collapse lies nearer the cliff than the one before: no step is walked twice
    assert all(b < a for a, b in itertools.pairwise(collapsed))
    # and the search finds teachers past the top but short of the cliff (within the focus)
    assert any(omega.high < w <= cliff for w in past)
