"""What a sweep runs now: the live entries its phases keep, the driver's display on a terminal
and in a log, and `status --watch`. Real files, a real CLI; no Ray needed."""

import io
import json
import threading
import time

from click.testing import CliRunner

import cli
from orchestrator import _progress, live
from orchestrator._progress import Progress
from orchestrator.layout import write_json
from search_spaces import load_preset
from undistill.record import SweepRecord
from undistill.storage import Storage


def _record(storage: Storage, name: str = "s") -> None:
    space = load_preset("mnist1d").space
    write_json(storage, name, "sweep.json", SweepRecord(name, "mnist1d", {}, None, "f", 16, space=space).to_json())


def test_a_phase_shows_its_epoch_while_it_trains_and_is_gone_once_it_ends(tmp_path):
    storage = Storage(tmp_path)
    ticker = live.EpochTicker(storage, "s", "kd-T4 mlp", "key1", "nasty", {"omega": 0.01, "tau_a": 20.0})
    ticker(1, 40)
    (entry,) = live.running(storage, "s")
    assert (entry.phase, entry.epoch, entry.epochs, entry.defense) == ("kd-T4 mlp", 1, 40, "nasty")
    ticker(2, 40)  # within WRITE_EVERY_S of the last write: not written again
    assert live.running(storage, "s")[0].epoch == 1
    ticker(40, 40)  # the last epoch always is
    assert live.running(storage, "s")[0].epoch == 40
    described = entry.progress(load_preset("mnist1d").space)
    assert described.startswith("kd-T4 mlp  [nasty ω") and "epoch 1/40" in described
    ticker.close()
    assert live.running(storage, "s") == []


def test_stale_and_unreadable_entries_are_not_shown_and_a_new_run_clears_them(tmp_path):
    storage = Storage(tmp_path)
    live.EpochTicker(storage, "s", "teacher", "old")(3, 40)
    storage.write_bytes(("s", live.LIVE_DIR, "junk.json"), b"{not json")
    storage.write_bytes(("s", live.LIVE_DIR, "shape.json"), json.dumps({"phase": "x"}).encode())
    assert [r.phase for r in live.running(storage, "s")] == ["teacher"]
    assert live.running(storage, "s", now=time.time() + live.STALE_S + 1) == []  # a killed worker's
    live.clear(storage, "s")
    assert storage.list("s", live.LIVE_DIR) == []


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_block_is_redrawn_in_place_under_lines_that_stay(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    monkeypatch.setattr(_progress, "TTY_EVERY_S", 0.0)
    screen = _Terminal()
    progress = Progress(storage, "s", stream=screen)
    assert progress.tty
    ticker = live.EpochTicker(storage, "s", "teacher", "k")
    ticker(5, 40)
    progress.tick(lambda: "[0/16 trials] front 0")
    host = live.running(storage, "s")[0].hostname
    assert screen.getvalue() == f"[0/16 trials] front 0\n  teacher  epoch 5/40  on {host}\n"
    progress.say("[  1/16] nasty ...")
    # the two-line block erased (cursor up 2, clear), the line that stays, the block again
    tail = screen.getvalue().split("\n", 2)[2]
    assert tail.startswith("\x1b[2F\x1b[J[  1/16] nasty ...\n[0/16 trials] front 0\n  teacher  epoch 5/40")
    ticker.close()
    progress.tick(lambda: "[1/16 trials] front 1")
    assert screen.getvalue().endswith("\x1b[2F\x1b[J[1/16 trials] front 1\n")
    progress.close()
    assert screen.getvalue().endswith("\x1b[1F\x1b[J")


def test_in_a_log_what_runs_is_one_plain_line_a_minute_at_most(tmp_path):
    storage = Storage(tmp_path)
    log = io.StringIO()
    progress = Progress(storage, "s", stream=log)
    assert not progress.tty
    progress.tick(lambda: "[0/16 trials]")
    assert log.getvalue() == ""  # nothing runs: nothing said
    live.EpochTicker(storage, "s", "teacher", "k")(5, 40)
    progress.tick(lambda: "[0/16 trials]", force=True)
    progress.tick(lambda: "[0/16 trials]")  # within the minute: nothing
    progress.say("[  1/16] nasty ...")
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[0/16 trials] · running: teacher  epoch 5/40")
    assert "\x1b" not in log.getvalue()


def test_status_shows_what_trains_now_and_watch_redraws_until_the_sweep_finishes(tmp_path):
    storage = Storage(tmp_path)
    _record(storage)
    live.EpochTicker(storage, "s", "scratch mlp", "k")(7, 40)
    runner = CliRunner()
    once = runner.invoke(cli.main, ["status", "s", "--storage", str(tmp_path)])
    assert once.exit_code == 0, once.output
    assert "running_now" in once.output and "training now\n  scratch mlp  epoch 7/40" in once.output
    as_json = json.loads(runner.invoke(cli.main, ["status", "s", "--storage", str(tmp_path),
                                                  "--format", "json"]).output)
    assert as_json["running"][0]["phase"] == "scratch mlp" and as_json["running"][0]["epoch"] == 7

    def finish():
        time.sleep(1.5)
        write_json(storage, "s", "state.json", {"finished": True, "trials": 0})

    threading.Thread(target=finish).start()
    watched = runner.invoke(cli.main, ["status", "s", "--storage", str(tmp_path), "--watch", "--interval", "0.5"])
    assert watched.exit_code == 0, watched.output
    blocks = watched.output.count("trials_done")
    assert blocks >= 2  # redrawn until finished, then it returns by itself
    assert watched.output.rstrip().split("trials_done")[-1].count("finished") == 1
    assert "training now" not in watched.output.split("trials_done")[-1]  # a finished sweep runs nothing
