"""`report`: the figures' plotted data read back, the hypervolume curve against hand values, and
the report's front table against `pareto --format json`, on a known small Parquet set."""

import json

import pytest
from click.testing import CliRunner

import cli
from orchestrator.layout import read_json, read_sweep, write_json
from results import ResultStore, Storage, pareto_front, trial_rows
from results.clones import clones
from results.plots import clones_figure, front_figure, hypervolume_curve, hypervolume_figure, students_figure
from results.report import _fmt
from results.sweep_report import baselines, build_report

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
                            started_at=1000.0 + i, finished_at=1001.0 + i),
                    student("mlp(hidden=8)", "kd-T4", 4.0, 0.9, "ok", clone - 10.0, 80.0, 81.0, 85.0,
                            started_at=1000.0 + i, finished_at=1001.0 + i)]
        result = outcome(defense, knobs, teacher_acc=teacher, student_acc=clone, normal_teacher_acc=97.0,
                         best_student="cnn", best_attack="kd-T4", students=students, finished_at=2000.0 + i)
        store.write_trial(*trial_rows(sweep="known", trial_id=f"t{i}", candidate=None, outcome=result,
                                      context=context(config_fingerprint="f", normal_teacher_acc=97.0)))
    return tmp_path / "sweeps"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _table(md: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first table under `heading`: its header and rows, cells stripped."""
    section = md.split(heading + "\n\n", 1)[1].split("\n## ", 1)[0]
    lines = next(b for b in section.split("\n\n") if b.startswith("|")).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


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
    assert {p.name for p in out.iterdir()} == {"front.png", "clones.png", "students.png", "hypervolume.png",
                                               "front.json", "report.md"}
    for image in ("front.png", "clones.png", "students.png", "hypervolume.png"):
        width, height = _png_size((out / image).read_bytes())
        assert 500 <= width <= 2600 and 250 <= height <= 1600, (image, width, height)
    pareto = CliRunner().invoke(cli.main, ["pareto", "known", "--storage", str(sweep), "--format", "json"])
    front = json.loads(pareto.stdout if hasattr(pareto, "stdout") else pareto.output)
    assert json.loads((out / "front.json").read_text()) == front
    md = (out / "report.md").read_text()
    # one row per front defense, numbered as front.png, its knobs as the space shows them
    header, rows = _table(md, "## The front")
    assert header == ["#", "defense", "teacher", "drop", "best clone", "vs normal", "by", "trial", ""]
    assert [r[0] for r in rows] == [str(n) for n in range(1, len(front) + 1)]
    assert [r[7] for r in rows] == [f["trial_id"] for f in front]
    assert [r[2] for r in rows] == [_fmt("teacher_acc", f["teacher_acc"]) for f in front]
    assert [r[4] for r in rows] == [_fmt("student_acc", f["student_acc"]) for f in front]
    assert rows[0][1] == "stingy k = 2" and rows[1][1] == "nasty ω = 0.015, τ_A = 4"
    assert rows[1][5] == "-6.00" and rows[1][6] == "kd-T4 · cnn"  # 90 against the normal teacher's 96
    assert md.count(f"| {front[0]['trial_id']} |") == 1  # no more repeated per student × attack
    assert "![front](front.png)" in md and "![clones](clones.png)" in md and "![students](students.png)" in md
    # the header: sweep, preset, trials, front, normal teacher
    top = md.split("\n\n", 2)[1]
    assert "| preset | `smoke`" in top and "| trials | 5 of 6 done |" in top
    assert "| front | 3 defenses; hypervolume" in top and "| normal teacher | 97.00 %; its best clone 96.00 %" in top


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


def _rerecord(sweep, identity: dict | None = None, **fields) -> None:
    """The fixture's sweep.json with `fields` (and `identity` entries) changed."""
    storage = Storage(sweep)
    record = read_json(storage, "known", "sweep.json")
    record["identity"].update(identity or {})
    write_json(storage, "known", "sweep.json", {**record, **fields})


def _build(sweep, **kw) -> dict[str, bytes]:
    storage = Storage(sweep)
    rows = ResultStore(storage, "known").sweep_rows()
    return build_report("known", read_sweep(storage, "known"), rows.trials, rows.students, "uri", **kw)


def _texts(figure) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts]


