"""Problem -> Allocation: the tiered LP, solved with GLOP through OR-Tools' model-builder helper.

What is optimised, in this order (each step keeps what the steps before it decided):

1. **Guarantees of every tier** are reserved first. If, for some resource, the mins of all
   classes together exceed the capacity, `InfeasibleError` names the resource, the classes with
   guarantees (largest first) and the shortfall. A class whose min exceeds its max is refused too.
2. **Tiers**, highest `priority` first. A tier is solved in the capacity left after the amounts
   given to higher tiers (fixed: they are subtracted, never re-optimised) and after the mins of
   lower tiers (reserved: step 1 promised them).
3. **Inside a tier, weights first**: the seed LP of problem.py,
   maximize sum_i w_i x_ir  s.t.  sum_i c_ir x_ir <= C_r(tier),  lo_ir <= x_ir <= hi_ir.
4. **Then max-min fairness, as the tie-break among allocations that are optimal for step 3**:
   the classes that step 3 is indifferent between (same w_i / c_ir as the class served last:
   zero reduced cost) share what step 3 gave them by maximising t subject to
   x_ir >= t * hi_ir, i.e. every one of them gets the same fraction of what it may receive.

Why weights first and max-min second, not the other way round. With one capacity constraint per
resource, "maximize t s.t. t <= x_ir for every class" uses up the whole capacity whenever the
capacity binds (every class sits at t* or at its min), so a second "maximize sum w_i x_ir s.t.
x_ir >= t*" step has nothing left to give: under contention, the only case that matters, weights
would have no effect at all (two classes of one core each on one core: weights 1 and 10 would both
get half). Weights first keeps the weights meaningful, keeps the objective equal to the optimum
of the seed LP (so it is never below the greedy fractional-knapsack baseline, greedy.py), and uses
max-min exactly where the LP alone is arbitrary: between classes it values equally, where a
simplex vertex would give one of them everything and the other nothing. Fairness is measured
against hi_ir (demand capped by max) so that a capped class does not hold the others' level down.

The price of this choice, stated plainly: between classes of different w_i / c_ir the tier is
served in that order (a fractional knapsack), so a class can get only its min while a class of a
better ratio is fully served. A min is the tool to protect a class from that.

"More weight never means less share" holds: raising w_i only raises class i's ratio, which moves
it ahead of (or into, or out of) the group of equal ratios; in each case what it receives does
not shrink (the tests check it with hypothesis).

Conventions:

- x_ir is the satisfied fraction of the class's demand c_ir, where the demand is raised to the
  min when min > demand (a guarantee is always honoured). A class with no demand and no min has
  x_ir = 1 (nothing asked, all given) and a_ir = 0; it still counts w_i in the objective, in
  greedy.py too.
- Each resource is its own LP (no constraint couples resources), but all contended resources of a
  tier are solved in one GLOP model. A resource of a tier that fits entirely, or that has nothing
  left above its mins, needs no LP: its answer is the bound.
- Numerics: each resource is scaled by its tier capacity before GLOP sees it (a resource in bytes
  would give coefficients of 1e10, poor for a simplex). Demands and mins at or below 1e-9 of the capacity
  count as 0 (`NEGLIGIBLE`). Results are clamped to the bounds, tiny negatives to 0, and a tier's
  amounts are scaled down above the mins if GLOP's tolerance left them over the capacity, so
  sum_i a_ir <= C_r holds.
- Determinism: classes are sorted by (-priority, name) before anything is built; the model is built
  in that order; GLOP is deterministic; outputs are dicts in that order. The same classes given in
  another order produce the same amounts.

Explanation (`Allocation.bindings`): for each tier and resource a `capacity` binding when the tier
used all the capacity left to it, and per class a `min`, `max` or `demand` binding when its amount
sits on that bound (a class pinned by a min above its demand has both `min` and `demand`).

`dual` is in objective units (sum w_i x_ir of that tier) per NATIVE unit of the resource (per core
for cpu, the one resource decide() allocates; per byte for a resource in bytes); always >= 0, as the
gain from relaxing the bound by one unit:

- capacity: what one more unit would add to the tier's objective. For this LP that is the best
  w_i / c_ir among the tier's classes still below their hi (the next unit goes there: those classes
  are the binding's `to`), or 0 when the capacity has slack. At a nondegenerate optimum this is
  exactly GLOP's dual value. When the capacity ends exactly on a class boundary the vertex is
  degenerate, any value between the two neighbouring ratios is a valid dual and GLOP may return any
  of them; the one-sided value above is reported instead, so the number means what this paragraph
  says.
- max / demand: the reduced cost per unit of amount, w_i / c_ir - capacity dual, 0 when negative.
- min: capacity dual - w_i / c_ir (what giving up one unit of the guarantee would gain), 0 when
  negative (the guarantee holds nothing back).

Duals are those of step 3 (weights); step 4 only moves amounts between classes whose reduced cost is
0, and does not change them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from ortools.linear_solver.python import model_builder_helper as mbh

from aios_host.policy.problem import (
    RESOURCES,
    UNITS,
    Allocation,
    Binding,
    ByClass,
    ClassDemand,
    InfeasibleError,
    Problem,
)

# Relative slack when comparing sums against capacities (guarantee check, fit test).
CAPACITY_RTOL = 1e-9
# Absolute tolerance on x (a fraction in [0, 1]) for "sits on its bound".
BOUND_TOL = 1e-9
# A class with less room than this between lo and hi (fractions of its demand) is fixed.
ROOM_TOL = 1e-12
# Relative tolerance on w_i / c_ir for "step 3 is indifferent between these classes".
TIE_RTOL = 1e-9
# Demands and mins at or below this fraction of the capacity count as 0.
NEGLIGIBLE = 1e-9
GIB = 1024**3


@dataclass(frozen=True)
class ProblemArrays:
    """The problem as arrays: rows are resources, columns classes sorted by (-priority, name).

    Shared with greedy.py so both read a Problem the same way (raised demands, caps, x of 1 for a
    class that asks for nothing).
    """

    names: tuple[str, ...]
    priority: np.ndarray  # (n,) int
    weight: np.ndarray  # (n,)
    resources: tuple[str, ...]
    capacity: np.ndarray  # (R,), clamped at 0
    demand: np.ndarray  # (R, n): c_ir, raised to the min
    lo_amt: np.ndarray  # (R, n): min_ir (0 when none)
    hi_amt: np.ndarray  # (R, n): min(c_ir, max_ir)
    capped: np.ndarray  # (R, n) bool: max_ir < c_ir, so hi is the max, not the demand
    has_min: np.ndarray  # (R, n) bool
    lo: np.ndarray  # (R, n): bounds on x, lo_amt / c and hi_amt / c; both 1 where c = 0
    hi: np.ndarray


def _fraction(amount: np.ndarray, demand: np.ndarray, empty: float) -> np.ndarray:
    """amount / demand, `empty` where the demand is 0."""
    out = np.full(amount.shape, empty)
    np.divide(amount, demand, out=out, where=demand > 0)
    return out


def _resources_of(problem: Problem) -> tuple[str, ...]:
    known = [r for r in RESOURCES if r in problem.capacity]
    return tuple(known + sorted(r for r in problem.capacity if r not in RESOURCES))


def _ordered(classes: Sequence[ClassDemand]) -> list[ClassDemand]:
    """(-priority, name): by name, then a stable sort by priority, descending."""
    out = sorted(classes, key=attrgetter("name"))
    out.sort(key=attrgetter("priority"), reverse=True)
    return out


def to_arrays(problem: Problem) -> ProblemArrays:
    """Validate `problem` (ValueError for malformed input, InfeasibleError for min > max)."""
    classes = _ordered(problem.classes)
    n = len(classes)
    names = tuple(c.name for c in classes)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class names must be unique: {', '.join(dup)}")
    resources = _resources_of(problem)
    known = set(resources)
    demands = [c.demand for c in classes]
    mins = [c.min for c in classes]
    maxes = [c.max for c in classes]
    for c, d, lo_, mx_ in zip(classes, demands, mins, maxes, strict=True):
        if not (known.issuperset(d) and known.issuperset(lo_) and known.issuperset(mx_)):
            extra = (set(d) | set(lo_) | set(mx_)) - known
            raise ValueError(f"class {c.name} names resources without capacity: {sorted(extra)}")

    nr = len(resources)
    weight = np.fromiter((c.weight for c in classes), float, n)
    bad_weight = ~((weight > 0) & np.isfinite(weight))
    if bad_weight.any():
        c = classes[int(np.argmax(bad_weight))]
        raise ValueError(f"class {c.name}: weight must be a positive number, not {c.weight}")
    priority = np.fromiter((c.priority for c in classes), np.int64, n)
    raw = np.empty((nr, n))
    lo = np.empty((nr, n))
    mx = np.empty((nr, n))
    for k, r in enumerate(resources):
        raw[k] = [d.get(r, 0.0) for d in demands]
        lo[k] = [m.get(r, 0.0) for m in mins]
        mx[k] = [m.get(r, math.inf) for m in maxes]
    _check_values(classes, resources, raw, lo, mx)

    capacity = np.array([float(problem.capacity[r]) for r in resources])
    if not np.all(np.isfinite(capacity)):
        raise ValueError(f"capacities must be finite: {dict(problem.capacity)}")
    capacity = np.maximum(capacity, 0.0)
    # Amounts under a billionth of the capacity are noise from the demand estimate; left in, a
    # ratio w / c over such a demand is enormous and a crumb of capacity swings x from 0 to 1.
    negligible = NEGLIGIBLE * capacity[:, None]
    raw = np.where(raw <= negligible, 0.0, raw)
    lo = np.where(lo <= negligible, 0.0, lo)
    demand = np.maximum(raw, lo)
    hi_amt = np.minimum(demand, mx)
    return ProblemArrays(
        names=names,
        priority=priority,
        weight=weight,
        resources=resources,
        capacity=capacity,
        demand=demand,
        lo_amt=lo,
        hi_amt=hi_amt,
        capped=mx < demand,
        has_min=lo > 0,
        lo=_fraction(lo, demand, 1.0),
        hi=_fraction(hi_amt, demand, 1.0),
    )


def _check_values(
    classes: Sequence[ClassDemand],
    resources: Sequence[str],
    raw: np.ndarray,
    lo: np.ndarray,
    mx: np.ndarray,
) -> None:
    for what, arr, allow_inf in (("demand", raw, False), ("min", lo, False), ("max", mx, True)):
        bad = ~(arr >= 0) if allow_inf else ~((arr >= 0) & np.isfinite(arr))
        if bad.any():
            k, i = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(
                f"class {classes[i].name}: {what} of {resources[k]} must be a finite number"
                f" >= 0, not {arr[k, i]}"
            )
    over = lo > mx
    if over.any():
        k, i = (int(v[0]) for v in np.nonzero(over))
        r = resources[k]
        raise InfeasibleError(
            f"{r}: class {classes[i].name} has a guarantee of {_amount(r, lo[k, i])}"
            f" above its limit of {_amount(r, mx[k, i])}"
        )


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _amount(resource: str, value: float) -> str:
    """A human amount: '12 cores', '7.5 GiB' (memory guarantees are checked, demand.py)."""
    if resource == "memory":
        return f"{_num(value / GIB)} GiB"
    if resource == "cpu":
        return f"{_num(value)} core" if value == 1 else f"{_num(value)} cores"
    return f"{_num(value)} {UNITS.get(resource, 'units')}"


def check_guarantees(problem: Problem) -> None:
    """Raise InfeasibleError when the guarantees of all tiers do not fit the capacity."""
    check_guarantees_of(to_arrays(problem))


def check_guarantees_of(data: ProblemArrays) -> None:
    """Raise InfeasibleError when, for some resource, the mins of all tiers exceed the capacity."""
    need = data.lo_amt.sum(axis=1)
    for k, r in enumerate(data.resources):
        cap = data.capacity[k]
        if need[k] <= cap * (1 + CAPACITY_RTOL) + 1e-12:
            continue
        holders = np.nonzero(data.lo_amt[k] > 0)[0].tolist()
        holders.sort(key=lambda i: (-data.lo_amt[k, i], data.names[i]))
        listed = ", ".join(f"{data.names[i]} ({_amount(r, data.lo_amt[k, i])})" for i in holders)
        raise InfeasibleError(
            f"{r}: guarantees of {listed} need {_amount(r, need[k])} but {_amount(r, cap)}"
            f" {'is' if cap == 1 and r == 'cpu' else 'are'} available after the reserve:"
            f" {_amount(r, need[k] - cap)} short"
        )


@dataclass
class _TierResult:
    x: np.ndarray  # (R, m) satisfaction of the tier's classes
    dual: np.ndarray  # (R,) capacity dual per native unit (0 where the capacity has slack)
    binds: np.ndarray  # (R,) bool: the tier used all the capacity left to it
    marginal: list[np.ndarray]  # per resource: tier columns the next unit would go to


def solve(problem: Problem) -> Allocation:
    """The tiered allocation of `problem`; see the module docstring for what is optimised."""
    data = to_arrays(problem)
    check_guarantees_of(data)
    n, nr = len(data.names), len(data.resources)
    x = np.ones((nr, n))
    lo, hi = data.lo, data.hi
    bindings: list[Binding] = []

    # Mins of classes at or after column j, per resource: what lower tiers were promised.
    min_after = np.zeros((nr, n + 1))
    min_after[:, :n] = np.cumsum(data.lo_amt[:, ::-1], axis=1)[:, ::-1]
    used = np.zeros(nr)
    for start, stop in _tiers(data.priority):
        sl = slice(start, stop)
        cap = data.capacity - used - min_after[:, stop]
        cap = np.maximum(cap, data.lo_amt[:, sl].sum(axis=1))
        res = _solve_tier(data.weight[sl], data.demand[:, sl], lo[:, sl], hi[:, sl], cap)
        x[:, sl] = res.x
        used += (data.demand[:, sl] * res.x).sum(axis=1)
        bindings.extend(_tier_bindings(data, sl, res))

    amounts = np.where(data.demand > 0, data.demand * x, 0.0)
    amounts = np.maximum(amounts, 0.0)
    objective = float((data.weight * x).sum())
    return Allocation(
        amounts=by_class(data, amounts),
        satisfaction=by_class(data, x),
        bindings=tuple(bindings),
        objective=objective,
    )


def by_class(data: ProblemArrays, values: np.ndarray) -> ByClass:
    """(R, n) array -> {class: {resource: value}}, classes in (-priority, name) order."""
    return ByClass(data.names, data.resources, values.tolist())


def decisive_demands(problem: Problem, resource: str = "cpu") -> dict[str, float]:
    """Each class's demand for `resource` as far as solve() can tell it apart. Two problems with
    the same capacity, classes, weights, priorities and bounds whose decisive demands are equal get
    the same amounts, and the same min(amount, demand) (what the daemon routes on). The daemon
    re-solves only when these move (loop._should_decide): a protected class asking 3.5 or 4.2
    cores of a 2-core host gets the host either way, and a lower tier under it its min.

    Walking the tiers as solve() does, with the capacity C_t left to each (after higher tiers'
    amounts and lower tiers' mins), a class's demand is cut (demand capped by its max first):
    - to its min, in a tier with nothing left above its mins: every class there gets its min
      whatever it asks (a demand below the min still counts: min(amount, demand) shows it);
    - to C_t, when it is alone in its tier: it can get no more than C_t however much it asks;
    - not at all in a tier of several classes with room above their mins: step 3 serves them
      in order of w_i / c_ir, so any move of a demand may reorder them."""
    cap = max(0.0, float(problem.capacity.get(resource, 0.0)))
    classes = _ordered(problem.classes)
    negligible = NEGLIGIBLE * cap
    lo = [m if (m := c.min.get(resource, 0.0)) > negligible else 0.0 for c in classes]
    raw = [d if (d := c.demand.get(resource, 0.0)) > negligible else 0.0 for c in classes]
    hi = [min(max(r, m), c.max.get(resource, math.inf)) for c, r, m in zip(classes, raw, lo, strict=True)]
    min_after = [0.0] * (len(classes) + 1)
    for j in range(len(classes) - 1, -1, -1):
        min_after[j] = min_after[j + 1] + lo[j]
    out: dict[str, float] = {}
    used, start = 0.0, 0
    while start < len(classes):
        stop = start + 1
        while stop < len(classes) and classes[stop].priority == classes[start].priority:
            stop += 1
        tier_min = sum(lo[start:stop])
        cap_t = max(cap - used - min_after[stop], tier_min)
        for j in range(start, stop):
            asked = min(raw[j], classes[j].max.get(resource, math.inf))
            if cap_t <= tier_min * (1 + CAPACITY_RTOL):
                out[classes[j].name] = min(asked, lo[j])
            elif stop - start == 1:
                out[classes[j].name] = min(asked, cap_t)
            else:
                out[classes[j].name] = asked
        used += min(sum(hi[start:stop]), cap_t)
        start = stop
    return out


def _tiers(priority: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) column ranges of equal priority; columns are sorted by priority already."""
    if priority.size == 0:
        return []
    cuts = np.nonzero(np.diff(priority))[0] + 1
    edges = [0, *cuts.tolist(), int(priority.size)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _solve_tier(
    w: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, cap: np.ndarray
) -> _TierResult:
    """One tier: weights (step 3), then max-min among the ties (step 4). Shapes (R, m), cap (R,)."""
    nr = c.shape[0]
    x = hi.copy()
    dual = np.zeros(nr)
    binds = np.zeros(nr, dtype=bool)
    none = np.zeros(0, dtype=np.intp)
    marginal = [none] * nr
    floor_amt = (c * lo).sum(axis=1)
    full_amt = (c * hi).sum(axis=1)
    contended: list[int] = []
    for k in range(nr):
        if full_amt[k] <= cap[k] * (1 + CAPACITY_RTOL):
            # Everything fits: all at hi, the capacity has slack (or holds exactly, dual 0).
            binds[k] = full_amt[k] >= cap[k] * (1 - CAPACITY_RTOL) and full_amt[k] > 0
        elif cap[k] - floor_amt[k] <= CAPACITY_RTOL * max(cap[k], 1e-300):
            # Nothing above the mins: one more unit would go to the best ratio with room.
            x[k] = lo[k]
            binds[k] = True
            dual[k], marginal[k] = _marginal(w, c[k], lo[k], hi[k], x[k])
        else:
            contended.append(k)
    if contended:
        for k, xk in zip(contended, _weights_lp(w, c, lo, hi, cap, contended), strict=True):
            x[k] = xk
            binds[k] = True
        _fair_ties(w, c, lo, hi, x, contended)
        np.clip(x, lo, hi, out=x)
        _fit(c, lo, x, cap)
        for k in contended:
            dual[k], marginal[k] = _marginal(w, c[k], lo[k], hi[k], x[k])
    return _TierResult(x=x, dual=dual, binds=binds, marginal=marginal)


def _marginal(
    w: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, x: np.ndarray
) -> tuple[float, np.ndarray]:
    """The capacity dual per native unit and the classes it comes from: one more unit goes to the
    best w_i / c_ir among classes still below hi (all of them, within TIE_RTOL, when several tie),
    and adds that ratio to the tier's objective. Equal to GLOP's dual at a nondegenerate optimum,
    and well defined at a degenerate one (module docstring). (0, no classes) when none has room."""
    room = np.nonzero(_free(c, lo, hi) & (x < hi - BOUND_TOL))[0]
    if room.size == 0:
        return 0.0, room
    ratio = w[room] / c[room]
    best = float(ratio.max())
    return best, room[ratio >= best * (1 - TIE_RTOL)]


def _free(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Classes the LP can move: some demand, and room between their bounds."""
    return (c > 0) & (hi - lo > ROOM_TOL)


def _weights_lp(
    w: np.ndarray,
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    cap: np.ndarray,
    rows: Sequence[int],
) -> list[np.ndarray]:
    """Step 3 for the contended resources `rows` of a tier, in one GLOP model.

    Only classes with room (lo < hi) become variables; the others are fixed and their amounts come
    off the capacity. Each resource's row is scaled by its capacity (or its largest demand, where
    larger). Returns x per row.
    """
    model = mbh.ModelBuilderHelper()
    model.set_maximize(True)
    layout: list[tuple[np.ndarray, np.ndarray]] = []
    for k in rows:
        free = np.nonzero(_free(c[k], lo[k], hi[k]))[0]
        fixed_amt = float((c[k] * lo[k]).sum() - (c[k, free] * lo[k, free]).sum())
        # Scaled so that no coefficient exceeds 1: by the capacity, or by the largest demand where
        # that is larger (a capacity of ~1e-291 bytes made the coefficients inf, which GLOP refuses;
        # found by test_objective_equals_greedy_with_tiers)
        scale = max(float(cap[k]), float(c[k, free].max()) if free.size else 0.0, 1e-300)
        idx = model.add_var_array_with_bounds(
            lo[k, free], hi[k, free], np.zeros(free.size, dtype=bool), ""
        )
        model.set_objective_coefficients(idx.tolist(), w[free].tolist())
        ct = model.add_linear_constraint()
        model.set_constraint_lower_bound(ct, -math.inf)
        model.set_constraint_upper_bound(ct, (float(cap[k]) - fixed_amt) / scale)
        model.add_terms_to_constraint(
            ct, [mbh.Variable(model, i) for i in idx.tolist()], (c[k, free] / scale).tolist()
        )
        layout.append((free, idx))
    values = _glop(model).variable_values()
    xs = []
    for (free, idx), k in zip(layout, rows, strict=True):
        xk = lo[k].copy()
        xk[free] = values[idx]
        xs.append(xk)
    return xs


def _fair_ties(
    w: np.ndarray,
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    x: np.ndarray,
    rows: Sequence[int],
) -> None:
    """Step 4, in place on x: max-min among the classes of zero reduced cost, in one GLOP model.

    The group of a resource is the free classes whose ratio w_i / c_ir equals (within TIE_RTOL)
    the lowest ratio among classes that step 3 served above their floor. Moving amount between
    them leaves sum w_i x_ir unchanged, so this step only chooses among optimal allocations.
    """
    groups: list[tuple[int, np.ndarray]] = []
    for k in rows:
        free = _free(c[k], lo[k], hi[k])
        served = free & (x[k] > lo[k] + BOUND_TOL)
        if not served.any():
            continue
        ratio = np.zeros_like(w)
        np.divide(w, c[k], out=ratio, where=c[k] > 0)
        last = float(ratio[served].min())
        group = np.nonzero(free & (np.abs(ratio - last) <= TIE_RTOL * last))[0]
        if group.size >= 2:
            groups.append((k, group))
    if not groups:
        return
    model = mbh.ModelBuilderHelper()
    model.set_maximize(True)
    layout = []
    for k, g in groups:
        coef = c[k, g] / float((c[k, g] * hi[k, g]).sum())  # scaled: the group's hi sums to 1
        total = float((coef * x[k, g]).sum())
        # At the optimum a class without a min sits exactly on x = t * hi (a class above its level
        # would hold back the others'), so it needs no variable of its own: it adds t * hi to the
        # sum. Classes with a min get x >= t * hi; identical (lo, hi) pairs end equal, so they share
        # one variable. The model has one column per distinct guarantee, not one per class.
        plain = lo[k, g] <= 0.0
        keys, members = np.unique(
            np.stack([lo[k, g][~plain], hi[k, g][~plain]], axis=1), axis=0, return_inverse=True
        )
        members = members.reshape(-1)
        t = int(model.add_var())
        model.set_var_lower_bound(t, 0.0)
        model.set_var_upper_bound(t, 1.0)
        model.set_var_objective_coefficient(t, 1.0)
        t_var = mbh.Variable(model, t)
        # Contiguous copies: the helper reads the raw buffer and ignores a column view's strides.
        key_lo, key_hi = np.ascontiguousarray(keys[:, 0]), np.ascontiguousarray(keys[:, 1])
        idx = model.add_var_array_with_bounds(key_lo, key_hi, np.zeros(len(keys), dtype=bool), "")
        xs = [mbh.Variable(model, i) for i in idx.tolist()]
        weight = np.bincount(members, weights=coef[~plain], minlength=len(keys))
        ct = model.add_linear_constraint()
        model.set_constraint_lower_bound(ct, total)
        model.set_constraint_upper_bound(ct, total)
        t_weight = float((coef[plain] * hi[k, g][plain]).sum())
        model.add_terms_to_constraint(ct, [t_var, *xs], [t_weight, *weight.tolist()])
        for xv, h in zip(xs, key_hi.tolist(), strict=True):
            level = model.add_linear_constraint()  # x_u - hi_u * t >= 0
            model.set_constraint_lower_bound(level, 0.0)
            model.set_constraint_upper_bound(level, math.inf)
            model.add_terms_to_constraint(level, [xv, t_var], [1.0, -h])
        layout.append((k, g, plain, members, t, idx))
    values = _glop(model).variable_values()
    for k, g, plain, members, t, idx in layout:
        xg = values[t] * hi[k, g]
        xg[~plain] = values[idx][members]
        x[k, g] = xg


def _glop(model: mbh.ModelBuilderHelper) -> mbh.ModelSolverHelper:
    solver = mbh.ModelSolverHelper("glop")
    solver.set_time_limit_in_seconds(10.0)
    solver.solve(model)
    if solver.status() != mbh.SolveStatus.OPTIMAL:
        # The LPs here are feasible and bounded by construction: anything else is a bug.
        raise RuntimeError(f"GLOP did not solve the allocation LP: {solver.status_string()}")
    return solver


def _fit(c: np.ndarray, lo: np.ndarray, x: np.ndarray, cap: np.ndarray) -> None:
    """Scale the part above the mins down where the solver's tolerance overshot the capacity."""
    amt = (c * x).sum(axis=1)
    floor = (c * lo).sum(axis=1)
    for k in np.nonzero(amt > cap)[0].tolist():
        above = amt[k] - floor[k]
        factor = max(0.0, cap[k] - floor[k]) / above if above > 0 else 0.0
        x[k] = lo[k] + (x[k] - lo[k]) * factor


def _tier_bindings(data: ProblemArrays, sl: slice, res: _TierResult) -> list[Binding]:
    tier = int(data.priority[sl.start])
    c = data.demand[:, sl]
    lo, hi = data.lo[:, sl], data.hi[:, sl]
    w = data.weight[sl]
    names = data.names[sl]
    x = res.x
    # Reduced cost per native unit of amount: w_i / c_ir - capacity dual.
    per_unit = np.zeros_like(c)
    np.divide(np.broadcast_to(w, c.shape), c, out=per_unit, where=c > 0)
    reduced = per_unit - res.dual[:, None]
    at_lo = (c > 0) & data.has_min[:, sl] & (x <= lo + BOUND_TOL)
    at_hi = (c > 0) & (x >= hi - BOUND_TOL)
    capped = data.capped[:, sl]
    out: list[Binding] = []
    for k, r in enumerate(data.resources):
        if res.binds[k]:
            to = tuple(names[i] for i in res.marginal[k].tolist())
            out.append(Binding("capacity", r, None, tier, float(res.dual[k]), to))
        up = np.maximum(reduced[k], 0.0).tolist()
        down = np.maximum(-reduced[k], 0.0).tolist()
        for i in np.nonzero(at_lo[k] | at_hi[k])[0].tolist():
            if at_lo[k, i]:
                out.append(Binding("min", r, names[i], tier, down[i]))
            if at_hi[k, i]:
                kind = "max" if capped[k, i] else "demand"
                out.append(Binding(kind, r, names[i], tier, up[i]))
    return out
