"""The store at scale (issue 20): a folder read in one dataset scan, compaction into parts with
readers that never see a row twice nor a trial without its students, footer metadata, the
`versions` struct, and the `epochs` table."""

import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from _outcomes import context, outcome, student

from results import ResultStore, Storage, trial_rows
from results.schema import EPOCHS, SCHEMA_VERSION, STUDENTS, TRIALS, VERSION_FIELDS, VERSIONS
from results.store import DamagedResultsError, read_footer

STUDENTS_OK = [student("mlp", "kd-T4", 4.0, 0.9, "ok", 70.0, 72.0, 72.2, 72.5, best_epoch=3, wall_s=2.0),
               student("cnn1d", "dafl", 1.0, 1.0, "ok", 80.0, 93.0, 93.1, 94.0, best_epoch=9, wall_s=5.0)]
CONTEXT = context(versions={"torch": "2.14", "python": "3.11.7"}, config_fingerprint="fp1")


def rows(trial_id: str, k: int = 2, teacher_acc: float = 95.0, students=STUDENTS_OK, finished_at: float = 1.0):
    result = outcome("stingy", {"k": k}, teacher_acc=teacher_acc, student_acc=80.0, best_student="cnn1d",
                     best_attack="dafl", students=students, started_at=0.0, finished_at=finished_at)
    return trial_rows(sweep="s", trial_id=trial_id, candidate=None, outcome=result, context=CONTEXT)


def epochs(trial_id, phase="kd-T4 mlp", n=3, loss=1.0):
    return [{"sweep": "s", "trial_id": trial_id, "phase_key": f"key-{phase}", "phase_kind": "attack",
             "phase": phase, "defense": "stingy", "knobs": {"k": 2.0}, "student_arch": "mlp", "attack": "kd-T4",
             "seed": 0, "epoch": e, "train_loss": loss / e, "val_acc": 50.0 + e, "lr": 0.1, "seconds": 0.5}
            for e in range(1, n + 1)]


UPSTREAM = [{**r, "trial_id": None, "phase_kind": "teacher", "defense": None, "knobs": None}
            for r in epochs(None, "teacher", 4)]


def fill(store: ResultStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.write_trial(*rows(f"t{i:03d}", k=1 + i % 5, finished_at=float(i)), epochs(f"t{i:03d}"))


def snapshot(store: ResultStore):
    return store.trial_rows(), store.student_rows(), store.epoch_rows()


def files(root, kind):
    return sorted(p.name for p in (root / "s" / "results" / kind).iterdir())


def _keys(rows_, *cols):
    return [tuple(r[c] for c in cols) for r in rows_]


# -- reads through pyarrow.dataset -------------------------------------------------------------

def _per_file(root, kind):
    """What the reader before issue 20 did: each file read alone, in name order."""
    return pa.concat_tables([pq.read_table(root / "s" / "results" / kind / n) for n in files(root, kind)])


def test_a_folder_of_current_files_is_one_dataset_scan_with_the_rows_a_per_file_read_gives(tmp_path, monkeypatch):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 12)
    trials, students = _per_file(tmp_path, "trials"), _per_file(tmp_path, "students")
    scans = []
    real = ds.FileSystemDataset
    monkeypatch.setattr(ds, "FileSystemDataset",
                        lambda fragments, *a, **k: scans.append(len(fragments)) or real(fragments, *a, **k))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a file read alone"))
    assert store.trials().equals(trials.cast(TRIALS)) and store.students().equals(students.cast(STUDENTS))
    assert scans == [12, 12]