def _key(figure) -> list[str]:
    """The entries of front.png's key beside the plot."""
    return [t.get_text() for t in figure.axes[1].get_legend().get_texts()]


def test_the_baselines_are_tabled_once_per_student_and_name_their_student(sweep, tmp_path):
    out = tmp_path / "report"
    assert CliRunner().invoke(cli.main, ["report", "known", "--storage", str(sweep), "--out", str(out)]).exit_code == 0
    md = (out / "report.md").read_text()
    header, rows = _table(md, "## Baselines")
    assert header == ["student", "alone", "label-smoothed", "kd-T4", "best clone"]
    assert rows == [["cnn", "93.00", "93.50", "96.00", "96.00 (kd-T4)"],
                    ["mlp", "80.00", "81.00", "85.00", "85.00 (kd-T4)"]]  # mlp(hidden=8): its name is unique
    assert "best student alone" not in md
    # front.png's lines name the best student alone and label-smoothed
    students = ResultStore(Storage(sweep), "known").student_rows()
    lines = baselines(clones(students))
    assert lines == {"cnn alone: 93.00 %": 93.0, "cnn label-smoothed: 93.50 %": 93.5}
    trials = ResultStore(Storage(sweep), "known").trial_rows()
    fig = front_figure(trials, pareto_front(trials), normal=(97.0, 96.0), baselines=lines)
    (line,) = _artists(fig, "baseline:cnn alone: 93.00 %")
    assert list(line.get_ydata()) == [93.0, 93.0]
    assert "cnn alone: 93.00 %" in _key(fig)


def test_front_points_are_numbered_and_keyed_with_the_knobs_the_space_describes(sweep, monkeypatch):
    import results.sweep_report as sweep_report

    drawn = {}

    def spy(*args, **kw):
        drawn.update(kw, trials=args[0], front=args[1])
        return front_figure(*args, **kw)

    monkeypatch.setattr(sweep_report, "front_figure", spy)
    _build(sweep)
    space = read_sweep(Storage(sweep), "known").space
    assert drawn["labels"] == ["stingy k=2", "nasty ω=0.015 τ_A=4", "nasty ω=0.03 τ_A=8"]
    assert drawn["labels"] == [f"{t['defense']} {space.describe(t['defense'], t['knobs'])}" for t in drawn["front"]]
    fig = spy(drawn["trials"], drawn["front"], normal=(97.0, 96.0), baselines={}, labels=drawn["labels"])
    key = _key(fig)
    assert key[key.index("the front, by teacher accuracy:") + 1:] == drawn["labels"]
    for n, t in enumerate(drawn["front"], 1):  # each point's number beside it
        (label,) = _artists(fig, f"front-label:{n}") + _artists(fig, f"zoom:front-label:{n}")
        assert label.xy == (t["teacher_acc"], t["student_acc"]) and label.get_text() == str(n)


def test_the_front_zooms_on_a_crowd_near_the_normal_teacher():
    front = [{"trial_id": f"t{i}", "defense": "nasty", "status": "ok", "teacher_acc": x, "student_acc": y}
             for i, (x, y) in enumerate(((97.5, 95.0), (97.0, 94.0), (60.0, 50.0)))]
    fig = front_figure(front, front, normal=(97.2, 96.0), baselines={}, labels=["a", "b", "c"])
    (inset,) = [a for a in fig.axes[0].child_axes if a.get_gid() == "zoom"]
    assert inset.get_xlim()[0] < 97.0 and inset.get_xlim()[1] > 97.5 and inset.get_ylim()[0] < 94.0
    assert len(_artists(fig, "front-label:3")) == 1  # the far point numbered on the plot
    zoomed = [a for a in inset.get_children() if getattr(a, "get_gid", lambda: None)() == "zoom:front-label:1"]
    assert len(zoomed) == 1 and not _artists(fig, "front-label:1")  # the crowded ones in the zoom
    # a front that fills its plot has no zoom
    fig = front_figure(front[:2], front[:2], normal=(97.2, 96.0), baselines={}, labels=["a", "b"])
    assert not fig.axes[0].child_axes


