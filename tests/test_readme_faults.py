"""Every row of README's "What the faults print" table is checked by a test that makes the fault
(`_readme.fault_message`): a message the program no longer prints, or a row nobody checks,
fails here or there."""

import re
from pathlib import Path

from _readme import fault_messages

TESTS = Path(__file__).resolve().parent


def test_every_fault_message_in_the_readme_is_checked_by_a_test():
    used = set()
    for path in TESTS.rglob("test_*.py"):
        used.update(key for _quote, key in re.findall(r"""fault_message\((["'])(.+?)\1\)""", path.read_text()))
    faults = fault_messages()
    assert len(faults) >= 9
    for fault in faults:
        assert any(fault.startswith(key) for key in used), f"no test checks the README's message for {fault!r}"
    for key in used:
        assert sum(f.startswith(key) for f in faults) == 1, f"{key!r} names no single row of the table"
