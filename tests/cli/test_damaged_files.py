"""Every file of a finished sweep damaged in each way a disk, a sync or a hand can damage it
(emptied, cut in half, random bytes, JSON of the wrong shape, a Parquet file of another table),
then each command that reads a sweep run on it: never a traceback, an error of one line that
names the file, and not a byte of any other file changed. One real sweep, made once."""

import hashlib
import io
import json
import random
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _readme import fault_message
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[2]
NAME = "smoke"
pytestmark = pytest.mark.slow

# each file of the sweep, as a path in its folder (`_target` resolves those named by kind)
FILES = ("sweep.json", "state.json", "cluster.json", "upstream.json", "lease.json", "live", "study.db",
         "tune", "trials", "students", "epochs")
COMMANDS = (("pareto", NAME), ("status", NAME), ("status", NAME, "--format", "json"),
            ("report", NAME, "--out", "{out}"), ("resume", NAME), ("leaderboard",))
# what needs the file whole: sweep.json is the sweep's identity, state.json says whether
# `resume` may train
MUST_FAIL = {"sweep.json": {"pareto", "status", "report", "resume"}, "state.json": {"status", "resume"}}
# a phase's live entry and a driver's lease, as a worker or a driver killed mid-run leaves them
LEFT_BEHIND = json.dumps({"phase": "teacher", "key": "teacher-0123456789ab", "epoch": 3, "epochs": 8,
                          "hostname": "node", "started_at": 1.0e9, "updated_at": 1.0e9, "defense": None,
                          "knobs": {}}).encode()


def _other_table() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"step": [1, 2], "loss": [0.5, 0.25]}), buffer)
    return buffer.getvalue()


DAMAGES = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "random bytes": lambda data: random.Random(21).randbytes(max(len(data), 64)),
    "a list": lambda data: b"[]",
    "a table of other keys": lambda data: b'{"runs": 3}',
    "Parquet of another table": lambda data: _other_table(),
}


@pytest.fixture
def finished(finished_smoke) -> Path:
    """The storage of one real smoke sweep (one KD attack), run to its end (conftest's, shared:
    each test damages a copy)."""
    return finished_smoke


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """`resume` of a finished sweep trains nothing: one that would start Ray fails the test."""
    from orchestrator import _cluster

    def connect(*_args, **_kwargs):
        pytest.fail("resume went on to train a finished sweep")

    monkeypatch.setattr(_cluster, "connect", connect)


_DRAWN: dict[str, dict[str, bytes]] = {}


@pytest.fixture(autouse=True)
def drawn_once(monkeypatch):
    """`report` draws its figures once per input: a copy whose damage it does not read gives it
    the rows of every other such copy, and drawing them again takes seconds each time."""
    from results import sweep_report

    real = sweep_report.build_report

    def build(name, stored, trials, students, results_uri, replicates=((), ()), epochs=()):
        key = hashlib.sha256(repr((name, stored, trials, students, replicates, epochs)).encode()).hexdigest()
        if key not in _DRAWN:
            _DRAWN[key] = real(name, stored, trials, students, results_uri, replicates, epochs=epochs)
        return _DRAWN[key]

    monkeypatch.setattr(sweep_report, "build_report", build)


def _target(sweep: Path, what: str) -> Path:
    if what == "tune":  # the newest experiment state: the one resume restores
        return max((sweep / "tune").glob("experiment_state-*.json"))
    if what in ("trials", "students", "epochs"):
        return min((sweep / "results" / what).glob("*.parquet"))
    if what == "live":
        return sweep / "live" / "teacher-0123456789ab.json"
    return sweep / what


def _damaged_copy(finished: Path, tmp_path: Path, what: str, damage) -> tuple[Path, Path]:
    storage = tmp_path / "copy"
    shutil.copytree(finished, storage, symlinks=True)
    target = _target(storage / NAME, what)
    data = target.read_bytes() if target.exists() else LEFT_BEHIND
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(damage(data))
    return storage, target


def _digests(root: Path, leave_out: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p != leave_out}


def _invoke(args, storage: Path, out: Path):
    args = [a.replace("{out}", str(out)) for a in args]
    return CliRunner().invoke(cli.main, [*args, "--storage", str(storage)])