def test_the_drop_budget_is_a_line_and_the_search_focus_a_lighter_one_where_it_falls(sweep, monkeypatch):
    trials = ResultStore(Storage(sweep), "known").trial_rows()
    front = pareto_front(trials)  # teachers 92-97
    fig = front_figure(trials, front, normal=(97.0, 96.0), baselines={}, max_teacher_drop=1.5)
    (line,) = _artists(fig, "drop-budget")
    assert list(line.get_xdata()) == [95.5, 95.5] and line.get_label() == "drop budget: 1.5 points (95.50 %)"
    assert "drop budget: 1.5 points " in _texts(fig) and "drop budget: 1.5 points (95.50 %)" in _key(fig)
    # a budget left of every trial: said in the key, not drawn (it would squeeze the trials)
    fig = front_figure(trials, front, normal=(97.0, 96.0), baselines={}, max_teacher_drop=10.0)
    assert not _artists(fig, "drop-budget")
    assert "drop budget: 10 points (87.00 %): every trial within it" in _key(fig)
    # the search's focus, without a budget: drawn only among the trials
    fig = front_figure(trials, front, normal=(97.0, 96.0), baselines={}, focus_teacher_drop=3.0)
    (line,) = _artists(fig, "focus-drop")
    assert list(line.get_xdata()) == [94.0, 94.0] and not _artists(fig, "drop-budget")
    fig = front_figure(trials, front, normal=(97.0, 96.0), baselines={}, focus_teacher_drop=15.0)
    assert not _artists(fig, "focus-drop") and not any("focus" in k for k in _key(fig))
    # the report draws the record's budget, and says it at the top of report.md
    import results.sweep_report as sweep_report

    drawn = {}
    monkeypatch.setattr(sweep_report, "front_figure", lambda *a, **kw: drawn.update(kw) or front_figure(*a, **kw))
    md = _build(sweep)["report.md"].decode()
    assert drawn["max_teacher_drop"] is None and drawn["focus_teacher_drop"] == 15.0 and "| drop budget | none |" in md
    _rerecord(sweep, identity={"max_teacher_drop": 1.5})
    md = _build(sweep)["report.md"].decode()
    assert drawn["max_teacher_drop"] == 1.5 and drawn["focus_teacher_drop"] is None
    assert "| drop budget | 1.5 points (teacher ≥ 95.50 %) |" in md


def test_the_heat_map_colours_each_clone_by_its_difference_from_the_normal_teachers():
    nan = float("nan")
    fig = clones_figure(["kd-T4", "dafl", "best clone"], [96.0, 80.0, 96.0],
                        [("1  a", [97.0, nan, 97.0], True), ("2  b", [90.0, 70.0, 90.0], False)])
    ax = fig.axes[0]
    cells = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert cells["cell:0:1"] == "80.00" and cells["cell:1:0"] == "97.00\n+1.00" and cells["cell:2:1"] == "70.00\n-10.00"
    assert "cell:1:1" not in cells and "–" in [t.get_text() for t in ax.texts]  # dafl skipped
    (image,) = _artists(fig, "clones")
    below, above = image.cmap(image.norm(-10.0)), image.cmap(image.norm(1.0))
    assert below[2] > below[0] and above[0] > above[2]  # blue below the normal teacher's clone, red above
    assert image.norm(0.0) == pytest.approx(0.5)  # centred on it
    # a defense that protects nothing is framed and says so
    assert len(_artists(fig, "protects-nothing:1")) == 1 and not _artists(fig, "protects-nothing:2")
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["normal teacher", "1  a · protects nothing", "2  b"]
    assert "Blue: the defense lowers the clone" in " ".join(t.get_text() for t in fig.texts)


