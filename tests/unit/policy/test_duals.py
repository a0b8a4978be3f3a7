"""The solver's hand-computed duals (solver.py docstring, the numbers explain prints) against GLOP's.

The same seed LP is built here independently with pywraplp, unscaled (one variable x_i per class in
[lo_i, hi_i], one capacity row sum_i c_i x_i <= C) and GLOP's dual_value / reduced_cost are read
back. They must agree where the LP's duals are unique: one tier, the capacity binding, exactly one
class strictly between its bounds and no two classes of the same w_i / c_i (a nondegenerate vertex).
Per native unit of amount, GLOP's reduced cost rc_i (per unit of x_i) is rc_i / c_i, so:

    capacity binding  dual == capacity row's dual_value
    max / demand      dual == rc_i / c_i   (class at hi, rc_i > 0)
    min               dual == -rc_i / c_i  (class at lo, rc_i < 0)

Where they legitimately differ: when the capacity ends exactly on a class boundary (no class
strictly inside its bounds) every value between the ratios of the last class served and the next
one is a valid dual, and GLOP may return any; the solver reports the next class's ratio (the worth
of one more unit). The last test checks only that GLOP's value lies in that interval. Several tiers
are not compared: the solver's duals are those of each tier's LP in the capacity left to it, which
is not one LP GLOP could be given.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ortools.linear_solver import pywraplp

from aios_host.policy.problem import ClassDemand, Problem
from aios_host.policy.solver import solve


def glop(problem: Problem) -> tuple[float, dict[str, float], dict[str, float]]:
    """(capacity row dual, amount per class, reduced cost per class per unit of x) from GLOP."""
    (r,) = problem.capacity
    s = pywraplp.Solver.CreateSolver("GLOP")
    row = s.Constraint(-s.infinity(), problem.capacity[r])
    obj = s.Objective()
    obj.SetMaximization()
    xs = {}
    for c in problem.classes:
        demand = max(c.demand[r], c.min.get(r, 0.0))  # the solver's convention: raised to the min
        hi = min(demand, c.max.get(r, demand))
        xs[c.name] = (s.NumVar(c.min.get(r, 0.0) / demand, hi / demand, c.name), demand)
        row.SetCoefficient(xs[c.name][0], demand)
        obj.SetCoefficient(xs[c.name][0], c.weight)
    assert s.Solve() == pywraplp.Solver.OPTIMAL
    amounts = {n: v.solution_value() * d for n, (v, d) in xs.items()}
    return row.dual_value(), amounts, {n: v.reduced_cost() for n, (v, _) in xs.items()}


@st.composite
def nondegenerate(draw) -> tuple[Problem, str]:
    """One tier of cpu classes with distinct ratios; the capacity ends strictly inside the room of
    the class it returns (the marginal one)."""
    n = draw(st.integers(2, 8))
    classes = []
    for i in range(n):
        demand = draw(st.floats(0.1, 16))
        mins, maxes = {}, {}
        lo = hi = 0.0
        if draw(st.booleans()):
            # A min of at least 1% of the demand: the solver counts mins under 1e-9 of the
            # capacity as none (solver.NEGLIGIBLE), which this test is not about.
            lo = draw(st.floats(0.01, 0.5)) * demand
            mins["cpu"] = lo
        hi = demand
        if draw(st.booleans()):
            # At least a fifth of the demand above the min: no class is fixed (lo == hi), whose
            # reduced cost GLOP would be free to choose.
            hi = lo + draw(st.floats(0.2, 1.0)) * (demand - lo)
            maxes["cpu"] = hi
        classes.append(ClassDemand(f"c{i}", draw(st.floats(0.1, 10)), 0, {"cpu": demand}, mins, maxes))
    ratio = {c.name: c.weight / c.demand["cpu"] for c in classes}
    ordered = sorted(classes, key=lambda c: -ratio[c.name])
    for a, b in zip(ordered, ordered[1:], strict=False):
        assume(ratio[a.name] > ratio[b.name] * (1 + 1e-3))  # no ties: a unique dual
    j = draw(st.integers(0, n - 1))
    fraction = draw(st.floats(0.05, 0.95))
    room = [c.max.get("cpu", c.demand["cpu"]) - c.min.get("cpu", 0.0) for c in ordered]
    capacity = sum(c.min.get("cpu", 0.0) for c in classes) + sum(room[:j]) + fraction * room[j]
    return Problem({"cpu": capacity}, tuple(classes)), ordered[j].name


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(nondegenerate())
def test_duals_are_glops_where_the_optimum_is_nondegenerate(case):
    problem, marginal = case
    alloc = solve(problem)
    row_dual, amounts, reduced = glop(problem)
    assert alloc.amounts.column("cpu") == pytest.approx(amounts, rel=1e-6, abs=1e-9)
    (cap,) = [b for b in alloc.bindings if b.kind == "capacity"]
    assert cap.dual == pytest.approx(row_dual, rel=1e-6)
    assert cap.to == (marginal,)
    demand = {c.name: max(c.demand["cpu"], c.min.get("cpu", 0.0)) for c in problem.classes}
    seen = set()
    for b in alloc.bindings:
        if b.kind in ("max", "demand"):
            assert b.dual == pytest.approx(reduced[b.cls] / demand[b.cls], rel=1e-6)
            assert reduced[b.cls] > 0
        elif b.kind == "min":
            assert b.dual == pytest.approx(-reduced[b.cls] / demand[b.cls], rel=1e-6)
            assert reduced[b.cls] < 0
        seen.add(b.cls)
    # Every class but the marginal one sits on a bound: at hi (better ratio) or at lo (worse); a
    # class at a lo of 0 (no min) has no binding, and GLOP's reduced cost there is negative.
    for c in problem.classes:
        if c.name == marginal:
            assert c.name not in seen and reduced[c.name] == pytest.approx(0.0, abs=1e-9)
        elif c.name not in seen:
            assert "cpu" not in c.min and reduced[c.name] < 0


def test_hand_made_duals_against_glop():
    # Ratios: a 4/1 = 4, b 3/2 = 1.5, c 2/4 = 0.5, d 1/8 = 0.125 (min 1). Capacity 1 + 2 + 2 + 1:
    # a and b in full, c half, d at its min. Capacity dual 0.5 (c's ratio); a demand dual 4 - 0.5,
    # b 1.5 - 0.5, d min dual 0.5 - 0.125.
    problem = Problem({"cpu": 6.0}, (
        ClassDemand("a", 4, 0, {"cpu": 1.0}), ClassDemand("b", 3, 0, {"cpu": 2.0}),
        ClassDemand("c", 2, 0, {"cpu": 4.0}), ClassDemand("d", 1, 0, {"cpu": 8.0}, {"cpu": 1.0})))
    alloc = solve(problem)
    row_dual, _, reduced = glop(problem)
    got = {(b.kind, b.cls): b.dual for b in alloc.bindings}
    assert got == pytest.approx({("capacity", None): 0.5, ("demand", "a"): 3.5, ("demand", "b"): 1.0,
                                 ("min", "d"): 0.375})
    assert row_dual == pytest.approx(0.5)
    assert reduced["a"] / 1.0 == pytest.approx(3.5) and -reduced["d"] / 8.0 == pytest.approx(0.375)


def test_degenerate_boundary_glop_may_differ_within_the_interval():
    # Capacity 3 = a (1) + b (2) exactly: b ends on its demand, c gets nothing. Any dual in
    # [c's ratio 0.5, b's ratio 1.5] is valid; the solver reports 0.5, what one more core is worth.
    problem = Problem({"cpu": 3.0}, (
        ClassDemand("a", 4, 0, {"cpu": 1.0}), ClassDemand("b", 3, 0, {"cpu": 2.0}),
        ClassDemand("c", 2, 0, {"cpu": 4.0})))
    (cap,) = [b for b in solve(problem).bindings if b.kind == "capacity"]
    assert cap.dual == pytest.approx(0.5) and cap.to == ("c",)
    row_dual, _, _ = glop(problem)
    assert 0.5 - 1e-9 <= row_dual <= 1.5 + 1e-9
