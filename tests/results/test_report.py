"""`report`: the figures' plotted data read back, the hypervolume curve against hand values, and
the report's front table against `pareto --format json`, on a known small Parquet set."""

import json

import pytest
from click.testing import CliRunner

import cli
from orchestrator.layout import write_json
from results import ResultStore, Storage, pareto_front, trial_rows
from results.plots import front_figure, hypervolume_curve, hypervolume_figure
from results.report import _fmt

TRIALS = [  # (defense, knob, teacher_acc, best clone)
    ("nasty", {"omega": 0.015, "tau_a": 4.0}, 96.0, 90.0),  # the preset's start point
    ("stingy", {"k": 2}, 97.0, 94.0),
    ("nasty", {"omega": 0.03, "tau_a": 8.0}, 92.0, 80.0),
    ("nasty", {"omega": 0.02, "tau_a": 6.0}, 95.0, 91.0),  # dominated by the start point
    ("stingy", {"k": 5}, 97.0, 95.5),  # dominated by k = 2
]


@pytest.fixture
def sweep(tmp_path):
    storage = Storage(tmp_path / "sweeps")
    write_json(storage, "known", "sweep.json", {
        "name": "known", "preset_name": "smoke", "trials": 6, "created_at": "then",
        "identity": {"preset": {"search": {"nasty": {"omega": [0.002, 0.03], "tau_a": [2.0, 20.0],
                                                     "start": {"omega": 0.015, "tau_a": 4.0}}},
                                "attack": {"kd_temperatures": [4.0], "kd_alpha": 0.9}}},
        # the space as the defenses declare it (a sweep records it when it starts)
        "space": [{"defense": "nasty", "start": {"omega": 0.015, "tau_a": 4.0}, "knobs": [
                      {"name": "omega", "symbol": "ω", "low": 0.002, "high": 0.03, "log": True},
                      {"name": "tau_a", "symbol": "τ_A", "low": 2.0, "high": 20.0, "log": True}]},
                  {"defense": "stingy", "knobs": [{"name": "k", "symbol": "k", "low": 1, "high": 9,
                                                   "integer": True}]}]})
    from _outcomes import context, outcome, student

    store = ResultStore(storage, "known")
    for i, (defense, knobs, teacher, clone) in enumerate(TRIALS):
        students = [student("cnn", "kd-T4", 4.0, 0.9, "ok", clone, 93.0, 93.5, 96.0,
                            started_at=1000.0 + i, finished_at=1001.0 + i)]
        result = outcome(defense, knobs, teacher_acc=teacher, student_acc=clone, normal_teacher_acc=97.0,
                         best_student="cnn", best_attack="kd-T4", students=students, finished_at=2000.0 + i)
        store.write_trial(*trial_rows(sweep="known", trial_id=f"t{i}", candidate=None, outcome=result,
                                      context=context(config_fingerprint="f", normal_teacher_acc=97.0)))
    return tmp_path / "sweeps"


def _artists(figure, gid):
    return [a for ax in figure.axes for a in ax.get_children() if getattr(a, "get_gid", lambda: None)() == gid]


def test_the_front_figure_plots_every_trial_the_front_and_the_marks(sweep):
    store = ResultStore(Storage(sweep), "known")
    trials = store.trial_rows()
    front = pareto_front(trials)
    fig = front_figure(trials, front, normal=(97.0, 96.0), baselines={"alone": 93.0},
                       paper_point=trials[0], title="t")
    (nasty,), (stingy,) = _artists(fig, "trials:nasty"), _artists(fig, "trials:stingy")
    assert len(nasty.get_offsets()) == 3 and len(stingy.get_offsets()) == 2
    (line,) = _artists(fig, "front")
    assert sorted(zip(line.get_xdata(), line.get_ydata(), strict=True)) == sorted(
        (t["teacher_acc"], t["student_acc"]) for t in front)
    assert len(front) == 3  # k = 2, the start point, ω = 0.03
    (paper,) = _artists(fig, "paper")
    assert paper.get_offsets().tolist() == [[96.0, 90.0]]
    assert len(_artists(fig, "normal")) == 1 and len(_artists(fig, "baseline:alone")) == 1