def test_the_report_draws_the_heat_map_from_the_front_and_the_normal_teacher(sweep, monkeypatch):
    import results.sweep_report as sweep_report

    drawn = {}
    monkeypatch.setattr(sweep_report, "clones_figure",
                        lambda *a, **kw: drawn.update(args=a, kw=kw) or clones_figure(*a, **kw))
    files = _build(sweep)
    width, height = _png_size(files["clones.png"])
    assert 500 <= width <= 2600 and 200 <= height <= 1400
    columns, normal, rows = drawn["args"]
    assert columns == ["kd-T4", "best clone"] and normal == [96.0, 96.0]
    assert rows == [("1  stingy k=2 (teacher 97.00)", [94.0, 94.0], False),
                    ("2  nasty ω=0.015 τ_A=4 (teacher 96.00)", [90.0, 90.0], False),
                    ("3  nasty ω=0.03 τ_A=8 (teacher 92.00)", [80.0, 80.0], False)]
    assert drawn["kw"]["normal_label"] == "normal teacher (teacher 97.00)"


def test_the_per_student_view_tables_each_students_best_clone_beside_its_baselines(sweep, monkeypatch):
    import results.sweep_report as sweep_report

    drawn = {}
    monkeypatch.setattr(sweep_report, "students_figure",
                        lambda panels, **kw: drawn.update(panels=panels) or students_figure(panels, **kw))
    files = _build(sweep)
    header, rows = _table(files["report.md"].decode(), "## Best clone by defense and student")
    assert header == ["#", "defense", "cnn best clone", "vs normal", "vs alone",
                      "mlp best clone", "vs normal", "vs alone"]
    assert rows[0] == ["", "normal teacher", "96.00 (kd-T4)", "", "+3.00", "85.00 (kd-T4)", "", "+5.00"]
    assert rows[1:] == [["1", "stingy k = 2", "94.00 (kd-T4)", "-2.00", "+1.00", "84.00 (kd-T4)", "-1.00", "+4.00"],
                        ["2", "nasty ω = 0.015, τ_A = 4", "90.00 (kd-T4)", "-6.00", "-3.00", "80.00 (kd-T4)",
                         "-5.00", "+0.00"],
                        ["3", "nasty ω = 0.03, τ_A = 8", "80.00 (kd-T4)", "-16.00", "-13.00", "70.00 (kd-T4)",
                         "-15.00", "-10.00"]]
    cnn, mlp = drawn["panels"]
    assert (cnn["student"], mlp["student"]) == ("cnn", "mlp")
    assert mlp["front"] == [(1, 97.0, 84.0, "tab:gray"), (2, 96.0, 80.0, "tab:gray"), (3, 92.0, 70.0, "tab:gray")]
    assert mlp["normal"] == (97.0, 85.0) and (mlp["alone"], mlp["smoothed"]) == (80.0, 81.0)
    assert len(mlp["trials"]) == len(TRIALS)
    fig = students_figure(drawn["panels"])
    (points,) = _artists(fig, "front:mlp")
    assert list(zip(points.get_xdata(), points.get_ydata(), strict=True)) == [(97.0, 84.0), (96.0, 80.0), (92.0, 70.0)]
    assert len(_artists(fig, "alone:cnn")) == 1 and _png_size(files["students.png"])[0] >= 500


def test_the_settings_give_the_code_version_and_the_sweeps_identity(sweep):
    _rerecord(sweep, identity={"max_teacher_drop": 2.0}, fingerprint="fp123", phase_code=5,
              versions={"undistill": "0.1.0", "torch": "2.14.1", "ray": "2.60.0", "optuna": "5.1.0",
                        "python": "3.11.7"})
    md = _build(sweep)["report.md"].decode()
    header, rows = _table(md, "## Settings")
    settings = dict(rows)
    assert settings["preset"] == "`smoke`" and settings["fingerprint"] == "`fp123`"
    assert settings["created"] == "then" and settings["protocol"] == "validation"
    assert settings["sampler"] == "front" and settings["budget"] == "6 trials"
    assert settings["max teacher drop"] == "2 points (`--max-teacher-drop`)" and settings["phase code"] == "5"
    assert settings["versions"] == "undistill 0.1.0, torch 2.14.1, ray 2.60.0, optuna 5.1.0, python 3.11.7"
    assert settings["attacks"] == "kd-T4"


def test_report_md_lists_the_files_it_sits_beside(sweep):
    files = _build(sweep)
    where = files["report.md"].decode().split("## Where the results live\n\n", 1)[1]
    listed = [line.split("`")[1] for line in where.splitlines() if line.startswith("  - `")]
    assert sorted(listed) == sorted(files)
