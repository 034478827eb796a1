"""Sweep results: the Parquet store and its schema, the Pareto front and hypervolume, reports.

Never imports torch (nor Ray): reading results must work wherever pyarrow does. It knows no
defense or attack by name: what a sweep's defenses and knobs are comes from its record
(`undistill.record.SweepRecord.space`).
"""

from undistill.storage import Storage

from .leaderboard import BUDGETS, Standing, leaderboard
from .pareto import (
    attack_names,
    by_attack,
    dominates,
    front_indices,
    hypervolume,
    is_attack,
    lacking_attack,
    pareto_front,
    range_edges,
)
from .report import front_columns, front_hypervolume, reference_point, render, with_knob_columns
from .rows import trial_rows
from .schema import STATUSES, STUDENTS, TRIALS
from .store import ResultStore, SweepRows

__all__ = [
    "BUDGETS", "STATUSES", "STUDENTS", "TRIALS", "ResultStore", "Standing", "Storage", "SweepRows", "attack_names",
    "by_attack", "dominates", "leaderboard",
    "front_columns", "front_hypervolume", "front_indices", "hypervolume", "is_attack", "lacking_attack", "pareto_front",
    "range_edges", "reference_point", "render", "trial_rows", "with_knob_columns",
]