def test_files_of_an_older_schema_are_conformed_beside_one_scan_of_the_current_ones(tmp_path, monkeypatch):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 5)
    folder = tmp_path / "s" / "results" / "trials"
    # schema 1: versions a map; older still: a column per knob, versions as JSON
    one = pq.read_table(folder / "t001.parquet")
    versions = pa.array([[("torch", "2.1"), ("python", "3.10")]], type=pa.map_(pa.string(), pa.string()))
    one = one.set_column(one.schema.get_field_index("versions"), "versions", versions)
    pq.write_table(one, folder / "t001.parquet")
    zero = pq.read_table(folder / "t002.parquet").drop_columns(["knobs", "versions", "protocol"])
    zero = zero.append_column("k", pa.array([7], pa.int64())).append_column(
        "versions", pa.array([json.dumps({"torch": "1.13", "ray": None})]))
    pq.write_table(zero, folder / "t002.parquet")
    scans = []
    real = ds.FileSystemDataset
    monkeypatch.setattr(ds, "FileSystemDataset",
                        lambda fragments, *a, **k: scans.append(len(fragments)) or real(fragments, *a, **k))
    got = {r["trial_id"]: r for r in store.trial_rows()}
    assert sorted(scans) == [1, 1, 3]  # the three current files at once
    assert got["t001"]["versions"] == {f: {"torch": "2.1", "python": "3.10"}.get(f) for f in VERSION_FIELDS}
    assert got["t002"]["versions"]["torch"] == "1.13" and got["t002"]["knobs"] == {"k": 7.0}
    assert got["t002"]["protocol"] is None
    assert got["t003"]["versions"]["torch"] == "2.14" and got["t003"]["knobs"] == {"k": 4.0}
    assert store.trials().schema.equals(TRIALS)
    # and a compaction writes them as the current schema
    assert store.compact(min_files=1) == 15
    assert {r["trial_id"]: r for r in store.trial_rows()} == got
    assert pq.read_table(folder / "part-000001.parquet").schema.equals(TRIALS)


# -- compaction --------------------------------------------------------------------------------

def test_compaction_leaves_one_part_per_table_with_the_same_rows(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 20)
    store.write_epochs("upstream", UPSTREAM)
    before = snapshot(store)
    assert store.compact(min_files=5) == 20 + 20 + 21
    for kind in ("trials", "students", "epochs"):
        assert files(tmp_path, kind) == ["part-000001.parquet"]
    assert snapshot(store) == before
    trials, students, epoch_rows = before
    assert len(trials) == 20 and len(students) == 40 and len(epoch_rows) == 20 * 3 + 4
    assert len(set(_keys(students, "trial_id", "student_arch", "attack"))) == 40
    assert len(set(_keys(epoch_rows, "source", "phase_key", "epoch"))) == 64


def test_compaction_waits_for_min_files_and_is_idempotent(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 4)
    assert store.compact(min_files=5) == 0 and files(tmp_path, "trials") == [f"t{i:03d}.parquet" for i in range(4)]
    fill(store, 1, start=4)
    assert store.compact(min_files=5) == 15
    stat = {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "results").rglob("*")}
    assert store.compact(min_files=5) == 0 and store.compact(min_files=1) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "results").rglob("*")} == stat
    # more trials: the new files merge into the next part, the first left as it is
    fill(store, 2, start=5)
    assert store.compact(min_files=2) == 2 * 3
    assert files(tmp_path, "students") == ["part-000001.parquet", "part-000002.parquet"]
    assert len(store.trial_rows()) == 7
    # past max_parts, the table is merged into one
    assert store.compact(min_files=2, max_parts=1) == 2 * 3
    assert files(tmp_path, "students") == ["part-000003.parquet"] and len(store.trial_rows()) == 7


