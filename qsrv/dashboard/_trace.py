"""Task events in Chrome's trace format (chrome://tracing, Perfetto, speedscope).

One complete event (``"ph": "X"``) per task run: ``pid`` is the worker's id, ``tid`` the
executor's process id, ``ts``/``dur`` in microseconds (start = end - elapsed, on the
scheduler's clock). Metadata events name each process ("worker 1 (host)") and thread
("executor 4242").
"""

from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["parse_since", "trace_events", "trace_from_update"]


def parse_since(text: str | float | None) -> float:
    """Seconds back from now: ``"60s"``, ``"5m"``, ``"1h"``, ``"90"`` -> 90.0; None -> 0."""
    if text is None:
        return 0.0
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = text.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
        factor = 1.0
        for unit in sorted(units, key=len, reverse=True):
            if raw.endswith(unit):
                raw, factor = raw[: -len(unit)], units[unit]
                break
        try:
            value = float(raw) * factor
        except ValueError:
            raise ValueError(f"--since takes a duration like 60s, 5m or 1h, got {text!r}"
                             ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--since must be a positive duration, got {text!r}")
    return value


def trace_events(events: list[list[Any]], workers: dict[int, str] | None = None
                 ) -> list[dict[str, Any]]:
    """Chrome trace events of monitor task events ``[end, elapsed, task id, function,
    worker id, executor pid, ok]``."""
    names = workers or {}
    out: list[dict[str, Any]] = []
    seen_pids: set[int] = set()
    seen_tids: set[tuple[int, int]] = set()
    for end, elapsed, task_id, name, wid, pid, ok in events:
        if wid not in seen_pids:
            seen_pids.add(wid)
            label = f"worker {wid}" + (f" ({names[wid]})" if wid in names else "")
            out.append({"name": "process_name", "ph": "M", "pid": wid, "tid": 0,
                        "args": {"name": label}})
        if (wid, pid) not in seen_tids:
            seen_tids.add((wid, pid))
            out.append({"name": "thread_name", "ph": "M", "pid": wid, "tid": pid,
                        "args": {"name": f"executor {pid}"}})
        out.append({
            "name": name, "cat": "task" if ok else "task,failed", "ph": "X",
            "ts": round((end - elapsed) * 1e6, 3), "dur": round(elapsed * 1e6, 3),
            "pid": wid, "tid": pid,
            "args": {"task_id": f"{task_id:#x}", "ok": bool(ok), "worker": wid,
                     "executor_pid": pid},
        })
    return out


def trace_from_update(update: dict[str, Any], since_seconds: float = 0.0) -> dict[str, Any]:
    """A whole trace document from one monitor update (events newer than ``since_seconds``
    back from the update's time, all when 0)."""
    events = update.get("events", [])
    if since_seconds > 0:
        cutoff = update.get("now", time.time()) - since_seconds
        events = [e for e in events if e[0] >= cutoff]
    workers = {w["id"]: w["name"] for w in update.get("status", {}).get("workers", [])}
    return {"traceEvents": trace_events(events, workers), "displayTimeUnit": "ms",
            "otherData": {"source": "qsrv", "sampled_out": update.get("totals", {}).get(
                "sampled_out", 0)}}
