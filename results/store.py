"""The Parquet store of a sweep: `<sweep>/results/{trials,students}/<trial_id>.parquet` on its
storage (a local folder or a bucket, see `storage`).

A `confirm` replicate (a front candidate re-run under another seed, see `schema`) is a trial
like any other in these folders, told apart by its `replicate_of` column: `trial_rows` and
`student_rows` give the sweep's own trials, `replicate_rows` the replicates.

Each trial is written once, atomically (see `Storage.write_with`), students first, so a reader
that sees a trial row also sees its student rows, and no reader ever sees half a file. Writing
a trial again replaces its files: a trial is never counted twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from undistill.errors import UndistillError
from undistill.storage import Storage

from . import schema

TRIALS_DIR, STUDENTS_DIR = "trials", "students"


@dataclass(frozen=True)
class SweepRows:
    """A sweep's rows: its own trials (in finishing order) and students, and the replicates
    `confirm` added, each as `ResultStore` reads them."""

    trials: list[dict]
    students: list[dict]
    replicate_trials: list[dict] = ()
    replicate_students: list[dict] = ()


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
        """The search's trial rows (no replicates) as dicts in finishing order: NaN for a missing
        accuracy (so rows sort and compare), `knobs` and `versions` as dicts."""
        return [r for r in self._trial_rows() if r["replicate_of"] is None]

    def student_rows(self) -> list[dict]:
        """The search's student × attack rows (no replicates) as dicts, `knobs` as a dict, nulls
        as None."""
        return [r for r in self._student_rows() if r["replicate_of"] is None]

    def replicate_rows(self) -> tuple[list[dict], list[dict]]:
        """The replicates' trial rows (as `trial_rows` gives them) and student rows."""
        rows = self.sweep_rows()
        return rows.replicate_trials, rows.replicate_students

    def sweep_rows(self) -> SweepRows:
        """Every row, the search's and the replicates', each folder read once."""
        trials, students = self._trial_rows(), self._student_rows()
        return SweepRows([r for r in trials if r["replicate_of"] is None],
                         [r for r in students if r["replicate_of"] is None],
                         [r for r in trials if r["replicate_of"] is not None],
                         [r for r in students if r["replicate_of"] is not None])

    def _trial_rows(self) -> list[dict]:
        rows = [_maps_as_dicts(r) for r in self.trials().to_pylist()]
        for row in rows:
            for key in ("teacher_acc", "student_acc", "teacher_drop"):
                if row[key] is None:
                    row[key] = math.nan
        return sorted(rows, key=lambda r: (r["finished_at"] is None, r["finished_at"], r["trial_id"]))

    def _student_rows(self) -> list[dict]:
        return [_maps_as_dicts(r) for r in self.students().to_pylist()]

    def _write(self, table: pa.Table, kind: str, name: str) -> None:
        self.storage.write_with((self.folder, kind, name), lambda f: pq.write_table(table, f))

    def _read_all(self, kind: str, table_schema: pa.Schema) -> pa.Table:
        folder = f"{self.folder}/{kind}"
        tables = []
        for name in self.storage.list(folder, suffix=".parquet"):
            path = self.storage.path(folder, name)
            try:
                table = pq.read_table(path, filesystem=self.storage.fs)
                tables.append(_conform(table, table_schema))
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise DamagedResultsError(f"{self.storage.uri(folder, name)} cannot be read ({exc}); "
                                          "move it out of the folder to read the rest") from None
        return pa.concat_tables(tables) if tables else table_schema.empty_table()


def _maps_as_dicts(row: dict) -> dict:
    for key in ("knobs", "versions"):
        if isinstance(row.get(key), list):  # Arrow gives a map as (key, value) pairs
            row[key] = dict(row[key])
    return row


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """`table` as `target`. A file written before knobs had their own map column has a column
    per knob instead (`omega`, `tau_a`, `k`) and `versions` as JSON: read those into the map."""
    if "knobs" not in table.column_names:
        numeric = (pa.types.is_integer, pa.types.is_floating)
        extra = [n for n in table.column_names if n not in target.names
                 and any(is_kind(table.schema.field(n).type) for is_kind in numeric)]
        columns = {n: table.column(n).to_pylist() for n in extra}
        knobs = [{n: float(columns[n][i]) for n in extra if columns[n][i] is not None}
                 for i in range(table.num_rows)]
        table = table.drop_columns(extra).append_column(pa.field("knobs", schema.KNOBS),
                                                        pa.array(knobs, type=schema.KNOBS))
    if "versions" in table.column_names and pa.types.is_string(table.schema.field("versions").type):
        versions = [json.loads(v) if v else {} for v in table.column("versions").to_pylist()]
        table = table.set_column(table.column_names.index("versions"), target.field("versions"),
                                 pa.array([{k: None if x is None else str(x) for k, x in v.items()}
                                           for v in versions], type=target.field("versions").type))
    missing = [f for f in target if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, type=f.type))
    return table.select(target.names).cast(target)

