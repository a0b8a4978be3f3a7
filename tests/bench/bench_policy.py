"""Policy engine timings: the LP solver against the greedy baseline, and CP-SAT exclusive cores.

Run: .venv/bin/python tests/bench/bench_policy.py [--json] [--repeats N]

Decide side: build + solve for 10/100/1000/5000 classes x 3 resources (seeded random problems:
3 tiers, ~20% of classes with mins, ~15% with maxes, demands summing to ~1.5x capacity), median
milliseconds over repeats, with the greedy fractional knapsack on the same inputs side by side
(objective ratio solver/greedy: 1.0 expected, since the solver's first objective is the seed LP
that greedy solves exactly; time ratio solver/greedy). Then CP-SAT exclusive cores for 64 and
256 CPUs (2 NUMA nodes, SMT 2, one LLC per node or per 8 cores) x 32 classes of 1-4 cores.

`bench_solve(n_classes)` is the unit to extend when the full decide() (build + solve + plan) is
wired in. Timings on a noisy 2-core VM: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from aios_host.policy.cores import assign_cores
from aios_host.policy.greedy import greedy_allocate
from aios_host.policy.problem import ClassDemand, CoreRequest, Problem
from aios_host.policy.solver import solve

GIB = 1024**3
SOLVE_TARGET_MS = 50.0  # 1000 classes x 3 resources, from the issue
CORES_TARGET_MS = 200.0  # 32 classes on 64 or 256 CPUs


def random_problem(n_classes: int, seed: int = 1, tiers: int = 3) -> Problem:
    """Seeded: mixed tiers, some mins and maxes, demands summing to ~1.5x capacity."""
    rng = random.Random(seed)
    per_class = {"cpu": 4.0, "memory": 16.0 * GIB, "io": 1.0 / n_classes}
    classes = []
    for i in range(n_classes):
        demand = {r: mean * rng.uniform(0.2, 1.8) for r, mean in per_class.items()}
        mins = {r: d * rng.uniform(0.05, 0.3) for r, d in demand.items() if rng.random() < 0.2}
        maxes = {r: d * rng.uniform(0.4, 0.9) for r, d in demand.items() if rng.random() < 0.15}
        classes.append(
            ClassDemand(
                name=f"class-{i:05d}",
                weight=rng.choice((1.0, 2.0, 4.0)) * rng.uniform(0.5, 1.5),
                priority=rng.randrange(tiers),
                demand=demand,
                min=mins,
                max=maxes,
            )
        )
    capacity = {r: mean * n_classes / 1.5 for r, mean in per_class.items()}
    return Problem(capacity=capacity, classes=tuple(classes))


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: imports, first-call caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def bench_solve(n_classes: int, repeats: int = 21) -> dict[str, Any]:
    """Decide-side cost for one size: solver and greedy on the same problem."""
    problem = random_problem(n_classes)
    single = random_problem(n_classes, tiers=1)
    solver_ms = median_ms(lambda: solve(problem), repeats)
    greedy_ms = median_ms(lambda: greedy_allocate(problem), repeats)
    return {
        "classes": n_classes,
        "resources": 3,
        "solver_ms": solver_ms,
        "greedy_ms": greedy_ms,
        "time_ratio": solver_ms / greedy_ms,
        "objective_ratio": solve(problem).objective / greedy_allocate(problem).objective,
        "objective_ratio_single_tier": solve(single).objective
        / greedy_allocate(single).objective,
    }


def topology(
    n_cpus: int, llc_cores: int | None
) -> tuple[list[tuple[int, ...]], dict[int, int], dict[int, int]]:
    """2 NUMA nodes, SMT 2 with Linux numbering (cpu i and i + n/2 are siblings), LLC per node
    (llc_cores None) or per `llc_cores` physical cores."""
    n_cores = n_cpus // 2
    per_node = n_cores // 2
    cores = [(i, i + n_cores) for i in range(n_cores)]
    numa_of, llc_of = {}, {}
    for core, sibs in enumerate(cores):
        node = core // per_node
        group = core // (llc_cores or per_node)
        for cpu in sibs:
            numa_of[cpu] = node
            llc_of[cpu] = cores[group * (llc_cores or per_node)][0]
    return cores, numa_of, llc_of


def core_requests(n: int = 32, seed: int = 1, max_cores: int = 4) -> list[CoreRequest]:
    rng = random.Random(seed)
    return [
        CoreRequest(
            name=f"excl-{i:02d}",
            cores=rng.randint(1, max_cores),
            numa_node=rng.choice((None, None, 0, 1)),
        )
        for i in range(n)
    ]


def bench_cores(n_cpus: int, llc_cores: int | None, repeats: int = 11) -> dict[str, Any]:
    cores, numa_of, llc_of = topology(n_cpus, llc_cores)
    # 64 CPUs are 32 physical cores, one of which must stay shared: 32 classes of 1-4 cores
    # cannot all fit there, so the list is cut to the classes that fit (the table says how many).
    requests = core_requests()
    while sum(r.cores for r in requests) > len(cores) - 1:
        requests.pop()
    ms = median_ms(lambda: assign_cores(requests, cores, numa_of, llc_of), repeats)
    return {
        "cpus": n_cpus,
        "llc": f"per {llc_cores} cores" if llc_cores else "per node",
        "classes": len(requests),
        "cores_asked": sum(r.cores for r in requests),
        "ms": ms,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)

    solve_rows = [bench_solve(n, args.repeats) for n in (10, 100, 1000, 5000)]
    core_rows = [
        bench_cores(n, llc, max(5, args.repeats // 2))
        for n in (64, 256)
        for llc in (None, 8)
    ]
    at_1000 = next(r for r in solve_rows if r["classes"] == 1000)
    targets = [
        ("solve 1000x3", at_1000["solver_ms"], SOLVE_TARGET_MS),
        *((f"cores {r['cpus']} cpus llc {r['llc']}", r["ms"], CORES_TARGET_MS) for r in core_rows),
    ]
    if args.json:
        out = {
            "solve": solve_rows,
            "cores": core_rows,
            "targets": [
                {"what": w, "median_ms": v, "target_ms": t, "pass": v <= t} for w, v, t in targets
            ],
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0

    print("decide side: build + solve, 3 resources, median ms")
    head = ("classes", "solver", "greedy", "t ratio", "obj ratio", "1-tier")
    print("{:>8} {:>9} {:>9} {:>8} {:>10} {:>8}".format(*head))
    for r in solve_rows:
        print(
            f"{r['classes']:>8} {r['solver_ms']:>9.2f} {r['greedy_ms']:>9.2f}"
            f" {r['time_ratio']:>8.1f} {r['objective_ratio']:>10.6f}"
            f" {r['objective_ratio_single_tier']:>8.6f}"
        )
    print()
    print("exclusive cores (CP-SAT), median ms")
    print(f"{'cpus':>5} {'llc':>14} {'classes':>8} {'cores':>6} {'ms':>9}")
    for r in core_rows:
        print(
            f"{r['cpus']:>5} {r['llc']:>14} {r['classes']:>8} {r['cores_asked']:>6}"
            f" {r['ms']:>9.2f}"
        )
    print()
    for what, value, target in targets:
        verdict = "PASS" if value <= target else "MISS"
        print(f"{verdict}  {what}: {value:.1f} ms (target {target:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
