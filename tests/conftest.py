import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The tests mirror the packages (tests/trainables/, tests/results/, ...); their shared helpers
# (_presets, _outcomes, _net, tiny_cifar) live here, beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Ray ≥ 2.59 turns token auth on for local clusters; tests that join one need it off.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def tmp_storage(tmp_path):
    return tmp_path / "sweeps"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny models run fastest on one thread, and tests must not fight each other for cores.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def finished_smoke(tmp_path_factory):
    """The storage of one real sweep of the one-attack smoke preset (`_presets.one_attack_smoke`),
    run to its end once per session (about a minute): tests that damage or extend a finished sweep
    copy it (`shutil.copytree`) and never change this one."""
    import subprocess

    from _presets import one_attack_smoke

    folder = tmp_path_factory.mktemp("finished")
    config, storage = one_attack_smoke(folder), folder / "sweeps"
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "sweep", "--config", str(config),
                          "--storage", str(storage)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"}, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return storage
