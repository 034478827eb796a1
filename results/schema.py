"""The three Parquet tables of a sweep: `trials` (one row per trial), `students` (one row per
trial × student × attack) and `epochs` (one row per epoch of a phase: the learning curves).
Accuracies are percentages; a value that does not exist is null.
A candidate's knobs are one map column (`knobs`: name -> value, as floats), whatever the defense:
the sweep's record says which knobs each defense has and how to show them.

Both record where the work ran: the trial row for the trial's own process (which trains the
nasty teacher and holds bundle 0 of the trial's placement group for the trial's whole span), a
student row for its child task. `cpus` and `gpus` are the shares that process held.

Every file the store writes says in its Parquet footer (key-value metadata) which version of
these schemas it holds (`undistill.schema_version`) and which sweep config made its rows
(`undistill.fingerprint`: the sweep's config fingerprint). Schema versions:

1. (files without the key) `versions` a map<string, string>; only trials and students. Older
   still: a column per knob instead of `knobs`, `versions` as JSON (the store reads both).
2. `versions` a struct of fixed fields (`VERSIONS`); the `epochs` table; per-trial files merged
   into compacted parts (`results.store`).
"""

from __future__ import annotations

import pyarrow as pa

_WHERE = [
    ("node_id", pa.string()),  # Ray's node id
    ("hostname", pa.string()),
    ("gpu_ids", pa.list_(pa.string())),  # the GPUs Ray assigned (empty on CPU)
    ("cpus", pa.float64()),
    ("gpus", pa.float64()),
    ("placement_group", pa.string()),  # the trial's placement group id
]
WHERE_COLUMNS = tuple(name for name, _ in _WHERE)
KNOBS = pa.map_(pa.string(), pa.float64())
SCHEMA_VERSION = 2
FOOTER_VERSION, FOOTER_FINGERPRINT = "undistill.schema_version", "undistill.fingerprint"
# what `undistill.record.versions()` records: Python and the libraries the numbers depend on
VERSION_FIELDS = ("undistill", "torch", "ray", "optuna", "python", "pyarrow")
VERSIONS = pa.struct([(name, pa.string()) for name in VERSION_FIELDS])

TRIALS = pa.schema([
    ("sweep", pa.string()),
    ("trial_id", pa.string()),
    ("defense", pa.string()),  # a registered defense: nasty, stingy, ...
    ("knobs", KNOBS),  # its knobs: omega and tau_a, or k, ...
    ("dataset", pa.string()),
    ("teacher_arch", pa.string()),
    ("seed", pa.int64()),
    # null: a trial of the sweep's search; else the trial id of the front candidate this row
    # re-runs under another `seed` (`confirm`), from its own normal teacher and students up
    ("replicate_of", pa.string()),
    # validation (best epoch on a held-out split) | paper (whole training set, best epoch on the
    # test set, as the reference code); null: a sweep older than the choice, i.e. validation
    ("protocol", pa.string()),
    # ok | dominated (attacks skipped once it was beaten) | diverged | infeasible | error
    ("status", pa.string()),
    ("teacher_acc", pa.float64()),  # the defended teacher, test
    ("normal_teacher_acc", pa.float64()),
    ("teacher_drop", pa.float64()),  # normal − defended, points
    ("student_acc", pa.float64()),  # the best clone: max over students × attacks (null unless ok/dominated)
    ("clone_lower_bound", pa.bool_()),  # student_acc is over the attacks run, a lower bound (dominated)
    ("best_student", pa.string()),
    ("best_attack", pa.string()),  # kd-T4, dafl, ...: the attack that made the best clone
    ("kd_temperature", pa.float64()),  # that attack's temperature
    ("kd_alpha", pa.float64()),
    ("wall_s", pa.float64()),  # the trial's span, start to end, in seconds
    ("compute_s", pa.float64()),  # seconds of its phases summed (students run side by side)
    ("teacher_wall_s", pa.float64()),  # of those, the defended teacher's training
    ("teacher_cached", pa.bool_()),  # that teacher came from the artifact store (a retry)
    *_WHERE,
    ("started_at", pa.timestamp("ms", tz="UTC")),
    ("finished_at", pa.timestamp("ms", tz="UTC")),  # Parquet has no seconds unit
    ("preset", pa.string()),
    ("config_fingerprint", pa.string()),
    ("versions", VERSIONS),  # undistill, torch, ray, optuna, python, pyarrow (null: unknown)
    ("error", pa.string()),
])

