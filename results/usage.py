"""Where a sweep's work ran and how busy each node was, from its rows alone.

A phase is busy from its start to its end on one node, holding `cpus` and `gpus` shares. A node's
utilisation is the share of what it offered (GPUs when the sweep asked for GPUs, else cores) that
its phases kept busy while the sweep was running (the union of all phases' spans); at an instant
when phases hold more than the node has (more phase processes than cores), it counts as full.
A trial's own process also holds its bundle while its students train; that wait is not counted
as busy, so the figure says how well trials are packed, not how much was reserved.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import NamedTuple


def _seconds(t) -> float | None:
    return t.timestamp() if isinstance(t, datetime) else t


def _span(union: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(union):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _busy_integral(phases: list[Phase], share: int, capacity: float) -> float:
    """∫ min(shares held at t, capacity) dt over the phases' spans (`share`: the field)."""
    events = sorted([(p.start, p[share]) for p in phases] + [(p.end, -p[share]) for p in phases])
    total, load, last = 0.0, 0.0, None
    for t, delta in events:
        if last is not None:
            total += min(load, capacity) * (t - last)
        load, last = load + delta, t
    return total


class Phase(NamedTuple):
    """A phase that trained: where, when, and what it held (a tuple: a sweep has 10^5 of them)."""

    node_id: str
    hostname: str
    start: float
    end: float
    cpus: float
    gpus: float


def phases_by_node(trials: list[dict], students: list[dict], upstream: list[dict]) -> dict[str, list[Phase]]:
    """Every phase that trained (not found cached), by node id."""
    out: dict[str, list[Phase]] = defaultdict(list)
    for t in trials:
        # the nasty teacher, trained in the trial's own process (unless an earlier attempt did)
        if t.get("node_id") and t.get("teacher_wall_s") and not t.get("teacher_cached"):
            start = _seconds(t["started_at"])
            out[t["node_id"]].append(Phase(t["node_id"], t["hostname"], start, start + t["teacher_wall_s"],
                                           t["cpus"] or 0.0, t["gpus"] or 0.0))
    for rows in (students, upstream):
        for row in rows:
            if row.get("node_id") and not row.get("cached") and row.get("started_at") is not None:
                out[row["node_id"]].append(Phase(row["node_id"], row.get("hostname", ""), _seconds(row["started_at"]),
                                                 _seconds(row["finished_at"]), row.get("cpus") or 0.0,
                                                 row.get("gpus") or 0.0))
    return out


def node_usage(trials: list[dict], students: list[dict], upstream: list[dict],
               cluster_runs: list[dict]) -> tuple[list[dict], float]:
    """Per node: trials, phases trained, busy seconds and utilisation; and the seconds during
    which anything ran."""
    by_node = phases_by_node(trials, students, upstream)
    every = [p for phases in by_node.values() for p in phases]
    active = _span([(p.start, p.end) for p in every])
    capacity = {}
    for run in cluster_runs:  # the latest run's figure wins for a node seen more than once
        for node in run.get("nodes", []):
            capacity[node["node_id"]] = node
    on_gpus = any(p.gpus for p in every)
    trials_on = Counter(t["node_id"] for t in trials if t.get("node_id"))
    out = []
    for node_id in sorted(set(by_node) | set(trials_on)):
        mine = by_node.get(node_id, [])
        node = capacity.get(node_id, {})
        # a local Ray started by the sweep has more CPU slots than cores: count the cores
        offered = node.get("GPU") if on_gpus else node.get("cores", node.get("CPU"))
        used = _busy_integral(mine, 5 if on_gpus else 4, offered) if offered else 0.0
        host = next((p.hostname for p in mine if p.hostname), node.get("hostname", ""))
        out.append({
            "node": node_id[:8],
            "hostname": host,
            "trials": trials_on[node_id],
            "phases": len(mine),
            "busy_s": round(sum(p.end - p.start for p in mine), 1),
            "utilisation": round(used / (offered * active), 3) if offered and active else None,
        })
    return out, active
