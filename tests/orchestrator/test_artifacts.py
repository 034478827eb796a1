"""The artifact store on a local folder and, through the same code, on a bucket-like storage
whose reads go through the node-local cache."""

import json

import pytest

from orchestrator.artifacts import FOLDER, MANIFEST, ArtifactStore
from results import Storage


def _publish(store, key, payload=b"weights"):
    scratch = store.scratch(key)
    (scratch / "model.pt").write_bytes(payload)
    return store.publish(key, scratch, {"status": "ok", "test_acc": 90.0})


def test_published_artifacts_come_back_intact(tmp_path):
    store = ArtifactStore(Storage(tmp_path))
    scratch = store.scratch("teacher-abc")
    (scratch / "model.pt").write_bytes(b"weights")
    store.publish("teacher-abc", scratch, {"status": "ok", "test_acc": 90.0})
    assert store.get("teacher-abc") == {"status": "ok", "test_acc": 90.0}
    assert store.file("teacher-abc", "model.pt").read_bytes() == b"weights"
    assert store.get("teacher-other") is None
    assert not scratch.exists()  # the local scratch is cleaned up
    manifest = json.loads((tmp_path / FOLDER / "teacher-abc" / MANIFEST).read_text())
    assert manifest["model.pt"]["size"] == 7 and len(manifest["model.pt"]["sha256"]) == 64


def test_a_corrupted_or_truncated_artifact_is_treated_as_missing_then_replaced(tmp_path):
    store = ArtifactStore(Storage(tmp_path))
    _publish(store, "teacher-abc")
    weights = tmp_path / FOLDER / "teacher-abc" / "model.pt"
    weights.write_bytes(b"weigh")  # truncated
    assert store.get("teacher-abc") is None
    weights.write_bytes(b"WEIGHTS")  # same size, other bytes
    assert store.get("teacher-abc") is None
    with pytest.raises(FileNotFoundError, match="damaged"):
        store.file("teacher-abc", "model.pt")
    _publish(store, "teacher-abc")
    assert store.get("teacher-abc") is not None and weights.read_bytes() == b"weights"


def test_an_artifact_without_its_manifest_is_not_there(tmp_path):
    store = ArtifactStore(Storage(tmp_path))
    _publish(store, "k")
    (tmp_path / FOLDER / "k" / MANIFEST).unlink()  # a publisher died before sealing it
    assert store.get("k") is None


def test_a_second_publisher_keeps_the_first_intact_copy(tmp_path):
    store = ArtifactStore(Storage(tmp_path))
    _publish(store, "k", b"first")
    _publish(store, "k", b"second")
    assert store.file("k", "model.pt").read_bytes() == b"first"


def test_partial_checkpoints_live_on_the_storage(tmp_path):
    store = ArtifactStore(Storage(tmp_path))
    path, upload = store.partial("k")
    assert upload is None and path == tmp_path / FOLDER / ".partial" / "k.ckpt"