def test_the_hypervolume_curve_matches_hand_values(sweep):
    trials = ResultStore(Storage(sweep), "known").trial_rows()
    # reference (0, 96): a defense adds teacher × points its clone lost below 96
    curve = hypervolume_curve(trials, (0.0, 96.0))
    assert curve[0] == pytest.approx(96 * 6)  # (96, 90)
    assert curve[1] == pytest.approx(96 * 6 + (97 - 96) * 2)  # + (97, 94) above it
    assert curve[2] == pytest.approx(96 * 6 + 1 * 2 + 92 * (90 - 80))  # + (92, 80)
    assert curve[3] == curve[2] and curve[4] == curve[2]  # dominated trials add nothing
    (line,) = _artists(hypervolume_figure(curve, (0.0, 96.0)), "hypervolume")
    assert list(line.get_ydata()) == curve and list(line.get_xdata()) == [1, 2, 3, 4, 5]


def test_the_report_folder_and_its_table_equal_pareto_json(sweep, tmp_path):
    out = tmp_path / "report"
    run = CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert {p.name for p in out.iterdir()} == {"front.png", "hypervolume.png", "front.json", "report.md"}
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pareto = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep), "--format", "json"])
    front = json.loads(pareto.stdout if hasattr(pareto, "stdout") else pareto.output)
    assert json.loads((out / "front.json").read_text()) == front
    md = (out / "report.md").read_text()
    table = md.split("## The front\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert rows == [[_fmt(c, f[c], knobs=("omega", "tau_a", "k")) for c in header] for f in front]
    assert "![front](front.png)" in md and "kd-T4" in md


def test_a_sweep_without_trials_is_one_line(tmp_path):
    storage = Storage(tmp_path / "s")
    write_json(storage, "empty", "sweep.json", {"name": "empty", "trials": 1, "identity": {}})
    run = CliRunner().invoke(cli.main, ["report", "empty", "--storage", str(tmp_path / "s")])
    assert run.exit_code == 2 and "no finished trial yet" in run.output


EDGE = ("The front reaches the end of a search range: ω at the top of its range (0.03) for 1 of its 3 "
        "defenses. It may go on past them: widen search.nasty there and sweep again.")


def test_pareto_and_the_report_say_when_the_front_reaches_a_range_end(sweep, tmp_path):
    """The front's ω = 0.03 is the top of the sweep's ω range [0.002, 0.03]."""
    run = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep)])
    assert run.exit_code == 0 and EDGE in run.output
    CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(tmp_path / "r")])
    assert f"**{EDGE}**" in (tmp_path / "r" / "report.md").read_text()
    # a front of the stingy teacher alone has no range end to reach
    run = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep), "--defense", "stingy"])
    assert run.exit_code == 0 and "range" not in run.output


def test_the_report_says_which_protocol_picked_the_epochs(sweep, tmp_path):
    out = tmp_path / "report"
    run = CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "Protocol: **validation**" in (out / "report.md").read_text()  # a record without one: the default


