"""Where a sweep's work ran and how busy each node was, from its rows alone.

A phase is busy from its start to its end on one node, holding `cpus` and `gpus` shares. A node's
utilisation is the share of what it offered (GPUs when the sweep asked for GPUs, else cores) that
its phases kept busy while the sweep was running (the union of all phases' spans); at an instant
when phases hold more than the node has (more phase processes than cores), it counts as full.
A trial's own process also holds its bundle while its students train; that wait is not counted
as busy, so the figure says how well trials are packed, not how much was reserved.
"""

from __future__ import annotations

from datetime import datetime


def _seconds(t) -> float | None:
    return t.timestamp() if isinstance(t, datetime) else t


def _span(union: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(union):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _busy_integral(phases: list[dict], key: str, capacity: float) -> float:
    """∫ min(shares held at t, capacity) dt over the phases' spans."""
    events = sorted([(p["start"], p[key]) for p in phases] + [(p["end"], -p[key]) for p in phases])
    total, load, last = 0.0, 0.0, None
    for t, delta in events:
        if last is not None:
            total += min(load, capacity) * (t - last)
        load, last = load + delta, t
    return total


def phases_by_node(trials: list[dict], students: list[dict], upstream: list[dict]) -> list[dict]:
    """Every phase that trained (not found cached): node, kind, start, end, shares."""
    out = []
    for t in trials:
        # the nasty teacher, trained in the trial's own process (unless an earlier attempt did)
        if t.get("node_id") and t.get("teacher_wall_s") and not t.get("teacher_cached"):
            start = _seconds(t["started_at"])
            out.append({"node_id": t["node_id"], "hostname": t["hostname"], "kind": "teacher",
                        "start": start, "end": start + t["teacher_wall_s"],
                        "cpus": t["cpus"] or 0.0, "gpus": t["gpus"] or 0.0})
    for row, kind in [(s, "student") for s in students] + [(u, "upstream") for u in upstream]:
        if row.get("node_id") and not row.get("cached") and row.get("started_at") is not None:
            out.append({"node_id": row["node_id"], "hostname": row.get("hostname", ""), "kind": kind,
                        "start": _seconds(row["started_at"]), "end": _seconds(row["finished_at"]),
                        "cpus": row.get("cpus") or 0.0, "gpus": row.get("gpus") or 0.0})
    return out


def node_usage(trials: list[dict], students: list[dict], upstream: list[dict],
               cluster_runs: list[dict]) -> tuple[list[dict], float]:
    """Per node: trials, phases trained, busy seconds and utilisation; and the seconds during
    which anything ran."""
    phases = phases_by_node(trials, students, upstream)
    active = _span([(p["start"], p["end"]) for p in phases])
    capacity = {}
    for run in cluster_runs:  # the latest run's figure wins for a node seen more than once
        for node in run.get("nodes", []):
            capacity[node["node_id"]] = node
    on_gpus = any(p["gpus"] for p in phases)
    out = []
    for node_id in sorted({p["node_id"] for p in phases} | {t["node_id"] for t in trials if t.get("node_id")}):
        mine = [p for p in phases if p["node_id"] == node_id]
        node = capacity.get(node_id, {})
        # a local Ray started by the sweep has more CPU slots than cores: count the cores
        offered = node.get("GPU") if on_gpus else node.get("cores", node.get("CPU"))
        used = _busy_integral(mine, "gpus" if on_gpus else "cpus", offered) if offered else 0.0
        host = next((p["hostname"] for p in mine if p["hostname"]), node.get("hostname", ""))
        out.append({
            "node": node_id[:8],
            "hostname": host,
            "trials": sum(t.get("node_id") == node_id for t in trials),
            "phases": len(mine),
            "busy_s": round(sum(p["end"] - p["start"] for p in mine), 1),
            "utilisation": round(used / (offered * active), 3) if offered and active else None,
        })
    return out, active
