"""The artifact store on a local folder and, through the same code, on a bucket-like storage
whose reads go through the node-local cache."""

import json

import pytest

from orchestrator.artifacts import FOLDER, LOCKS, MANIFEST, ArtifactStore
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


def _compute_once(root: str, key: str, start, out) -> None:
    """One of several processes that need `key` at once: under the store's lock, compute (here,
    publish slowly) only if it is not there yet; report whether this one computed it."""
    import time

    store = ArtifactStore(Storage(root))
    start.wait()
    with store.lock(key) as history:
        computed = store.get(key) is None
        if computed:
            history.write("computed\n")
            time.sleep(0.5)  # long enough for the other to be waiting on the lock
            _publish(store, key)
    out.put((computed, store.file(key, "model.pt").read_bytes()))


def test_processes_that_need_the_same_phase_at_once_compute_it_once(tmp_path):
    """Two processes find a phase missing at the same moment: one computes it, the other waits
    on the lock and then finds it published, cached."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_compute_once, args=(str(tmp_path), "teacher-abc", start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(computed for computed, _ in results) == [False, True]
    assert all(weights == b"weights" for _, weights in results)
    lock = tmp_path / FOLDER / LOCKS / "teacher-abc.lock"
    assert lock.read_text() == "computed\n"  # the lock file keeps the one computation
    assert ArtifactStore(Storage(tmp_path)).get("teacher-abc") is not None


def test_a_bucket_locks_on_the_node(tmp_path, monkeypatch):
    """A bucket has no cheap lock: the lock file lives in the node's cache, never on the bucket."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node"))  # the node's scratch
    store = ArtifactStore(Storage("mock:///bucket/sweeps"))
    assert not store.storage.is_local
    with store.lock("k") as history:
        history.write("x\n")
    assert list((tmp_path / "node").rglob(f"{LOCKS}/k.lock"))
