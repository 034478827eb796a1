"""Sweep results: the Parquet store and its schema, the Pareto front and hypervolume, reports.

Never imports torch: reading results must work wherever pyarrow does.
"""

from .report import front_hypervolume, reference_point, render
from .pareto import (attack_names, by_attack, is_attack, dominates, front_indices, hypervolume, pareto_front,
                     range_edges)
from .rows import trial_rows
from .schema import STATUSES, STUDENTS, TRIALS
from .storage import Storage
from .store import ResultStore

__all__ = [
    "attack_names",
    "by_attack",
    "is_attack",
    "STATUSES", "STUDENTS", "TRIALS", "ResultStore", "Storage", "dominates", "front_hypervolume",
    "front_indices", "hypervolume", "pareto_front", "range_edges", "reference_point", "render",
    "trial_rows",
]
