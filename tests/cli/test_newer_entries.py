"""A smoke sweep that runs what the field published after the Nasty Teacher: the skeptical
student against Adversarial Sparse Teacher candidates, and `pareto` on each by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests._presets import new_entries_smoke

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=ROOT)


@pytest.mark.slow
def test_a_sweep_of_adversarial_sparse_teachers_attacked_by_skeptical_students(tmp_path):
    config, storage = new_entries_smoke(tmp_path), tmp_path / "storage"
    run = _cli("sweep", "--config", str(config), "--name", "newer", "--storage", str(storage))
    assert run.returncode == 0, run.stderr[-3000:]

    results = storage / "newer" / "results"
    trials = pq.read_table(results / "trials").to_pylist()
    students = pq.read_table(results / "students").to_pylist()
    assert len(trials) == 2 and {t["defense"] for t in trials} == {"ast"}
    start = [t for t in trials if dict(t["knobs"]) == {"ast_alpha": 0.05, "ast_t": 6.0, "ast_k": 2.0}]
    assert start, [t["knobs"] for t in trials]  # the preset's start point ran
    # both smoke students have exits (cnn1d; the mlp has two hidden layers): each meets both attacks
    ran = [s for s in students if s["status"] == "ok"]
    assert {(s["attack"], s["student_arch"].split("(")[0]) for s in ran} >= {
        ("skeptical-T4", "cnn1d"), ("skeptical-T4", "mlp"), ("kd-T4", "cnn1d"), ("kd-T4", "mlp")}
    for s in ran:
        assert 0 < s["student_acc"] <= 100 and s["normal_kd_acc"] is not None
        if s["attack"] == "skeptical-T4":
            assert s["kd_temperature"] == 4.0 and s["kd_alpha"] == 0.9

    for args in (["--attack", "skeptical"], ["--defense", "ast"]):
        shown = _cli("pareto", "newer", "--storage", str(storage), "--format", "json", *args)
        assert shown.returncode == 0, shown.stderr
        front = json.loads(shown.stdout)
        assert front and all(p["defense"] == "ast" for p in front)
    by_skeptical = json.loads(_cli("pareto", "newer", "--storage", str(storage), "--format", "json",
                                   "--attack", "skeptical").stdout)
    best = {t["trial_id"]: max(s["student_acc"] for s in ran if s["trial_id"] == t["trial_id"]
                               and s["attack"].startswith("skeptical")) for t in trials}
    for point in by_skeptical:  # the front as the skeptical student alone judges it
        assert point["student_acc"] == pytest.approx(best[point["trial_id"]])
