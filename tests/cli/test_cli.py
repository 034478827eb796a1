"""The CLI as users run it: help, bad input, and a real sweep on a real local Ray."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _net import free_port
from click.testing import CliRunner

import cli
from results import ResultStore, Storage

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(cli.main.commands)


def test_version_names_the_package_and_the_phase_code():
    from trainables.phases import PHASE_CODE_VERSION

    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and result.output == f"undistill 0.1.0 (phase code {PHASE_CODE_VERSION})\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli.main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def _cli(*args, storage=None, timeout=600):
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    if storage is not None:
        cmd += ["--storage", str(storage)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


SMOKE = (ROOT / "search_spaces" / "presets" / "smoke.toml").read_text()

# Each bad input as users type it, its exit code, and the part of the one line it prints that
# README's "Errors" table shows (exactly these, no more). `{TOML:<edit>}` is smoke.toml with an
# edit, written to a file. Every case runs against a storage that already holds a started sweep.
TOML_EDITS = {
    "arch": ('arch = "mlp"', 'arch = "resnet9000"'),
    "dataset": ('name = "mnist1d"', 'name = "imagenet"'),
    "omega": ("omega = [0.01, 0.5]", "omega = [0.01, 50.0]"),
    "tau": ("tau_a = [2.0, 8.0]", "tau_a = [0.01, 8.0]"),
    "k": ("k = [1, 9]", "k = [1, 10]"),
    "lowhigh": ("tau_a = [2.0, 8.0]", "tau_a = [8.0, 2.0]"),
    "key": ("trials = 4", "trails = 4"),
    "defense": ('defenses = ["nasty", "stingy"]', 'defenses = ["nasty", "nice"]'),
    "malformed": ("seed = 0", "seed = = 0"),
    "flat": ('hidden = 32\n\n[[students]]\narch = "cnn1d"\nwidth = 8\n',
             'hidden = 32\ndepth = 1\n\n[attack.skeptical]\ntemperatures = [4.0]\n'),
    "huge": ("num_samples = 4000", "num_samples = 1000000000000"),
    "nanlr": ("lr = 0.01", "lr = nan"),  # the first: [teacher_schedule]'s
    "floatwidth": ("width = 32", "width = 32.0"),  # the teacher's
    "lastbatch": ("batch_size = 128", "batch_size = 2879"),  # [teacher_schedule]'s: 2880 samples train
}
BAD_INPUT = [
    (["sweep", "--preset", "nope"], 2, "unknown preset 'nope'; known: "),
    (["sweep", "--config", "{TOML:arch}"], 2, "unknown model 'resnet9000'; did you mean"),
    (["sweep", "--config", "{TOML:dataset}"], 2,
     "dataset.name: unknown dataset 'imagenet'; known: cifar10, cifar100, mnist1d"),
    (["sweep", "--config", "{TOML:omega}"], 2,
     "search.nasty.omega: [0.01, 50.0] must lie within [1e-06, 10.0]"),
    (["sweep", "--config", "{TOML:tau}"], 2,
     "search.nasty.tau_a: [0.01, 8.0] must lie within [0.1, 100.0]"),
    (["sweep", "--config", "{TOML:k}"], 2,
     "search.stingy.k: [1, 10] must lie within [1, 9]: the teacher keeps its k largest of 10 "
     "logits, so 1 ≤ k < 10"),
    (["sweep", "--config", "{TOML:lowhigh}"], 2,
     "search.nasty.tau_a: low 8.0 is above high 2.0; write [low, high]"),
    (["sweep", "--config", "{TOML:key}"], 2,
     "search: unknown key 'trails' (did you mean 'trials'?); allowed: "),
    (["sweep", "--config", "{TOML:malformed}"], 2,
     "not valid TOML (Invalid value (at line 2, column 8))"),
    (["sweep", "--config", "missing.toml"], 2, "config file 'missing.toml' does not exist"),
    (["sweep", "--preset", "cifar10-resnet18"], 2,
     "dataset cifar10 is read from a local folder: fetch it once with"),
    (["sweep", "--preset", "cifar10-resnet18", "--data-root", "nowhere"], 2,
     "cifar-10-batches-py lacks data_batch_1"),
    (["sweep", "--preset", "smoke", "--storage", "/dev/null/x"], 2, "is not writable"),
    (["sweep", "--preset", "smoke", "--storage", "nosuch://bucket/x"], 2, "cannot be opened"),
    (["pareto", "smoke", "--storage", "nosuch://bucket/x"], 2, "cannot be opened"),
    (["status", "smoke", "--storage", "nosuch://bucket/x"], 2, "cannot be opened"),
    (["sweep", "--preset", "smoke", "--name", "other", "--address", "{FREE_PORT}"], 1,
     "no Ray cluster answers at"),
    (["sweep", "--preset", "smoke", "--name", "other", "--address", "headnode"], 2,
     "expected HOST:PORT (the head's GCS port, 6379 by default)"),
    (["sweep", "--preset", "smoke", "--max-teacher-drop", "1"], 2,
     "with a different config; resume it with"),
    (["sweep", "--preset", "smoke", "--name", "../x"], 2,
     "sweep name '../x': use letters, digits, '.', '_' and '-'"),
    (["sweep", "--preset", "smoke", "--name", ""], 2, "sweep name '': use letters, digits, '.', '_' and '-'"),
    (["sweep", "--preset", "smoke", "--name", "other", "--max-teacher-drop", "-1"], 2,
     "--max-teacher-drop -1.0 must be within [0, 100) points"),
    (["sweep", "--preset", "smoke", "--name", "other", "--gpus-per-trial", "1.5"], 2,
     "--gpus-per-trial 1.5: Ray shares a GPU or CPU only in fractions up to 1; above 1 give a "
     "whole number (1 or 2)"),
    (["sweep", "--preset", "smoke", "--name", "other", "--gpus-per-trial", "0.00001"], 2,
     "--gpus-per-trial 1e-05 is below Ray's resource precision (0.0001)"),
    (["sweep", "--preset", "smoke", "--name", "other", "--cpus-per-trial", "0"], 2,
     "--cpus-per-trial 0 must be > 0"),
    (["sweep", "--preset", "smoke", "--sampler", "cmaes"], 2,
     "--sampler 'cmaes' is not one of front, tpe, gp, nsga2, random"),
    (["sweep", "--preset", "smoke", "--name", "other", "--study-storage", "postgresql://u:p@127.0.0.1:1/db"],
     2, "its database driver is not installed"),
    # this machine has no GPU: the local Ray starts, and the check refuses before any work
    (["sweep", "--preset", "smoke", "--name", "other", "--gpus-per-trial", "0.5"], 2,
     "--gpus-per-trial 0.5: one trial needs 1.5 GPUs"),
    (["pareto", "ghost"], 2, "no sweep named 'ghost'"),
    (["status", "ghost"], 2, "no sweep named 'ghost'"),
    (["resume", "ghost"], 2, "no sweep named 'ghost'"),
    (["pareto", "smoke", "--max-teacher-drop", "nan"], 2, "--max-teacher-drop nan must be within [0, 100) points"),
    (["pareto", "smoke", "--max-teacher-drop", "inf"], 2, "--max-teacher-drop inf must be within [0, 100) points"),
    (["pareto", "smoke", "--attack", "kd-T3"], 2, "--attack 'kd-T3': sweep 'smoke' ran kd, kd-T4"),
    (["pareto", "smoke", "--defense", "nice"], 2, "--defense 'nice': sweep 'smoke' searched nasty, stingy"),
    (["sweep", "--config", "{TOML:defense}"], 2, "search.defenses: unknown defense 'nice'"),
    (["sweep", "--config", "{TOML:flat}", "--name", "flat"], 2,
     "attack 'skeptical-T4' needs a student with intermediate exits and the preset has none"),
    (["resume", "old"], 2, "sweep 'old' was made by an older undistill"),
    (["report", "ghost"], 2, "no sweep named 'ghost'"),
    (["report", "old"], 2, "sweep 'old' has no finished trial yet"),
    (["report", "smoke", "--out", "/dev/null/x"], 2, "--out /dev/null/x: cannot write there"),
    (["sweep", "--preset", "smoke", "--name", "old"], 2, "sweep 'old' was made by an older undistill"),
    (["resume", "older"], 2, "sweep 'older' was made by an older undistill (before pluggable defenses)"),
    # started before the phases changed (networks, fused optimizers): its rows would mix two codes
    (["resume", "oldcode"], 2, "sweep 'oldcode' was made by phase code 4"),
    (["sweep", "--preset", "smoke", "--name", "oldcode"], 2, "sweep 'oldcode' was made by phase code 4"),
    (["leaderboard", "--storage", "{EMPTY}"], 2, "has a finished trial yet; sweep first"),
    # started before DAFL was made as published: its preset's [attack.data_free] means another attack
    (["resume", "olddafl"], 2, "sweep 'olddafl' was made by an older undistill (DAFL before it was made as published)"),
    (["confirm", "smoke", "--seeds", "0"], 2, "--seeds 0 must be within 1 to 50: the number of seeds to add"),
    (["sweep", "--preset", "smoke", "--confirm-seeds", "51"], 2, "--confirm-seeds 51 must be within 1 to 50"),
    (["confirm", "ghost", "--seeds", "2"], 2, "no sweep named 'ghost'"),
    (["confirm", "oldcode", "--seeds", "2"], 2, "sweep 'oldcode' was made by phase code 4"),
    (["confirm", "smoke", "--seeds", "2", "--max-teacher-drop", "-1"], 2,
     "--max-teacher-drop -1.0 must be within [0, 100) points"),
    (["confirm", "smoke", "--seeds", "2", "--max-teacher-drop", "0.5"], 2,
     "sweep 'smoke' has no finished trial on its front yet within --max-teacher-drop; sweep first"),
    # every number of a preset within its range, nan and inf never; an int where an int is meant
    (["sweep", "--config", "{TOML:nanlr}"], 2, "teacher_schedule.lr must be within (0, 10], got nan"),
    (["sweep", "--config", "{TOML:floatwidth}"], 2,
     "teacher: model 'cnn1d' option width: expected int, got float 32.0"),
    # sizes the machine cannot hold or the sweep never finish, refused before compute
    (["sweep", "--config", "{TOML:huge}"], 2,
     "dataset.num_samples 1000000000000: its arrays need 1.6 PB while they are made, this machine has"),
    (["sweep", "--config", "{TOML:lastbatch}"], 2,
     "teacher_schedule.batch_size 2879: the training split's 2880 samples leave a last batch of one"),
    (["sweep", "--preset", "smoke", "--trials", "1e20"], 2, "--trials 1e20: not a whole number; write it in digits"),
    (["sweep", "--preset", "smoke", "--trials", "2000000"], 2,
     "--trials must be within [1, 1000000], got 2000000 (a million trials would take months)"),
    (["sweep", "--preset", "smoke", "--epochs-scale", "1e9"], 2,
     "--epochs-scale 1e+09 makes teacher_schedule.epochs 1.2e+10, past 100000"),
    (["sweep", "--preset", "smoke", "--epochs-scale", "nan"], 2, "--epochs-scale nan must be a finite number > 0"),
    (["sweep", "--preset", "smoke", "--name", "other", "--cpus-per-trial", "4096"], 2,
     "--cpus-per-trial 4096: each process of a trial would hold 4096 CPUs, this machine has"),
    # flags a started or finished sweep cannot honour, refused before anything is written
    (["sweep", "--preset", "smoke", "--concurrency", "3"], 2,
     "--concurrency cannot change while resuming 'smoke' (its trials started with the default)"),
    (["resume", "smoke", "--study-storage", "{EMPTY}/moved.log"], 2,
     "holds no study of sweep 'smoke' (it started with the default, in the sweep's folder)"),
]


@pytest.fixture(scope="module")
def started_sweep(tmp_path_factory):
    """A storage holding sweep 'smoke' of the smoke preset with a trial done: what bad input may
    land on."""
    from orchestrator import SweepOptions
    from orchestrator.layout import write_json
    from results import ResultStore, Storage, trial_rows
    from search_spaces import load_preset

    root = tmp_path_factory.mktemp("existing")
    storage = Storage(root)
    opts = SweepOptions(load_preset("smoke"), "smoke", str(root))
    from trainables.phases import PHASE_CODE_VERSION
    from undistill.record import RunOptions, SweepRecord

    for name, code in (("smoke", PHASE_CODE_VERSION), ("oldcode", 4), ("done", PHASE_CODE_VERSION)):
        write_json(storage, name, "sweep.json", SweepRecord(
            name=name, preset_name="smoke", preset=opts.identity()["preset"], max_teacher_drop=None,
            fingerprint=opts.fingerprint(), trials=4, run=RunOptions(1.0, 0.0, 2), created_at="then",
            space=opts.preset.space, phase_code=code).to_json())
        (root / name / "tune").mkdir()
    write_json(storage, "done", "state.json", {"finished": True, "trials": 4})  # and 'done' has finished
    # and sweep 'olddafl', started before DAFL was made as published (a generator run of some steps)
    before = opts.identity()["preset"]
    before = {**before, "attack": {**before["attack"], "data_free": {"generator_steps": 60, "batch_size": 256}}}
    write_json(storage, "olddafl", "sweep.json", SweepRecord(
        name="olddafl", preset_name="smoke", preset=before, max_teacher_drop=None,
        fingerprint=opts.fingerprint(), trials=4, run=RunOptions(1.0, 0.0, 2), created_at="then",
        space=opts.preset.space, phase_code=PHASE_CODE_VERSION).to_json())
    (root / "olddafl" / "tune").mkdir()
    # and sweep 'old', started by an undistill from before the attack suite (one KD temperature)
    write_json(storage, "old", "sweep.json", {
        "name": "old", "preset_name": "smoke", "fingerprint": "0" * 16, "trials": 4,
        "identity": {"preset": {"attack": {"kd_temperature": 4.0, "kd_alpha": 0.9}}},
        "run": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "concurrency": 2}, "created_at": "then"})
    (root / "old" / "tune").mkdir()
    # and sweep 'older', started by an undistill from before pluggable defenses (no record format)
    write_json(storage, "older", "sweep.json", {
        "name": "older", "preset_name": "smoke", "fingerprint": opts.fingerprint(), "trials": 4,
        "identity": opts.identity(), "run": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "concurrency": 2},
        "created_at": "then"})
    (root / "older" / "tune").mkdir()
    from _outcomes import context, outcome, student

    clone = student("mlp", "kd-T4", 4.0, 0.9, "ok", 70.0)
    result = outcome("stingy", {"k": 2}, teacher_acc=89.0, student_acc=70.0, normal_teacher_acc=90.0,
                     best_student="mlp", best_attack="kd-T4", students=[clone], started_at=0.0, finished_at=1.0)
    ResultStore(storage, "smoke").write_trial(*trial_rows(
        sweep="smoke", trial_id="t1", candidate=None, outcome=result,
        context=context(config_fingerprint=opts.fingerprint(), normal_teacher_acc=90.0)))
    return root


def _snapshot(root: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _bad_args(args, tmp_path, storage):
    out = []
    for a in args:
        if a.startswith("{TOML:"):
            old, new = TOML_EDITS[a[6:-1]]
            assert old in SMOKE
            path = tmp_path / f"{a[6:-1]}.toml"
            path.write_text(SMOKE.replace(old, new, 1))
            a = str(path)
        out.append(a.replace("{FREE_PORT}", f"127.0.0.1:{free_port()}").replace("{EMPTY}", str(tmp_path)))
    return out if "--storage" in out else [*out, "--storage", str(storage)]


@pytest.mark.parametrize("args,code,message", BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_a_nonzero_exit_with_nothing_written(started_sweep, tmp_path,
                                                                       args, code, message):
    before = _snapshot(started_sweep)
    result = CliRunner().invoke(cli.main, _bad_args(args, tmp_path, started_sweep))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert _snapshot(started_sweep) == before  # nothing existing overwritten, nothing added


@pytest.mark.parametrize("name,code", [("smoke", 2), ("done", 0)])
def test_a_study_storage_a_sweep_cannot_use_creates_no_file(started_sweep, tmp_path, name, code):
    """`--study-storage` where a started sweep's study is not is refused; on a finished sweep it
    changes nothing, and says so beside the front. Opening it would have made an empty journal:
    neither makes one."""
    journal = tmp_path / "elsewhere" / "study.log"
    result = CliRunner().invoke(cli.main, ["resume", name, "--study-storage", str(journal),
                                           "--storage", str(started_sweep)])
    assert result.exit_code == code, result.output
    assert ("holds no study of sweep 'smoke'" if code else
            f"sweep 'done' is finished: --study-storage {journal} changes nothing") in result.output
    assert not journal.exists() and not journal.parent.exists()


def test_a_run_flag_on_a_finished_sweep_says_it_changes_nothing(started_sweep):
    result = CliRunner().invoke(cli.main, ["sweep", "--preset", "smoke", "--name", "done", "--concurrency", "3",
                                           "--storage", str(started_sweep)])
    assert result.exit_code == 0, result.output
    assert "sweep 'done' is finished: --concurrency 3 changes nothing (it ran with the default)" in result.output


def test_the_readme_errors_table_lists_exactly_what_the_program_prints():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")][2:]
    # (the message, its exit code: 2 unless the row says "(exit 1)")
    shown = {(re.search(r"`([^`]+)`", message).group(1), 1 if "(exit 1)" in what else 2)
             for what, message, *_ in rows}
    assert shown == {(message, code) for _, code, message in BAD_INPUT}


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_storage):
    run = _cli("sweep", "--preset", "smoke", storage=tmp_storage)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto front of 'smoke'" in run.stdout
    assert "[  4/4]" in run.stderr

    results = tmp_storage / "smoke" / "results"
    trials = pq.read_table(results / "trials").to_pylist()
    students = pq.read_table(results / "students").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    # the attack suite: every student by KD at T = 4 and 20, without labels at T = 4, and by DAFL,
    # on every trial
    assert len(students) == 4 * 2 * 4
    assert {s["attack"] for s in students} == {"kd-T4", "kd-T20", "unlabelled-T4", "dafl"}
    assert {t["defense"] for t in trials} == {"nasty", "stingy"}
    paper = [t for t in trials if t["defense"] == "nasty" and dict(t["knobs"])["omega"] == 0.1]
    assert paper and dict(paper[0]["knobs"])["tau_a"] == 4.0  # the preset's start point ran
    finished = [(t["teacher_acc"], t["student_acc"]) for t in trials if t["status"] == "ok"]
    for t in trials:
        # dominated: its attacks stopped once its clones showed a finished trial beats it
        assert t["status"] in ("ok", "dominated") and 0 < t["teacher_acc"] <= 100 and 0 < t["student_acc"] <= 100
        assert t["clone_lower_bound"] == (t["status"] == "dominated")
        mine = [s for s in students if s["trial_id"] == t["trial_id"] and s["status"] != "skipped"]
        if t["status"] == "dominated":
            point = (t["teacher_acc"], t["student_acc"])
            assert any(a >= point[0] and b <= point[1] and (a, b) != point for a, b in finished)
        else:
            assert len(mine) == 2 * 4
        best = max(mine, key=lambda s: s["student_acc"])  # the best clone over students × attacks
        assert (t["student_acc"], t["best_student"], t["best_attack"]) == (
            best["student_acc"], best["student_arch"], best["attack"])
        assert t["kd_temperature"] == best["kd_temperature"]
        assert t["teacher_drop"] == pytest.approx(t["normal_teacher_acc"] - t["teacher_acc"])
        if t["defense"] == "stingy":
            assert t["teacher_acc"] == t["normal_teacher_acc"]  # top-1 survives top-k
    for s in students:
        assert None not in (s["scratch_acc"], s["smoothed_acc"], s["normal_kd_acc"])
        # neither DAFL nor the unlabelled attacker has labels
        assert s["kd_alpha"] == (0.9 if s["attack"].startswith("kd-") else 1.0)

    # the finished sweep is compacted: one file per table, each row once
    for kind in ("trials", "students", "epochs"):
        assert [p.name for p in (results / kind).glob("*.parquet")] == ["part-000001.parquet"]
    # the learning curves: every upstream phase's (trial_id null), each trial's defended teacher
    # and every clone that trained, one row per epoch
    epochs = ResultStore(Storage(tmp_storage), "smoke").epoch_rows()
    upstream = {(r["phase_kind"], r["phase"]) for r in epochs if r["trial_id"] is None}
    assert ("teacher", "teacher") in upstream and len(upstream) == 13
    teacher_epochs = [r["epoch"] for r in epochs if r["phase_kind"] == "teacher"]
    assert teacher_epochs == list(range(1, len(teacher_epochs) + 1)) and len(teacher_epochs) >= 2
    assert all(r["seconds"] > 0 and r["lr"] > 0 and 0 <= r["val_acc"] <= 100 for r in epochs)
    for t in trials:
        mine = [r for r in epochs if r["trial_id"] == t["trial_id"]]
        assert {r["defense"] for r in mine} == {t["defense"]} and all(r["knobs"] == dict(t["knobs"]) for r in mine)
        assert any(r["phase_kind"] == "defense" for r in mine) == (t["defense"] == "nasty")
        clones = {(r["attack"], r["student_arch"]) for r in mine if r["phase_kind"] == "attack"}
        ran = [s for s in students if s["trial_id"] == t["trial_id"]]
        assert {(s["attack"], s["student_arch"]) for s in ran if s["status"] == "ok"} <= clones
        assert clones <= {(s["attack"], s["student_arch"]) for s in ran if s["status"] != "skipped"}

    # the study saw every trial exactly once, all COMPLETE
    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_storage / 'smoke' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    # named objectives (optuna-dashboard's axes), and each Optuna trial tied to its Parquet row
    assert study.metric_names == ["teacher_acc", "student_acc"]
    by_id = {t["trial_id"]: t for t in trials}
    for ot in study.trials:
        row = by_id[ot.user_attrs["tune_trial_id"]]
        assert (ot.user_attrs["status"], ot.user_attrs["best_attack"]) == (row["status"], row["best_attack"])
        assert ot.user_attrs["teacher_drop"] == pytest.approx(row["teacher_drop"])

    pareto = _cli("pareto", "smoke", "--format", "json", storage=tmp_storage)
    assert pareto.returncode == 0, pareto.stderr
    front = json.loads(pareto.stdout)
    assert front and {"trial_id", "defense", "omega", "tau_a", "k", "teacher_acc", "student_acc",
                      "teacher_drop", "best_attack"} <= set(front[0])
    ok = [(t["teacher_acc"], t["student_acc"]) for t in trials]
    for f in front:  # nothing on the front is dominated by any trial
        assert not any(a >= f["teacher_acc"] and b <= f["student_acc"] and
                       (a, b) != (f["teacher_acc"], f["student_acc"]) for a, b in ok)

    # each family's front, and the front against one attack alone
    for defense in ("nasty", "stingy"):
        family = json.loads(_cli("pareto", "smoke", "--defense", defense, "--format", "json",
                                 storage=tmp_storage).stdout)
        assert family and {f["defense"] for f in family} == {defense}
    for attack, members in (("dafl", {"dafl"}), ("kd", {"kd-T4", "kd-T20"}), ("kd-T4", {"kd-T4"}),
                            ("unlabelled", {"unlabelled-T4"})):
        alone = json.loads(_cli("pareto", "smoke", "--attack", attack, "--format", "json",
                                storage=tmp_storage).stdout)
        assert alone and {f["best_attack"] for f in alone} <= members
        for f in alone:
            mine = [s["student_acc"] for s in students if s["trial_id"] == f["trial_id"] and s["attack"] in members
                    and s["student_acc"] is not None]
            assert f["student_acc"] == max(mine)

    # the report folder of a real sweep: its front is pareto's
    report = _cli("report", "smoke", "--out", str(tmp_storage.parent / "report"), storage=tmp_storage)
    assert report.returncode == 0, report.stderr[-2000:]
    assert json.loads((tmp_storage.parent / "report" / "front.json").read_text()) == front
    assert (tmp_storage.parent / "report" / "front.png").stat().st_size > 10_000
    assert (tmp_storage.parent / "report" / "curves.png").stat().st_size > 10_000  # from the epochs table

    status = json.loads(_cli("status", "smoke", "--format", "json", storage=tmp_storage).stdout)
    counted = {part.split(" ×")[0]: int(part.split(" ×")[1]) for part in status["best_attacks"].split(", ")}
    # over the trials attacked in full: a dominated one's best attack is the best of those it ran
    assert counted == dict(Counter(t["best_attack"] for t in trials if t["status"] == "ok"))

    nan_limit = _cli("pareto", "smoke", "--max-teacher-drop", "nan", storage=tmp_storage)
    assert nan_limit.returncode == 2 and "must be within [0, 100) points" in nan_limit.stderr

    # rerunning the finished sweep (same flags or a new --concurrency) trains nothing and
    # prints the same front
    again = _cli("sweep", "--preset", "smoke", "--format", "json", "--concurrency", "1",
                 storage=tmp_storage)
    assert again.returncode == 0 and "already finished" in again.stderr
    assert json.loads(again.stdout) == front

    # another sampler makes another sweep (named after it), which reuses the upstream phases
    # from the artifact cache, but not the teacher, whose weights are corrupted by one flipped
    # byte: it is trained again; with a teacher-drop limit, nasty teachers beyond it are gated:
    # no students trained
    (weights,) = (tmp_storage / "_artifacts").glob("teacher-*/model.pt")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    weights.write_bytes(bytes(blob))
    other = _cli("sweep", "--preset", "smoke", "--sampler", "random", "--max-teacher-drop", "0.5",
                 "--trials", "2", storage=tmp_storage)  # the start points: one gated, one not
    assert other.returncode == 0, other.stderr[-3000:]
    stored = json.loads((tmp_storage / "smoke-random" / "sweep.json").read_text())
    assert stored["identity"]["preset"]["search"]["sampler"] == "random"
    assert other.stderr.count("(cached)") == 12  # of 13 upstream phases
    (teacher_line,) = [line for line in other.stderr.splitlines() if line.strip().startswith("teacher ")]
    assert "cached" not in teacher_line and weights.read_bytes() != bytes(blob)
    gated_trials = pq.read_table(tmp_storage / "smoke-random" / "results" / "trials").to_pylist()
    gated_students = pq.read_table(tmp_storage / "smoke-random" / "results" / "students").to_pylist()
    assert len(gated_trials) == 2
    assert any(t["status"] == "infeasible" for t in gated_trials)
    for t in gated_trials:
        over = t["teacher_drop"] > 0.5
        assert (t["status"] == "infeasible") == over
        trained = [s["status"] for s in gated_students if s["trial_id"] == t["trial_id"]]
        if over:
            assert trained == ["skipped"] * 8
        else:  # all eight, or the strongest first until a finished trial beat it
            assert "ok" in trained and set(trained) <= {"ok", "skipped"}
            assert ("skipped" in trained) == (t["status"] == "dominated")
    gated_front = json.loads(_cli("pareto", "smoke-random", "--format", "json", storage=tmp_storage).stdout)
    assert all(f["teacher_drop"] <= 0.5 for f in gated_front)

    # pareto and status read Parquet only: they must not load torch or Ray
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, cli\n"
         "try:\n    cli.main(['pareto', 'smoke', '--storage', sys.argv[1]])\n"
         "except SystemExit:\n    pass\n"
         "cli.main(['status', 'smoke', '--storage', sys.argv[1]], standalone_mode=False)\n"
         "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n",
         str(tmp_storage)], capture_output=True, text=True, cwd=ROOT)
    assert probe.returncode == 0, probe.stderr[-2000:]

    # a damaged results file is one line and exit 1 for the readers, not a traceback
    damaged = tmp_storage / "smoke-random" / "results" / "trials"
    victim = sorted(damaged.glob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 torn")
    for command in ("pareto", "status"):
        broken = _cli(command, "smoke-random", storage=tmp_storage)
        assert broken.returncode == 1 and "cannot be read" in broken.stderr
        assert "Traceback" not in broken.stderr

    # the same name with a different config is refused, and nothing is lost
    conflict = _cli("sweep", "--preset", "smoke", "--max-teacher-drop", "1", storage=tmp_storage)
    assert conflict.returncode == 2 and "different config" in conflict.stderr
    assert pq.read_table(results / "trials").num_rows == 4
