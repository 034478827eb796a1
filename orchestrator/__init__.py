"""The phase DAG, the artifact cache, the Tune/Optuna sweep driver, cluster connection, resume.

Public surface: `SweepOptions`, `run_sweep` (its `SweepResult`), `options_from_stored`, and the errors. They load
lazily, so that `orchestrator.layout` (used by `pareto` and `status`) stays free of torch.
"""

__all__ = ["SweepError", "SweepInterrupted", "SweepOptions", "SweepResult", "options_from_stored",
           "run_sweep"]


def __getattr__(name):
    if name in __all__:
        from . import sweep

        return getattr(sweep, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
