"""The phase DAG, the artifact cache, the Tune/Optuna sweep driver, cluster connection, resume."""

from .sweep import SweepError, SweepInterrupted, SweepOptions, options_from_stored, run_sweep

__all__ = ["SweepError", "SweepInterrupted", "SweepOptions", "options_from_stored", "run_sweep"]
