"""explain: the allocation table and the sentences about binding constraints."""

from __future__ import annotations

from pathlib import Path

from aios_host.policy import explain
from aios_host.policy.demand import Capacity, build_problem
from aios_host.policy.engine import Decision
from aios_host.policy.plan import Plan
from aios_host.policy.problem import CoreAssignment, Problem
from aios_host.policy.schema import load_policy
from aios_host.policy.solver import solve

GIB = 1 << 30
ROOT = Path(__file__).resolve().parents[3]


def decision(problem: Problem) -> Decision:
    """A Decision holding what explain reads (problem, allocation); the rest is not looked at."""
    return Decision(policy=None, capacity=None, problem=problem, allocation=solve(problem),  # type: ignore[arg-type]
                    cores=CoreAssignment({}, {}), targets={}, desired=[], plan=Plan(()))


def test_default_policy_explains_cpu_only():
    policy = load_policy(str(ROOT / "policies/default.toml"))
    cap = Capacity(cpu_cores=8.0, memory_bytes=64 * GIB, cpus_total=8, memory_total_bytes=64 * GIB)
    d = decision(build_problem(policy, cap, {}))
    rows = explain.table_rows(d)
    assert [(r[0], r[3]) for r in rows] == [("training", "cpu"), ("inference", "cpu"), ("batch", "cpu")]
    lines = explain.sentences(d)
    assert not any("memory binds" in s or "io binds" in s for s in lines)
    assert lines[-1].startswith("memory and io are not allocated")
