"""Why the allocation is what it is: which constraints bind and what relaxing them is worth.

Only what the LP allocates is explained: CPU (problem.py). Memory and io files are written as the
policy says, so there is no memory or io allocation to explain; the last sentence says so.
"""

from __future__ import annotations

from aios_host.policy.engine import Decision
from aios_host.policy.problem import Binding


def _amount(resource: str, v: float) -> str:
    return f"{v:.2f} cores" if resource == "cpu" else f"{v:.3g}"


def _per_unit(resource: str, dual: float) -> tuple[float, str]:
    """Duals are per native unit: per core for cpu."""
    return dual, "core" if resource == "cpu" else "unit"


def _to(b: Binding, unit: str) -> str:
    """Who the next unit of a binding capacity goes to: the solver's marginal classes (the best
    weight per unit of demand among those below their max or demand), not the heaviest class."""
    if not b.to:
        return ""
    if len(b.to) == 1:
        return f", to class {b.to[0]}"
    return f", shared by classes {', '.join(b.to)} (equal weight per {unit} of demand)"


def sentences(d: Decision) -> list[str]:
    out = []
    for b in d.allocation.bindings:
        if b.kind == "capacity":
            value, unit = _per_unit(b.resource, b.dual)
            out.append(f"{b.resource} binds (tier {b.tier}): one more {unit} is worth {value:.3g}{_to(b, unit)}")
        elif b.kind in ("min", "max"):
            c = next(c for c in d.problem.classes if c.name == b.cls)
            bound = (c.min if b.kind == "min" else c.max)[b.resource]
            value, unit = _per_unit(b.resource, b.dual)
            worth = f"; relaxing it by one {unit} is worth {abs(value):.3g}" if b.dual else ""
            out.append(f"{b.cls}: {b.resource} held at its {b.kind} {_amount(b.resource, bound)}{worth}")
        elif b.kind == "demand":
            out.append(f"{b.cls}: {b.resource} fully served (its whole demand)")
    out.append("memory and io are not allocated: memory.min/low/high/max and io.weight are written"
               " as the policy says (see `policy diff`)")
    return out


def table_rows(d: Decision) -> list[tuple[object, ...]]:
    rows = []
    for c in d.problem.classes:
        for r in d.problem.capacity:
            a = d.allocation.amounts[c.name][r]
            x = d.allocation.satisfaction[c.name][r]
            rows.append((
                c.name, c.priority, f"{c.weight:g}", r, _amount(r, c.demand[r]),
                _amount(r, c.min[r]) if r in c.min else "-",
                _amount(r, c.max[r]) if r in c.max else "-",
                _amount(r, a), f"{x:.3f}",
            ))
    return rows
