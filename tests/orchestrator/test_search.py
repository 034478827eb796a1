"""The searcher's contract with a real Optuna study (SQLite): only final, finite results enter
it as COMPLETE; gated and diverged trials are PRUNED and marked infeasible."""

import math

import optuna
import pytest
from optuna.storages.journal import JournalStorage

from orchestrator._study import BucketJournal, open_study_storage
from orchestrator.search import DefenseSearch, candidate_key, make_sampler
from results import Storage
from search_spaces import SAMPLERS, adjust, load_preset


@pytest.fixture(params=["sqlite", "bucket-journal"])
def make_storage(request, tmp_path):
    """The study on SQLite (a local sweep's default) and on the journal a bucket storage uses
    (here on a local folder: the same code path, object by object)."""
    def make():
        if request.param == "sqlite":
            return open_study_storage(None, Storage(tmp_path), "s")
        return JournalStorage(BucketJournal(Storage(tmp_path), "s/study.journal"))
    return make


@pytest.fixture
def searcher(make_storage):
    return DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=1.0)


def _states(search):
    return [(t.state.name, t.params, t.constraints) for t in search._ot_study.get_trials()]


def test_start_points_come_first_and_are_queued_once(tmp_path, searcher, make_storage):
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first == {"defense": "nasty", "omega": 0.1, "tau_a": 4.0}
    assert second == {"defense": "stingy", "k": 2}
    # a driver restarted before Tune saved its state builds a new searcher on the same study
    again = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=1.0)
    waiting = again._ot_study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting == []


def test_results_enter_the_study_only_when_final_and_finite(searcher):
    for tid in "abcdef":
        searcher.suggest(tid)
    ok = dict(final=True, status="ok", teacher_acc=95.0, student_acc=80.0, teacher_drop=0.5)
    searcher.on_trial_complete("a", ok)
    searcher.on_trial_complete("b", dict(ok, status="infeasible", teacher_drop=3.0, student_acc=math.nan))
    searcher.on_trial_complete("c", dict(ok, status="diverged", teacher_acc=math.nan, student_acc=math.nan))
    searcher.on_trial_complete("d", dict(final=False, teacher_acc=math.nan, student_acc=math.nan))
    searcher.on_trial_complete("e", None, error=True)
    searcher.on_trial_complete("f", dict(ok, student_acc=math.nan))  # "ok" but not finite
    trials = searcher._ot_study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "PRUNED", "PRUNED", "FAIL", "FAIL", "FAIL"]
    assert trials[0].values == [95.0, 80.0] and trials[0].constraints == {"teacher_drop_over_limit": -0.5}
    assert trials[1].constraints == {"teacher_drop_over_limit": 2.0}
    assert trials[2].constraints == {"diverged": 1.0}
    assert not any(t.state.name == "RUNNING" for t in trials)
    assert [t.number for t in searcher._ot_study.best_trials] == [0]


def test_orphaned_running_trials_are_failed(tmp_path, make_storage):
    study = optuna.create_study(study_name="s", storage=make_storage(),
                                directions=["maximize", "minimize"])
    study.ask()  # a trial a killed driver left RUNNING
    search = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=None)
    search.suggest("mine")
    assert search.fail_orphans() == 1
    states = sorted(t.state.name for t in search._ot_study.get_trials())
    # ours runs, the orphan failed (the default strategy queues no start points: it starts
    # with them itself)
    assert states == ["FAIL", "RUNNING"]


def test_restoring_a_saved_searcher_fails_what_it_does_not_track(tmp_path, make_storage):
    search = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=None)
    search.suggest("a")
    search.save(str(tmp_path / "searcher.pkl"))
    search._ot_study.ask()  # asked after the save: the driver died before saving again
    restored = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=None)
    restored.restore(str(tmp_path / "searcher.pkl"))
    states = [t.state.name for t in restored._ot_study.get_trials()]
    assert states[:2] == ["RUNNING", "FAIL"]  # "a" is Tune's to resume; the orphan failed


def test_a_candidate_is_never_run_twice(tmp_path, make_storage):
    """Only stingy, k in [1, 3]: three suggestions must be three different k, and TPE's urge to
    repeat the best one is recorded as PRUNED repeats, not run."""
    import tomllib
    from importlib import resources

    import tomli_w

    doc = tomllib.loads((resources.files("search_spaces") / "presets" / "smoke.toml").read_text())
    doc["search"].update(defenses=["stingy"], trials=3)
    doc["search"]["stingy"].update(k=[1, 3], start={"k": 2})
    path = tmp_path / "stingy.toml"
    path.write_text(tomli_w.dumps(doc))
    search = DefenseSearch(load_preset(config_file=path), "s", make_storage(), max_teacher_drop=None)
    seen = []
    for tid in "abc":
        params = search.suggest(tid)
        seen.append(params["k"])
        search.on_trial_complete(tid, dict(final=True, status="ok", teacher_acc=95.0,
                                           student_acc=80.0 + params["k"], teacher_drop=0.0))
    assert sorted(seen) == [1, 2, 3] and seen[0] == 2
    trials = search._ot_study.get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    assert all("repeat_of" in t.user_attrs for t in trials if t.state.name == "PRUNED")


