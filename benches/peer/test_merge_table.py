"""Unit tests for merge_table.py.  Run: python3 -m unittest  (from this directory)
or: python3 -m unittest discover -s benches/peer -p 'test_*.py'  (from the repo root)."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import merge_table as mt  # noqa: E402


def peer(wl, sps, spr=4, rps=None):
    return {"side": "peer", "workload": wl, "steps_per_run": spr, "steps_per_sec": sps,
            "runs_per_sec": rps if rps is not None else sps / spr, "samples": [sps], "n_per_sample": 10}


def nano(mode, wl, sps, spr=4, rps=None, concurrency=None):
    rec = {"side": "nanovm", "mode": mode, "workload": wl, "steps_per_run": spr, "steps_per_sec": sps,
           "runs_per_sec": rps if rps is not None else sps / spr}
    if concurrency is not None:
        rec["concurrency"] = concurrency
    return rec


def lines(*recs):
    return [json.dumps(r) + "\n" for r in recs]


def quiet_table(*recs):
    warnings = []
    records = mt.parse_lines(lines(*recs), warn=warnings.append)
    return mt.index_records(records, warn=warnings.append), warnings


def row_of(out, wl):
    for line in out.splitlines():
        if line.startswith(f"| {wl} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    return None


class ParseTests(unittest.TestCase):
    def test_keys(self):
        self.assertEqual(mt.record_key(peer("guard4", 10.0)), "peer")
        self.assertEqual(mt.record_key(nano("memory", "guard4", 10.0)), "memory")
        self.assertEqual(mt.record_key(nano("sqlite", "guard4", 10.0)), "sqlite")

    def test_invalid_records_are_skipped_with_warning(self):
        bad = [
            "not json\n",
            json.dumps({"side": "nanovm", "mode": "disk", "workload": "g", "steps_per_sec": 1}) + "\n",
            json.dumps({"side": "other", "workload": "g", "steps_per_sec": 1}) + "\n",
            json.dumps({"side": "peer", "workload": "g", "steps_per_sec": 0}) + "\n",
            json.dumps({"side": "peer", "workload": "g", "steps_per_sec": "fast"}) + "\n",
            json.dumps({"side": "peer", "workload": "g", "steps_per_sec": True}) + "\n",
            json.dumps({"side": "peer", "steps_per_sec": 5}) + "\n",
            json.dumps([1, 2]) + "\n",
            "\n",
            "   \n",
        ]
        warnings = []
        recs = mt.parse_lines(bad + lines(peer("g", 5.0)), warn=warnings.append)
        self.assertEqual(len(recs), 1)
        self.assertEqual(recs[0]["_key"], "peer")
        self.assertEqual(len(warnings), 8)

    def test_nan_and_inf_rejected(self):
        warnings = []
        recs = mt.parse_lines(['{"side":"peer","workload":"g","steps_per_sec":NaN}',
                               '{"side":"peer","workload":"g","steps_per_sec":Infinity}'],
                              warn=warnings.append)
        self.assertEqual(recs, [])
        self.assertEqual(len(warnings), 2)

    def test_duplicate_last_wins(self):
        table, warnings = quiet_table(peer("guard4", 100.0), peer("guard4", 200.0))
        self.assertEqual(table["guard4"]["peer"]["steps_per_sec"], 200.0)
        self.assertEqual(len(warnings), 1)


class FormatTests(unittest.TestCase):
    def test_fmt(self):
        self.assertEqual(mt.fmt_rate(None), "—")
        self.assertEqual(mt.fmt_rate(1234567.4), "1,234,567")
        self.assertEqual(mt.fmt_ratio(None), "—")
        self.assertEqual(mt.fmt_ratio(2.5), "2.50×")
        self.assertEqual(mt.fmt_ratio(12.34), "12.3×")
        self.assertEqual(mt.fmt_ratio(1234.0), "1,234×")


class RenderTests(unittest.TestCase):
    def test_full_row_and_ratios(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("memory", "guard4", 50000.0),
                               nano("sqlite", "guard4", 2500.0))
        out = mt.render(table)
        self.assertIn("| workload | peer steps/s | nanovm mem steps/s | ratio mem/peer "
                      "| nanovm sqlite steps/s | ratio sqlite/peer |", out)
        self.assertEqual(row_of(out, "guard4"), ["guard4", "1,000", "50,000", "50.0×", "2,500", "2.50×"])

    def test_missing_cells_show_dash(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("memory", "linear10", 10.0, spr=10))
        out = mt.render(table)
        self.assertEqual(row_of(out, "guard4"), ["guard4", "1,000", "—", "—", "—", "—"])
        self.assertEqual(row_of(out, "linear10"), ["linear10", "—", "10", "—", "—", "—"])

    def test_peer_only(self):
        table, _ = quiet_table(peer("linear10", 30000.0, spr=10), peer("linear1000", 3000.0, spr=1000))
        out = mt.render(table)
        self.assertEqual(row_of(out, "linear10")[2:], ["—", "—", "—", "—"])
        self.assertIn("peer 10.0×, nanovm mem —, nanovm sqlite —", out)

    def test_row_order(self):
        table, _ = quiet_table(peer("zeta", 1.0), peer("parallel10", 1.0, spr=12), peer("linear10", 1.0, spr=10),
                               peer("guard4", 1.0), peer("alpha", 1.0))
        out = mt.render(table)
        order = [l.split("|")[1].strip() for l in out.splitlines() if l.startswith("| ") and "workload" not in l]
        self.assertEqual(order, ["guard4", "linear10", "parallel10", "alpha", "zeta"])

    def test_per_step_cost_ratio(self):
        table, _ = quiet_table(
            peer("linear10", 30000.0, spr=10), peer("linear1000", 2500.0, spr=1000),
            nano("memory", "linear10", 1_000_000.0, spr=10), nano("memory", "linear1000", 800_000.0, spr=1000),
        )
        self.assertAlmostEqual(mt.per_step_cost_ratio(table, "peer"), 12.0)
        self.assertAlmostEqual(mt.per_step_cost_ratio(table, "memory"), 1.25)
        self.assertIsNone(mt.per_step_cost_ratio(table, "sqlite"))
        out = mt.render(table)
        self.assertIn("Per-step cost ratio linear1000/linear10", out)
        self.assertIn("peer 12.0×, nanovm mem 1.25×, nanovm sqlite —", out)

    def test_steps_per_run_mismatch_noted(self):
        table, _ = quiet_table(peer("parallel10", 12000.0, spr=12, rps=1000.0),
                               nano("memory", "parallel10", 110000.0, spr=11, rps=10000.0))
        out = mt.render(table)
        self.assertIn("parallel10: steps_per_run differs (peer 12, nanovm mem 11)", out)
        self.assertIn("runs/s ratio nanovm mem/peer = 10.0×", out)

    def test_no_notes_when_counts_match(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("memory", "guard4", 2000.0))
        self.assertNotIn("Notes:", mt.render(table))


class ConcurrencyTests(unittest.TestCase):
    def test_keys(self):
        self.assertEqual(mt.record_key(nano("sqlite", "guard4", 1.0, concurrency=1)), "sqlite")
        self.assertEqual(mt.record_key(nano("sqlite", "guard4", 1.0, concurrency=64)), "sqlite_x64")
        self.assertEqual(mt.label("sqlite_x64"), "nanovm sqlite ×64")
        self.assertEqual(mt.label("memory"), "nanovm mem")
        for bad in (0, -3, 2.5, "64", True):
            self.assertIsNone(mt.record_key(nano("sqlite", "guard4", 1.0, concurrency=bad)), bad)

    def test_concurrent_lines_do_not_replace_sequential_ones(self):
        table, warnings = quiet_table(peer("guard4", 1000.0), nano("sqlite", "guard4", 500.0),
                                      nano("sqlite", "guard4", 4000.0, concurrency=64))
        self.assertEqual(warnings, [])
        out = mt.render(table)
        self.assertEqual(row_of(out, "guard4"), ["guard4", "1,000", "—", "—", "500", "0.50×"])
        self.assertIn("| workload | peer steps/s | nanovm sqlite ×64 steps/s | ratio sqlite ×64/peer |", out)
        self.assertIn("| guard4 | 1,000 | 4,000 | 4.00× |", out)

    def test_no_second_table_without_concurrent_lines(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("sqlite", "guard4", 500.0))
        self.assertNotIn("in flight", mt.render(table))


class TargetTests(unittest.TestCase):
    def test_met_and_missed(self):
        table, _ = quiet_table(
            peer("guard4", 1000.0), nano("memory", "guard4", 50_000.0), nano("sqlite", "guard4", 900.0),
            peer("linear10", 1000.0, spr=10), nano("memory", "linear10", 200_000.0, spr=10),
            nano("sqlite", "linear10", 2000.0, spr=10),
            peer("linear1000", 100.0, spr=1000), nano("memory", "linear1000", 180_000.0, spr=1000),
        )
        out = mt.render(table)
        self.assertIn("- nanovm mem ≥ 100× peer steps/s: MISSED on 1 of 3 (guard4 50.0×)", out)
        self.assertIn("- nanovm mem per-step cost linear1000/linear10 ≤ 1.2×: met (1.11×)", out)
        self.assertIn("- nanovm sqlite > peer (in memory) steps/s: MISSED on 1 of 2 (guard4 0.90×)", out)

    def test_all_met(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("memory", "guard4", 200_000.0))
        self.assertIn("- nanovm mem ≥ 100× peer steps/s: met on all 1 (guard4 200×)", mt.render(table))

    def test_no_targets_without_pairs(self):
        table, _ = quiet_table(peer("guard4", 1000.0))
        self.assertNotIn("Targets:", mt.render(table))


class MainTests(unittest.TestCase):
    def _write(self, d, name, content):
        path = os.path.join(d, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        return path

    def test_main_merges_files(self):
        with tempfile.TemporaryDirectory() as d:
            p = self._write(d, "peer.jsonl", "".join(lines(peer("guard4", 1000.0))))
            n = self._write(d, "nanovm.jsonl", "".join(lines(nano("memory", "guard4", 3000.0))))
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                rc = mt.main([p, n])
        self.assertEqual(rc, 0)
        self.assertEqual(row_of(out.getvalue(), "guard4"), ["guard4", "1,000", "3,000", "3.00×", "—", "—"])

    def test_main_missing_file(self):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = mt.main(["/nonexistent/definitely/not/here.jsonl"])
        self.assertEqual(rc, 2)
        self.assertIn("cannot read", err.getvalue())

    def test_main_no_records(self):
        with tempfile.TemporaryDirectory() as d:
            p = self._write(d, "empty.jsonl", "\n")
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                rc = mt.main([p])
        self.assertEqual(rc, 1)


def durable(side, mode, wl, sps, spr=4, jm="wal", sync="FULL"):
    rec = {"side": side, "mode": mode, "workload": wl, "steps_per_run": spr, "steps_per_sec": sps,
           "runs_per_sec": sps / spr, "version": "1.0"}
    if mode == "sqlite":
        rec["sqlite"] = {"journal_mode": jm, "synchronous": sync}
    return rec


def disk(median=120.0, p90=900.0):
    return {"side": "disk", "dir": "/tmp", "fsyncs": 200, "fsync_us_median": median, "fsync_us_p90": p90,
            "fsync_us_max": 2000.0}


def durable_row(out, wl):
    """The row of `wl` in the durable-peers table (the section after its heading)."""
    _, _, tail = out.partition("Durable peers")
    return row_of(tail, wl)


class DurablePeerTests(unittest.TestCase):
    def test_keys(self):
        self.assertEqual(mt.record_key(durable("dbos", "sqlite", "g", 1.0)), "dbos_sqlite")
        self.assertEqual(mt.record_key(durable("langgraph", "sqlite", "g", 1.0)), "langgraph_sqlite")
        self.assertEqual(mt.record_key(durable("langgraph", "memory", "g", 1.0)), "langgraph_memory")
        self.assertIsNone(mt.record_key(durable("dbos", "memory", "g", 1.0)))
        self.assertEqual(mt.record_key(disk()), "disk")
        self.assertIsNone(mt.record_key({"side": "disk", "fsync_us_median": 0}))

    def test_durable_table_has_every_ratio(self):
        table, _ = quiet_table(
            peer("guard4", 30000.0),
            nano("memory", "guard4", 1_000_000.0),
            nano("sqlite", "guard4", 4000.0),
            nano("sqlite", "guard4", 40000.0, concurrency=64),
            durable("dbos", "sqlite", "guard4", 200.0, jm="delete"),
            durable("langgraph", "sqlite", "guard4", 500.0),
            durable("langgraph", "memory", "guard4", 5000.0),
        )
        out = mt.render(table)
        # The main table is unchanged by the durable peers.
        self.assertEqual(row_of(out, "guard4"), ["guard4", "30,000", "1,000,000", "33.3×", "4,000", "0.13×"])
        self.assertEqual(
            durable_row(out, "guard4"),
            ["guard4", "5,000", "1,000,000", "200×", "200", "500", "4,000", "20.0×", "8.00×",
             "40,000", "80.0×"],
        )
        # None of the durable peers is mistaken for a concurrent nanovm column.
        self.assertEqual(mt.concurrent_keys(table), ["sqlite_x64"])

    def test_durable_table_absent_without_durable_peers(self):
        table, _ = quiet_table(peer("guard4", 1000.0), nano("sqlite", "guard4", 2000.0))
        self.assertNotIn("Durable peers", mt.render(table))

    def test_systems_and_fsync_latency_are_printed(self):
        table, _ = quiet_table(
            durable("dbos", "sqlite", "guard4", 200.0, jm="delete"),
            durable("langgraph", "sqlite", "guard4", 500.0),
            durable("langgraph", "memory", "guard4", 5000.0),
        )
        out = mt.render(table, disks=[disk(120.0, 900.0)])
        self.assertIn("| DBOS | sqlite | 1.0 | delete | FULL | — |", out)
        self.assertIn("| LangGraph | sqlite | 1.0 | wal | FULL | — |", out)
        self.assertIn("| LangGraph | memory | 1.0 | — | — | — |", out)
        self.assertIn("| nanovm | sqlite |", out)
        self.assertIn("fsync latency", out)
        self.assertIn("median 120 µs, p90 900 µs", out)
        two = mt.render(table, disks=[dict(disk(120.0), when="at start"), dict(disk(4000.0), when="at end")])
        self.assertIn("in /tmp at start (200", two)
        self.assertIn("in /tmp at end (200 × write 4 KiB + fsync): median 4,000 µs", two)

    def test_commits_per_run_are_listed_per_system(self):
        a = dict(durable("langgraph", "sqlite", "guard4", 500.0), commits_per_run=11)
        b = dict(durable("langgraph", "sqlite", "effects10", 900.0, spr=11), commits_per_run=25)
        table, _ = quiet_table(a, b, durable("dbos", "sqlite", "guard4", 400.0, jm="delete"))
        out = mt.render(table)
        self.assertIn("| LangGraph | sqlite | 1.0 | wal | FULL | guard4 11, effects10 25 |", out)
        self.assertIn("| DBOS | sqlite | 1.0 | delete | FULL | — |", out)

    def test_nanovm_commits_per_run_are_measured_not_from_the_protocol(self):
        g = dict(nano("sqlite", "guard4", 4000.0), commits_per_run=2.0)
        e = dict(nano("sqlite", "effects10", 2000.0, spr=11), commits_per_run=11.0)
        many = dict(nano("sqlite", "guard4", 30000.0, concurrency=64), commits_per_run=0.21)
        table, _ = quiet_table(g, e, many, durable("dbos", "sqlite", "guard4", 400.0, jm="delete"))
        out = mt.render(table)
        self.assertIn("| nanovm | sqlite | this revision | wal | FULL | guard4 2, effects10 11 |", out)
        self.assertNotIn("not counted", out)
        # Without a measured count the cell says so, rather than quoting the protocol.
        table, _ = quiet_table(nano("sqlite", "guard4", 4000.0), durable("dbos", "sqlite", "guard4", 400.0))
        self.assertIn("| nanovm | sqlite | this revision | wal | FULL | — |", mt.render(table))

    def test_limit_ratios_are_printed_for_nanovm_in_memory(self):
        g = dict(nano("memory", "guard4", 1_000_000.0), limit_us_per_run=1.25, ratio_to_limit=3.2)
        table, _ = quiet_table(g, nano("memory", "linear10", 1_000_000.0, spr=10), peer("guard4", 30000.0))
        out = mt.render(table)
        self.assertIn("| workload | nanovm mem µs/run | limit µs/run (hash only) | ratio to the limit |", out)
        self.assertIn("| guard4 | 4.00 | 1.25 | 3.20× |", out)
        self.assertIsNone(row_of(out.split("ratio to the limit |")[1], "linear10"))

    def test_durable_target_verdict(self):
        table, _ = quiet_table(
            nano("sqlite", "guard4", 4000.0),
            durable("dbos", "sqlite", "guard4", 100.0),
            durable("langgraph", "sqlite", "guard4", 500.0),
            nano("sqlite", "effects10", 1000.0, spr=10),
            durable("dbos", "sqlite", "effects10", 40.0, spr=10),
        )
        out = mt.render(table)
        self.assertIn("nanovm sqlite ≥ 20× the best durable peer (SQLite) steps/s: MISSED on 1 of 2 "
                      "(guard4 8.00×)", out)

    def test_main_reads_disk_and_durable_lines(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "peers.jsonl")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("".join(lines(disk(), durable("dbos", "sqlite", "effects10", 50.0, spr=10),
                                       nano("sqlite", "effects10", 2000.0, spr=10))))
            out = io.StringIO()
            with redirect_stdout(out), redirect_stderr(io.StringIO()):
                rc = mt.main([path])
        self.assertEqual(rc, 0)
        self.assertEqual(durable_row(out.getvalue(), "effects10")[4], "50")
        self.assertIn("fsync latency", out.getvalue())


if __name__ == "__main__":
    unittest.main()
