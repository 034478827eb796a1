"""`curves.png`: the training curves of the normal teacher and the front's defended teachers, and of
their students, read back from the figure; synthetic epoch rows (the `epochs` table's shape)."""

import pytest

from results.plots import curves_figure


def _phase(kind, epochs, trial=None, *, seed=0, student=None, attack=None, start=50.0, step=10.0, loss=2.0, key=None):
    return [{"sweep": "s", "trial_id": trial, "phase_key": key or f"{kind}-{trial}-{student}-{attack}-{seed}",
             "phase_kind": kind, "phase": kind, "defense": "nasty" if trial else None,
             "knobs": {"omega": 0.01} if trial else None, "student_arch": student, "attack": attack,
             "seed": seed, "replicate_of": None, "epoch": e, "train_loss": loss / e,
             "val_acc": start + step * e, "lr": 0.01, "seconds": 1.0} for e in range(1, epochs + 1)]


ROWS = [
    *_phase("teacher", 3, start=60.0),  # the normal teacher, the sweep's seed
    *_phase("teacher", 3, seed=1, start=0.0),  # confirm's normal teacher of seed 1: not shown
    *_phase("defense", 3, "a", start=55.0),  # the front's defended teacher
    *_phase("defense", 3, "z", start=10.0),  # a trial off the front
    *_phase("scratch", 2, student="cnn(w=4)", start=40.0),
    *_phase("attack", 2, student="cnn(w=4)", attack="kd-T4", start=45.0),  # on the normal teacher
    *_phase("attack", 2, student="cnn(w=4)", attack="dafl", start=20.0),
    *_phase("attack", 2, "a", student="cnn(w=4)", attack="kd-T4", start=42.0),  # a's best clone
    *_phase("attack", 2, "a", student="cnn(w=4)", attack="dafl", start=15.0),
    *_phase("attack", 2, "z", student="cnn(w=4)", attack="kd-T4", start=30.0),
]


def _line(figure, gid):
    found = [a for ax in figure.axes for a in ax.get_lines() if a.get_gid() == gid]
    assert len(found) <= 1, gid
    return found[0] if found else None


def test_curves_set_the_front_against_the_normal_teacher_and_its_students():
    fig = curves_figure(ROWS, ["a"], labels={"a": "nasty ω=0.01 τ_A=20"})
    normal = _line(fig, "teacher:normal:val_acc")
    assert list(normal.get_xdata()) == [1, 2, 3] and list(normal.get_ydata()) == [70.0, 80.0, 90.0]  # seed 0 only
    assert list(_line(fig, "teacher:a:val_acc").get_ydata()) == [65.0, 75.0, 85.0]
    assert list(_line(fig, "teacher:a:train_loss").get_ydata()) == pytest.approx([2.0, 1.0, 2 / 3])
    assert _line(fig, "teacher:z:val_acc") is None  # off the front
    # the student: the front defense's best attack (its validation accuracy peaked highest), the
    # same attack on the normal teacher, and the student alone
    assert list(_line(fig, "attack:a:cnn(w=4):kd-T4:val_acc").get_ydata()) == [52.0, 62.0]
    assert list(_line(fig, "attack:normal:cnn(w=4):kd-T4:val_acc").get_ydata()) == [55.0, 65.0]
    assert _line(fig, "scratch:cnn(w=4):val_acc") is not None
    assert _line(fig, "attack:a:cnn(w=4):dafl:val_acc") is None
    assert _line(fig, "attack:normal:cnn(w=4):dafl:val_acc") is None
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "1  nasty ω=0.01 τ_A=20" in legend and "normal teacher" in legend and "normal teacher, kd-T4" in legend
    titles = [ax.get_title() for ax in fig.axes]
    assert "teachers" in titles and "student cnn: best attack per defense" in titles


def test_curves_follow_the_attack_that_made_the_best_clone_when_told():
    fig = curves_figure(ROWS, ["a"], best={("a", "cnn(w=4)"): "dafl"})
    assert _line(fig, "attack:a:cnn(w=4):dafl:val_acc") is not None
    assert _line(fig, "attack:normal:cnn(w=4):dafl:val_acc") is not None
    assert _line(fig, "attack:a:cnn(w=4):kd-T4:val_acc") is None


def test_curves_without_a_front_show_every_trial_and_keep_an_epoch_once():
    again = [{**r, "val_acc": 99.0} for r in _phase("teacher", 1, start=60.0)]  # epoch 1 written again
    fig = curves_figure([*ROWS, *again])
    assert list(_line(fig, "teacher:normal:val_acc").get_ydata()) == [99.0, 80.0, 90.0]
    assert _line(fig, "teacher:a:val_acc") is not None and _line(fig, "teacher:z:val_acc") is not None


def test_curves_have_nothing_to_draw_without_a_teacher_or_an_attack():
    assert curves_figure([]) is None
    assert curves_figure(_phase("scratch", 2, student="cnn")) is None


def test_the_report_writes_curves_when_given_epoch_rows(tmp_path):
    from orchestrator.layout import read_sweep, write_json
    from results import ResultStore, Storage, trial_rows
    from results.sweep_report import build_report

    storage = Storage(tmp_path / "s")
    write_json(storage, "c", "sweep.json", {
        "name": "c", "preset_name": "smoke", "trials": 1, "identity": {},
        "space": [{"defense": "nasty", "knobs": [{"name": "omega", "symbol": "ω", "low": 0.001, "high": 0.1}]}]})
    from _outcomes import context, outcome, student

    result = outcome("nasty", {"omega": 0.01}, teacher_acc=95.0, student_acc=90.0, normal_teacher_acc=97.0,
                     best_student="cnn(w=4)", best_attack="kd-T4",
                     students=[student("cnn(w=4)", "kd-T4", 4.0, 0.9, "ok", 90.0, 88.0, 88.5, 92.0)])
    store = ResultStore(storage, "c")
    store.write_trial(*trial_rows(sweep="c", trial_id="a", candidate=None, outcome=result,
                                  context=context(normal_teacher_acc=97.0)))
    rows = store.sweep_rows()
    stored = read_sweep(storage, "c")
    plain = build_report("c", stored, rows.trials, rows.students, "uri")
    assert "curves.png" not in plain and "curves.png" not in plain["report.md"].decode()
    files = build_report("c", stored, rows.trials, rows.students, "uri", epochs=ROWS)
    assert files["curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    md = files["report.md"].decode()
    assert "![curves](curves.png)" in md and "  - `curves.png`: validation accuracy and training loss" in md
