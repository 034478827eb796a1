"""Config files for tests that exercise the machinery (faults, clusters, buckets), not the attack
suite or the accuracies: the smoke preset with one KD attack, so each trial trains two students,
not six, and 8 epochs per phase instead of 12."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = (ROOT / "search_spaces" / "presets" / "smoke.toml").read_text()


def one_attack_smoke(folder: Path, name: str = "smoke", *, epochs: int = 8,
                     checkpoint_every_s: float | None = None) -> Path:
    """`folder/<name>.toml`: smoke with KD at T = 4 only (no DAFL), every schedule at `epochs`,
    and optionally a checkpoint interval."""
    text = SMOKE.replace("kd_temperatures = [4.0, 20.0]", "kd_temperatures = [4.0]")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("unlabelled_temperatures")) + "\n"
    text = text[:text.index("[attack.data_free]")] + text[text.index("[search]"):]
    assert "data_free" not in text and "20.0]" not in text and "unlabelled" not in text
    assert text.count("epochs = 12") == 2
    text = text.replace("epochs = 12", f"epochs = {epochs}")
    if checkpoint_every_s is not None:
        text += f"checkpoint_every_s = {checkpoint_every_s}\n"
    path = Path(folder) / f"{name}.toml"
    path.write_text(text)
    return path


def new_entries_smoke(folder: Path, name: str = "newer", *, epochs: int = 4, trials: int = 2) -> Path:
    """`folder/<name>.toml`: `one_attack_smoke` with the skeptical student (T = 4) beside KD, and
    Adversarial Sparse Teacher as the only defense searched (from the code's CIFAR-10 point)."""
    text = one_attack_smoke(folder, name, epochs=epochs).read_text()
    text = text.replace("[search]", "[attack.skeptical]\ntemperatures = [4.0]\n\n[search]", 1)
    text = text.replace('defenses = ["nasty", "stingy"]', 'defenses = ["ast"]')
    text = text.replace("trials = 4", f"trials = {trials}")
    text += ('\n[search.ast]\nast_alpha = [0.01, 0.5]\nast_t = [2.0, 10.0]\nast_k = [1, 4]\n'
             'start = { ast_alpha = 0.05, ast_t = 6.0, ast_k = 2 }\n')
    path = Path(folder) / f"{name}.toml"
    path.write_text(text)
    return path
