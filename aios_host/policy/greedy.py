"""The fractional-knapsack baseline the benchmarks compare the LP solver with: nothing in the
product calls it. tests/bench/bench_policy.py and bench_decide.py time it beside the solver, and
tests/unit/policy/test_solver.py checks the solver's objective against it.

Per resource: give every class its min, then fill classes in the order (priority descending,
w_i / c_ir descending, name) up to hi_ir (demand, capped by max). For one tier this is the exact
optimum of the seed LP (problem.py); it has no fairness step and no explanation. Same conventions as
solver.py (it reads the problem through the same `to_arrays`), so objectives compare directly.
"""

from __future__ import annotations

import numpy as np

from aios_host.policy.problem import Allocation, Problem
from aios_host.policy.solver import by_class, check_guarantees_of, to_arrays


def greedy_allocate(problem: Problem) -> Allocation:
    data = to_arrays(problem)
    check_guarantees_of(data)
    c = data.demand
    lo, hi = data.lo, data.hi
    x = lo.copy()
    ratio = np.zeros_like(c)
    np.divide(np.broadcast_to(data.weight, c.shape), c, out=ratio, where=c > 0)
    room = c * (hi - lo)
    avail = data.capacity - data.lo_amt.sum(axis=1)
    column = np.arange(c.shape[1])
    for k in range(c.shape[0]):
        # np.lexsort sorts by its last key first: priority, then ratio, then name (column order).
        order = np.lexsort((column, -ratio[k], -data.priority))
        rk = room[k, order]
        before = np.cumsum(rk) - rk
        give = np.clip(avail[k] - before, 0.0, rk)
        x[k, order] += np.divide(give, c[k, order], out=np.zeros_like(give), where=c[k, order] > 0)
    np.clip(x, lo, hi, out=x)
    amounts = np.where(c > 0, c * x, 0.0)
    return Allocation(
        amounts=by_class(data, amounts),
        satisfaction=by_class(data, x),
        bindings=(),
        objective=float((data.weight * x).sum()),
    )

