"""README's "What the faults print" table, for the tests that make each fault: they check the
message the README promises against what the program printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def fault_messages() -> dict[str, str]:
    """{the row's fault, as written: its message} of the table under "## Crashes and faults"."""
    section = README.read_text().split("\n## Crashes and faults\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| Fault | What it prints", 1)[1]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")][1:]
    return {fault.lstrip("| ").strip(): re.search(r"`([^`]+)`", message).group(1) for fault, message, *_ in rows}


def fault_message(fault: str) -> str:
    """The message of the row whose fault starts with `fault`."""
    (message,) = [m for f, m in fault_messages().items() if f.startswith(fault)]
    return message
