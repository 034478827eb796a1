"""The Parquet store of a sweep: `<sweep dir>/results/{trials,students}/<trial_id>.parquet`.

Each trial is written once, atomically: both files go to a temporary name first and are renamed
into place, students first, so a reader that sees a trial row also sees its student rows, and
no reader ever sees half a file. Writing a trial again replaces its files: a trial is never
counted twice.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.errors import UndistillError

from . import schema

TRIALS_DIR, STUDENTS_DIR = "trials", "students"


class DamagedResultsError(UndistillError):
    """A results file exists but cannot be read."""


class ResultStore:
    def __init__(self, sweep_dir: str | Path):
        self.root = Path(sweep_dir) / "results"

    def write_trial(self, trial_row: dict, student_rows: list[dict]) -> None:
        trial_id = trial_row["trial_id"]
        _atomic_parquet(schema.table(student_rows, schema.STUDENTS), self.root / STUDENTS_DIR, trial_id)
        _atomic_parquet(schema.table([trial_row], schema.TRIALS), self.root / TRIALS_DIR, trial_id)

    def trials(self) -> pa.Table:
        return _read_all(self.root / TRIALS_DIR, schema.TRIALS)

    def students(self) -> pa.Table:
        return _read_all(self.root / STUDENTS_DIR, schema.STUDENTS)

    def trial_rows(self) -> list[dict]:
        """Trial rows as dicts, NaN for missing accuracies, in finishing order."""
        rows = self.trials().to_pylist()
        for row in rows:
            for key in ("teacher_acc", "student_acc", "teacher_drop", "omega", "tau_a"):
                if row[key] is None:
                    row[key] = math.nan
        return sorted(rows, key=lambda r: (r["finished_at"] is None, r["finished_at"], r["trial_id"]))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` so that readers see the old file or the whole new one, even after a crash:
    into a dot-named temporary beside it (hidden from readers and from pyarrow.dataset), synced
    to disk, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_parquet(table: pa.Table, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{name}.parquet", lambda f: pq.write_table(table, f))


def _read_all(folder: Path, table_schema: pa.Schema) -> pa.Table:
    files = sorted(folder.glob("[!.]*.parquet")) if folder.exists() else []
    if not files:
        return table_schema.empty_table()
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, schema=table_schema))
        except (OSError, pa.ArrowException) as exc:
            raise DamagedResultsError(f"{f} cannot be read ({exc}); move it out of the folder "
                                      "to read the rest") from None
    return pa.concat_tables(tables)
