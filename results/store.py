"""The Parquet store of a sweep, `<sweep>/results/` on its storage (a local folder or a bucket,
see `storage`): a folder per table (`schema`), each holding per-trial files and compacted parts.

    trials/<trial_id>.parquet      one per finished trial, as the driver writes them
    trials/part-000007.parquet     compacted: many trials' rows in one file (`compact`)
    students/...                   the same, for the student × attack rows
    epochs/<trial_id>.parquet      a trial's learning curves; epochs/<name>.parquet for upstream
                                   phases (`write_epochs`); compacted parts as the others

A `confirm` replicate (a front candidate re-run under another seed, see `schema`) is a trial
like any other in these folders, told apart by its `replicate_of` column: `trial_rows` and
`student_rows` give the sweep's own trials, `replicate_rows` the replicates.

Each file is written atomically (see `Storage.write_with`), a trial's epochs first, then its
students, then its trial row, so a reader that sees a trial row also sees its student rows, and
no reader ever sees half a file. Every row belongs to a *source*: the file it was written in
(its trial id; for epochs, the `source` column). Writing a source again replaces its rows.

Readers read a folder in one `pyarrow.dataset` scan (files of an older schema: one scan per
schema, each conformed to the current one). Where one source has rows in several files (a
compaction in progress, or a trial written again after one), the newest file wins: a per-trial
file over any part (a trial written after a compaction can only be newer), a later part over an
earlier one. `compact` writes the new part of each table (epochs, students, trials) before it
deletes the files it merged (trials, students, epochs), so that a reader at any moment between
sees every row exactly once, and a trial row's students with it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from undistill.errors import UndistillError
from undistill.memory import cyclic_gc_paused
from undistill.storage import Storage

from . import schema

TRIALS_DIR, STUDENTS_DIR, EPOCHS_DIR = "trials", "students", "epochs"
# each table's schema, and the column that names the source (file) of each of its rows
TABLES = {TRIALS_DIR: (schema.TRIALS, "trial_id"), STUDENTS_DIR: (schema.STUDENTS, "trial_id"),
          EPOCHS_DIR: (schema.EPOCHS, "source")}
# columns every schema version of each table has had (see `schema`): a file that lacks one is
# not the store's, whatever its name, and its rows must not be read as rows of nulls
CORE = {TRIALS_DIR: ("sweep", "trial_id", "defense", "status", "teacher_acc", "teacher_drop", "student_acc"),
        STUDENTS_DIR: ("sweep", "trial_id", "defense", "student_arch", "status", "student_acc"),
        EPOCHS_DIR: ("sweep", "source", "phase", "epoch")}
COMPACT_MIN_FILES = 64  # per-trial files that make `compact` merge them into a part
MAX_PARTS = 8  # parts past which `compact` merges a table into one
_PART = re.compile(r"part-(\d+)\.parquet")
_RANK = "__undistill_rank"  # which file a row came from: a part's number, or _LOOSE
_LOOSE = 2**62  # a per-trial file: newer than any part
_RETRIES = 8


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


class _Changed(Exception):
    """A file listed was gone when read: a compaction replaced it. Read the folder again."""


class ResultStore:
    """A sweep's results. `fingerprint`: the sweep's config fingerprint, for the footers of the
    files whose rows do not carry it (epochs, compacted parts); by default the one the rows and
    files merged say, else the sweep's record (`<sweep>/sweep.json`)."""

    def __init__(self, storage: Storage, sweep: str, fingerprint: str | None = None):
        self.storage, self.folder, self.fingerprint = storage, f"{sweep}/results", fingerprint
        self._recorded: str | None = None

    @property
    def location(self) -> str:
        return self.storage.uri(self.folder)

    # -- writing ------------------------------------------------------------------------------

    def write_trial(self, trial_row: dict, student_rows: list[dict], epoch_rows: list[dict] = ()) -> None:
        """A finished trial's files, replacing any it had: its epochs (when given), its students,
        then its trial row. Every student row must carry the trial's id."""
        trial_id = trial_row["trial_id"]
        name = _file_name(trial_id)
        strays = sorted({str(r.get("trial_id")) for r in student_rows} - {trial_id})
        if strays:
            raise ValueError(f"student rows of trial {trial_id!r} name trials {', '.join(strays)}")
        fingerprint = self._fingerprint(trial_row.get("config_fingerprint"))
        if epoch_rows:
            self._write(_epochs_table(epoch_rows, trial_id), EPOCHS_DIR, name, fingerprint)
        self._write(schema.table(student_rows, schema.STUDENTS), STUDENTS_DIR, name, fingerprint)
        self._write(schema.table([trial_row], schema.TRIALS), TRIALS_DIR, name, fingerprint)

    def write_epochs(self, name: str, rows: list[dict]) -> None:
        """Epoch rows that belong to no one trial (upstream phases), as `epochs/<name>.parquet`,
        replacing the rows an earlier call with that name wrote."""
        self._write(_epochs_table(rows, name), EPOCHS_DIR, _file_name(name), self._fingerprint())

    def compact(self, min_files: int = COMPACT_MIN_FILES, max_parts: int = MAX_PARTS) -> int:
        """Merge each table's per-trial files into a new part, where it has at least
        `min_files` of them; where that would leave more than `max_parts` parts, merge every
        file of the table into one instead (so a long sweep rewrites its rows now and then,
        not at every compaction). The number of files merged (0: nothing to do).
        `compact(1, 1)`: one part per table (a finished sweep). For the sweep's one writer,
        between its writes; readers in other processes may read at any moment, and see each
        row once (see the module)."""
        merged = []
        for kind in (EPOCHS_DIR, STUDENTS_DIR, TRIALS_DIR):  # a trial's students land before it
            names = self.storage.list(self.folder, kind, suffix=".parquet")
            parts = [n for n in names if _PART.fullmatch(n)]
            loose = [n for n in names if n not in parts]
            if len(parts) + (len(loose) >= max(min_files, 1)) > max(max_parts, 1):
                chosen = None  # every file, as listed when read
            elif len(loose) >= max(min_files, 1):
                chosen = loose  # newer than every part: the new part outranks them
            else:
                continue
            chosen, table, fingerprints = self._read_listed(kind, chosen)
            numbers = [int(m[1]) for n in self.storage.list(self.folder, kind, suffix=".parquet")
                       if (m := _PART.fullmatch(n))]
            fingerprint = self._fingerprint(next(iter(fingerprints)) if len(fingerprints) == 1 else None)
            self._write(table, kind, f"part-{max(numbers, default=0) + 1:06d}.parquet", fingerprint)
            merged.append((kind, chosen))
        for kind, names in reversed(merged):  # and goes after them
            for name in names:
                self.storage.delete(self.folder, kind, name)
        return sum(len(names) for _, names in merged)

    def footer(self, kind: str, name: str) -> dict[str, str]:
        """The `undistill.*` footer metadata of `<kind>/<name>` (see `schema`)."""
        return read_footer(self.storage, self.folder, kind, name)

    # -- reading ------------------------------------------------------------------------------

    def trials(self) -> pa.Table:
        return self._read(TRIALS_DIR)

    def students(self) -> pa.Table:
        return self._read(STUDENTS_DIR)

    def epochs(self) -> pa.Table:
        return self._read(EPOCHS_DIR)

    def trial_rows(self) -> list[dict]:
        """The search's trial rows (no replicates) as dicts in finishing order: NaN for a missing
        accuracy (so rows sort and compare), `knobs` and `versions` as dicts."""
        return [r for r in self._trial_rows() if r["replicate_of"] is None]

    def student_rows(self) -> list[dict]:
        """The search's student × attack rows (no replicates) as dicts, `knobs` as a dict, nulls
        as None."""
        return [r for r in self._student_rows() if r["replicate_of"] is None]

    def epoch_rows(self) -> list[dict]:
        """Every epoch row, the upstream phases' and the trials', `knobs` as a dict, nulls as
        None; by source, each source's rows as written."""
        return rows_of(self.epochs())

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
        rows = rows_of(self.trials())
        for row in rows:
            for key in ("teacher_acc", "student_acc", "teacher_drop"):
                if row[key] is None:
                    row[key] = math.nan
        return sorted(rows, key=lambda r: (r["finished_at"] is None, r["finished_at"], r["trial_id"]))

    def _student_rows(self) -> list[dict]:
        return rows_of(self.students())

    # -- files --------------------------------------------------------------------------------

    def _fingerprint(self, given: str | None = None) -> str:
        if given or self.fingerprint:
            return given or self.fingerprint
        if self._recorded is None:
            sweep = self.folder.rpartition("/")[0]
            try:
                self._recorded = str(json.loads(self.storage.read_bytes(sweep, "sweep.json")).get("fingerprint") or "")
            except (OSError, ValueError, AttributeError):
                self._recorded = ""
        return self._recorded

    def _write(self, table: pa.Table, kind: str, name: str, fingerprint: str) -> None:
        table = table.replace_schema_metadata({schema.FOOTER_VERSION: str(schema.SCHEMA_VERSION),
                                               schema.FOOTER_FINGERPRINT: fingerprint or ""})
        self.storage.write_with((self.folder, kind, name), lambda f: pq.write_table(table, f))

    def _read(self, kind: str) -> pa.Table:
        """The table's rows, each source's once (see the module), in the order of their source."""
        return self._read_listed(kind)[1]

    def _read_listed(self, kind: str, names: list[str] | None = None) -> tuple[list[str], pa.Table, set[str]]:
        """The files of `kind` (`names`, if given and still there), their rows as `_scan` gives
        them, and their footers' fingerprints."""
        last = None
        for _ in range(_RETRIES):
            names = names if names is not None else self.storage.list(self.folder, kind, suffix=".parquet")
            try:
                return names, *self._scan(kind, names)
            except _Changed as exc:  # a compaction replaced files as they were read: list again
                last, names = exc, None
        raise DamagedResultsError(f"{self.storage.uri(self.folder, kind)} changed while being read "
                                  f"{_RETRIES} times ({last}); read it again")

    def _scan(self, kind: str, names: list[str]) -> tuple[pa.Table, set[str]]:
        """The rows of the files `names` of `kind` as its current schema, deduplicated, and the
        fingerprints their footers name; _Changed when a file has gone."""
        target, source = TABLES[kind]
        if not names:
            return target.empty_table(), set()
        fs = self.storage.fs
        # pre-buffering hides an object store's latency; on a local disk it only costs time
        fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
            pre_buffer=not self.storage.is_local))
        # files by their schema: the current one's, and each older one's
        groups: dict[str, tuple[pa.Schema, list]] = {}
        fingerprints = set()
        for name in names:
            part = _PART.fullmatch(name)
            rank = pa.scalar(int(part[1]) if part else _LOOSE, pa.int64())
            try:
                fragment = fmt.make_fragment(self.storage.path(self.folder, kind, name), filesystem=fs,
                                             partition_expression=ds.field(_RANK) == rank)
                physical = fragment.physical_schema
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise self._damaged(kind, name, exc) from None
            lacking = [c for c in CORE[kind] if c not in physical.names]
            if lacking:
                raise self._damaged(kind, name, ValueError(f"not a {kind} table: it lacks the columns "
                                                           f"{', '.join(lacking)}"))
            footer = physical.metadata or {}
            if footer.get(schema.FOOTER_FINGERPRINT.encode()):
                fingerprints.add(footer[schema.FOOTER_FINGERPRINT.encode()].decode())
            physical = physical.remove_metadata()
            key = "" if physical.equals(target) else physical.to_string()
            groups.setdefault(key, (target if key == "" else physical, []))[1].append(fragment)
        tables = []
        for key, (group_schema, fragments) in groups.items():
            dataset = ds.FileSystemDataset(fragments, group_schema.append(pa.field(_RANK, pa.int64())), fmt, fs)
            try:
                table = dataset.to_table()
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise self._diagnose(kind, names, exc) from None
            if key:  # an older schema: as the current one
                try:
                    table = _conform(table.drop_columns([_RANK]), target).append_column(_RANK, table.column(_RANK))
                except (pa.ArrowException, ValueError, TypeError, AttributeError) as exc:  # columns of other types
                    raise self._damaged(kind, fragments[0].path.rpartition("/")[2], exc) from None
            tables.append(table)
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if len(names) > 1:  # one file is in order: a part is written so
            table = _newest(table, source)
            table = table.take(pc.sort_indices(table, sort_keys=[(source, "ascending")]))
        return table.drop_columns([_RANK]), fingerprints

    def _damaged(self, kind: str, name: str, exc: Exception) -> Exception:
        """What to raise when `<kind>/<name>` failed to read with `exc`: _Changed if it has gone,
        else a DamagedResultsError that names it, on one line."""
        if not self.storage.exists(self.folder, kind, name):
            return _Changed(f"{name} is gone")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DamagedResultsError(f"{self.storage.uri(self.folder, kind, name)} cannot be read ({reason}); "
                                   "move it out of the folder to read the rest")

    def _diagnose(self, kind: str, names: list[str], exc: Exception) -> Exception:
        """What to raise when a scan of `names` failed with `exc`: which file is damaged, or
        _Changed (files have gone, or none fails now)."""
        if set(names) - set(self.storage.list(self.folder, kind, suffix=".parquet")):
            return _Changed("files were replaced")
        text = str(exc)  # the file the error names, if it does, first
        for name in sorted(names, key=lambda n: self.storage.path(self.folder, kind, n) not in text):
            try:
                pq.read_table(self.storage.path(self.folder, kind, name), filesystem=self.storage.fs)
            except (OSError, pa.ArrowException, ValueError) as err:
                return self._damaged(kind, name, err)
        return _Changed(f"a read failed ({(text.splitlines() or [type(exc).__name__])[0]}), its files did not")


