"""A content-addressed store for phase outputs: `_artifacts/<key>/` on the sweep's storage.

A key is a hash of a phase's full config (see `PhaseConfig.key`), so any sweep, trial or node
that needs the same phase finds it here. A phase runs into a local scratch folder; `publish`
copies its files up, then `result.json`, then `MANIFEST.json` with every file's SHA-256 and
size. The manifest is written last, so it marks a complete artifact; a file that fails its
checksum makes the artifact count as missing, and it is recomputed, never used.

On a bucket, files are read through a node-local cache (checked against the manifest), so each
node downloads a teacher once however many students it distils.

A teacher whose artifact is lost or damaged after it was published is computed again by the
first phase that needs it, under `lock`, so that it is computed once while the others wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from undistill.files import locked
from undistill.storage import Storage

MANIFEST = "MANIFEST.json"
RESULT = "result.json"
FOLDER = "_artifacts"
LOCKS = ".locks"


def node_cache_root() -> Path:
    """Node-local scratch for phases and downloads: survives the process, not the machine."""
    return Path(tempfile.gettempdir()) / "undistill"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._cache = node_cache_root() / "artifacts" / hashlib.sha256(
            storage.location.encode()).hexdigest()[:12]

    def get(self, key: str) -> dict | None:
        """The artifact's result if it is present and every file is intact, else None."""
        fetched = self.fetch(key)
        return fetched[0] if fetched is not None else None

    def result(self, key: str) -> dict | None:
        """The result of a sealed artifact, its files unchecked (for its numbers and curve,
        never to resume from); None if it is not sealed or cannot be read."""
        try:
            if not self.storage.exists(FOLDER, key, MANIFEST):
                return None
            return json.loads(self.storage.read_bytes(FOLDER, key, RESULT))
        except (OSError, ValueError):
            return None

    def fetch(self, key: str) -> tuple[dict, dict[str, Path]] | None:
        """The artifact's result and a local path to each of its files (to torch.load from),
        every file checked against the manifest once; None if it is missing or damaged."""
        try:
            manifest = json.loads(self.storage.read_bytes(FOLDER, key, MANIFEST))
            files = {}
            for name, entry in manifest.items():
                files[name] = self._verified(key, name, entry)
                if files[name] is None:
                    return None
            return json.loads(self.storage.read_bytes(FOLDER, key, RESULT)), files
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def file(self, key: str, name: str) -> Path:
        """A local path to an intact file of a published artifact."""
        fetched = self.fetch(key)
        if fetched is None or name not in fetched[1]:
            raise FileNotFoundError(f"{self.storage.uri(FOLDER, key, name)} is damaged")
        return fetched[1][name]

    def _verified(self, key: str, name: str, entry: dict) -> Path | None:
        """A local copy of the file whose checksum matches the manifest, or None."""
        if self.storage.is_local:
            path = self.storage.local_path(FOLDER, key, name)
            return path if path.is_file() and _sha256(path) == entry["sha256"] else None
        if self.storage.size(FOLDER, key, name) != entry["size"]:
            return None
        cached = self._cache / key / name
        if cached.is_file() and _sha256(cached) == entry["sha256"]:
            return cached
        self.storage.download((FOLDER, key, name), cached)
        if _sha256(cached) != entry["sha256"]:
            cached.unlink(missing_ok=True)
            return None
        return cached

    def scratch(self, key: str) -> Path:
        """A fresh local folder for a phase to write its outputs into before `publish`."""
        path = node_cache_root() / "scratch" / f"{key}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def publish(self, key: str, scratch: Path, result: dict) -> dict:
        """Seal the files in `scratch` (plus `result`) under `key` and remove `scratch`. If an
        intact copy is already there (another trial or sweep got there first) keep that one."""
        try:
            existing = self.get(key)
            if existing is not None:
                return existing
            (scratch / RESULT).write_text(json.dumps(result, indent=1, sort_keys=True))
            files = sorted(p for p in scratch.iterdir() if p.is_file())
            manifest = {p.name: {"sha256": _sha256(p), "size": p.stat().st_size} for p in files}
            self.storage.delete(FOLDER, key, MANIFEST)  # a damaged copy stops counting as one
            for p in files:
                self.storage.upload(p, FOLDER, key, p.name)
            self.storage.write_bytes((FOLDER, key, MANIFEST),
                                     json.dumps(manifest, indent=1, sort_keys=True).encode())
            self.drop_partial(key)
            return result
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[TextIO]:
        """Held while `key` is computed again (see `_worker`), so that processes that find it
        lost at the same moment compute it once: the first computes, the others wait here, then
        find it published. On a local or NFS storage it is a `flock` on
        `_artifacts/.locks/<key>.lock`, which the kernel releases when its holder dies, however
        (on NFS, once the dead client's lease expires). A bucket has no cheap lock: it is held on
        the node only, so processes on one node wait for each other, but two nodes may both
        compute the phase, and `publish` keeps the first intact copy.

        Yields the lock file, open for appending: its holder notes there each time it computes
        the phase again, which keeps a history of the key's recomputations."""
        folder = self.storage.local_path(FOLDER, LOCKS) if self.storage.is_local else self._cache / LOCKS
        with locked(folder / f"{key}.lock") as f:
            yield f

    def drop_partial(self, key: str) -> None:
        """Remove `key`'s mid-training checkpoint, and a save a kill cut short (atomic_write's)."""
        self.storage.delete(FOLDER, ".partial", f"{key}.ckpt")
        local = [node_cache_root() / "partial"]
        if self.storage.is_local:
            local.append(self.storage.local_path(FOLDER, ".partial"))
        for folder in local:
            for leftover in folder.glob(f"*{key}.ckpt*"):
                leftover.unlink(missing_ok=True)

    def partial(self, key: str) -> tuple[Path, Callable[[Path], None] | None]:
        """Where a running phase keeps its mid-training checkpoint so that a rerun on any node
        resumes it: (local path, upload hook after each save, or None when the path is already
        on the storage)."""
        if self.storage.is_local:
            return self.storage.local_path(FOLDER, ".partial", f"{key}.ckpt"), None
        local = node_cache_root() / "partial" / f"{key}.ckpt"
        if self.storage.exists(FOLDER, ".partial", f"{key}.ckpt"):
            self.storage.download((FOLDER, ".partial", f"{key}.ckpt"), local)
        return local, lambda path: self.storage.upload(path, FOLDER, ".partial", f"{key}.ckpt")
