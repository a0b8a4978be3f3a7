"""Exclusive cores with CP-SAT: hand-made topologies, then hypothesis on random ones."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_host.policy.cores import assign_cores
from aios_host.policy.problem import CoreAssignment, CoreRequest, InfeasibleError


def topology(nodes=2, cores_per_node=8, smt=2, llc_cores=None):
    """Linux-style numbering: core k has cpus k, k + n_cores, ... (its SMT siblings).
    One LLC per node, or one per `llc_cores` cores. Returns (cores, numa_of, llc_of)."""
    n_cores = nodes * cores_per_node
    cores = [tuple(k + t * n_cores for t in range(smt)) for k in range(n_cores)]
    numa_of, llc_of = {}, {}
    for k, sibs in enumerate(cores):
        group = k // (llc_cores or cores_per_node)
        for cpu in sibs:
            numa_of[cpu] = k // cores_per_node
            llc_of[cpu] = group * (llc_cores or cores_per_node)
    return cores, numa_of, llc_of


def check_valid(result: CoreAssignment, requests, cores, numa_of, reserved=()):
    """Whole cores, exact counts, no overlap, nothing reserved, numa_nodes consistent."""
    core_of = {cpu: core for core in cores for cpu in core}
    seen: set[int] = set()
    for r in requests:
        cpus = result.cpus[r.name]
        assert list(cpus) == sorted(cpus)
        assert not seen.intersection(cpus)
        seen.update(cpus)
        assert not set(reserved).intersection(cpus)
        owned = {core_of[c] for c in cpus}
        assert all(set(core) <= set(cpus) for core in owned)  # all siblings together
        assert len(owned) == r.cores
        assert result.numa_nodes[r.name] == tuple(sorted({numa_of[c] for c in cpus}))
    free = [c for c in cores if not set(reserved).intersection(c) and not seen.intersection(c)]
    if any(r.cores for r in requests):
        assert free  # one core stays for the shared classes


def test_whole_cores_on_one_node_lowest_first():
    cores, numa_of, llc_of = topology()
    result = assign_cores([CoreRequest("train", 4)], cores, numa_of, llc_of)
    assert result.cpus["train"] == (0, 1, 2, 3, 16, 17, 18, 19)
    assert result.numa_nodes["train"] == (0,)


def test_prefers_the_requested_node():
    cores, numa_of, llc_of = topology()
    result = assign_cores([CoreRequest("gpu-job", 2, numa_node=1)], cores, numa_of, llc_of)
    assert result.numa_nodes["gpu-job"] == (1,)
    assert result.cpus["gpu-job"] == (8, 9, 24, 25)


def test_one_node_beats_the_preferred_node():
    # 6 cores fit on node 0 only (node 1 has 2 reserved): spanning costs more than preference.
    cores, numa_of, llc_of = topology()
    reserved = [8, 24, 9, 25, 10, 26]  # cores 8, 9, 10 of node 1
    result = assign_cores(
        [CoreRequest("big", 6, numa_node=1)], cores, numa_of, llc_of, reserved=reserved
    )
    assert result.numa_nodes["big"] == (0,)


def test_spans_nodes_only_when_it_must():
    cores, numa_of, llc_of = topology()
    result = assign_cores([CoreRequest("huge", 10)], cores, numa_of, llc_of)
    assert result.numa_nodes["huge"] == (0, 1)
    check_valid(result, [CoreRequest("huge", 10)], cores, numa_of)


def test_keeps_each_class_in_one_llc_when_possible():
    # 4-core LLCs: 3 + 1 and 2 + 2 pack into two LLCs of node 0 without splitting anyone.
    cores, numa_of, llc_of = topology(llc_cores=4)
    reqs = [CoreRequest("a", 3), CoreRequest("b", 1), CoreRequest("c", 2), CoreRequest("d", 2)]
    result = assign_cores(reqs, cores, numa_of, llc_of)
    check_valid(result, reqs, cores, numa_of)
    for r in reqs:
        assert len({llc_of[c] for c in result.cpus[r.name]}) == 1, r.name
        assert result.numa_nodes[r.name] == (0,)


def test_reserved_cpus_are_never_given_out():
    cores, numa_of, llc_of = topology(nodes=1, cores_per_node=4)
    # cpu 0 is reserved, so its sibling 4 goes too: core (0, 4) is out.
    reqs = [CoreRequest("a", 2)]
    result = assign_cores(reqs, cores, numa_of, llc_of, reserved=[0])
    assert result.cpus["a"] == (1, 2, 5, 6)
    check_valid(result, reqs, cores, numa_of, reserved=[0])


def test_last_free_core_stays_shared():
    cores, numa_of, llc_of = topology(nodes=1, cores_per_node=4)
    ok = assign_cores([CoreRequest("a", 2), CoreRequest("b", 1)], cores, numa_of, llc_of)
    assert len(ok.cpus["a"]) + len(ok.cpus["b"]) == 6
    with pytest.raises(InfeasibleError) as err:
        assign_cores(
            [CoreRequest("a", 2), CoreRequest("b", 1)], cores, numa_of, llc_of, reserved=[3]
        )
    assert str(err.value) == (
        "exclusive cores: a (2 cores), b (1 core) ask for 3 cores but 2 can be given"
        " (4 cores, 1 with reserved cpus, 1 kept for the shared classes): 1 core short"
    )


def test_zero_core_request_gets_nothing():
    cores, numa_of, llc_of = topology(nodes=1, cores_per_node=2)
    result = assign_cores([CoreRequest("none", 0)], cores, numa_of, llc_of)
    assert result.cpus == {"none": ()} and result.numa_nodes == {"none": ()}


def test_malformed_requests():
    cores, numa_of, llc_of = topology(nodes=1, cores_per_node=4)
    with pytest.raises(ValueError, match="unique"):
        assign_cores([CoreRequest("a", 1), CoreRequest("a", 1)], cores, numa_of, llc_of)
    with pytest.raises(ValueError, match="asks for -1"):
        assign_cores([CoreRequest("a", -1)], cores, numa_of, llc_of)
    with pytest.raises(ValueError, match="cpu 0 has no NUMA node"):
        assign_cores([CoreRequest("a", 1)], cores, {}, llc_of)


def test_deterministic_and_independent_of_request_order():
    cores, numa_of, llc_of = topology(cores_per_node=32, llc_cores=8)
    rng = random.Random(7)
    reqs = [
        CoreRequest(f"r{i:02d}", rng.randint(1, 4), rng.choice((None, 0, 1))) for i in range(20)
    ]
    first = assign_cores(reqs, cores, numa_of, llc_of)
    check_valid(first, reqs, cores, numa_of)
    assert assign_cores(reqs, cores, numa_of, llc_of) == first
    assert assign_cores(list(reversed(reqs)), cores, numa_of, llc_of) == first


@st.composite
def scenarios(draw):
    nodes = draw(st.integers(1, 3))
    per_node = draw(st.integers(1, 8))
    smt = draw(st.integers(1, 2))
    llc = draw(st.one_of(st.none(), st.integers(1, per_node)))
    cores, numa_of, llc_of = topology(nodes, per_node, smt, llc)
    cpus = sorted(numa_of)
    reserved = draw(st.lists(st.sampled_from(cpus), max_size=3, unique=True))
    n = draw(st.integers(0, 6))
    reqs = [
        CoreRequest(f"c{i}", draw(st.integers(0, 4)), draw(st.none() | st.integers(0, nodes - 1)))
        for i in range(n)
    ]
    return reqs, cores, numa_of, llc_of, reserved


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_topologies(scenario):
    reqs, cores, numa_of, llc_of, reserved = scenario
    free = sum(1 for c in cores if not set(reserved).intersection(c))
    asked = sum(r.cores for r in reqs)
    if asked and asked > free - 1:
        with pytest.raises(InfeasibleError) as err:
            assign_cores(reqs, cores, numa_of, llc_of, reserved)
        text = str(err.value)
        assert all(r.name in text for r in reqs if r.cores)
        assert f"ask for {asked} core" in text
        return
    result = assign_cores(reqs, cores, numa_of, llc_of, reserved)
    check_valid(result, reqs, cores, numa_of, reserved)
    assert assign_cores(reqs, cores, numa_of, llc_of, reserved) == result
    # A single class that fits on one node's free cores is never split across nodes.
    if len([r for r in reqs if r.cores]) == 1:
        r = next(r for r in reqs if r.cores)
        per_node_free: dict[int, int] = {}
        for c in cores:
            if not set(reserved).intersection(c):
                per_node_free[numa_of[c[0]]] = per_node_free.get(numa_of[c[0]], 0) + 1
        if max(per_node_free.values()) >= r.cores:
            assert len(result.numa_nodes[r.name]) == 1