def read_footer(storage: Storage, *parts: str) -> dict[str, str]:
    """The `undistill.*` key-value metadata in the footer of the Parquet file at `parts`."""
    metadata = pq.read_metadata(storage.path(*parts), filesystem=storage.fs).metadata or {}
    return {k.decode(): v.decode() for k, v in metadata.items() if k.startswith(b"undistill.")}


def rows_of(table: pa.Table) -> list[dict]:
    """A table's rows as dicts, maps (knobs) and structs (versions) as dicts, nulls as None: what
    `table.to_pylist()` gives, maps made dicts, several times faster (a sweep of 10,000 trials
    has 120,000 student rows; see BENCHMARKS.md)."""
    names = tuple(table.column_names)
    with cyclic_gc_paused():  # collecting as the rows pile up doubles the time
        return list(map(_row_maker(names), *(_values(table.column(n)) for n in names)))


@functools.lru_cache(maxsize=16)
def _row_maker(names: tuple[str, ...]):
    """A function of one value per column that returns the row's dict: a dict display with
    constant keys, a third faster than dict(zip(names, values)). The names are a schema's."""
    items = ", ".join(f"{name!r}: c{i}" for i, name in enumerate(names))
    return eval(f"lambda {', '.join(f'c{i}' for i in range(len(names)))}: {{{items}}}")  # noqa: S307