STUDENTS = pa.schema([
    ("sweep", pa.string()),
    ("trial_id", pa.string()),
    ("defense", pa.string()),
    ("knobs", KNOBS),
    ("seed", pa.int64()),  # as the trial's (null in files older than replicates)
    ("replicate_of", pa.string()),  # as the trial's
    ("student_arch", pa.string()),
    ("protocol", pa.string()),  # as the trial's
    ("attack", pa.string()),  # a registered attack's label: kd-T<temperature>, dafl, ...
    ("kd_temperature", pa.float64()),
    ("kd_alpha", pa.float64()),  # 1 for dafl: no labels
    ("status", pa.string()),  # ok | diverged | skipped | error
    ("student_acc", pa.float64()),  # the clone: the student by this attack on the defended teacher
    ("scratch_acc", pa.float64()),  # the same student trained from labels alone
    ("smoothed_acc", pa.float64()),  # ... alone with label smoothing (null if the preset has none)
    ("normal_kd_acc", pa.float64()),  # the same student by the same attack on the normal teacher
    ("best_epoch", pa.int64()),
    ("wall_s", pa.float64()),  # batched: its share of the batch's seconds
    # trained with the other attacks on this student as one vectorised model (false: alone;
    # null: never ran, or read from a sweep older than batching)
    ("batched", pa.bool_()),
    ("cached", pa.bool_()),  # found in the artifact store (an earlier attempt trained it)
    *_WHERE,
    ("started_at", pa.timestamp("ms", tz="UTC")),
    ("finished_at", pa.timestamp("ms", tz="UTC")),
])

# One row per epoch of one phase: a trial's own phases (its defended teacher, its attacks) and the
# upstream phases every trial shares (the normal teacher, the students trained alone).
EPOCHS = pa.schema([
    ("sweep", pa.string()),
    ("trial_id", pa.string()),  # null: an upstream phase, shared by every trial
    ("phase_key", pa.string()),  # the phase's artifact key
    ("phase_kind", pa.string()),  # teacher | scratch | defense | attack
    ("phase", pa.string()),  # its display name: teacher, scratch cnn1d, kd-T4 cnn1d, ...
    ("defense", pa.string()),
    ("knobs", KNOBS),
    ("student_arch", pa.string()),
    ("attack", pa.string()),
    ("seed", pa.int64()),
    ("replicate_of", pa.string()),
    ("epoch", pa.int64()),  # 1-based
    ("train_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("lr", pa.float64()),
    ("seconds", pa.float64()),  # the epoch's wall time
    # the file the store wrote the row in: the trial id (`write_trial`) or the name given to
    # `write_epochs` (upstream phases). Set by the store: a file written again replaces its rows.
    ("source", pa.string()),
])

STATUSES = ("ok", "dominated", "diverged", "infeasible", "error")


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> a table of exactly `schema`; missing keys become null, extra keys (or versions
    the `versions` struct has no field for) are an error."""
    names = set(schema.names)
    versioned = "versions" in names
    for row in rows:
        extra = set(row) - names
        if extra:
            raise KeyError(f"columns not in the schema: {sorted(extra)}")
        if versioned and row.get("versions"):
            unknown = set(row["versions"]) - set(VERSION_FIELDS)
            if unknown:
                raise KeyError(f"versions not in the schema: {sorted(unknown)} "
                               f"(it records {', '.join(VERSION_FIELDS)})")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