def test_a_long_sweep_adds_parts_and_merges_them_once_there_are_too_many(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    merged = []
    for i in range(10):
        fill(store, 2, start=2 * i)
        merged.append(store.compact(min_files=2, max_parts=3))
    # parts 1, 2, 3 of two trials each; then a fourth would be one too many: all in part 4, and
    # so on (each merge: three parts and two new files, in each of the three tables)
    assert merged == [6, 6, 6, 15, 6, 6, 15, 6, 6, 15]
    assert files(tmp_path, "trials") == ["part-000010.parquet"]
    assert len(store.trial_rows()) == 20 and len(store.student_rows()) == 20 * len(STUDENTS_OK)


def test_a_trial_written_again_after_a_compaction_wins(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 6)
    store.write_epochs("upstream", UPSTREAM)
    store.compact(min_files=1)
    # t002 again, with one student and a shorter curve; the upstream curves again, shorter
    store.write_trial(*rows("t002", teacher_acc=90.0, students=STUDENTS_OK[:1], finished_at=2.0),
                      epochs("t002", n=2, loss=9.0))
    store.write_epochs("upstream", UPSTREAM[:2])

    def check():
        trials, students, epoch_rows = snapshot(store)
        assert len(trials) == 6 and {r["trial_id"]: r["teacher_acc"] for r in trials}["t002"] == 90.0
        assert [r["student_arch"] for r in students if r["trial_id"] == "t002"] == ["mlp"]
        assert len(students) == 11
        assert [r["train_loss"] for r in epoch_rows if r["source"] == "t002"] == [9.0, 4.5]
        assert [r["epoch"] for r in epoch_rows if r["source"] == "upstream"] == [1, 2]

    check()
    assert store.compact(min_files=1) == 1 + 1 + 2  # t002 in each, and upstream in epochs
    check()
    assert store.compact(min_files=1, max_parts=1) == 2 + 2 + 2  # the two parts of each
    check()


def test_a_reader_between_writing_a_part_and_deleting_what_it_merged_sees_each_row_once(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    store = ResultStore(storage, "s")
    fill(store, 6)
    store.write_epochs("upstream", UPSTREAM)
    before = snapshot(store)
    store.compact(min_files=1)
    store.write_trial(*rows("t002", teacher_acc=90.0, finished_at=2.0), epochs("t002"))
    store.write_trial(*rows("t100", finished_at=100.0), epochs("t100"))
    after = snapshot(store)
    assert len(after[0]) == 7 and after != before
    # the next compaction dies after writing its parts: part 1, part 2 and the new files side by side
    monkeypatch.setattr(storage, "delete", lambda *parts: None)
    store.compact(min_files=1)
    assert files(tmp_path, "trials") == ["part-000001.parquet", "part-000002.parquet", "t002.parquet", "t100.parquet"]
    assert snapshot(store) == after
    monkeypatch.undo()
    (tmp_path / "s" / "results" / "trials" / "t002.parquet").unlink()  # part 2 over part 1
    (tmp_path / "s" / "results" / "students" / "t002.parquet").unlink()
    assert snapshot(store) == after
    # the next compaction finishes the job
    assert store.compact(min_files=100, max_parts=1) == 3 + 3 + 4  # two parts and t100; in epochs, t002 too
    assert all(files(tmp_path, kind) == ["part-000003.parquet"] for kind in ("trials", "students", "epochs"))
    assert snapshot(store) == after


def test_a_reader_at_any_step_of_a_compaction_sees_every_row_once_and_every_trial_with_its_students(tmp_path):
    storage = Storage(tmp_path)
    store = ResultStore(storage, "s")
    fill(store, 5)
    store.compact(min_files=1)
    fill(store, 3, start=5)
    store.write_trial(*rows("t001", teacher_acc=90.0, finished_at=1.0), epochs("t001"))
    expected = snapshot(store)
    steps = []

    class Watched(Storage):  # reads the store back after each write and delete of the compaction
        def write_with(self, parts, write):
            super().write_with(parts, write)
            self._seen(("write", *parts[1:]))

        def delete(self, *parts):
            super().delete(*parts)
            self._seen(("delete", *parts[1:]))

        def _seen(self, step):
            steps.append(step)
            trials, students = store.trials().to_pylist(), store.students().to_pylist()
            assert len(trials) == len({t["trial_id"] for t in trials}) == 8, step
            assert {t["trial_id"] for t in trials} == {s["trial_id"] for s in students}, step
            assert snapshot(ResultStore(storage, "s")) == expected, step

    watched = Watched(tmp_path)
    assert ResultStore(watched, "s").compact(min_files=1, max_parts=1) == 3 * (1 + 4)
    kinds = [(op, kind) for op, kind, _ in steps]
    assert kinds[:3] == [("write", "epochs"), ("write", "students"), ("write", "trials")]
    deletes = [kind for op, kind in kinds if op == "delete"]
    assert deletes == ["trials"] * 5 + ["students"] * 5 + ["epochs"] * 5


def test_a_reader_whose_listing_a_compaction_outdated_reads_again(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    store = ResultStore(storage, "s")
    fill(store, 4)
    expected = snapshot(store)
    stale = {kind: storage.list("s", "results", kind, suffix=".parquet") for kind in ("trials", "students")}
    store.compact(min_files=1)
    real, lists = storage.list, []

    def listing(*parts, **kw):  # the first listing of each folder: from before the compaction
        lists.append(parts[-1])
        return stale[parts[-1]] if lists.count(parts[-1]) == 1 and parts[-1] in stale else real(*parts, **kw)

    monkeypatch.setattr(storage, "list", listing)
    assert (store.trial_rows(), store.student_rows()) == expected[:2]
    assert lists == ["trials", "trials", "students", "students"]


def test_compaction_on_a_bucket(tmp_path):
    """Storage's object-store path (no local files, no renames), on pyarrow's in-memory one."""
    bucket = Storage(tmp_path)
    bucket.fs, bucket.root, bucket.location = pafs._MockFileSystem(), "bucket/team", "mock://bucket/team"
    assert not bucket.is_local
    for kind in ("trials", "students", "epochs"):  # the mock has folders; a bucket would not need them
        bucket.fs.create_dir(bucket.path("s", "results", kind))
    store = ResultStore(bucket, "s")
    fill(store, 6)
    store.write_epochs("upstream", UPSTREAM)
    before = snapshot(store)
    assert store.compact(min_files=3) == 6 * 3 + 1
    assert bucket.list("s", "results", "students") == ["part-000001.parquet"]
    assert snapshot(store) == before
    assert store.footer("trials", "part-000001.parquet")["undistill.fingerprint"] == "fp1"


def test_a_damaged_part_is_a_one_line_error_that_names_it(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 3)
    store.compact(min_files=1)
    fill(store, 1, start=3)
    part = tmp_path / "s" / "results" / "students" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    with pytest.raises(DamagedResultsError, match=r"part-000001.parquet cannot be read") as err:
        store.students()
    assert "\n" not in str(err.value)
    with pytest.raises(DamagedResultsError):
        store.compact(min_files=1, max_parts=1)


def test_a_file_whose_footer_reads_but_whose_pages_do_not_is_named_too(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 3)
    torn = tmp_path / "s" / "results" / "students" / "t001.parquet"
    data = bytearray(torn.read_bytes())
    data[8:400] = b"\xff" * 392  # the pages, not the footer
    torn.write_bytes(bytes(data))
    pq.read_metadata(torn)
    with pytest.raises(DamagedResultsError, match=r"students/t001.parquet cannot be read"):
        store.students()


def test_hidden_temporaries_beside_parts_are_ignored(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 3)
    store.compact(min_files=1)
    (tmp_path / "s" / "results" / "trials" / ".part-000002.parquet.tmp").write_bytes(b"PAR1 half")
    (tmp_path / "s" / "results" / "trials" / ".part-000002.parquet").write_bytes(b"PAR1 half")
    assert len(store.trial_rows()) == 3 and store.compact(min_files=1) == 0


def test_names_that_are_not_files_of_the_store_are_refused(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    for name in ("part-000001", ".hidden", "a/b", ""):
        with pytest.raises(ValueError, match="cannot name a results file"):
            store.write_epochs(name, UPSTREAM)
    row, students = rows("t1")
    with pytest.raises(ValueError, match="name trials"):
        store.write_trial(row, [{**students[0], "trial_id": "t2"}])


# -- footers -----------------------------------------------------------------------------------

def test_every_file_says_its_schema_version_and_fingerprint(tmp_path):
    storage = Storage(tmp_path)
    store = ResultStore(storage, "s")
    fill(store, 2)
    store.write_epochs("upstream", UPSTREAM)  # no row carries the fingerprint, nor does the store
    for kind in ("trials", "students", "epochs"):
        assert store.footer(kind, "t001.parquet") == {"undistill.schema_version": str(SCHEMA_VERSION),
                                                      "undistill.fingerprint": "fp1"}
    assert store.footer("epochs", "upstream.parquet")["undistill.fingerprint"] == ""
    store.compact(min_files=1)
    for kind in ("trials", "students", "epochs"):
        assert read_footer(storage, "s", "results", kind, "part-000001.parquet") == {
            "undistill.schema_version": str(SCHEMA_VERSION), "undistill.fingerprint": "fp1"}
    # told by the store, or by the sweep's record
    ResultStore(storage, "s", fingerprint="given").write_epochs("upstream", UPSTREAM)
    assert store.footer("epochs", "upstream.parquet")["undistill.fingerprint"] == "given"
    storage.write_bytes(("r", "sweep.json"), json.dumps({"fingerprint": "recorded"}).encode())
    ResultStore(storage, "r").write_epochs("upstream", UPSTREAM)
    assert read_footer(storage, "r", "results", "epochs", "upstream.parquet")["undistill.fingerprint"] == "recorded"


# -- versions ----------------------------------------------------------------------------------

def test_versions_are_a_struct_and_read_back_as_a_dict(tmp_path):
    from undistill.record import versions

    assert set(versions()) <= set(VERSION_FIELDS)  # every version a sweep records has its field
    store = ResultStore(Storage(tmp_path), "s")
    row, students = rows("t1")
    store.write_trial({**row, "versions": versions()}, students)
    assert pq.read_table(tmp_path / "s" / "results" / "trials" / "t1.parquet").schema.field("versions").type == VERSIONS
    assert store.trial_rows()[0]["versions"] == {f: versions().get(f) for f in VERSION_FIELDS}
    with pytest.raises(KeyError, match="versions not in the schema"):
        store.write_trial({**row, "versions": {"numpy-next": "9"}}, students)


# -- epochs ------------------------------------------------------------------------------------

def test_epoch_rows_round_trip_and_a_source_written_again_replaces_its_rows(tmp_path):
    store = ResultStore(Storage(tmp_path), "s")
    store.write_epochs("upstream", UPSTREAM)
    store.write_trial(*rows("t1"), epochs("t1") + epochs("t1", phase="dafl mlp", n=2))
    store.write_trial(*rows("t2"))  # no curves: no epochs file
    assert files(tmp_path, "epochs") == ["t1.parquet", "upstream.parquet"]
    assert store.epochs().schema.equals(EPOCHS)
    got = store.epoch_rows()
    assert [(r["source"], r["phase"], r["epoch"]) for r in got] == [
        ("t1", "kd-T4 mlp", 1), ("t1", "kd-T4 mlp", 2), ("t1", "kd-T4 mlp", 3), ("t1", "dafl mlp", 1),
        ("t1", "dafl mlp", 2), ("upstream", "teacher", 1), ("upstream", "teacher", 2), ("upstream", "teacher", 3),
        ("upstream", "teacher", 4)]
    first = got[0]
    assert first == {**epochs("t1")[0], "replicate_of": None, "source": "t1"}
    assert first["knobs"] == {"k": 2.0} and got[-1]["trial_id"] is None and got[-1]["knobs"] is None
    store.write_epochs("upstream", UPSTREAM[:1])
    assert [r["epoch"] for r in store.epoch_rows() if r["source"] == "upstream"] == [1]


# -- rows as Python --------------------------------------------------------------------------------

def test_rows_are_what_to_pylist_gives_with_maps_as_dicts_nulls_slices_and_chunks_included(tmp_path):
    from datetime import UTC, datetime

    from results.store import rows_of

    store = ResultStore(Storage(tmp_path), "s")
    fill(store, 3)
    failed = outcome("nasty", {"omega": 0.1, "tau_a": 2.0}, status="infeasible", teacher_acc=80.0)
    store.write_trial(*trial_rows(sweep="s", trial_id="gate", candidate=None, outcome=failed, context=CONTEXT))
    store.write_epochs("upstream", UPSTREAM)
    odd = pa.table({"when": pa.array([datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), None],
                                     pa.timestamp("ms", tz="UTC")),
                    "ids": pa.array([["0", "1"], None]), "flag": pa.array([None, True]),
                    "n": pa.array([None, 3], pa.int32()), "x": pa.array([float("nan"), None])})
    def text(rows_):  # NaN is not NaN; to_pylist's UTC is a ZoneInfo, rows_of's a timezone
        return repr(rows_).replace("zoneinfo.ZoneInfo(key='UTC')", "UTC").replace("datetime.timezone.utc", "UTC")

    for table in (store.trials(), store.students(), store.epochs(), odd):
        expected = [{k: dict(v) if k == "knobs" and v is not None else v for k, v in r.items()}
                    for r in table.to_pylist()]
        assert text(rows_of(table)) == text(expected)
        chunked = pa.concat_tables([table.slice(1), table.slice(0, 1)])
        assert chunked.column(0).num_chunks == 2
        assert text(rows_of(chunked)) == text(expected[1:] + expected[:1])