def _values(column: pa.ChunkedArray | pa.Array) -> list:
    """A column's values as Python objects, as `to_pylist` gives them (maps as dicts)."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return _values(column.chunk(0))
        return [v for chunk in column.chunks for v in _values(chunk)]
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.to_numpy(zero_copy_only=False).tolist()  # nulls as None
    if pa.types.is_floating(kind):
        return _with_nulls(column, column.to_numpy(zero_copy_only=False).tolist())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        filled = column.fill_null(pa.scalar(0 if pa.types.is_integer(kind) else False, kind))
        return _with_nulls(column, filled.to_numpy(zero_copy_only=False).tolist())
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms") and kind.tz in ("UTC", "+00:00"):
        per_s = 1 if kind.unit == "s" else 1000
        at = datetime.fromtimestamp
        seconds = (column.fill_null(pa.scalar(0, kind)).cast(pa.int64()).to_numpy() / per_s).tolist()
        return _with_nulls(column, [at(x, UTC) for x in seconds])
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        bounds = column.offsets.to_numpy().tolist()
        if pa.types.is_map(kind):
            pairs = list(zip(_values(column.keys), _values(column.items), strict=True))
            out = [dict(pairs[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        else:
            flat = _values(column.values)
            out = [flat[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        return _with_nulls(column, out)
    if pa.types.is_struct(kind):
        names = tuple(kind.field(i).name for i in range(kind.num_fields))
        fields = [_values(column.field(i)) for i in range(len(names))]
        rows = list(map(_row_maker(names), *fields)) if fields else [{} for _ in range(len(column))]
        return _with_nulls(column, rows)
    return column.to_pylist()


def _with_nulls(column: pa.Array, values: list) -> list:
    if column.null_count:
        for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            values[i] = None
    return values


def _file_name(stem: str) -> str:
    if (not isinstance(stem, str) or not stem or stem.startswith(".") or "/" in stem or "\\" in stem
            or _PART.fullmatch(f"{stem}.parquet")):
        raise ValueError(f"{stem!r} cannot name a results file (empty, hidden, a path, or a part's name)")
    return f"{stem}.parquet"


def _epochs_table(rows: list[dict], source: str) -> pa.Table:
    return schema.table([{**r, "source": source} for r in rows], schema.EPOCHS)


def _newest(table: pa.Table, source: str) -> pa.Table:
    """Each source's rows from the newest file that holds it: the highest rank."""
    ranks = table.column(_RANK)
    if table.num_rows == 0 or pc.min(ranks).as_py() == pc.max(ranks).as_py():
        return table  # one file per source: per-trial files only, or one part only
    newest = table.group_by(source).aggregate([(_RANK, "max")])
    at = pc.index_in(table.column(source), value_set=newest.column(source))
    return table.filter(pc.equal(ranks, pc.take(newest.column(f"{_RANK}_max"), at)))


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """`table` as `target`. A file written before knobs had their own map column has a column
    per knob instead (`omega`, `tau_a`, `k`) and `versions` as JSON; one written before schema 2,
    `versions` as a map: read those into the map and the struct. Missing columns are null."""
    if "knobs" not in table.column_names and "knobs" in target.names:
        numeric = (pa.types.is_integer, pa.types.is_floating)
        extra = [n for n in table.column_names if n not in target.names
                 and any(is_kind(table.schema.field(n).type) for is_kind in numeric)]
        columns = {n: table.column(n).to_pylist() for n in extra}
        knobs = [{n: float(columns[n][i]) for n in extra if columns[n][i] is not None}
                 for i in range(table.num_rows)]
        table = table.drop_columns(extra).append_column(pa.field("knobs", schema.KNOBS),
                                                        pa.array(knobs, type=schema.KNOBS))
    if "versions" in table.column_names and "versions" in target.names:
        field = target.field("versions")
        if not table.schema.field("versions").type.equals(field.type):
            table = table.set_column(table.column_names.index("versions"), field,
                                     pa.array([_versions(v) for v in table.column("versions").to_pylist()],
                                              type=field.type))
    missing = [f for f in target if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, type=f.type))
    return table.select(target.names).cast(target)


def _versions(value) -> dict | None:
    """An older `versions` (JSON text, a map's pairs, a struct of other fields) as the struct's."""
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    elif isinstance(value, list):
        value = dict(value)
    if value is None:
        return None
    return {k: None if x is None else str(x) for k, x in value.items() if k in schema.VERSION_FIELDS}
