#!/usr/bin/env python3
"""Merge peer / nanovm benchmark JSON lines into one Markdown table.

Usage: merge_table.py FILE [FILE ...]

Accepted lines (one JSON object per line; blank lines ignored):
  {"side":"peer","workload":"guard4","steps_per_run":4,"steps_per_sec":...,"runs_per_sec":...}
  {"side":"nanovm","mode":"memory"|"sqlite","workload":"guard4","steps_per_run":4,
   "steps_per_sec":...,"runs_per_sec":...}
Anything else (non-JSON, unknown side/mode, missing or non-positive
steps_per_sec) is skipped with a warning on stderr; a later line for the same
(side, mode, workload) replaces an earlier one (also warned).

Output: a Markdown table on stdout
  workload | peer steps/s | nanovm mem steps/s | ratio mem/peer | nanovm sqlite steps/s | ratio sqlite/peer
with "—" for anything missing, followed by the per-step cost ratio
linear1000/linear10 (per-step cost = 1/steps_per_sec) for each side, and a
note for every workload where the two sides count a different number of steps
per run (steps/s then is not like-for-like; runs/s is).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any

DASH = "—"
WORKLOAD_ORDER = ["guard4", "guard4_budgets", "linear10", "linear100", "linear1000", "parallel10"]
# column key -> label
SIDES = {"peer": "peer", "memory": "nanovm mem", "sqlite": "nanovm sqlite"}
NANOVM_MODES = ("memory", "sqlite")


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def record_key(rec: Any) -> str | None:
    """Column key ("peer" / "memory" / "sqlite") of a record, or None if not a valid record."""
    if not isinstance(rec, dict):
        return None
    if not isinstance(rec.get("workload"), str) or not rec["workload"]:
        return None
    if not _positive_number(rec.get("steps_per_sec")):
        return None
    side = rec.get("side")
    if side == "peer":
        return "peer"
    if side == "nanovm" and rec.get("mode") in NANOVM_MODES:
        return rec["mode"]
    return None


def parse_lines(lines: Iterable[str], source: str = "<input>", warn=None) -> list[dict[str, Any]]:
    """Parse JSON lines, returning valid records (each tagged with "_key")."""
    warn = warn or (lambda msg: print(f"merge_table: warning: {msg}", file=sys.stderr))
    out: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            warn(f"{source}:{lineno}: not JSON, skipped: {line[:80]!r}")
            continue
        key = record_key(rec)
        if key is None:
            warn(f"{source}:{lineno}: not a peer/nanovm benchmark record, skipped: {line[:80]!r}")
            continue
        out.append({**rec, "_key": key})
    return out


def index_records(records: Iterable[dict[str, Any]], warn=None) -> dict[str, dict[str, dict[str, Any]]]:
    """workload -> column key -> record (last one wins)."""
    warn = warn or (lambda msg: print(f"merge_table: warning: {msg}", file=sys.stderr))
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        key = rec.get("_key") or record_key(rec)
        if key is None:
            continue
        row = table.setdefault(rec["workload"], {})
        if key in row:
            warn(f"duplicate {SIDES[key]} result for {rec['workload']}; using the later one")
        row[key] = rec
    return table


def fmt_rate(x: float | None) -> str:
    return DASH if x is None else f"{x:,.0f}"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return DASH
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def _sps(row: dict[str, dict[str, Any]], key: str) -> float | None:
    rec = row.get(key)
    return float(rec["steps_per_sec"]) if rec else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def per_step_cost_ratio(table: dict[str, dict[str, dict[str, Any]]], key: str) -> float | None:
    """cost(linear1000)/cost(linear10) with cost = 1/steps_per_sec, i.e. sps(linear10)/sps(linear1000)."""
    small = _sps(table.get("linear10", {}), key)
    big = _sps(table.get("linear1000", {}), key)
    return _ratio(small, big)


def ordered_workloads(table: dict[str, Any]) -> list[str]:
    known = [w for w in WORKLOAD_ORDER if w in table]
    return known + sorted(w for w in table if w not in WORKLOAD_ORDER)


def render(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| workload | peer steps/s | nanovm mem steps/s | ratio mem/peer | nanovm sqlite steps/s | ratio sqlite/peer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for wl in ordered_workloads(table):
        row = table[wl]
        peer, mem, sql = _sps(row, "peer"), _sps(row, "memory"), _sps(row, "sqlite")
        lines.append(
            f"| {wl} | {fmt_rate(peer)} | {fmt_rate(mem)} | {fmt_ratio(_ratio(mem, peer))} "
            f"| {fmt_rate(sql)} | {fmt_ratio(_ratio(sql, peer))} |"
        )
        if "peer" in row:
            peer_spr = row["peer"].get("steps_per_run")
            for key in NANOVM_MODES:
                other = row.get(key)
                if other is None:
                    continue
                spr = other.get("steps_per_run")
                if peer_spr is not None and spr is not None and spr != peer_spr:
                    rr = _ratio(other.get("runs_per_sec"), row["peer"].get("runs_per_sec"))
                    notes.append(
                        f"- {wl}: steps_per_run differs (peer {peer_spr}, {SIDES[key]} {spr}); "
                        f"steps/s is not like-for-like, runs/s ratio {SIDES[key]}/peer = {fmt_ratio(rr)}"
                    )

    lines.append("")
    parts = [f"{SIDES[k]} {fmt_ratio(per_step_cost_ratio(table, k))}" for k in SIDES]
    lines.append(
        "Per-step cost ratio linear1000/linear10 (per-step cost = 1/steps_per_sec; 1.00× = flat): "
        + ", ".join(parts)
    )
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else 2
    records: list[dict[str, Any]] = []
    for path in argv:
        try:
            with open(path, encoding="utf-8") as fh:
                records.extend(parse_lines(fh, source=path))
        except OSError as exc:
            print(f"merge_table: error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    if not records:
        print("merge_table: error: no benchmark records found", file=sys.stderr)
        return 1
    sys.stdout.write(render(index_records(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
