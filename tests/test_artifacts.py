from orchestrator.artifacts import ArtifactStore


def _publish(store, key, payload=b"weights"):
    staged = store.staging(key)
    (staged / "model.pt").write_bytes(payload)
    return store.publish(key, staged, {"status": "ok", "test_acc": 90.0})


def test_published_artifacts_come_back_intact(tmp_path):
    store = ArtifactStore(tmp_path)
    _publish(store, "teacher-abc")
    assert store.get("teacher-abc") == {"status": "ok", "test_acc": 90.0}
    assert store.get("teacher-other") is None
    assert not list((store.root / ".staging").iterdir())


def test_a_corrupted_or_truncated_artifact_is_treated_as_missing_then_replaced(tmp_path):
    store = ArtifactStore(tmp_path)
    _publish(store, "teacher-abc")
    weights = store.path("teacher-abc") / "model.pt"
    weights.write_bytes(b"weigh")  # truncated
    assert store.get("teacher-abc") is None
    _publish(store, "teacher-abc")
    assert store.get("teacher-abc") is not None and weights.read_bytes() == b"weights"


def test_a_second_publisher_keeps_the_first_intact_copy(tmp_path):
    store = ArtifactStore(tmp_path)
    _publish(store, "k", b"first")
    _publish(store, "k", b"second")
    assert (store.path("k") / "model.pt").read_bytes() == b"first"
