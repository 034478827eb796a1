"""Storage through pyarrow.fs, on a local folder (the bucket path is exercised in test_s3)."""

import pickle

import pytest

from orchestrator._study import open_study_storage
from orchestrator.layout import list_sweeps, read_json, write_json
from results import Storage
from results.usage import node_usage
from undistill.errors import ConfigError


def test_files_are_written_atomically_and_dot_names_stay_hidden(tmp_path):
    storage = Storage(tmp_path / "root")
    storage.write_bytes(("a", "b.txt"), b"one")
    storage.write_bytes(("a", "b.txt"), b"two")
    (tmp_path / "root" / "a" / ".c.txt.partial").write_bytes(b"half")
    assert storage.read_bytes("a", "b.txt") == b"two"
    assert storage.list("a") == ["b.txt"] and storage.list("a", suffix=".parquet") == []
    assert storage.list(dirs=True) == ["a"]
    assert storage.size("a", "b.txt") == 3 and storage.size("a", "missing") is None
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("a", "missing")


def test_a_storage_travels_to_workers_as_its_location(tmp_path):
    storage = Storage(tmp_path)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.location == storage.location and copy.is_local


def test_relative_paths_become_absolute_so_workers_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage("sweeps").location == str(tmp_path / "sweeps")


def test_an_unopenable_uri_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be opened"):
        Storage("nosuchscheme://bucket/x")


def test_an_unwritable_storage_is_refused(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        Storage(blocked / "x").check_writable()


def test_sweep_files_round_trip(tmp_path):
    storage = Storage(tmp_path)
    write_json(storage, "s", "sweep.json", {"a": 1})
    assert read_json(storage, "s", "sweep.json") == {"a": 1}
    assert read_json(storage, "s", "missing.json", default={}) == {}
    assert list_sweeps(storage) == ["s"]


def test_a_study_storage_with_a_missing_driver_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="driver is not installed|cannot be opened"):
        open_study_storage("postgresql://u:p@127.0.0.1:1/db", Storage(tmp_path), "s")


def test_a_journal_file_study_storage(tmp_path):
    import optuna

    storage = open_study_storage(str(tmp_path / "j" / "s.journal"), Storage(tmp_path), "s")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    study.tell(study.ask(), [1.0, 2.0])
    assert (tmp_path / "j" / "s.journal").exists()


def test_node_usage_counts_trained_phases_against_what_nodes_offered():
    trials = [{"node_id": "n1" * 10, "hostname": "h1", "teacher_wall_s": 10.0, "started_at": 0.0,
               "cpus": 1.0, "gpus": 0.5}]
    students = [
        {"node_id": "n1" * 10, "hostname": "h1", "cached": False, "started_at": 10.0,
         "finished_at": 20.0, "cpus": 1.0, "gpus": 0.5},
        {"node_id": "n2" * 10, "hostname": "h2", "cached": False, "started_at": 10.0,
         "finished_at": 20.0, "cpus": 1.0, "gpus": 0.5},
        {"node_id": "n2" * 10, "hostname": "h2", "cached": True, "started_at": 0.0,
         "finished_at": 20.0, "cpus": 1.0, "gpus": 0.5},  # trained by an earlier attempt: not counted
    ]
    runs = [{"nodes": [{"node_id": "n1" * 10, "CPU": 4, "GPU": 1}, {"node_id": "n2" * 10, "CPU": 4, "GPU": 2}]}]
    nodes, active = node_usage(trials, students, [], runs)
    assert active == 20.0
    by = {n["hostname"]: n for n in nodes}
    assert by["h1"]["trials"] == 1 and by["h1"]["phases"] == 2 and by["h1"]["busy_s"] == 20.0
    assert by["h1"]["utilisation"] == pytest.approx(20 * 0.5 / (1 * 20))  # GPU-seconds / offered
    assert by["h2"]["utilisation"] == pytest.approx(10 * 0.5 / (2 * 20))


def test_more_phases_than_cores_count_as_a_full_node_not_more():
    students = [{"node_id": "n" * 20, "hostname": "h", "cached": False, "started_at": 0.0,
                 "finished_at": 10.0, "cpus": 1.0, "gpus": 0.0} for _ in range(3)]
    runs = [{"nodes": [{"node_id": "n" * 20, "CPU": 6, "cores": 2, "GPU": 0}]}]
    nodes, active = node_usage([], students, [], runs)
    assert active == 10.0 and nodes[0]["busy_s"] == 30.0 and nodes[0]["utilisation"] == 1.0
