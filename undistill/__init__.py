"""The base layer every package of undistill stands on; it imports neither torch nor Ray.

    errors     the exception root (`UndistillError`) and bad input (`ConfigError`)
    files      atomic local writes
    memory     the cyclic garbage collector paused around work on many rows
    storage    a sweep's files on a local folder, NFS or a bucket (`Storage`; pyarrow.fs)
    space      what a defense's knobs are and the range a sweep searches (`Knob`, `DefenseSpace`)
    outcomes   typed results: a candidate, each student × attack's outcome, the trial's
    record     a sweep's stored record, `sweep.json` (`SweepRecord`)

The packages above it: `trainables` (what runs on workers) uses only this layer; `results`
(reading and reporting, never torch) uses this layer; `search_spaces` and `orchestrator` use
everything below them. Nothing here imports any of them.
"""
