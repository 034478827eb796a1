"""A content-addressed store for phase outputs: `<storage>/_artifacts/<key>/`.

A key is a hash of a phase's full config (see `PhaseConfig.key`), so any sweep that needs the
same phase finds it here. An artifact is staged in a temporary folder, given a manifest of
SHA-256 checksums, and renamed into place in one step; one that fails its checksums is treated
as missing and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

MANIFEST = "MANIFEST.json"
RESULT = "result.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, storage_root: str | Path):
        self.root = Path(storage_root) / "_artifacts"

    def path(self, key: str) -> Path:
        return self.root / key

    def partial_checkpoint(self, key: str) -> Path:
        """Where a running phase keeps its mid-training checkpoint, so a rerun resumes it."""
        return self.root / ".partial" / f"{key}.ckpt"

    def staging(self, key: str) -> Path:
        path = self.root / ".staging" / f"{key}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def get(self, key: str) -> dict | None:
        """The artifact's result if it is present and intact, else None."""
        folder = self.path(key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            for name, digest in manifest.items():
                if _sha256(folder / name) != digest:
                    return None
            return json.loads((folder / RESULT).read_text())
        except (OSError, ValueError):
            return None

    def publish(self, key: str, staged: Path, result: dict) -> dict:
        """Seal `staged` (plus `result`) under `key`. If an intact copy is already there (another
        sweep got there first) keep that one; a damaged copy is replaced."""
        (staged / RESULT).write_text(json.dumps(result, indent=1, sort_keys=True))
        manifest = {p.name: _sha256(p) for p in sorted(staged.iterdir()) if p.is_file()}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        final = self.path(key)
        existing = self.get(key)
        if existing is not None:
            shutil.rmtree(staged, ignore_errors=True)
            return existing
        if final.exists():  # damaged: move it aside first so the rename below can succeed
            shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        self.partial_checkpoint(key).unlink(missing_ok=True)
        return result
