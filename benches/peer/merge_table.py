#!/usr/bin/env python3
"""Merge peer / nanovm benchmark JSON lines into one Markdown table.

Usage: merge_table.py FILE [FILE ...]

Accepted lines (one JSON object per line; blank lines ignored):
  {"side":"peer","workload":"guard4","steps_per_run":4,"steps_per_sec":...,"runs_per_sec":...}
  {"side":"nanovm","mode":"memory"|"sqlite","workload":"guard4","steps_per_run":4,
   "steps_per_sec":...,"runs_per_sec":...[,"concurrency":K][,"commits_per_run":C]}
  (memory lines may carry "limit_us_per_run" and "ratio_to_limit": the hash-only cost of a
  run's events and the run's time over it, printed in a table of their own;
  commits_per_run: the SQLite store's own count of commits over the timed runs; nanovm's
  cell of the systems table lists it per workload, for one run at a time)
Anything else (non-JSON, unknown side/mode, missing or non-positive
steps_per_sec, a concurrency that is not a positive integer) is skipped with a
warning on stderr; a later line for the same (side, mode, concurrency,
workload) replaces an earlier one (also warned).

Output: a Markdown table on stdout
  workload | peer steps/s | nanovm mem steps/s | ratio mem/peer | nanovm sqlite steps/s | ratio sqlite/peer
with "—" for anything missing (nanovm lines with concurrency 1 or none: one run
at a time, like the peer), followed by the per-step cost ratio
linear1000/linear10 (per-step cost = 1/steps_per_sec) for each side, a second
table for nanovm lines with K > 1 runs in flight, if any, a note for every
workload where the two sides count a different number of steps per run
(steps/s then is not like-for-like; runs/s is), and which of the issue's
targets the numbers meet.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any

DASH = "—"
WORKLOAD_ORDER = ["guard4", "guard4_budgets", "linear10", "linear100", "linear1000", "parallel10", "effects10"]
# column key -> label
SIDES = {"peer": "peer", "memory": "nanovm mem", "sqlite": "nanovm sqlite"}
NANOVM_MODES = ("memory", "sqlite")
MODE_LABELS = {"memory": "mem", "sqlite": "sqlite"}
# The durable engines a user would pick instead (benches/peer/durable_peers.py): key -> label.
DURABLE_PEERS = {
    "langgraph_memory": "LangGraph no checkpointer",
    "dbos_sqlite": "DBOS SQLite",
    "langgraph_sqlite": "LangGraph SqliteSaver",
}
DURABLE_SIDES = {"dbos": ("sqlite",), "langgraph": ("sqlite", "memory")}
SYSTEM_NAMES = {"dbos": "DBOS", "langgraph": "LangGraph"}
# nanovm's SqliteStore configures every database so (docs/runtime.md, "Stores").
NANOVM_SQLITE = {"journal_mode": "wal", "synchronous": "FULL"}

# The targets (ratios measured in one run).
TARGET_MEM_RATIO = 100.0  # nanovm mem steps/s >= 100x the peer's, every workload
TARGET_FLAT = 1.2  # nanovm mem per-step cost linear1000/linear10 <= 1.2x
TARGET_SQLITE_RATIO = 1.0  # nanovm sqlite steps/s > the peer's (in memory), every workload
TARGET_DURABLE_RATIO = 20.0  # nanovm sqlite >= 20x the best durable peer, on guard4 and effects10
TARGET_DURABLE_WORKLOADS = ("guard4", "effects10")


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def record_key(rec: Any) -> str | None:
    """Column key ("peer" / "memory" / "sqlite") of a record, or None if not a valid record."""
    if not isinstance(rec, dict):
        return None
    if rec.get("side") == "disk":
        return "disk" if _positive_number(rec.get("fsync_us_median")) else None
    if not isinstance(rec.get("workload"), str) or not rec["workload"]:
        return None
    if not _positive_number(rec.get("steps_per_sec")):
        return None
    side = rec.get("side")
    if side == "peer":
        return "peer"
    if side in DURABLE_SIDES and rec.get("mode") in DURABLE_SIDES[side]:
        return f"{side}_{rec['mode']}"
    if side == "nanovm" and rec.get("mode") in NANOVM_MODES:
        c = rec.get("concurrency", 1)
        if c is None or (isinstance(c, int) and not isinstance(c, bool) and c == 1):
            return rec["mode"]
        if isinstance(c, int) and not isinstance(c, bool) and c > 1:
            return f"{rec['mode']}_x{c}"
    return None


def label(key: str) -> str:
    """Column label of a key: "nanovm mem", or "nanovm sqlite ×64" for "sqlite_x64"."""
    if key in SIDES:
        return SIDES[key]
    if key in DURABLE_PEERS:
        return DURABLE_PEERS[key]
    mode, _, c = key.partition("_x")
    return f"nanovm {MODE_LABELS.get(mode, mode)} ×{c}"


def concurrent_keys(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The keys of nanovm columns with more than one run in flight, ordered by mode and K."""
    keys = {k for row in table.values() for k in row if k not in SIDES and k not in DURABLE_PEERS}
    return sorted(keys, key=lambda k: (k.partition("_x")[0], int(k.partition("_x")[2])))


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
        if key is None or key == "disk":
            continue
        row = table.setdefault(rec["workload"], {})
        if key in row:
            warn(f"duplicate {label(key)} result for {rec['workload']}; using the later one")
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


