"""cpu.weight from entitlement (allocation or guarantee) and priority tier."""

from __future__ import annotations

from aios_host.policy.mapping import TIER_WEIGHT_FACTOR, cpu_weights
from aios_host.policy.problem import ClassDemand, Problem
from aios_host.policy.schema import Policy
from aios_host.policy.solver import solve


def policy(classes: list[dict]) -> Policy:
    return Policy.model_validate({"host": {"reserve_cores": 0}, "class": classes})


def alloc_for(pol: Policy, demand: dict[str, float], cap: float = 4.0):
    cls = []
    for c in pol.classes:
        mins = {"cpu": c.cpu.min.resolve(cap)} if c.cpu.min is not None else {}
        cls.append(ClassDemand(c.name, float(c.weight), c.priority, {"cpu": demand[c.name]}, mins))
    return solve(Problem({"cpu": cap}, tuple(cls)))


def test_an_idle_guaranteed_class_keeps_its_guarantees_weight():
    pol = policy([{"name": "web", "cpu": {"min": 1}}, {"name": "batch"}])
    w = cpu_weights(pol, alloc_for(pol, {"web": 0.0, "batch": 4.0}), 4.0)
    assert w["web"][1] == 1.0  # entitled to its min although it uses nothing now
    assert w["web"][0] > 0.3 * w["batch"][0]  # not the weight 1 an idle class would get


def test_a_higher_tier_dominates_a_lower_one_with_the_same_allocation():
    pol = policy([{"name": "prot", "priority": 10}, {"name": "batch", "priority": 0}])
    w = cpu_weights(pol, alloc_for(pol, {"prot": 2.0, "batch": 2.0}), 4.0)
    assert w["prot"][0] == TIER_WEIGHT_FACTOR * w["batch"][0]


def test_weights_stay_in_the_kernels_range():
    pol = policy([{"name": f"t{i}", "priority": i} for i in range(6)])
    w = cpu_weights(pol, alloc_for(pol, {f"t{i}": 1.0 for i in range(6)}, 6.0), 6.0)
    assert all(1 <= v <= 10000 for v, _ in w.values())
    assert w["t5"][0] == 10000 and w["t0"][0] == 1


def test_all_idle_and_unguaranteed_is_by_tier_alone():
    pol = policy([{"name": "a", "priority": 1}, {"name": "b"}])
    w = cpu_weights(pol, alloc_for(pol, {"a": 0.0, "b": 0.0}), 4.0)
    assert (w["a"][0], w["b"][0]) == (100 * TIER_WEIGHT_FACTOR, 100)
