"""A sweep whose storage is an S3 bucket: a real S3-compatible server (moto's server mode, from
the test extra) on loopback. The sweep writes artifacts, Tune's state, the Optuna journal and
the Parquet results there; `pareto` reads them back; an interrupted sweep resumes from there."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _net import free_port, wait_for_port
from _presets import one_attack_smoke

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def s3_env():
    """A fresh S3 server with bucket `sweeps`; the environment that points clients at it."""
    import pyarrow.fs as pafs

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    try:
        wait_for_port(port)
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="test",
                               secret_key="test", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("sweeps")
        os.environ.update(env)  # for this process's readers too
        yield env, fs
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=30)


def _cli_async(*args):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _cli(*args, timeout=900):
    proc = _cli_async(*args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _files(fs, folder):
    import pyarrow.fs as pafs

    return [i.path for i in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=True))
            if i.type == pafs.FileType.File]


def test_a_sweep_on_s3_writes_there_reads_back_and_resumes(s3_env, tmp_path):
    env, fs = s3_env
    uri = "s3://sweeps/team"
    here = tmp_path / "cwd-must-stay-empty"
    here.mkdir()

    # start, and interrupt once the first trial is in the bucket
    sweep = _cli_async("sweep", "--config", str(one_attack_smoke(tmp_path)), "--name", "remote", "--storage", uri)
    deadline = time.time() + 600
    while not _files(fs, "sweeps/team/remote/results/trials") and time.time() < deadline:
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]
        time.sleep(0.5)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and "resume remote" in err, err[-3000:]
    done_before = len(_files(fs, "sweeps/team/remote/results/trials"))
    assert 1 <= done_before < 4

    # everything lives in the bucket: artifacts, sweep files, Tune's state, the study journal
    stored = _files(fs, "sweeps/team")
    for part in ("/_artifacts/teacher-", "/remote/sweep.json", "/remote/tune/", "/remote/study.journal/"):
        assert any(part in p for p in stored), part

    code, out, err = _cli("resume", "remote", "--storage", uri)
    assert code == 0, err[-3000:]
    assert "resuming 'remote'" in err
    from results import ResultStore, Storage

    trials = ResultStore(Storage(uri), "remote").trial_rows()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4  # every trial exactly once
    assert _files(fs, "sweeps/team/remote/results/trials") == ["sweeps/team/remote/results/trials/part-000001.parquet"]

    code, out, err = _cli("pareto", "remote", "--storage", uri, "--format", "json")
    assert code == 0, err
    front = json.loads(out)
    assert front and all(f["status"] == "ok" for f in front)

    # the study saw each finished trial once as COMPLETE; the interrupted one, if any, as FAIL
    import optuna

    from orchestrator._study import open_study_storage

    study = optuna.load_study(study_name="remote", storage=open_study_storage(None, Storage(uri), "remote"))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states

    code, out, err = _cli("status", "remote", "--storage", uri)
    lines = [line.split() for line in out.splitlines()]
    assert code == 0 and ["trials_done", "4"] in lines and ["finished", "True"] in lines
