"""Where the Optuna study lives. All asks and tells happen in the driver (one writer), so:

    default, local or NFS storage   SQLite in the sweep folder (`<sweep>/study.db`)
    default, bucket storage         a journal on the bucket (`<sweep>/study.journal/`)
    --study-storage URL             an RDB URL: postgresql://…, mysql://…, sqlite:///…
    --study-storage PATH            a journal file (e.g. on NFS), read and written with file locks
    --study-storage s3://… / gs://… a journal on a bucket (one folder per sweep)

The defaults live inside the sweep's folder, and move with it: Tune pickles the searcher, study
storage included, into the experiment's state, and a copied or moved sweep restored from there
must not reopen the study at the path it was saved from. So they pickle as "the study of the
sweep being driven", which a restored driver resolves from the storage it was given now
(`_here`). A `--study-storage` the user named stays where it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage

from undistill.errors import ConfigError, DamagedSweepError
from undistill.storage import Storage, is_uri

from ._here import here

_OBJECT_STORES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")


class BucketJournal(BaseJournalBackend):
    """An Optuna journal as numbered segment files in a folder of a `Storage`.

    Object stores cannot append, so each append is a new object named after its first log
    number; reading concatenates them in order. Single writer only (the sweep driver): the logs
    are cached after the first read, and the cache is dropped when pickled (Tune saves the
    searcher, study included), so a restored driver reads the journal afresh.
    """

    def __init__(self, storage: Storage, folder: str):
        self.storage, self.folder = storage, folder
        self._logs: list[dict[str, Any]] | None = None

    def __getstate__(self):
        return {"storage": self.storage, "folder": self.folder, "_logs": None}

    def _load(self) -> list[dict[str, Any]]:
        if self._logs is None:
            logs: list[dict[str, Any]] = []
            for name in self.storage.list(self.folder, suffix=".jsonl"):
                text = self.storage.read_bytes(self.folder, name).decode()
                logs.extend(json.loads(line) for line in text.splitlines() if line)
            self._logs = logs
        return self._logs

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return list(self._load()[log_number_from:])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        existing = self._load()
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self.storage.write_bytes((self.folder, f"{len(existing):012d}.jsonl"), text.encode())
        existing.extend(logs)


class SweepSQLite(optuna.storages.RDBStorage):
    """The default study storage on local or NFS storage: `<sweep>/study.db`."""

    def __reduce__(self):
        return _in_sweep_driven, (SweepSQLite, self.url)


class SweepJournal(JournalStorage):
    """The default study storage on a bucket: `<sweep>/study.journal/`."""

    def __reduce__(self):
        return _in_sweep_driven, (SweepJournal, self._backend)


def _in_sweep_driven(kind: type, saved) -> optuna.storages.BaseStorage:
    """A default study storage unpickled: the driven sweep's (see the module's docstring), or
    the one it was saved with outside a driver."""
    bound = here()
    return bound.study_storage if bound is not None else kind(saved)


def open_study_storage(spec: str | None, storage: Storage, sweep: str) -> optuna.storages.BaseStorage:
    """The study's storage for `--study-storage spec` (None: the default for `storage`)."""
    if spec is None and storage.is_local:
        _check_sqlite(storage, sweep)
    try:
        if spec is None:
            if storage.is_local:
                storage.make_dirs(sweep)
                return SweepSQLite(f"sqlite:///{storage.path(sweep, 'study.db')}")
            return SweepJournal(BucketJournal(storage, f"{sweep}/study.journal"))
        scheme = spec.split("://", 1)[0].lower() if is_uri(spec) else ""
        if scheme and scheme not in _OBJECT_STORES:
            return optuna.storages.RDBStorage(spec)
        if scheme and scheme != "file":
            return JournalStorage(BucketJournal(Storage(spec), sweep))  # a folder per sweep
        target = Storage(spec)  # a local journal file: its folder must exist
        target.local_path().parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(target.local_path())))
    except ConfigError:
        raise
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"--study-storage {spec}: its database driver is not installed "
                          f"({exc}); pip install it (psycopg2-binary for PostgreSQL, "
                          "PyMySQL for MySQL)") from None
    except Exception as exc:  # SQLAlchemy and the journal raise many kinds; the user needs one line
        where = spec or storage.uri(sweep, "study.db" if storage.is_local else "study.journal")
        raise ConfigError(f"the Optuna study cannot be opened at {where}: "
                          f"{str(exc).strip().splitlines()[0][:300]}") from None


_SQLITE = b"SQLite format 3\x00"  # the first bytes of every SQLite database


def _check_sqlite(storage: Storage, sweep: str) -> None:
    """A `study.db` that is no database, as one line that names it, before Optuna opens it:
    Optuna would make an emptied one a new, empty study, and report junk from deep inside the
    search. Empty before trials start (`tune/` not there) is a study not made yet. Only the
    header is read: a database a killed driver left with a hot journal is SQLite's to recover."""
    size = storage.size(sweep, "study.db")
    if size is None or (size == 0 and not storage.exists(sweep, "tune")):
        return
    with open(storage.local_path(sweep, "study.db"), "rb") as f:
        head = f.read(len(_SQLITE))
    if head != _SQLITE:
        what = "empty" if size == 0 else "not an SQLite database"
        raise DamagedSweepError(f"{storage.uri(sweep, 'study.db')} is damaged ({what}); restore it from a "
                                "backup: it is the sweep's Optuna study, which `resume` goes on from")
