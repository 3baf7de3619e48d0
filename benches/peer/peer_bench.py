#!/usr/bin/env python3
"""Peer half of the nanovm side-by-side benchmark: llm-nano-vm 0.8.9 (PyPI).

Times in-process executions of small workflow programs on the Python package
``llm-nano-vm`` (import name ``nano_vm``) through its public API only:

    Program.from_dict({...})                       # build once per workload
    vm = ExecutionVM(llm=MockLLMAdapter("yes"), tools={name: async_fn})
    trace = await vm.run(program)                  # -> Trace
    trace.status == TraceStatus.SUCCESS; len(trace.steps)

Every timed run is checked (status SUCCESS and exact number of executed steps);
tool / mock-LLM invocation counts are checked after every sample, and the first
runs of each workload are checked step by step. Any mismatch aborts the script
with a non-zero exit status, so a broken peer run can never show up as a
(flattering) number.

Output: one JSON object per workload on stdout, e.g.
  {"side":"peer","workload":"guard4","steps_per_run":4,"runs_per_sec":...,
   "steps_per_sec":...,"samples":[...],"n_per_sample":N}
Human-readable progress goes to stderr.

See README.md in this directory for what counts as a step and the caveats.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

PEER_DIST = "llm-nano-vm"
PEER_PINNED_VERSION = "0.8.9"

# Generous budgets for guard4_budgets: the run must succeed with them set.
# (The peer checks max_steps / max_tokens before every *main-loop* step and
# max_stalled_steps after it; see README.md.)
BUDGET_MAX_STEPS = 100
BUDGET_MAX_TOKENS = 100_000
BUDGET_MAX_STALLED_STEPS = 10

ALL_WORKLOADS = ["guard4", "guard4_budgets", "linear10", "linear100", "linear1000", "parallel10", "effects10"]

# Target wall time of one sample (N runs).
TARGET_SAMPLE_S = 0.75
QUICK_TARGET_SAMPLE_S = 0.02


class BenchFailure(Exception):
    """A peer run did not do what the workload requires."""


def die(msg: str, code: int = 1) -> NoReturn:
    print(f"peer_bench: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


try:
    from nano_vm import ExecutionVM, Program, TraceStatus
    from nano_vm.adapters import MockLLMAdapter
except ImportError as exc:  # pragma: no cover - environment problem
    die(f"cannot import the peer package ({exc}); pip install {PEER_DIST}=={PEER_PINNED_VERSION}")


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    program: dict[str, Any]
    tool_names: list[str]
    # What one successful run must look like (peer semantics, see README):
    expected_step_ids: list[str]  # ids of trace.steps, in order
    tool_calls: int  # no-op tool invocations per run
    llm_calls: int  # MockLLMAdapter.complete() calls per run
    metrics: dict[str, int]  # trace.step_metrics (llm_calls/tool_calls/condition_evals)
    snapshots: int  # len(trace.state_snapshots) (== peer's main-loop step count)
    llm_answer: str = "yes"
    notes: str = ""
    context: dict[str, Any] | None = None  # the run's initial state (vm.run(program, context))

    @property
    def steps_per_run(self) -> int:
        return len(self.expected_step_ids)


def _llm_step(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "llm", "prompt": "Proceed? Answer yes or no.", **extra}


def _guard4_program(name: str, **budgets: Any) -> dict[str, Any]:
    # ask (llm, enum-gated) -> guard (condition with only `then`: a false
    # answer has no branch target and the peer FAILs the run, i.e. a guard)
    # -> effect (tool, executed inline as branch target; next_step rejoins the
    # main flow) -> finish (tool) -> end of program = SUCCESS.
    return {
        "name": name,
        "steps": [
            _llm_step("ask", output_key="answer", allowed_outputs=["yes", "no"]),
            {"id": "guard", "type": "condition", "condition": '$answer == "yes"', "then": "effect"},
            {"id": "effect", "type": "tool", "tool": "effect", "next_step": "finish"},
            {"id": "finish", "type": "tool", "tool": "finish"},
        ],
        **budgets,
    }


def _linear(n: int) -> Workload:
    ids = [f"s{i}" for i in range(n)]
    return Workload(
        name=f"linear{n}",
        program={"name": f"linear{n}", "steps": [{"id": i, "type": "tool", "tool": "noop"} for i in ids]},
        tool_names=["noop"],
        expected_step_ids=ids,
        tool_calls=n,
        llm_calls=0,
        metrics={"llm_calls": 0, "tool_calls": n, "condition_evals": 0},
        snapshots=n,
    )


def build_workloads() -> dict[str, Workload]:
    guard_ids = ["ask", "guard", "effect", "finish"]
    guard_metrics = {"llm_calls": 1, "tool_calls": 2, "condition_evals": 1}
    par_ids = [f"p{i}" for i in range(10)]
    wls = [
        Workload(
            name="guard4",
            program=_guard4_program("guard4"),
            tool_names=["effect", "finish"],
            expected_step_ids=guard_ids,
            tool_calls=2,
            llm_calls=1,
            metrics=guard_metrics,
            snapshots=3,  # inline-executed branch target gets no state snapshot
        ),
        Workload(
            name="guard4_budgets",
            program=_guard4_program(
                "guard4_budgets",
                max_steps=BUDGET_MAX_STEPS,
                max_tokens=BUDGET_MAX_TOKENS,
                max_stalled_steps=BUDGET_MAX_STALLED_STEPS,
            ),
            tool_names=["effect", "finish"],
            expected_step_ids=guard_ids,
            tool_calls=2,
            llm_calls=1,
            metrics=guard_metrics,
            snapshots=3,
        ),
        _linear(10),
        _linear(100),
        _linear(1000),
        Workload(
            name="parallel10",
            program={
                "name": "parallel10",
                "steps": [
                    {
                        "id": "par",
                        "type": "parallel",
                        "parallel_steps": [{"id": i, "type": "tool", "tool": "noop"} for i in par_ids],
                    },
                    _llm_step("ask"),
                ],
            },
            tool_names=["noop"],
            # trace.steps: 10 sub-step results, then the parallel block, then the llm step
            expected_step_ids=par_ids + ["par", "ask"],
            tool_calls=10,
            llm_calls=1,
            # peer quirk: parallel sub-steps/blocks are not recorded in step_metrics
            metrics={"llm_calls": 1, "tool_calls": 0, "condition_evals": 0},
            snapshots=2,
        ),
    ]
    # effects10: a guard on an input, then 10 tool steps (nanovm: 10 effect calls; this peer has no
    # notion of an effect and keeps nothing durable, so here they are plain tool calls). The
    # condition's target runs inline (no snapshot), its next_step rejoins the main flow at s1.
    eff_ids = [f"s{i}" for i in range(10)]
    eff_steps: list[dict[str, Any]] = [
        {"id": "gate", "type": "condition", "condition": '$approved == "yes"', "then": "s0"},
        {"id": "s0", "type": "tool", "tool": "charge", "next_step": "s1"},
    ] + [{"id": i, "type": "tool", "tool": "charge"} for i in eff_ids[1:]]
    wls.append(
        Workload(
            name="effects10",
            program={"name": "effects10", "steps": eff_steps},
            tool_names=["charge"],
            expected_step_ids=["gate"] + eff_ids,
            tool_calls=10,
            llm_calls=0,
            metrics={"llm_calls": 0, "tool_calls": 10, "condition_evals": 1},
            snapshots=10,
            context={"approved": "yes"},
        )
    )
    return {w.name: w for w in wls}


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


class Harness:
    """One VM + program + counting no-op tools for one workload."""

    def __init__(self, wl: Workload, llm_answer: str | None = None, program: dict[str, Any] | None = None):
        self.wl = wl
        self.tool_count = 0

        async def noop(**kwargs: Any) -> dict[str, Any]:
            self.tool_count += 1
            return {"ok": True}

        self.adapter = MockLLMAdapter(llm_answer if llm_answer is not None else wl.llm_answer)
        self.vm = ExecutionVM(llm=self.adapter, tools={name: noop for name in wl.tool_names})
        self.program = Program.from_dict(program if program is not None else wl.program)

    def reset_counters(self) -> None:
        self.tool_count = 0
        self.adapter.reset()  # public: clears MockLLMAdapter.calls (which grows per call)

    def describe(self, trace: Any) -> str:
        ids = [f"{s.step_id}:{getattr(s.status, 'value', s.status)}" for s in trace.steps]
        if len(ids) > 12:
            ids = ids[:6] + ["..."] + ids[-4:]
        return (
            f"status={getattr(trace.status, 'value', trace.status)!s} error={trace.error!r} "
            f"steps={len(trace.steps)} (expected {self.wl.steps_per_run}) [{', '.join(ids)}]"
        )

    def deep_check(self, trace: Any) -> None:
        wl = self.wl
        if trace.status != TraceStatus.SUCCESS:
            raise BenchFailure(f"{wl.name}: run did not succeed: {self.describe(trace)}")
        got_ids = [s.step_id for s in trace.steps]
        if got_ids != wl.expected_step_ids:
            raise BenchFailure(f"{wl.name}: unexpected executed steps: {self.describe(trace)}")
        bad = [s.step_id for s in trace.steps if s.status.value != "success"]
        if bad:
            raise BenchFailure(f"{wl.name}: steps not successful: {bad}")
        m = trace.step_metrics
        got_metrics = {"llm_calls": m.llm_calls, "tool_calls": m.tool_calls, "condition_evals": m.condition_evals}
        if got_metrics != wl.metrics:
            raise BenchFailure(f"{wl.name}: step_metrics {got_metrics} != expected {wl.metrics}")
        if len(trace.state_snapshots) != wl.snapshots:
            raise BenchFailure(
                f"{wl.name}: {len(trace.state_snapshots)} state snapshots, expected {wl.snapshots}"
            )
        if any(len(fp) != 64 for _, fp in trace.state_snapshots):
            raise BenchFailure(f"{wl.name}: state snapshot hashes missing (fingerprinting off?)")

    def check_counters(self, runs: int) -> None:
        wl = self.wl
        if self.tool_count != runs * wl.tool_calls:
            raise BenchFailure(
                f"{wl.name}: no-op tools ran {self.tool_count} times over {runs} runs, "
                f"expected {runs * wl.tool_calls}"
            )
        if self.adapter.call_count != runs * wl.llm_calls:
            raise BenchFailure(
                f"{wl.name}: mock LLM called {self.adapter.call_count} times over {runs} runs, "
                f"expected {runs * wl.llm_calls}"
            )

    async def warmup(self, min_runs: int, min_s: float) -> float:
        """Run (deep-checking each run) until both minima are met; return s/run."""
        self.reset_counters()
        runs = 0
        t0 = time.perf_counter_ns()
        while True:
            trace = await self.vm.run(self.program, self.wl.context)
            self.deep_check(trace)
            runs += 1
            elapsed = (time.perf_counter_ns() - t0) / 1e9
            if runs >= min_runs and elapsed >= min_s:
                break
        self.check_counters(runs)
        return elapsed / runs

    async def sample(self, n: int) -> int:
        """Time n runs; return elapsed ns. Every run is checked."""
        self.reset_counters()
        gc.collect()
        vm_run, program, context = self.vm.run, self.program, self.wl.context
        expected_steps = self.wl.steps_per_run
        success = TraceStatus.SUCCESS
        t0 = time.perf_counter_ns()
        for i in range(n):
            trace = await vm_run(program, context)
            if trace.status != success or len(trace.steps) != expected_steps:
                raise BenchFailure(f"{self.wl.name}: run {i + 1}/{n} of sample: {self.describe(trace)}")
        t1 = time.perf_counter_ns()
        self.check_counters(n)
        return t1 - t0


async def sanity_checks(workloads: dict[str, Workload]) -> None:
    """Show the guard and the budgets are live (so the timed runs exercise them)."""
    # 1. Guard: a "no" answer must not reach the effect tool and must fail the run.
    h = Harness(workloads["guard4"], llm_answer="no")
    trace = await h.vm.run(h.program)
    if trace.status != TraceStatus.FAILED or h.tool_count != 0:
        raise BenchFailure(f"sanity: guard4 with answer 'no' should FAIL before any tool: {h.describe(trace)}")
    # 2. Enum gate: an answer outside allowed_outputs must fail the run.
    h = Harness(workloads["guard4"], llm_answer="maybe")
    trace = await h.vm.run(h.program)
    if trace.status != TraceStatus.FAILED or h.tool_count != 0:
        raise BenchFailure(f"sanity: guard4 with answer 'maybe' should FAIL: {h.describe(trace)}")
    # 3. max_steps is enforced (tight budget -> BUDGET_EXCEEDED).
    tight = dict(workloads["guard4_budgets"].program, max_steps=2)
    h = Harness(workloads["guard4_budgets"], program=tight)
    trace = await h.vm.run(h.program)
    if trace.status != TraceStatus.BUDGET_EXCEEDED:
        raise BenchFailure(f"sanity: guard4 with max_steps=2 should hit BUDGET_EXCEEDED: {h.describe(trace)}")


async def bench_workload(wl: Workload, runs: int, quick: bool, n_override: int | None) -> dict[str, Any]:
    h = Harness(wl)
    if quick:
        per_run = await h.warmup(min_runs=2, min_s=0.0)
        target = QUICK_TARGET_SAMPLE_S
    else:
        await h.warmup(min_runs=3, min_s=0.3)  # discard: caches, allocator, first-call paths
        per_run = await h.warmup(min_runs=2, min_s=0.3)  # calibration
        target = TARGET_SAMPLE_S
    n = n_override if n_override is not None else max(1, round(target / per_run))

    samples_sps: list[float] = []
    samples_rps: list[float] = []
    for _ in range(runs):
        ns = await h.sample(n)
        rps = n * 1e9 / ns
        samples_rps.append(rps)
        samples_sps.append(rps * wl.steps_per_run)

    med_sps = statistics.median(samples_sps)
    med_rps = statistics.median(samples_rps)
    print(
        f"peer_bench: {wl.name:<15} steps/run={wl.steps_per_run:<5} N={n:<6} "
        f"median {med_sps:12,.0f} steps/s  {med_rps:10,.1f} runs/s  "
        f"(min {min(samples_sps):,.0f}, max {max(samples_sps):,.0f}, {runs} samples)",
        file=sys.stderr,
        flush=True,
    )
    return {
        "side": "peer",
        "workload": wl.name,
        "steps_per_run": wl.steps_per_run,
        "runs_per_sec": med_rps,
        "steps_per_sec": med_sps,
        "samples": samples_sps,
        "n_per_sample": n,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help=f"comma-separated subset of: {','.join(ALL_WORKLOADS)} (default: all)",
    )
    p.add_argument("--runs", type=int, default=None, help="repetitions (samples) per workload; default 5 (2 with --quick)")
    p.add_argument("--quick", action="store_true", help="small N per sample (smoke test, numbers not meaningful)")
    p.add_argument("--n", type=int, default=None, help="fixed executions per sample (default: calibrated to ~0.75 s)")
    p.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help=f"do not abort if the installed {PEER_DIST} is not {PEER_PINNED_VERSION}",
    )
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.n is not None and args.n < 1:
        p.error("--n must be >= 1")
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workload_list if w not in ALL_WORKLOADS]
    if unknown or not args.workload_list:
        p.error(f"unknown workload(s) {unknown}; choose from {','.join(ALL_WORKLOADS)}")
    return args


async def amain(args: argparse.Namespace) -> None:
    workloads = build_workloads()
    await sanity_checks(workloads)
    for name in args.workload_list:
        result = await bench_workload(workloads[name], args.runs, args.quick, args.n)
        print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from importlib.metadata import version

    peer_version = version(PEER_DIST)
    print(
        f"peer_bench: peer {PEER_DIST} {peer_version} | Python {platform.python_version()} "
        f"({platform.python_implementation()}) | runs={args.runs} quick={args.quick}",
        file=sys.stderr,
        flush=True,
    )
    if peer_version != PEER_PINNED_VERSION and not args.allow_version_mismatch:
        die(f"installed {PEER_DIST} is {peer_version}, benchmark is pinned to {PEER_PINNED_VERSION}", 2)
    try:
        asyncio.run(amain(args))
    except BenchFailure as exc:
        print(f"peer_bench: PEER RUN CHECK FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
