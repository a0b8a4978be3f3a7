"""Policy + usage -> the solver's Problem: CPU only; memory guarantees checked, not allocated."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.policy.demand import Capacity, ClassUsage, build_problem
from aios_host.policy.problem import InfeasibleError
from aios_host.policy.schema import Policy, load_policy
from aios_host.policy.solver import solve

GIB = 1 << 30
ROOT = Path(__file__).resolve().parents[3]
HOST = Capacity(cpu_cores=8.0, memory_bytes=64 * GIB, cpus_total=8, memory_total_bytes=64 * GIB)


def test_the_problem_allocates_cpu_and_nothing_else():
    policy = load_policy(str(ROOT / "policies/default.toml"))
    usage = {"training": ClassUsage(cpu_cores=2.0, memory_bytes=8.0 * GIB, memory_some_avg10=50.0)}
    problem = build_problem(policy, HOST, usage)
    assert dict(problem.capacity) == {"cpu": 8.0}
    assert all(set(c.demand) == {"cpu"} and set(c.min) <= {"cpu"} and set(c.max) <= {"cpu"}
               for c in problem.classes)
    by_name = {c.name: c for c in problem.classes}
    assert by_name["training"].demand["cpu"] == pytest.approx(2.0)  # measured: its usage
    assert by_name["batch"].demand["cpu"] == pytest.approx(0.75 * 8)  # unmeasured: its max
    assert all(set(a) == {"cpu"} for a in solve(problem).amounts.values())


def test_memory_guarantees_beyond_the_host_are_infeasible():
    policy = Policy.model_validate({"classes": [
        {"name": "a", "memory": {"min": "40G"}},
        {"name": "b", "memory": {"low": "30.5G"}},
        {"name": "c", "memory": {"high": "60G"}},  # no protection: not part of the sum
    ]})
    with pytest.raises(InfeasibleError) as err:
        build_problem(policy, HOST, {})
    assert str(err.value) == (
        "memory: guarantees of a (40 GiB), b (30.5 GiB) need 70.5 GiB"
        " but 64 GiB are available after the reserve: 6.5 GiB short"
    )
    fits = Policy.model_validate({"classes": [
        {"name": "a", "memory": {"min": "40G"}}, {"name": "b", "memory": {"low": "24G"}}]})
    assert build_problem(fits, HOST, {}).capacity == {"cpu": 8.0}


def test_memory_protection_above_the_class_max_is_infeasible():
    # The schema compares min and max only when both are sizes; 20% of 64 GiB is above 8 GiB.
    policy = Policy.model_validate({"classes": [{"name": "odd", "memory": {"min": "20%", "max": "8G"}}]})
    with pytest.raises(InfeasibleError, match="class odd has a guarantee of 12.8 GiB above its limit of 8 GiB"):
        build_problem(policy, HOST, {})
