"""Exclusive cores: which whole physical cores each cpuset-partition class gets, with CP-SAT.

The model counts cores per (class, LLC domain), not per core: cores of one LLC domain are
interchangeable for every term of the objective, so a count per domain carries the decision and
leaves no symmetry between cores for the solver to explore (32 classes on 256 CPUs: ~1.5k
variables instead of ~4k Booleans plus their linking). Concrete cores are
picked afterwards, deterministically: classes in name order, each taking the lowest-numbered free
cores of the domains the model gave it.

    y[j,d] in 0..min(cores_j, free_d)    cores of class j in domain d (an LLC within one NUMA node)
    u[j,d] = [y[j,d] > 0]                 class j uses domain d
    v[j,n] >= u[j,d] for d on node n      class j uses NUMA node n
    sum_d y[j,d] = cores_j,   sum_j y[j,d] <= free_d

Objective, lexicographic, folded into one integer weighted sum (each weight exceeds the largest
value everything after it can take, so the order is exact):

    1. sum v     NUMA nodes spanned, summed over classes
    2. sum u     LLC domains spanned
    3. cores placed off the class's preferred node (no preference: no cost)

Low-numbered cores come from the structure, not from a fourth objective level (which made the
model a bin-packing problem that CP-SAT could not close in a second on 256 CPUs, measured):
domains of one node with as many free cores are interchangeable, so their loads are constrained to
be non-increasing (this breaks the symmetry and packs the low-numbered domains first), and within a
domain the lowest-numbered cores are taken. A first-fit placement is given as the solution hint;
when it already meets the LP bound CP-SAT only proves it.

Determinism: requests are sorted by name, domains by (node, lowest core), the solver runs with one
worker and a fixed seed, and its budget is deterministic time (max_deterministic_time), so the same
input gives the same answer on any machine. A wall-clock guard (`time_limit_s`) stops a runaway
solve; only if it fires (logged) could two runs differ.

A core with any reserved SMT sibling is not given out. One free core always stays for the
non-exclusive classes and the system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from aios_host.log import get_logger
from aios_host.policy.problem import CoreAssignment, CoreRequest, InfeasibleError

log = get_logger("aios_host.policy.cores")

# Deterministic-time budget, in CP-SAT's own work units (machine-independent, so the answer is
# too). Easy placements are proven optimal far below it; tightly packed hosts (every core asked
# for) stop here with the best placement found, ~0.15-0.5 s on the 2-core dev VM.
DETERMINISTIC_BUDGET = 0.05
SEED = 1


@dataclass(frozen=True)
class _Domain:
    node: int
    llc: int
    cores: tuple[tuple[int, ...], ...]  # free cores, sorted by first cpu id


def _plural(n: int) -> str:
    return f"{n} core" if n == 1 else f"{n} cores"


def _domains(
    cores: Sequence[tuple[int, ...]],
    numa_of: Mapping[int, int],
    llc_of: Mapping[int, int],
    reserved: set[int],
) -> tuple[list[_Domain], int]:
    """Free cores grouped by (NUMA node, LLC), and the number of cores held back by `reserved`."""
    groups: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    held = 0
    for core in cores:
        sibs = tuple(sorted(core))
        if not sibs:
            raise ValueError("a core with no cpus")
        if reserved.intersection(sibs):
            held += 1
            continue
        first = sibs[0]
        try:
            key = (numa_of[first], llc_of[first])
        except KeyError as err:
            raise ValueError(f"cpu {first} has no NUMA node or LLC in the topology") from err
        groups.setdefault(key, []).append(sibs)
    domains = [_Domain(node, llc, tuple(sorted(cs))) for (node, llc), cs in groups.items()]
    domains.sort(key=lambda d: (d.node, d.cores[0]))
    return domains, held


def assign_cores(
    requests: Sequence[CoreRequest],
    cores: Sequence[tuple[int, ...]],
    numa_of: Mapping[int, int],
    llc_of: Mapping[int, int],
    reserved: Iterable[int] = (),
    *,
    time_limit_s: float = 1.0,
) -> CoreAssignment:
    """Whole cores for each request; see the module docstring for the objective.

    `cores` are physical cores as tuples of SMT sibling cpu ids; `numa_of` and `llc_of` map a cpu
    id to its NUMA node and LLC domain id. Raises InfeasibleError when the requests do not fit
    while leaving one free core.
    """
    reqs = sorted(requests, key=lambda r: r.name)
    names = [r.name for r in reqs]
    if len(set(names)) != len(names):
        raise ValueError(f"exclusive core requests must have unique names: {names}")
    for r in reqs:
        if r.cores < 0:
            raise ValueError(f"class {r.name} asks for {r.cores} cores")
    domains, held = _domains(cores, numa_of, llc_of, set(reserved))
    free = sum(len(d.cores) for d in domains)
    asked = sum(r.cores for r in reqs)
    wanting = [r for r in reqs if r.cores > 0]
    if wanting and asked > free - 1:
        listed = sorted(wanting, key=lambda r: (-r.cores, r.name))
        held_text = f", {held} with reserved cpus" if held else ""
        raise InfeasibleError(
            "exclusive cores: "
            + ", ".join(f"{r.name} ({_plural(r.cores)})" for r in listed)
            + f" ask for {_plural(asked)} but {max(free - 1, 0)} can be given"
            f" ({_plural(len(cores))}{held_text}, 1 kept for the shared classes):"
            f" {_plural(asked - max(free - 1, 0))} short"
        )
    counts = _solve_counts(wanting, domains, time_limit_s) if wanting else {}
    return _pick(reqs, domains, counts, numa_of)


def _solve_counts(
    reqs: Sequence[CoreRequest], domains: Sequence[_Domain], time_limit_s: float
) -> dict[tuple[int, int], int]:
    """{(request index, domain index): cores} from the CP-SAT model of the module docstring."""
    model = cp_model.CpModel()
    nodes = sorted({d.node for d in domains})
    nd = len(domains)
    y: dict[tuple[int, int], cp_model.IntVar] = {}
    u: dict[tuple[int, int], cp_model.IntVar] = {}
    v: dict[tuple[int, int], cp_model.IntVar] = {}
    off_pref = []
    for j, r in enumerate(reqs):
        for n in nodes:
            v[j, n] = model.new_bool_var(f"v{j}_{n}")
        for d, dom in enumerate(domains):
            cap = min(r.cores, len(dom.cores))
            y[j, d] = model.new_int_var(0, cap, f"y{j}_{d}")
            u[j, d] = model.new_bool_var(f"u{j}_{d}")
            model.add(y[j, d] <= cap * u[j, d])
            model.add(y[j, d] >= u[j, d])
            model.add(u[j, d] <= v[j, dom.node])
            if r.numa_node is not None and dom.node != r.numa_node:
                off_pref.append(y[j, d])
        model.add(sum(y[j, d] for d in range(nd)) == r.cores)
        # Implied, but they give the LP relaxation its bound (each class spans >= 1 of each).
        model.add(sum(u[j, d] for d in range(nd)) >= 1)
        model.add(sum(v[j, n] for n in nodes) >= 1)
    load = [sum(y[j, d] for j in range(len(reqs))) for d in range(nd)]
    for d, dom in enumerate(domains):
        model.add(load[d] <= len(dom.cores))
    # Symmetry: domains of one node with as many free cores are interchangeable; keep their loads
    # non-increasing, which also packs the low-numbered ones first.
    for d in _twins(domains):
        model.add(load[d] >= load[d + 1])

    asked = sum(r.cores for r in reqs)
    w_llc = asked + 1  # level 3 (off-node cores) is at most `asked`
    w_node = w_llc * (len(u) + 1)  # level 2 (LLC spans) is at most len(u)
    model.minimize(
        w_node * sum(v.values()) + w_llc * sum(u.values()) + sum(off_pref)
    )
    hint = _first_fit(reqs, domains)
    for (j, d), var in y.items():
        model.add_hint(var, hint.get((j, d), 0))
        model.add_hint(u[j, d], hint.get((j, d), 0) > 0)
    for (j, n), var in v.items():
        model.add_hint(var, any(hint.get((j, d), 0) for d in range(nd) if domains[d].node == n))

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = SEED
    solver.parameters.max_deterministic_time = DETERMINISTIC_BUDGET
    solver.parameters.max_time_in_seconds = time_limit_s
    # Presolve would turn the linear implications into clauses, which the default LP relaxation
    # leaves out, and costs more than the search on these small models (measured: 2-3x slower).
    solver.parameters.cp_model_presolve = False
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no core assignment: {solver.status_name(status)}")
    if status != cp_model.OPTIMAL:
        # Stopped by the deterministic budget: reproducible. Stopped by the wall clock: not.
        wall_hit = solver.wall_time >= time_limit_s
        (log.warning if wall_hit else log.info)(
            "cores_wall_limit" if wall_hit else "cores_not_proven_optimal",
            classes=len(reqs),
            domains=nd,
            wall_s=round(solver.wall_time, 3),
            deterministic_time=round(solver.deterministic_time, 3),
            gap=solver.objective_value - solver.best_objective_bound,
        )
    return {key: val for key, var in y.items() if (val := solver.value(var)) > 0}


def _twins(domains: Sequence[_Domain]) -> list[int]:
    """Indices d where domains d and d + 1 are interchangeable (same node, as many free cores)."""
    return [
        d
        for d in range(len(domains) - 1)
        if domains[d].node == domains[d + 1].node
        and len(domains[d].cores) == len(domains[d + 1].cores)
    ]


def _first_fit(
    reqs: Sequence[CoreRequest], domains: Sequence[_Domain]
) -> dict[tuple[int, int], int]:
    """A quick feasible placement, the solver's starting point. Largest class first, it takes the
    best-fitting single domain of the first node (preferred node first) that has one; else the
    emptiest domains of the first node with room for it; else the emptiest domains anywhere.
    Often optimal already, and CP-SAT then only proves it. Columns are reordered to satisfy the
    symmetry-breaking constraint (loads non-increasing across twin domains)."""
    free = [len(d.cores) for d in domains]
    nodes = sorted({d.node for d in domains})
    on_node = {n: [d for d, dom in enumerate(domains) if dom.node == n] for n in nodes}
    out: dict[tuple[int, int], int] = {}
    for j in sorted(range(len(reqs)), key=lambda j: (-reqs[j].cores, reqs[j].name)):
        want = reqs[j].cores
        pref = reqs[j].numa_node
        order = ([pref] if pref in on_node else []) + [n for n in nodes if n != pref]
        single = [[d for d in on_node[n] if free[d] >= want] for n in order]
        best = next((ds for ds in single if ds), None)
        if best:
            d = min(best, key=lambda d: (free[d], d))
            out[j, d] = want
            free[d] -= want
            continue
        roomy = [n for n in order if sum(free[d] for d in on_node[n]) >= want]
        pool = on_node[roomy[0]] if roomy else range(len(domains))
        for d in sorted(pool, key=lambda d: (-free[d], d)):
            take = min(want, free[d])
            if take:
                out[j, d] = take
                free[d] -= take
                want -= take
            if not want:
                break
    return _canonical(out, domains, len(reqs))


def _canonical(
    counts: dict[tuple[int, int], int], domains: Sequence[_Domain], n_reqs: int
) -> dict[tuple[int, int], int]:
    """Permute the columns of each run of twin domains so that their loads do not increase."""
    target = list(range(len(domains)))
    twins = set(_twins(domains))
    start = 0
    for d in range(len(domains)):
        if d in twins:
            continue
        run = list(range(start, d + 1))  # a maximal run of interchangeable domains
        load = {e: sum(counts.get((j, e), 0) for j in range(n_reqs)) for e in run}
        for slot, e in zip(run, sorted(run, key=lambda e: (-load[e], e)), strict=True):
            target[e] = slot
        start = d + 1
    return {(j, target[d]): k for (j, d), k in counts.items()}


def _pick(
    reqs: Sequence[CoreRequest],
    domains: Sequence[_Domain],
    counts: Mapping[tuple[int, int], int],
    numa_of: Mapping[int, int],
) -> CoreAssignment:
    """Concrete cores: classes in name order take the lowest free cores of their domains."""
    taken = [0] * len(domains)
    cpus: dict[str, tuple[int, ...]] = {}
    nodes: dict[str, tuple[int, ...]] = {}
    wanting = [r for r in reqs if r.cores > 0]
    index = {r.name: j for j, r in enumerate(wanting)}
    for r in reqs:
        mine: list[int] = []
        j = index.get(r.name)
        for d, dom in enumerate(domains):
            k = counts.get((j, d), 0) if j is not None else 0
            for core in dom.cores[taken[d] : taken[d] + k]:
                mine.extend(core)
            taken[d] += k
        cpus[r.name] = tuple(sorted(mine))
        nodes[r.name] = tuple(sorted({numa_of[c] for c in mine}))
    return CoreAssignment(cpus=cpus, numa_nodes=nodes)