def _check(result, args, target: Path) -> None:
    """No traceback; an exit of 0, or of 1 or 2 with one error line, the last, naming `target`."""
    said = result.output
    shown = f"{' '.join(args)}: exit {result.exit_code}\n{said[-2000:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (shown, result.exception)
    assert "Traceback" not in said and result.exit_code in (0, 1, 2), shown
    if result.exit_code:
        errors = [line for line in said.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and said.rstrip().endswith(errors[0]), shown
        assert str(target) in errors[0], shown
    elif args[0] == "resume":
        assert "already finished" in said, shown
    elif args[:3] == ("status", NAME, "--format"):
        assert json.loads(result.stdout)["finished"] is True, shown


@pytest.mark.parametrize("damage", DAMAGES, ids=str)
@pytest.mark.parametrize("what", FILES)
def test_a_damaged_file_is_one_line_never_a_traceback_and_nothing_else_changes(finished, tmp_path, what, damage):
    storage, target = _damaged_copy(finished, tmp_path, what, DAMAGES[damage])
    before = _digests(storage, target)
    for args in COMMANDS:
        result = _invoke(args, storage, tmp_path / "report")
        _check(result, args, target)
        if args[0] in MUST_FAIL.get(what, ()):
            assert result.exit_code == 1, f"{' '.join(args)} read a damaged {what}:\n{result.output[-2000:]}"
        assert _digests(storage, target) == before, f"{' '.join(args)} changed files beside {target}"


def test_a_sweep_json_that_is_a_list_is_one_line_for_every_command(finished, tmp_path):
    storage, target = _damaged_copy(finished, tmp_path, "sweep.json", lambda data: b"[]")
    for args in COMMANDS[:-1]:
        result = _invoke(args, storage, tmp_path / "report")
        _check(result, args, target)
        assert result.exit_code == 1 and "not a table" in result.output, result.output


@pytest.mark.parametrize("junk", [b"null", b"{\x00junk", b'{"runs": {"nodes": 2}}',
                                  b'{"runs": [{"nodes": [{"node_id": 7, "GPU": "one"}]}]}'])
def test_a_cluster_json_of_junk_leaves_status_whole_and_says_utilisation_is_unknown(finished, tmp_path, junk):
    storage, target = _damaged_copy(finished, tmp_path, "cluster.json", lambda data: junk)
    table = _invoke(("status", NAME), storage, tmp_path)
    _check(table, ("status", NAME), target)
    assert table.exit_code == 0 and f"{target} " in table.output, table.output
    where = table.output[table.output.index("where it ran"):]
    assert "where it ran is shown without it" in where and "–" in where, where  # utilisation: unknown
    as_json = _invoke(("status", NAME, "--format", "json"), storage, tmp_path)
    assert as_json.exit_code == 0 and str(target) in as_json.stderr, as_json.output
    assert json.loads(as_json.stdout)["nodes"][0]["utilisation"] is None


@pytest.mark.parametrize("state", [b'{"runs": 3}', b'{"finished": "yes"}', b"[]", b"null", b'{"finished": tru'])
def test_resume_refuses_a_damaged_state_json_rather_than_train_a_finished_sweep_again(finished, tmp_path, state):
    storage, target = _damaged_copy(finished, tmp_path, "state.json", lambda data: state)
    result = _invoke(("resume", NAME), storage, tmp_path)  # `no_training` fails it if Ray starts
    _check(result, ("resume", NAME), target)
    assert result.exit_code == 1 and "delete it: `resume` then writes it anew" in result.output, result.output
    if state == b"[]":  # valid JSON of the wrong shape: README's words for it
        assert fault_message("A bookkeeping file") in result.output, result.output


def test_damaged_live_entries_are_left_out_of_status_while_the_sweep_runs(finished, tmp_path):
    storage, target = _damaged_copy(finished, tmp_path, "live", lambda data: data)  # a valid entry
    (storage / NAME / "state.json").write_text('{"finished": false, "trials": 3}')
    entry = json.loads(target.read_bytes())
    live = target.parent
    for i, junk in enumerate([b"", b"[]", b'{"runs": 3}', random.Random(1).randbytes(99),
                              json.dumps({**entry, "updated_at": "now"}).encode()]):
        (live / f"junk{i}.json").write_bytes(junk)
    # the valid entry as fresh as a running phase keeps it
    target.write_text(json.dumps({**entry, "started_at": time.time(), "updated_at": time.time()}))
    result = _invoke(("status", NAME, "--format", "json"), storage, tmp_path)
    assert result.exit_code == 0, result.output
    assert [r["key"] for r in json.loads(result.stdout)["running"]] == [entry["key"]]


@pytest.mark.parametrize("damage", ["empty", "truncated", "random bytes", "a list"])
def test_a_started_sweeps_damaged_study_db_is_one_line_before_optuna_touches_it(finished, tmp_path, damage):
    """What `resume` of an unfinished sweep meets when it opens its study (the driver, after the
    upstream phases): the file named, and left as it was (Optuna would make an emptied one anew)."""
    from orchestrator._study import open_study_storage
    from undistill.errors import UndistillError
    from undistill.storage import Storage

    storage, target = _damaged_copy(finished, tmp_path, "study.db", DAMAGES[damage])
    before = target.read_bytes()
    with pytest.raises(UndistillError) as raised:
        open_study_storage(None, Storage(storage), NAME)
    message = str(raised.value)
    assert str(target) in message and "\n" not in message, message
    assert target.read_bytes() == before
