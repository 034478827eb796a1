"""`bench/gpu.py --smoke`: the GPU check's every code path, on the CPU, as CI runs it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_phase_kind_measures_and_packs_and_writes_its_json(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["ok"] and report["smoke"] and report["device"]["device"] == "cpu"
    assert [p["phase"] for p in report["phases"]] == ["teacher", "nasty", "kd", "stingy kd", "dafl"]
    for phase in report["phases"]:  # trained, finite, and resumed from its own checkpoint to the same result
        assert phase["status"] == "ok" and phase["finite"] and phase["resumed"], phase
    settings = {(r["model"], r["bf16"], r["channels_last"], r["deterministic"]) for r in report["throughput"]}
    assert len(settings) == 2 * 8 and all(r["images_per_s"] > 0 for r in report["throughput"])
    assert [p["processes"] for p in report["packing"]] == [1, 2]
    assert all(p["total_images_per_s"] > 0 and not p["cap_exceeded"] for p in report["packing"])
    assert "ok in" in run.stdout.splitlines()[-1]