def test_a_trial_told_before_a_kill_is_not_told_again_after_restore(tmp_path, make_storage):
    """The driver told Optuna, then died before Tune saved: the restored searcher still tracks
    the trial, Tune runs it again, and its second completion must leave the first outcome."""
    search = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=1.0)
    search.suggest("a")
    search.save(str(tmp_path / "searcher.pkl"))  # Tune's last save: "a" still running
    ok = dict(final=True, status="ok", teacher_acc=95.0, student_acc=80.0, teacher_drop=0.5)
    search.on_trial_complete("a", ok)  # told; then the driver is killed
    restored = DefenseSearch(load_preset("smoke"), "s", make_storage(), max_teacher_drop=1.0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", dict(ok, student_acc=81.0))  # the rerun: must not raise
    trials = restored._ot_study.get_trials()
    assert [(t.state.name, t.values) for t in trials][:1] == [("COMPLETE", [95.0, 80.0])]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_a_sweep_offers_searches_the_space_past_its_start_up(tmp_path, make_storage, sampler):
    """12 trials, two in flight as in a local sweep: past TPE's and GP's 6 start-up trials and
    NSGA-II's first generation of 8, so each sampler's own model proposes. Every candidate is in
    the space and new; a diverged trial is pruned, not fatal; the searcher survives Tune's
    save and restore (a resumed sweep)."""
    preset = adjust(load_preset("smoke"), sampler=sampler)
    search = DefenseSearch(preset, "s", make_storage(), max_teacher_drop=None)
    assert type(search._ot_study.sampler) is type(make_sampler(sampler, 0, preset))
    seen, running = [], []
    for n in range(12):
        running.append((f"t{n}", search.suggest(f"t{n}")))
        if len(running) < 2:
            continue
        tid, params = running.pop(0)
        seen.append(params)
        if params["defense"] == "nasty" and params["omega"] > 0.2:  # the smoke space's far end
            search.on_trial_complete(tid, dict(final=True, status="diverged", teacher_acc=math.nan,
                                               student_acc=math.nan, teacher_drop=math.nan))
        else:
            knob = params.get("k") or params["omega"] * params["tau_a"] ** 2
            search.on_trial_complete(tid, dict(final=True, status="ok", teacher_acc=99.0 - knob,
                                               student_acc=80.0 + knob, teacher_drop=knob))
    for p in seen:  # every knob within its range: ω and τ_A for nasty, k for stingy
        ranges = preset.space.get(p["defense"]).ranges
        assert set(p) == {"defense", *(r.name for r in ranges)}
        if sampler == "front":  # it may go past a range's end, never past the knob's bounds
            assert all(r.knob.low <= p[r.name] <= r.knob.high for r in ranges)
        else:
            assert all(r.low <= p[r.name] <= r.high for r in ranges)
    assert len({candidate_key(p) for p in seen}) == len(seen) == 11
    done = [t for t in search._ot_study.get_trials() if t.state.is_finished() and "repeat_of" not in t.user_attrs]
    assert len(done) == 11 and all(t.state.name in ("COMPLETE", "PRUNED") for t in done)
    search.save(str(tmp_path / "searcher.pkl"))
    restored = DefenseSearch(preset, "s", make_storage(), max_teacher_drop=None)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert type(restored._ot_study.sampler) is type(search._ot_study.sampler)
    assert candidate_key(restored.suggest("after")) not in {candidate_key(p) for p in seen}


def test_the_nsga2_sampler_pickles_and_keeps_optunas_study_keys():
    """Tune pickles the searcher, sampler and all; Optuna 5.1's genetic samplers hold a lock.
    The generations it keeps in the study stay under NSGA-II's own keys, so a sweep resumes
    them whichever class started it."""
    import pickle

    from orchestrator.search import make_sampler

    sampler = make_sampler("nsga2", seed=3)
    assert sampler._get_generation_key() == optuna.samplers.NSGAIISampler._get_generation_key()
    again = pickle.loads(pickle.dumps(sampler))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=again)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=10)
    assert len(study.trials) == 10