def _best_durable(row: dict[str, dict[str, Any]]) -> float | None:
    rates = [r for r in (_sps(row, "dbos_sqlite"), _sps(row, "langgraph_sqlite")) if r is not None]
    return max(rates) if rates else None


def render_durable(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The durable peers next to nanovm: in memory, on SQLite one run at a time, and K in flight."""
    if not any(k in row for row in table.values() for k in DURABLE_PEERS):
        return []
    extra = [k for k in concurrent_keys(table) if k.startswith("sqlite_x")]
    header = (
        "| workload | LangGraph no checkpointer steps/s | nanovm mem steps/s | ratio mem/LangGraph mem "
        "| DBOS SQLite steps/s | LangGraph SqliteSaver steps/s | nanovm sqlite steps/s "
        "| ratio sqlite/DBOS | ratio sqlite/LangGraph |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for k in extra:
        header += f" {label(k)} steps/s | ratio {label(k).removeprefix('nanovm ')}/best durable peer |"
        rule += "---:|---:|"
    lines = [
        "",
        "Durable peers, one run at a time (every step of theirs checkpointed before the next; "
        "nanovm journals effects before and after the call and the rest at the end):",
        "",
        header,
        rule,
    ]
    for wl in ordered_workloads(table):
        row = table[wl]
        if not any(k in row for k in DURABLE_PEERS):
            continue
        lgm, mem = _sps(row, "langgraph_memory"), _sps(row, "memory")
        dbos, lgs, sql = _sps(row, "dbos_sqlite"), _sps(row, "langgraph_sqlite"), _sps(row, "sqlite")
        cells = [
            fmt_rate(lgm), fmt_rate(mem), fmt_ratio(_ratio(mem, lgm)),
            fmt_rate(dbos), fmt_rate(lgs), fmt_rate(sql),
            fmt_ratio(_ratio(sql, dbos)), fmt_ratio(_ratio(sql, lgs)),
        ]
        for k in extra:
            cells += [fmt_rate(_sps(row, k)), fmt_ratio(_ratio(_sps(row, k), _best_durable(row)))]
        lines.append(f"| {wl} | " + " | ".join(cells) + " |")
    return lines


def render_limit(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """nanovm in memory against its limit: the hash-only cost of a run's events."""
    rows = []
    for wl in ordered_workloads(table):
        rec = table[wl].get("memory") or {}
        lim, ratio, rps = rec.get("limit_us_per_run"), rec.get("ratio_to_limit"), rec.get("runs_per_sec")
        if _positive_number(lim) and _positive_number(ratio) and _positive_number(rps):
            rows.append(f"| {wl} | {1e6 / rps:,.2f} | {lim:,.2f} | {fmt_ratio(ratio)} |")
    if not rows:
        return []
    return [
        "",
        "nanovm in memory against the limit (the hash-only cost of one run's events: canonical "
        "encoding and blake3 chaining of its trace entries, nothing else; 1.00× would be a run "
        "that costs only its hash chain):",
        "",
        "| workload | nanovm mem µs/run | limit µs/run (hash only) | ratio to the limit |",
        "|---|---:|---:|---:|",
        *rows,
    ]


def render_systems(table: dict[str, dict[str, dict[str, Any]]], disks: list[dict[str, Any]]) -> list[str]:
    """Each system's version and SQLite settings, and the disk's fsync latency."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    commits: dict[tuple[str, str], list[str]] = {}
    for wl in ordered_workloads(table):
        row = table[wl]
        for key in DURABLE_PEERS:
            if key in row:
                sm = tuple(key.split("_", 1))
                seen.setdefault(sm, row[key])
                c = row[key].get("commits_per_run")
                if _positive_number(c):
                    commits.setdefault(sm, []).append(f"{wl} {c:g}")
    nanovm_commits = [
        f"{wl} {table[wl]['sqlite']['commits_per_run']:.3g}"
        for wl in ordered_workloads(table)
        if "sqlite" in table[wl] and _positive_number(table[wl]["sqlite"].get("commits_per_run"))
    ]
    if not seen and not disks:
        return []
    lines = ["", "| system | mode | version | SQLite journal mode | synchronous | SQLite commits per run | durability |",
             "|---|---|---|---|---|---|---|"]
    for (side, mode), rec in sorted(seen.items()):
        s = rec.get("sqlite") or {}
        lines.append(
            f"| {SYSTEM_NAMES[side]} | {mode} | {rec.get('version', DASH)} | {s.get('journal_mode', DASH)} "
            f"| {s.get('synchronous', DASH)} | {', '.join(commits.get((side, mode), [])) or DASH} "
            f"| {rec.get('durability', DASH)} |"
        )
    lines.append(
        f"| nanovm | sqlite | this revision | {NANOVM_SQLITE['journal_mode']} | {NANOVM_SQLITE['synchronous']} "
        f"| {', '.join(nanovm_commits) or DASH} | each effect's intent before the call, with everything since; "
        "its result before the run's next external act, with the next write; the end with the lease released "
        "(SqliteStore; counted by the store over the timed runs) |"
    )
    for d in disks:
        lines.append("")
        lines.append(
            f"Disk fsync latency in {d.get('dir', '?')}{' ' + d['when'] if d.get('when') else ''} "
            f"({d.get('fsyncs', '?')} × write 4 KiB + fsync): "
            f"median {d['fsync_us_median']:,.0f} µs, p90 {d.get('fsync_us_p90', 0):,.0f} µs, "
            f"max {d.get('fsync_us_max', 0):,.0f} µs."
        )
    return lines


def render(table: dict[str, dict[str, dict[str, Any]]], disks: list[dict[str, Any]] | None = None) -> str:
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
    for wl in ordered_workloads(table):
        row = table[wl]
        if "peer" in row:
            peer_spr = row["peer"].get("steps_per_run")
            for key in [k for k in row if k != "peer"]:
                other = row[key]
                spr = other.get("steps_per_run")
                if peer_spr is not None and spr is not None and spr != peer_spr:
                    rr = _ratio(other.get("runs_per_sec"), row["peer"].get("runs_per_sec"))
                    notes.append(
                        f"- {wl}: steps_per_run differs (peer {peer_spr}, {label(key)} {spr}); "
                        f"steps/s is not like-for-like, runs/s ratio {label(key)}/peer = {fmt_ratio(rr)}"
                    )

    lines.append("")
    parts = [f"{SIDES[k]} {fmt_ratio(per_step_cost_ratio(table, k))}" for k in SIDES]
    lines.append(
        "Per-step cost ratio linear1000/linear10 (per-step cost = 1/steps_per_sec; 1.00× = flat): "
        + ", ".join(parts)
    )

    extra = concurrent_keys(table)
    if extra:
        lines.append("")
        lines.append(
            "Several nanovm runs in flight at once (durable stores share transactions and fsyncs "
            "between them: group commit across runs); the peer column is still one run at a time:"
        )
        lines.append("")
        header = "| workload | peer steps/s |"
        rule = "|---|---:|"
        for k in extra:
            header += f" {label(k)} steps/s | ratio {label(k).removeprefix('nanovm ')}/peer |"
            rule += "---:|---:|"
        lines.append(header)
        lines.append(rule)
        for wl in ordered_workloads(table):
            row = table[wl]
            if not any(k in row for k in extra):
                continue
            peer = _sps(row, "peer")
            cells = [f"{fmt_rate(_sps(row, k))} | {fmt_ratio(_ratio(_sps(row, k), peer))}" for k in extra]
            lines.append(f"| {wl} | {fmt_rate(peer)} | " + " | ".join(cells) + " |")

    lines.extend(render_limit(table))
    lines.extend(render_durable(table))
    lines.extend(render_systems(table, disks or []))

    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(notes)

    verdicts = targets(table)
    if verdicts:
        lines.append("")
        lines.append("Targets:")
        lines.extend(verdicts)
    return "\n".join(lines) + "\n"


def _compare_all(table, key: str, minimum: float, strict: bool) -> tuple[list[str], list[str]] | None:
    """Workloads whose key/peer steps/s ratio meets / misses `minimum` (None: no pairs)."""
    met, missed = [], []
    for wl in ordered_workloads(table):
        r = _ratio(_sps(table[wl], key), _sps(table[wl], "peer"))
        if r is None:
            continue
        ok = r > minimum if strict else r >= minimum
        (met if ok else missed).append(f"{wl} {fmt_ratio(r)}")
    return (met, missed) if met or missed else None


def targets(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per target of the issue that the table has numbers for: met or missed, and where."""
    out = []

    def verdict(name: str, result: tuple[list[str], list[str]] | None) -> None:
        if result is None:
            return
        met, missed = result
        if missed:
            out.append(f"- {name}: MISSED on {len(missed)} of {len(met) + len(missed)} ({', '.join(missed)})")
        else:
            out.append(f"- {name}: met on all {len(met)} ({', '.join(met)})")

    verdict(f"nanovm mem ≥ {TARGET_MEM_RATIO:.0f}× peer steps/s", _compare_all(table, "memory", TARGET_MEM_RATIO, False))
    flat = per_step_cost_ratio(table, "memory")
    if flat is not None:
        state = "met" if flat <= TARGET_FLAT else "MISSED"
        out.append(f"- nanovm mem per-step cost linear1000/linear10 ≤ {TARGET_FLAT}×: {state} ({fmt_ratio(flat)})")
    verdict("nanovm sqlite > peer (in memory) steps/s", _compare_all(table, "sqlite", TARGET_SQLITE_RATIO, True))
    met, missed = [], []
    for wl in TARGET_DURABLE_WORKLOADS:
        row = table.get(wl, {})
        r = _ratio(_sps(row, "sqlite"), _best_durable(row))
        if r is not None:
            (met if r >= TARGET_DURABLE_RATIO else missed).append(f"{wl} {fmt_ratio(r)}")
    verdict(
        f"nanovm sqlite ≥ {TARGET_DURABLE_RATIO:.0f}× the best durable peer (SQLite) steps/s",
        (met, missed) if met or missed else None,
    )
    return out


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
    disks = [r for r in records if r["_key"] == "disk"]
    sys.stdout.write(render(index_records(records), disks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
