"""The layers of the tree, read from its own source: who may import whom, no import cycles, and
what a process loads (results without torch, an MNIST-1D worker without torchvision)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("undistill", "trainables", "search_spaces", "results", "orchestrator")
# Each package and what it may import of the project (besides itself). Imports inside functions
# count too: a lazy import is still a dependency.
ALLOWED = {
    "undistill": set(),
    "trainables": {"undistill"},
    "results": {"undistill"},
    "search_spaces": {"undistill", "trainables"},
    "orchestrator": {"undistill", "trainables", "search_spaces", "results"},
    "cli": {"undistill", "trainables", "search_spaces", "results", "orchestrator"},
}


def _modules() -> dict[str, Path]:
    out = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports anywhere in its source, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `from pkg import name`: pkg itself
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = {(m, i) for m, targets in GRAPH.items() if m.split(".")[0] == package
             for i in targets if i.split(".")[0] not in ALLOWED[package] | {package}}
    assert not wrong


def test_no_module_imports_itself_through_others():
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    cycles = []

    def walk(node, path):
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            walk(node, [node])
    assert not cycles


def test_the_check_sees_imports():  # the graph is not empty by accident
    assert "undistill.storage" in GRAPH["results.store"] and "trainables.losses" in GRAPH["trainables.defenses.nasty"]
    assert "trainables.phases" in GRAPH["trainables.candidate"]


def _fresh(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip()


def test_results_and_the_read_commands_load_no_torch_nor_ray():
    modules = [m for m in MODULES if m.split(".")[0] in ("results", "undistill")] + ["orchestrator.layout"]
    loaded = _fresh("import importlib, sys\n"
                    f"for m in {modules!r}: importlib.import_module(m)\n"
                    "print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))")
    assert loaded == "[]"


def test_an_mnist1d_worker_never_loads_torchvision(tmp_path):
    """What a worker runs for an MNIST-1D sweep (the teacher, a nasty teacher, an Adversarial
    Sparse Teacher, KD, skeptical and DAFL students, through the artifact store) in a fresh
    interpreter."""
    from tests._presets import SMOKE

    config = tmp_path / "smoke-all.toml"
    config.write_text(SMOKE.replace("[search]", "[attack.skeptical]\ntemperatures = [4.0]\n\n[search]", 1)
                      .replace('defenses = ["nasty", "stingy"]', 'defenses = ["nasty", "stingy", "ast"]')
                      + "\n[search.ast]\nast_alpha = [0.01, 0.5]\nast_t = [2.0, 10.0]\nast_k = [1, 4]\n")
    code = f"""
import sys
from dataclasses import replace
from orchestrator._resources import Resources
from orchestrator._worker import PhaseRuntime, run_job
from orchestrator.plan import make_plan
from search_spaces import adjust, load_preset
from trainables.candidate import candidate_jobs
from orchestrator._driver import trial_context
from undistill.outcomes import Candidate
from undistill.storage import Storage

plan = make_plan(adjust(load_preset(config_file={str(config)!r}), epochs_scale=0.1))
runtime = PhaseRuntime(Storage({str(tmp_path)!r}), Resources(1, 0, students=0))
upstream = {{n.key: run_job(n, runtime) for n in plan.upstream}}
for candidate in (Candidate.of("nasty", omega=0.1, tau_a=4.0), Candidate.of("ast", ast_alpha=0.05, ast_t=6.0, ast_k=2)):
    teacher, students = candidate_jobs(candidate, trial_context(plan, upstream))
    run_job(teacher, runtime)
    results = [run_job(j, runtime) for j in students]
    assert {{r["phase"] for r in results}} == {{"kd", "unlabelled", "skeptical", "dafl"}}
    assert all(r["status"] == "ok" for r in results)
print("torchvision" in sys.modules)
"""
    assert _fresh(code) == "False"
