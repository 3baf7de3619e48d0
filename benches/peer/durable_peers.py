#!/usr/bin/env python3
"""Durable peers of the nanovm side-by-side benchmark: DBOS and LangGraph (PyPI).

The durable engines a user would pick instead of nanovm, run on the same workloads as
``peer_bench.py`` (llm-nano-vm) and nanovm's ``compare`` binary, one run at a time:

  dbos/sqlite         DBOS (``dbos``), SQLite system database: a ``@DBOS.workflow`` whose every
                      tool / model call is a ``@DBOS.step`` (checkpointed before the next one).
  langgraph/sqlite    LangGraph (``langgraph``) with ``SqliteSaver``
                      (``langgraph-checkpoint-sqlite``), ``durability="sync"``: the checkpoint of
                      every step is written before the next step starts.
  langgraph/memory    the same graph with no checkpointer (nothing durable), for the in-memory row.

Workloads (steps per run as ``peer_bench.py`` counts them):
  guard4     ask (model step) -> gate (the guard) -> apply (effect) -> finish (tool): 4
  linear10   10 tool steps: 10
  linear100  100 tool steps: 100
  effects10  gate (a guard on an input, approved) -> 10 effect steps, every step after the guard
             a durable side effect: 11

Every timed run is checked (the run's own record of the steps it executed, and DBOS's
workflow status); after every sample the mock model's and the tools' call counters must equal
N times the expected counts, and the store must hold every run: DBOS lists N more workflows
with status SUCCESS and the last one's recorded steps; LangGraph's checkpointer returns the last
thread's final state with every step and nothing left to run. A failed check prints
``DURABLE PEER RUN CHECK FAILED: ...`` and exits with status 1.

Output: one JSON line per system and workload on stdout,
  {"side":"dbos","mode":"sqlite","workload":"guard4","steps_per_run":4,"steps_per_sec":...,
   "runs_per_sec":...,"samples":[...],"n_per_sample":N,"version":"3.4.0",
   "sqlite":{"journal_mode":"delete","synchronous":"FULL"},"durability":"...","commits_per_run":C}
(``commits_per_run``: SQLite transactions committed by one more, untimed run; with journal mode
``delete`` each costs several fsyncs, with ``wal`` one.)
Progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from typing import Annotated, Any, Callable, NoReturn, TypedDict

PINNED = {"dbos": "3.4.0", "langgraph": "1.2.24", "langgraph-checkpoint-sqlite": "3.1.2"}
ALL_WORKLOADS = ["guard4", "linear10", "linear100", "effects10"]
ALL_SYSTEMS = ["dbos/sqlite", "langgraph/sqlite", "langgraph/memory"]
TARGET_SAMPLE_S = 0.75
QUICK_TARGET_SAMPLE_S = 0.02
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class BenchFailure(Exception):
    """A durable peer run did not do what the workload requires."""


def die(msg: str, code: int = 1) -> NoReturn:
    print(f"durable_peers: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# --- workloads: the steps of one successful run, shared by both systems --------------------------

# (step id, kind) with kind "model" (the mock model answers), "guard", "tool" or "effect".
def workload_steps(name: str) -> list[tuple[str, str]]:
    if name == "guard4":
        return [("ask", "model"), ("gate", "guard"), ("apply", "effect"), ("finish", "tool")]
    if name in ("linear10", "linear100"):
        return [(f"s{i}", "tool") for i in range(int(name.removeprefix("linear")))]
    if name == "effects10":
        return [("gate", "guard")] + [(f"s{i}", "effect") for i in range(10)]
    raise ValueError(name)


class Mocks:
    """The mock model (answers "yes") and the tools, counting their calls like the other sides."""

    def __init__(self, answer: str = "yes") -> None:
        self.answer = answer
        self.model_calls = 0
        self.tool_calls = 0

    def model(self) -> str:
        self.model_calls += 1
        return self.answer

    def tool(self) -> dict[str, bool]:
        self.tool_calls += 1
        return {"ok": True}


def expected_counts(name: str) -> tuple[int, int]:
    steps = workload_steps(name)
    return (sum(k == "model" for _, k in steps), sum(k in ("tool", "effect") for _, k in steps))


# --- DBOS ------------------------------------------------------------------------------------------


class DbosSystem:
    name = "dbos"
    mode = "sqlite"

    def __init__(self, db_path: str, mocks: Mocks) -> None:
        from dbos import DBOS, SetWorkflowID

        self.DBOS, self.SetWorkflowID = DBOS, SetWorkflowID
        self.mocks = mocks
        self.db_path = db_path
        DBOS(
            config={
                "name": "nanovm-peer-bench",
                "system_database_url": f"sqlite:///{db_path}",
                "log_level": "WARNING",
            }
        )

        @DBOS.step()
        def model_step() -> str:
            return mocks.model()

        @DBOS.step()
        def tool_step() -> dict[str, bool]:
            return mocks.tool()

        self.workflows: dict[str, Callable[[bool], list[str]]] = {}
        for wl in ALL_WORKLOADS:
            steps = workload_steps(wl)

            def body(approved: bool, steps: list[tuple[str, str]] = steps) -> list[str]:
                done: list[str] = []
                answer = None
                for sid, kind in steps:
                    if kind == "model":
                        answer = model_step()
                    elif kind == "guard":
                        # The guard: no effect without a "yes" (or, with no model step, approval).
                        if not (answer == "yes" if answer is not None else approved):
                            return done + [sid]
                    else:
                        tool_step()
                    done.append(sid)
                return done

            body.__name__ = body.__qualname__ = f"wf_{wl}"
            self.workflows[wl] = DBOS.workflow(name=f"wf_{wl}")(body)
        DBOS.launch()
        self.next_id = 0
        self.last_id = ""

    def version(self) -> str:
        return version("dbos")

    def sqlite_settings(self) -> dict[str, str]:
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as c:
            jm = c.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = c.exec_driver_sql("PRAGMA synchronous").scalar()
        return {"journal_mode": str(jm).lower(), "synchronous": SYNC_NAMES.get(int(sync), str(sync))}

    durability = "every step's output is committed to the system database before the next step runs"

    def run(self, wl: str) -> list[str]:
        self.next_id += 1
        self.last_id = f"{wl}-{self.next_id}"
        with self.SetWorkflowID(self.last_id):
            return self.workflows[wl](True)

    def commits_per_run(self, wl: str) -> int:
        """SQLite transactions committed by one run (an untimed run, counted by SQLAlchemy)."""
        import sqlalchemy as sa
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        count = [0]

        def on_commit(conn: Any) -> None:
            count[0] += 1

        sa.event.listen(engine, "commit", on_commit)
        try:
            self.run(wl)
        finally:
            sa.event.remove(engine, "commit", on_commit)
        return count[0]

    def succeeded(self) -> int:
        return len(self.DBOS.list_workflows(status="SUCCESS", load_input=False, load_output=False))

    def check_store(self, wl: str, before: int, n: int) -> None:
        after = self.succeeded()
        if after - before != n:
            raise BenchFailure(f"dbos {wl}: {after - before} more workflows SUCCESS after {n} runs")
        status = self.DBOS.get_workflow_status(self.last_id)
        if status is None or status.status != "SUCCESS":
            raise BenchFailure(f"dbos {wl}: last workflow {self.last_id} status {status and status.status}")
        steps = self.DBOS.list_workflow_steps(self.last_id)
        want = sum(k != "guard" for _, k in workload_steps(wl))
        if len(steps) != want:
            raise BenchFailure(f"dbos {wl}: {len(steps)} recorded steps in the last workflow, expected {want}")

    def close(self) -> None:
        self.DBOS.destroy(destroy_registry=True)


# --- LangGraph -------------------------------------------------------------------------------------


class LgState(TypedDict, total=False):
    approved: bool
    answer: str
    done: Annotated[list[str], operator.add]


def _passes(s: LgState) -> bool:
    """The guard: no effect without a "yes" (or, with no model step, approval)."""
    return s["answer"] == "yes" if "answer" in s else bool(s.get("approved"))


class LangGraphSystem:
    name = "langgraph"

    def __init__(self, db_path: str | None, mocks: Mocks) -> None:
        from langgraph.graph import END, START, StateGraph

        self.mocks = mocks
        self.mode = "sqlite" if db_path else "memory"
        self.saver = None
        self.conn = None
        if db_path:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self.conn = sqlite3.connect(db_path, check_same_thread=False)
            self.saver = SqliteSaver(self.conn)
            self.saver.setup()
        self.graphs = {}
        for wl in ALL_WORKLOADS:
            steps = workload_steps(wl)
            g = StateGraph(LgState)
            for sid, kind in steps:
                g.add_node(sid, self._node(sid, kind))
            g.add_edge(START, steps[0][0])
            for (sid, kind), (nxt, _) in zip(steps, steps[1:]):
                if kind == "guard":
                    g.add_conditional_edges(sid, lambda s, nxt=nxt: nxt if _passes(s) else END)
                else:
                    g.add_edge(sid, nxt)
            g.add_edge(steps[-1][0], END)
            self.graphs[wl] = g.compile(checkpointer=self.saver)
        self.next_id = 0
        self.last_cfg: dict[str, Any] = {}
        self.durability = (
            'durability="sync": each step\'s checkpoint is committed before the next step starts'
            if db_path
            else "none (no checkpointer)"
        )

    def _node(self, sid: str, kind: str) -> Callable[[LgState], LgState]:
        mocks = self.mocks
        if kind == "model":
            return lambda s: {"answer": mocks.model(), "done": [sid]}
        if kind == "guard":
            return lambda s: {"done": [sid]}
        return lambda s: (mocks.tool(), {"done": [sid]})[1]

    def version(self) -> str:
        v = version("langgraph")
        return v + (f", langgraph-checkpoint-sqlite {version('langgraph-checkpoint-sqlite')}" if self.saver else "")

    def sqlite_settings(self) -> dict[str, str] | None:
        if self.conn is None:
            return None
        jm = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.conn.execute("PRAGMA synchronous").fetchone()[0]
        return {"journal_mode": str(jm).lower(), "synchronous": SYNC_NAMES.get(int(sync), str(sync))}

    def run(self, wl: str) -> list[str]:
        self.next_id += 1
        self.last_cfg = {"configurable": {"thread_id": f"{wl}-{self.next_id}"}}
        if self.saver is not None:
            out = self.graphs[wl].invoke({"done": [], "approved": True}, self.last_cfg, durability="sync")
        else:
            out = self.graphs[wl].invoke({"done": [], "approved": True})
        return out["done"]

    def check_store(self, wl: str, before: int, n: int) -> None:
        if self.saver is None:
            return
        state = self.graphs[wl].get_state(self.last_cfg)
        want = [sid for sid, _ in workload_steps(wl)]
        if state.values.get("done") != want or state.next:
            raise BenchFailure(f"langgraph {wl}: stored final state {state.values} next={state.next}")

    def succeeded(self) -> int:
        return 0

    def commits_per_run(self, wl: str) -> int | None:
        """SQLite transactions committed by one run (an untimed run, counted on the connection)."""
        if self.conn is None:
            return None
        count = [0]

        def trace(stmt: str) -> None:
            if stmt.lstrip().upper().startswith("COMMIT"):
                count[0] += 1

        self.conn.set_trace_callback(trace)
        try:
            self.run(wl)
        finally:
            self.conn.set_trace_callback(None)
        return count[0]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# --- harness ---------------------------------------------------------------------------------------


def check_run(system: Any, wl: str, done: list[str], want: list[str], i: int) -> None:
    if done != want:
        raise BenchFailure(f"{system.name}/{system.mode} {wl}: run {i}: executed {done}, expected {want}")


def timed(system: Any, wl: str, n: int) -> int:
    want = [sid for sid, _ in workload_steps(wl)]
    run = system.run
    t0 = time.perf_counter_ns()
    for i in range(n):
        done = run(wl)
        if done != want:
            check_run(system, wl, done, want, i + 1)
    return time.perf_counter_ns() - t0


def checked(system: Any, mocks: Mocks, wl: str, n: int) -> int:
    models, tools = expected_counts(wl)
    m0, t0, s0 = mocks.model_calls, mocks.tool_calls, system.succeeded()
    gc.collect()
    ns = timed(system, wl, n)
    dm, dt = mocks.model_calls - m0, mocks.tool_calls - t0
    if (dm, dt) != (n * models, n * tools):
        raise BenchFailure(
            f"{system.name}/{system.mode} {wl}: over {n} runs the model was called {dm} times (expected "
            f"{n * models}), the tools {dt} times (expected {n * tools})"
        )
    system.check_store(wl, s0, n)
    return ns


def bench(system: Any, mocks: Mocks, wl: str, runs: int, quick: bool, n_override: int | None) -> dict[str, Any]:
    if quick:
        per_run = checked(system, mocks, wl, 2) / 2 / 1e9
        target = QUICK_TARGET_SAMPLE_S
    else:
        checked(system, mocks, wl, 5)  # warm-up, discarded
        k = 5
        while True:  # calibration
            ns = checked(system, mocks, wl, k)
            if ns >= 0.3e9:
                break
            k *= 2
        per_run = ns / k / 1e9
        target = TARGET_SAMPLE_S
    n = n_override or max(1, round(target / per_run))
    steps = len(workload_steps(wl))
    rps = []
    for _ in range(runs):
        rps.append(n * 1e9 / checked(system, mocks, wl, n))
    sps = [r * steps for r in rps]
    print(
        f"durable_peers: {system.name}/{system.mode:<7} {wl:<10} steps/run={steps:<4} N={n:<5} "
        f"median {statistics.median(sps):10,.0f} steps/s {statistics.median(rps):9,.1f} runs/s "
        f"(min {min(sps):,.0f}, max {max(sps):,.0f}, {runs} samples)",
        file=sys.stderr,
        flush=True,
    )
    rec: dict[str, Any] = {
        "side": system.name,
        "mode": system.mode,
        "workload": wl,
        "steps_per_run": steps,
        "steps_per_sec": statistics.median(sps),
        "runs_per_sec": statistics.median(rps),
        "samples": sps,
        "n_per_sample": n,
        "version": system.version(),
        "durability": system.durability,
    }
    settings = system.sqlite_settings()
    if settings:
        rec["sqlite"] = settings
    m0, t0 = mocks.model_calls, mocks.tool_calls
    commits = system.commits_per_run(wl)
    models, tools = expected_counts(wl)
    if commits is not None:
        if (mocks.model_calls - m0, mocks.tool_calls - t0) != (models, tools):
            raise BenchFailure(f"{system.name}/{system.mode} {wl}: the counted run made the wrong calls")
        rec["commits_per_run"] = commits
    return rec


def sanity(system_factory: Callable[[Mocks], Any]) -> None:
    """The guard is live on this system: a "no" ends guard4 before the effect."""
    mocks = Mocks("no")
    system = system_factory(mocks)
    try:
        done = system.run("guard4")
        if done != ["ask", "gate"] or mocks.tool_calls != 0:
            raise BenchFailure(f"sanity: {system.name}/{system.mode} guard4 answering 'no' ran {done}")
    finally:
        system.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None)
    args = p.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    wls = [w for w in args.workloads.split(",") if w]
    systems = [s for s in args.systems.split(",") if s]
    if any(w not in ALL_WORKLOADS for w in wls) or any(s not in ALL_SYSTEMS for s in systems):
        p.error(f"workloads from {ALL_WORKLOADS}, systems from {ALL_SYSTEMS}")
    for dist, pinned in PINNED.items():
        if version(dist) != pinned:
            die(f"installed {dist} is {version(dist)}, the benchmark is pinned to {pinned}", 2)
    tmp = tempfile.mkdtemp(prefix="nanovm-peers-")
    counter = iter(range(1_000_000))

    def factory(kind: str) -> Callable[[Mocks], Any]:
        def make(mocks: Mocks) -> Any:
            path = os.path.join(tmp, f"{kind.replace('/', '-')}-{next(counter)}.sqlite")
            if kind == "dbos/sqlite":
                return DbosSystem(path, mocks)
            return LangGraphSystem(path if kind == "langgraph/sqlite" else None, mocks)

        return make

    try:
        for kind in systems:
            sanity(factory(kind))
            for wl in wls:
                # A fresh database per workload, as on the nanovm side.
                mocks = Mocks()
                system = factory(kind)(mocks)
                try:
                    print(json.dumps(bench(system, mocks, wl, runs, args.quick, args.n)), flush=True)
                finally:
                    system.close()
    except BenchFailure as exc:
        print(f"durable_peers: DURABLE PEER RUN CHECK FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
