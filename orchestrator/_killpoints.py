"""Named moments at which a test can have the driver killed for real (SIGKILL).

Some crashes cannot be timed from outside: between a trial's end and its Parquet write there
is no file to wait for. Setting `UNDISTILL_KILL_AT` to a point's name makes the process kill
itself there, so a test proves that a sweep survives exactly that crash. Unset, it costs a
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "UNDISTILL_KILL_AT"
BEFORE_TRIAL_WRITE = "before-trial-write"  # the trial has ended; its row is not yet written


def kill_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
