"""The Parquet store of a sweep: `<sweep>/results/{trials,students}/<trial_id>.parquet` on its
storage (a local folder or a bucket, see `storage`).

Each trial is written once, atomically (see `Storage.write_with`), students first, so a reader
that sees a trial row also sees its student rows, and no reader ever sees half a file. Writing a trial again replaces its files: a trial is never
counted twice.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.errors import UndistillError

from . import schema
from .storage import Storage

TRIALS_DIR, STUDENTS_DIR = "trials", "students"


class DamagedResultsError(UndistillError):
    """A results file exists but cannot be read."""


class ResultStore:
    def __init__(self, storage: Storage, sweep: str):
        self.storage, self.folder = storage, f"{sweep}/results"

    @property
    def location(self) -> str:
        return self.storage.uri(self.folder)

    def write_trial(self, trial_row: dict, student_rows: list[dict]) -> None:
        name = f"{trial_row['trial_id']}.parquet"
        self._write(schema.table(student_rows, schema.STUDENTS), STUDENTS_DIR, name)
        self._write(schema.table([trial_row], schema.TRIALS), TRIALS_DIR, name)

    def trials(self) -> pa.Table:
        return self._read_all(TRIALS_DIR, schema.TRIALS)

    def students(self) -> pa.Table:
        return self._read_all(STUDENTS_DIR, schema.STUDENTS)

    def trial_rows(self) -> list[dict]:
        """Trial rows as dicts, NaN for missing accuracies, in finishing order."""
        rows = self.trials().to_pylist()
        for row in rows:
            for key in ("teacher_acc", "student_acc", "teacher_drop", "omega", "tau_a"):
                if row[key] is None:
                    row[key] = math.nan
        return sorted(rows, key=lambda r: (r["finished_at"] is None, r["finished_at"], r["trial_id"]))

    def _write(self, table: pa.Table, kind: str, name: str) -> None:
        self.storage.write_with((self.folder, kind, name), lambda f: pq.write_table(table, f))

    def _read_all(self, kind: str, table_schema: pa.Schema) -> pa.Table:
        folder = f"{self.folder}/{kind}"
        tables = []
        for name in self.storage.list(folder, suffix=".parquet"):
            path = self.storage.path(folder, name)
            try:
                tables.append(pq.read_table(path, schema=table_schema, filesystem=self.storage.fs))
            except (OSError, pa.ArrowException) as exc:
                raise DamagedResultsError(f"{self.storage.uri(folder, name)} cannot be read ({exc}); "
                                          "move it out of the folder to read the rest") from None
        return pa.concat_tables(tables) if tables else table_schema.empty_table()