def test_a_replicated_front_is_in_the_report_with_its_intervals_drawn(sweep, tmp_path):
    """Seeds 1 and 2 of the front's three defenses: `report` adds the front on the means (the
    table `pareto` prints, as markdown, and as JSON) and draws it with 95 % intervals."""
    from _outcomes import context, outcome, student

    store = ResultStore(Storage(sweep), "known")
    front = pareto_front(store.trial_rows())
    for seed, shift in ((1, 0.5), (2, -1.0)):
        for t in front:
            clone = t["student_acc"] + shift
            result = outcome(t["defense"], t["knobs"], teacher_acc=t["teacher_acc"] - shift, student_acc=clone,
                             normal_teacher_acc=97.0, best_student="cnn", best_attack="kd-T4",
                             students=[student("cnn", "kd-T4", 4.0, 0.9, "ok", clone, 93.0, 93.5, 96.0)],
                             finished_at=3000.0 + seed)
            store.write_trial(*trial_rows(sweep="known", trial_id=f"{t['trial_id']}-seed{seed}", candidate=None,
                                          outcome=result, context=context(seed=seed, normal_teacher_acc=97.0),
                                          replicate_of=t["trial_id"]))
    out = tmp_path / "report"
    run = CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "front_replicated.json" in {p.name for p in out.iterdir()}
    pareto = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep), "--format", "json"])
    means = json.loads(pareto.output)
    assert json.loads((out / "front_replicated.json").read_text()) == means
    # each defense: seeds 0, 1, 2 at clone c, c + 0.5, c − 1: mean c − 1/6, sd √(7/12), by hand
    by_id = {m["trial_id"]: m for m in means}
    for t in front:
        m = by_id[t["trial_id"]]
        assert m["seeds"] == 3 and m["student_acc"] == pytest.approx(t["student_acc"] - 1 / 6)
        assert m["student_acc_sd"] == pytest.approx(0.7637626, abs=1e-6)  # sd of (0, 0.5, −1)
        assert m["below_normal_kd"] == pytest.approx(96.0 - m["student_acc"])
    md = (out / "report.md").read_text()
    assert "## The front on the means of seeds 0, 1, 2" in md
    assert f"{by_id[front[0]['trial_id']]['student_acc']:.2f} ± 0.76 [" in md
    # the single-seed front and its JSON are unchanged: `pareto --single-seed`
    single = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep), "--format", "json",
                                           "--single-seed"])
    assert json.loads((out / "front.json").read_text()) == json.loads(single.output)
    fig = front_figure(store.trial_rows(), front, normal=(97.0, 96.0), baselines={})
    assert not fig.axes[0].containers  # no replicates: no error bars
    from results.replicates import mean_front, replicated

    candidates = mean_front(replicated(store.trial_rows(), store.student_rows(), *store.replicate_rows()))
    fig = front_figure(store.trial_rows(), front, normal=(97.0, 96.0), baselines={}, replicated=candidates)
    (bars,) = [c for c in fig.axes[0].containers if c.get_label().startswith("front on the means")]
    x, y = bars.lines[0].get_xdata(), bars.lines[0].get_ydata()
    drawn = sorted(zip(x, y, strict=True))
    means = sorted((c.teacher_acc.mean, c.student_acc.mean) for c in candidates)
    assert len(drawn) == len(means)
    for point, mean in zip(drawn, means, strict=True):
        assert point == pytest.approx(mean)


def test_the_report_tables_best_clones_by_defense_and_attack_and_flags_what_protects_nothing(sweep, tmp_path):
    from _outcomes import context, outcome, student

    store = ResultStore(Storage(sweep), "known")
    # a teacher better than the normal one whose best clone (96.5) is above the normal teacher's (96.0)
    students = [student("cnn", "kd-T4", 4.0, 0.9, "ok", 96.5, 93.0, 93.5, 96.0),
                student("cnn", "skeptical-T1", 1.0, 0.9, "ok", 95.0, 93.0, 93.5, 95.5)]
    result = outcome("nasty", {"omega": 0.002, "tau_a": 2.0}, teacher_acc=98.0, student_acc=96.5,
                     normal_teacher_acc=97.0, best_student="cnn", best_attack="kd-T4", students=students)
    store.write_trial(*trial_rows(sweep="known", trial_id="t9", candidate=None, outcome=result,
                                  context=context(config_fingerprint="f", normal_teacher_acc=97.0)))
    out = tmp_path / "report"
    assert CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(out)]).exit_code == 0
    md = (out / "report.md").read_text()
    table = md.split("## Best clone by defense and attack\n\n", 1)[1].split("\n\n", 2)[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["defense", "teacher", "kd-T4", "skeptical-T1", "best clone", ""]
    rows = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
    assert rows["none (normal teacher)"][1:5] == ["97.00", "96.00", "95.50", "96.00"]
    assert rows["nasty ω = 0.002, τ_A = 2"][1:] == ["98.00", "96.50", "95.00", "96.50 (kd-T4)", "**protects nothing**"]
    # the start point's clone (90) is below the normal teacher's: it protects; skeptical skipped there
    assert rows["nasty ω = 0.015, τ_A = 4"][1:] == ["96.00", "90.00", "–", "90.00 (kd-T4)", ""]
    assert len(rows) == 1 + len(json.loads((out / "front.json").read_text()))
