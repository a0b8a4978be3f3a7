"""The tiered LP solver: hand-made cases with known optima, then hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aios_host.policy.greedy import greedy_allocate
from aios_host.policy.problem import Allocation, ClassDemand, InfeasibleError, Problem
from aios_host.policy.solver import check_guarantees, decisive_demands, solve

GIB = 1024**3


def cls(name, weight=1.0, priority=0, min=None, max=None, **demand):
    return ClassDemand(name, weight, priority, demand, min or {}, max or {})


def amounts(alloc: Allocation, resource: str = "cpu") -> dict[str, float]:
    return {name: res[resource] for name, res in alloc.amounts.items()}


def bindings(alloc: Allocation, kind: str, resource: str = "cpu") -> dict[str | None, float]:
    return {b.cls: b.dual for b in alloc.bindings if b.kind == kind and b.resource == resource}


# --- hand-made cases ------------------------------------------------------------------------


def test_allocation_tables_by_class_and_by_column():
    alloc = solve(Problem({"cpu": 1.5, "memory": 8.0}, (cls("a", 1, cpu=1, memory=2), cls("b", 10, cpu=1))))
    assert alloc.amounts.column("cpu") == pytest.approx({"a": 0.5, "b": 1.0})
    assert alloc.amounts.column("cpu") == amounts(alloc)
    assert dict(alloc.amounts["a"]) == pytest.approx({"cpu": 0.5, "memory": 2.0})
    assert sorted(alloc.amounts) == ["a", "b"] and len(alloc.satisfaction) == 2
    assert alloc.amounts == {k: alloc.amounts[k] for k in alloc.amounts}  # a Mapping, equal to its dict
    with pytest.raises(KeyError):
        alloc.amounts["nope"]


def test_weights_decide_under_contention():
    # Ratios w/c: b 10, a 1. b is served in full, a gets the rest.
    alloc = solve(Problem({"cpu": 1.5}, (cls("a", 1, cpu=1), cls("b", 10, cpu=1))))
    assert amounts(alloc) == pytest.approx({"a": 0.5, "b": 1.0})
    assert alloc.satisfaction["a"]["cpu"] == pytest.approx(0.5)
    assert alloc.objective == pytest.approx(10 * 1.0 + 1 * 0.5)


def test_ratio_not_weight_orders_the_knapsack():
    # w/c: small 1/1 = 1, big 3/6 = 0.5, mid 2/3 = 0.67 -> small, mid, then big.
    problem = Problem(
        {"cpu": 6.0}, (cls("big", 3, cpu=6), cls("mid", 2, cpu=3), cls("small", 1, cpu=1))
    )
    assert amounts(solve(problem)) == pytest.approx({"big": 2.0, "mid": 3.0, "small": 1.0})


def test_everything_fits_gives_every_demand_and_no_capacity_binding():
    alloc = solve(Problem({"cpu": 10.0}, (cls("a", 2, cpu=3), cls("b", 1, cpu=4))))
    assert amounts(alloc) == pytest.approx({"a": 3.0, "b": 4.0})
    assert None not in bindings(alloc, "capacity")
    # With capacity to spare, one more unit of demand is worth w / c.
    assert bindings(alloc, "demand") == pytest.approx({"a": 2 / 3, "b": 1 / 4})


def test_higher_tier_first_even_with_lower_weight():
    problem = Problem(
        {"cpu": 10.0}, (cls("batch", 100, priority=0, cpu=8), cls("serve", 1, priority=1, cpu=8))
    )
    alloc = solve(problem)
    assert amounts(alloc) == pytest.approx({"serve": 8.0, "batch": 2.0})
    tiers = {b.tier for b in alloc.bindings if b.kind == "capacity"}
    assert tiers == {0}  # tier 1 fit; tier 0 used what was left


def test_lower_tier_guarantee_is_reserved_before_higher_tiers():
    problem = Problem(
        {"cpu": 10.0},
        (cls("serve", priority=2, cpu=10), cls("batch", priority=0, min={"cpu": 3}, cpu=5)),
    )
    assert amounts(solve(problem)) == pytest.approx({"serve": 7.0, "batch": 3.0})


def test_max_min_between_equal_classes():
    # The LP alone would give one class everything (any split is optimal); max-min splits evenly.
    problem = Problem({"cpu": 6.0}, tuple(cls(n, cpu=4) for n in "abc"))
    assert amounts(solve(problem)) == pytest.approx({"a": 2.0, "b": 2.0, "c": 2.0})


def test_max_min_between_equal_ratios_gives_equal_fractions():
    # w/c equal (0.5): the LP is indifferent; both get the same fraction of their demand.
    problem = Problem({"cpu": 3.0}, (cls("a", 1, cpu=2), cls("b", 2, cpu=4)))
    alloc = solve(problem)
    assert amounts(alloc) == pytest.approx({"a": 1.0, "b": 2.0})
    assert alloc.objective == pytest.approx(1 * 0.5 + 2 * 0.5)


def test_max_min_measures_against_the_cap():
    # Same ratio; a may receive at most 1 core. Both get 60% of what they may receive.
    problem = Problem({"cpu": 3.0}, (cls("a", max={"cpu": 1}, cpu=4), cls("b", cpu=4)))
    assert amounts(solve(problem)) == pytest.approx({"a": 0.6, "b": 2.4})


def test_max_min_respects_mins_inside_the_group():
    problem = Problem({"cpu": 6.0}, (cls("a", min={"cpu": 3}, cpu=4), cls("b", cpu=4)))
    assert amounts(solve(problem)) == pytest.approx({"a": 3.0, "b": 3.0})
    problem = Problem({"cpu": 5.0}, (cls("a", min={"cpu": 3.5}, cpu=4), cls("b", cpu=4)))
    assert amounts(solve(problem)) == pytest.approx({"a": 3.5, "b": 1.5})


def test_max_min_with_different_mins_in_the_group():
    # Two distinct guarantees in one group (regression: the LP columns of distinct (lo, hi) pairs
    # once came from a strided view that the OR-Tools helper read as a flat buffer).
    problem = Problem(
        {"cpu": 3.5},
        (cls("a", min={"cpu": 2}, cpu=4), cls("b", min={"cpu": 1}, cpu=4), cls("c", cpu=0)),
    )
    assert amounts(solve(problem)) == pytest.approx({"a": 2.0, "b": 1.5, "c": 0.0})


def test_min_raises_demand():
    problem = Problem({"cpu": 10.0}, (cls("a", min={"cpu": 2}, cpu=1), cls("b", cpu=20)))
    alloc = solve(problem)
    assert amounts(alloc) == pytest.approx({"a": 2.0, "b": 8.0})
    assert alloc.satisfaction["a"]["cpu"] == pytest.approx(1.0)
    assert "a" in bindings(alloc, "min")


def test_min_binding_dual_is_what_giving_it_up_would_gain():
    # a's guarantee holds 2 cores that b values at 5/unit vs a's 0.25: relaxing gains 4.75/core.
    problem = Problem({"cpu": 4.0}, (cls("a", 1, min={"cpu": 2}, cpu=4), cls("b", 10, cpu=2)))
    alloc = solve(problem)
    assert amounts(alloc) == pytest.approx({"a": 2.0, "b": 2.0})
    assert bindings(alloc, "capacity") == pytest.approx({None: 0.25})
    assert bindings(alloc, "min") == pytest.approx({"a": 0.0})
    assert bindings(alloc, "demand") == pytest.approx({"b": 5 - 0.25})


def test_max_caps_the_class():
    problem = Problem({"cpu": 10.0}, (cls("a", max={"cpu": 2}, cpu=4), cls("b", cpu=3)))
    alloc = solve(problem)
    assert amounts(alloc) == pytest.approx({"a": 2.0, "b": 3.0})
    assert alloc.satisfaction["a"]["cpu"] == pytest.approx(0.5)
    assert "a" in bindings(alloc, "max") and "a" not in bindings(alloc, "demand")


def test_zero_demand_gets_nothing_unless_guaranteed():
    problem = Problem(
        {"cpu": 4.0, "io": 1.0},
        (cls("idle", cpu=0, io=0), cls("guaranteed", min={"io": 0.2}, cpu=0), cls("busy", cpu=8)),
    )
    alloc = solve(problem)
    assert alloc.amounts["idle"] == {"cpu": 0.0, "io": 0.0}
    assert alloc.satisfaction["idle"] == {"cpu": 1.0, "io": 1.0}  # nothing asked, all given
    assert alloc.amounts["guaranteed"]["io"] == pytest.approx(0.2)
    assert alloc.amounts["busy"]["cpu"] == pytest.approx(4.0)


def test_resources_are_independent_and_memory_is_in_bytes():
    problem = Problem(
        {"cpu": 4.0, "memory": 10 * GIB},
        (cls("a", 1, cpu=4, memory=8 * GIB), cls("b", 2, cpu=1, memory=8 * GIB)),
    )
    alloc = solve(problem)
    assert amounts(alloc, "cpu") == pytest.approx({"a": 3.0, "b": 1.0})
    assert amounts(alloc, "memory") == pytest.approx({"a": 2 * GIB, "b": 8 * GIB})
    # Dual per byte: the next byte goes to a, worth 1 / (8 GiB).
    assert bindings(alloc, "capacity", "memory")[None] == pytest.approx(1 / (8 * GIB))
    assert bindings(alloc, "capacity", "cpu")[None] == pytest.approx(1 / 4)


def test_binding_capacity_has_positive_dual_nonbinding_has_none():
    problem = Problem(
        {"cpu": 2.0, "io": 1.0}, (cls("a", cpu=2, io=0.3), cls("b", 3, cpu=2, io=0.3))
    )
    alloc = solve(problem)
    assert bindings(alloc, "capacity", "cpu")[None] > 0
    assert bindings(alloc, "capacity", "io") == {}


def test_infeasible_guarantees_name_classes_and_shortfall():
    problem = Problem(
        {"cpu": 10.0},
        (
            cls("inference", min={"cpu": 4}, cpu=4),
            cls("training", priority=1, min={"cpu": 8}, cpu=8),
            cls("batch", cpu=3),
        ),
    )
    with pytest.raises(InfeasibleError) as err:
        solve(problem)
    assert str(err.value) == (
        "cpu: guarantees of training (8 cores), inference (4 cores) need 12 cores"
        " but 10 cores are available after the reserve: 2 cores short"
    )
    with pytest.raises(InfeasibleError):
        check_guarantees(problem)


def test_infeasible_memory_is_in_gib():
    problem = Problem(
        {"memory": 64 * GIB},
        (cls("a", min={"memory": 40 * GIB}, memory=0), cls("b", min={"memory": 30.5 * GIB})),
    )
    with pytest.raises(InfeasibleError) as err:
        solve(problem)
    assert str(err.value) == (
        "memory: guarantees of a (40 GiB), b (30.5 GiB) need 70.5 GiB"
        " but 64 GiB are available after the reserve: 6.5 GiB short"
    )


def test_min_above_max_names_the_class():
    problem = Problem({"cpu": 10.0}, (cls("odd", min={"cpu": 3}, max={"cpu": 2}, cpu=4),))
    with pytest.raises(InfeasibleError, match="class odd has a guarantee of 3 cores above its lim"):
        solve(problem)


@pytest.mark.parametrize(
    ("problem", "match"),
    [
        (Problem({"cpu": 1.0}, (cls("a", cpu=1), cls("a", cpu=1))), "unique"),
        (Problem({"cpu": 1.0}, (cls("a", 0, cpu=1),)), "weight"),
        (Problem({"cpu": 1.0}, (cls("a", gpu=1),)), "without capacity"),
        (Problem({"cpu": 1.0}, (cls("a", cpu=-1),)), "demand of cpu"),
        (Problem({"cpu": 1.0}, (cls("a", cpu=math.nan),)), "demand of cpu"),
    ],
)
def test_malformed_input_is_a_value_error(problem, match):
    with pytest.raises(ValueError, match=match):
        solve(problem)


def test_empty_problem():
    alloc = solve(Problem({"cpu": 4.0}, ()))
    assert alloc.amounts == {} and alloc.bindings == () and alloc.objective == 0.0


def test_output_is_in_tier_then_name_order():
    problem = Problem({"cpu": 4.0}, (cls("z", cpu=1), cls("b", priority=1, cpu=1), cls("a", cpu=1)))
    assert list(solve(problem).amounts) == ["b", "a", "z"]


# --- properties -----------------------------------------------------------------------------

SCALE = {"cpu": 1.0, "memory": float(GIB), "io": 0.1}


@st.composite
def problems(draw, tiers: int = 3) -> Problem:
    resources = draw(
        st.lists(st.sampled_from(tuple(SCALE)), min_size=1, max_size=3, unique=True)
    )
    n = draw(st.integers(1, 30))
    # Small integers make ties in w/c (where max-min decides) common; floats make them rare.
    # Fractional demands start at 0.01 units: the solver treats amounts under 1e-9 of the
    # capacity as 0 (see solver.NEGLIGIBLE), and 1e-300 cores is not a demand anyone has.
    amount = st.one_of(st.integers(0, 8).map(float), st.floats(0.01, 8))
    weight = st.one_of(st.integers(1, 4).map(float), st.floats(0.1, 10))
    classes = []
    mins_total = dict.fromkeys(resources, 0.0)
    for i in range(n):
        demand, mins, maxes = {}, {}, {}
        for r in resources:
            demand[r] = draw(amount) * SCALE[r]
            if draw(st.booleans()) and draw(st.booleans()):
                mins[r] = draw(st.floats(0, 1)) * demand[r]
                mins_total[r] += mins[r]
            if draw(st.booleans()) and draw(st.booleans()):
                maxes[r] = mins.get(r, 0.0) + draw(st.floats(0, 1)) * demand[r]
        tier = draw(st.integers(0, tiers - 1))
        classes.append(ClassDemand(f"c{i:02d}", draw(weight), tier, demand, mins, maxes))
    capacity = {r: mins_total[r] + draw(amount) * n * SCALE[r] / 2 for r in resources}
    return Problem(capacity, tuple(classes))


def _tol(problem: Problem, r: str) -> float:
    return 1e-6 * max(problem.capacity[r], SCALE[r])


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(problems())
def test_capacity_mins_and_maxes_hold(problem):
    alloc = solve(problem)
    for r, cap in problem.capacity.items():
        tol = _tol(problem, r)
        assert sum(a[r] for a in alloc.amounts.values()) <= cap + tol
        for c in problem.classes:
            got = alloc.amounts[c.name][r]
            assert got >= c.min.get(r, 0.0) - tol
            assert got <= c.max.get(r, math.inf) + tol
            assert got <= max(c.demand.get(r, 0.0), c.min.get(r, 0.0)) + tol
            assert 0.0 <= alloc.satisfaction[c.name][r] <= 1.0
    assert all(b.dual >= 0 for b in alloc.bindings)


@PROPS
@given(problems(), st.data())
def test_more_weight_never_means_less_share(problem, data):
    i = data.draw(st.integers(0, len(problem.classes) - 1))
    c = problem.classes[i]
    heavier = ClassDemand(c.name, c.weight * 2, c.priority, c.demand, c.min, c.max)
    classes = problem.classes[:i] + (heavier,) + problem.classes[i + 1 :]
    before = solve(problem).amounts[c.name]
    after = solve(Problem(problem.capacity, classes)).amounts[c.name]
    for r in problem.capacity:
        assert after[r] >= before[r] - _tol(problem, r)


@PROPS
@given(problems(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(problem, rnd):
    first = solve(problem)
    assert solve(problem) == first
    shuffled = list(problem.classes)
    rnd.shuffle(shuffled)
    again = solve(Problem(problem.capacity, tuple(shuffled)))
    assert again.amounts == first.amounts
    assert again.bindings == first.bindings


@PROPS
@given(problems(tiers=1))
def test_objective_at_least_greedy_on_one_tier(problem):
    # Greedy is the exact optimum of the seed LP on one tier; the solver's first objective is
    # that LP, and max-min only chooses among its optima, so the two are equal.
    ours, theirs = solve(problem).objective, greedy_allocate(problem).objective
    tol = 1e-7 * sum(c.weight for c in problem.classes) * len(problem.capacity)
    assert ours >= theirs - tol
    assert ours <= theirs + tol


# Found by hypothesis: a capacity of ~1e-291 bytes scaled the LP's row to infinite coefficients
_DENORMAL = Problem(
    {"io": 0.0, "memory": 1.0737418240002389e-291},
    tuple([ClassDemand(f"c{i:02d}", 1.0, 0, {"io": 0.0, "memory": 0.0}, {}, {}) for i in range(14)]
          + [ClassDemand("c14", 1.0, 0, {"io": 0.0, "memory": 1073741824.0}, {"memory": 1.073741824e-291}, {}),
             ClassDemand("c15", 1.0, 1, {"io": 0.0, "memory": 1073741824.0}, {"memory": 2.389154863383892e-304},
                         {})]))


@PROPS
@given(problems())
@example(_DENORMAL)
def test_objective_equals_greedy_with_tiers(problem):
    # Both are lexicographic over tiers with lower tiers' mins reserved: same optimum.
    ours, theirs = solve(problem).objective, greedy_allocate(problem).objective
    assert ours == pytest.approx(theirs, rel=1e-7, abs=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.floats(0.5, 8), st.floats(0.05, 1.0))
def test_identical_classes_share_equally(n, demand, fraction):
    classes = tuple(cls(f"c{i}", cpu=demand) for i in range(n))
    problem = Problem({"cpu": n * demand * fraction}, classes)
    got = list(amounts(solve(problem)).values())
    assert max(got) - min(got) <= 1e-7 * demand


# --- decisive demands: what the daemon compares before it re-solves -------------------------


def test_decisive_demands_cut_a_saturating_tier_and_the_tier_under_it():
    def problem(prot: float, batch: float) -> Problem:
        prot_cls = cls("prot", 1000, 10, min={"cpu": 0.5}, cpu=prot)
        return Problem({"cpu": 2.0}, (prot_cls, cls("batch", 10, 0, cpu=batch)))

    busy = decisive_demands(problem(3.9, 0.8))
    assert busy == pytest.approx({"prot": 2.0, "batch": 0.0})
    assert decisive_demands(problem(4.2, 1.5)) == busy  # more asked of a full host decides nothing
    assert amounts(solve(problem(4.2, 1.5))) == pytest.approx(amounts(solve(problem(3.9, 0.8))))
    light = decisive_demands(problem(0.3, 1.8))
    assert light == pytest.approx({"prot": 0.3, "batch": 1.5})  # batch gets what the guarantee leaves
    assert decisive_demands(problem(0.35, 1.8))["prot"] == pytest.approx(0.35)  # below its min still counts
    assert decisive_demands(problem(1.5, 1.0)) != decisive_demands(problem(1.6, 1.0))


def test_decisive_demands_leave_a_shared_tier_whole():
    # Two classes of one tier are served in order of w / c, so a demand above the capacity still
    # reorders them: a asking 2.5 (ratio 0.4) goes before b (2.7: 0.37), asking 3.0 (0.33) after.
    def problem(a: float) -> Problem:
        return Problem({"cpu": 2.0}, (cls("a", 1, cpu=a), cls("b", 1, cpu=2.7)))

    assert amounts(solve(problem(2.5))) == pytest.approx({"a": 2.0, "b": 0.0})
    assert amounts(solve(problem(3.0))) == pytest.approx({"a": 0.0, "b": 2.0})
    assert decisive_demands(problem(2.5)) != decisive_demands(problem(3.0))


@PROPS
@given(problems(), st.data())
def test_equal_decisive_demands_give_equal_allocations(problem, data):
    """Raise every demand that decisive_demands cut: the decisive demands stay, and so do the
    amounts and min(amount, demand), for every resource."""
    for r in problem.capacity:
        cut = decisive_demands(problem, r)
        classes = []
        for c in problem.classes:
            asked = min(c.demand.get(r, 0.0), c.max.get(r, math.inf))
            if cut[c.name] < asked - _tol(problem, r):
                more = data.draw(st.floats(0, 8)) * SCALE[r]
                classes.append(c._replace(demand={**c.demand, r: c.demand[r] + more}))
            else:
                classes.append(c)
        other = Problem(problem.capacity, tuple(classes))
        assert decisive_demands(other, r) == pytest.approx(cut, abs=_tol(problem, r))
        a, b = solve(problem).amounts, solve(other).amounts
        tol = 1e-5 * max(problem.capacity[r], SCALE[r])
        for c, c2 in zip(problem.classes, classes, strict=True):
            assert b[c.name][r] == pytest.approx(a[c.name][r], abs=tol)
            assert min(b[c.name][r], c2.demand.get(r, 0.0)) == pytest.approx(
                min(a[c.name][r], c.demand.get(r, 0.0)), abs=tol)
