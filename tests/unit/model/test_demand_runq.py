"""Run-queue latency in the policy's demand estimate (aios_host.policy.demand)."""

import pytest

from aios_host.policy.demand import PRESSURE_GAIN, RUNQ_GAIN, RUNQ_TARGET_USEC, ClassUsage, cpu_raise


def test_no_latency_no_pressure_no_raise():
    assert cpu_raise(ClassUsage(cpu_cores=1.0)) == 0.0
    assert cpu_raise(ClassUsage(cpu_cores=1.0, runq_p99_usec=RUNQ_TARGET_USEC)) == 0.0


def test_latency_above_target_raises_demand_capped():
    assert cpu_raise(ClassUsage(cpu_cores=1.0, runq_p99_usec=1.5 * RUNQ_TARGET_USEC)) == pytest.approx(
        RUNQ_GAIN * 0.5)
    assert cpu_raise(ClassUsage(cpu_cores=1.0, runq_p99_usec=50 * RUNQ_TARGET_USEC)) == RUNQ_GAIN


def test_the_larger_of_psi_and_latency_applies():
    u = ClassUsage(cpu_cores=1.0, cpu_some_avg10=40.0, runq_p99_usec=2 * RUNQ_TARGET_USEC)
    assert cpu_raise(u) == pytest.approx(max(PRESSURE_GAIN * 0.4, RUNQ_GAIN))


def test_build_problem_uses_it():
    from aios_host.policy.demand import Capacity, build_problem
    from aios_host.policy.schema import Policy

    policy = Policy.model_validate({"classes": [{"name": "train", "match": {"cgroup": "train.slice"}}]})
    cap = Capacity(cpu_cores=4, memory_bytes=2**33, cpus_total=4, memory_total_bytes=2**33)
    calm = build_problem(policy, cap, {"train": ClassUsage(cpu_cores=1.0, memory_bytes=1.0)})
    starved = build_problem(policy, cap, {"train": ClassUsage(cpu_cores=1.0, memory_bytes=1.0,
                                                              runq_p99_usec=2 * RUNQ_TARGET_USEC)})
    assert calm.classes[0].demand["cpu"] == pytest.approx(1.0)
    assert starved.classes[0].demand["cpu"] == pytest.approx(1.0 + RUNQ_GAIN)
