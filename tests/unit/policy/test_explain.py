"""explain: the allocation table and the sentences about binding constraints."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.policy import explain
from aios_host.policy.demand import Capacity, build_problem
from aios_host.policy.engine import Decision
from aios_host.policy.plan import Plan
from aios_host.policy.problem import ClassDemand, CoreAssignment, Problem
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


def cls(name, weight, cpu, priority=0, min=None, max=None):
    return ClassDemand(name, weight, priority, {"cpu": cpu}, min or {}, max or {})


def capacity_lines(d: Decision) -> list[str]:
    return [s for s in explain.sentences(d) if " binds " in s]


def test_next_core_goes_to_the_best_weight_per_core_not_the_heaviest_class():
    # Weight per core of demand: light 2/1 = 2, mid 3/2 = 1.5, heavy 10/100 = 0.1. Two cores: light
    # is served, mid gets the other core (half its demand), heavy nothing. A third core would go to
    # mid (worth 1.5), though heavy has the largest weight and is further from its demand.
    d = decision(Problem({"cpu": 2.0}, (cls("heavy", 10, 100), cls("mid", 3, 2), cls("light", 2, 1))))
    assert d.allocation.amounts.column("cpu") == pytest.approx({"heavy": 0.0, "light": 1.0, "mid": 1.0})
    (cap,) = [b for b in d.allocation.bindings if b.kind == "capacity"]
    assert cap.to == ("mid",) and cap.dual == pytest.approx(1.5)
    assert capacity_lines(d) == ["cpu binds (tier 0): one more core is worth 1.5, to class mid"]


def test_a_class_at_its_max_gets_no_more_however_heavy():
    # heavy (10 per 4 cores: 2.5) is capped at 1 core and served first; other (1 per core) is partly
    # served and takes the next core. Below its demand is not the same as below its max.
    d = decision(Problem({"cpu": 2.0}, (cls("heavy", 10, 4, max={"cpu": 1.0}), cls("other", 1, 4))))
    assert d.allocation.amounts.column("cpu") == pytest.approx({"heavy": 1.0, "other": 1.0})
    assert capacity_lines(d) == ["cpu binds (tier 0): one more core is worth 0.25, to class other"]


def test_equal_ratios_share_the_next_core_and_tiers_are_separate():
    # Tier 1: a and b both 1 per 2 cores, capacity 2 shared (max-min): the next core goes to both.
    # Tier 0 gets nothing; its next core would go to z (3 per core) before y (1 per core).
    d = decision(Problem({"cpu": 2.0}, (cls("a", 1, 2, priority=1), cls("b", 1, 2, priority=1),
                                       cls("y", 1, 1), cls("z", 3, 1))))
    assert capacity_lines(d) == [
        "cpu binds (tier 1): one more core is worth 0.5, shared by classes a, b (equal weight per core"
        " of demand)",
        "cpu binds (tier 0): one more core is worth 3, to class z",
    ]
    # Everything fits exactly: the capacity binds, but no class has room for more.
    full = decision(Problem({"cpu": 3.0}, (cls("a", 1, 2), cls("b", 1, 1))))
    assert [b.to for b in full.allocation.bindings if b.kind == "capacity"] == [()]
    assert capacity_lines(full) == ["cpu binds (tier 0): one more core is worth 0"]
