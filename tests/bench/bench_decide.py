"""decide() = build + solve + plan, for 10 / 100 / 1000 / 5000 classes x 3 resources.

The plan reads every class cgroup's current values, so the classes exist as cgroups in a fake
cgroup v2 root (a temp dir holding the interface files apply would read), laid out as the kernel
would have them in steady state: the controllers enabled on the way down (so the class cgroups
have their cpu/io/memory files) and every class's values differing from what the policy wants,
so the plan reads and rewrites every file. The greedy baseline is timed on the same Problem, side
by side. Each timed call starts after a gc.collect(), so neither pays for the other's garbage.
Run: .venv/bin/python tests/bench/bench_decide.py [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aios_host.kernel.cgroup import CgroupFs  # noqa: E402
from aios_host.kernel.inventory import read_inventory  # noqa: E402
from aios_host.kernel.root import SysRoot  # noqa: E402
from aios_host.policy.demand import ClassUsage, build_problem, capacity  # noqa: E402
from aios_host.policy.engine import decide  # noqa: E402
from aios_host.policy.greedy import greedy_allocate  # noqa: E402
from aios_host.policy.schema import Policy  # noqa: E402
from aios_host.policy.targets import ClassTarget  # noqa: E402

FILES = {
    "cgroup.controllers": "cpuset cpu io memory pids\n", "cgroup.subtree_control": "cpu io memory\n",
    "cgroup.procs": "", "cpu.weight": "100\n", "cpu.max": "max 100000\n", "memory.min": "0\n",
    "memory.low": "0\n", "memory.high": "max\n", "memory.max": "max\n", "io.weight": "default 100\n",
}


def fake_host(root: Path, n: int) -> None:
    def put(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    put("proc/self/mountinfo", "31 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    put("proc/meminfo", "MemTotal:       536870912 kB\n")  # 512 GiB
    put("sys/devices/system/cpu/online", "0-127\n")
    put("sys/devices/system/node/node0/cpulist", "0-127\n")
    for name, text in FILES.items():
        put(f"sys/fs/cgroup/{name}", text)
        put(f"sys/fs/cgroup/aios.slice/{name}", text)
    for i in range(n):
        for name, text in FILES.items():
            put(f"sys/fs/cgroup/aios.slice/c{i:05d}/{name}", text)


def policy(n: int, rng: random.Random) -> Policy:
    classes = []
    for i in range(n):
        c: dict = {"name": f"c{i:05d}", "weight": rng.randint(1, 1000), "priority": rng.choice([0, 0, 10, 50])}
        if rng.random() < 0.2:
            c["cpu"] = {"max": round(rng.uniform(0.5, 8), 1)}
        if rng.random() < 0.1:
            c["memory"] = {"min": f"{rng.randint(16, 64)}M", "high": "auto"}
        classes.append(c)
    return Policy.model_validate({"host": {"reserve_cores": 2}, "class": classes})


def bench(n: int, repeats: int) -> dict[str, float]:
    rng = random.Random(n)
    with tempfile.TemporaryDirectory() as tmp:
        fake_host(Path(tmp), n)
        root = SysRoot(tmp)
        fs, inv = CgroupFs(root), read_inventory(root)
        pol = policy(n, rng)
        targets = {c.name: ClassTarget(c.name, (f"aios.slice/{c.name}",), owned=True) for c in pol.classes}
        usage = {c.name: ClassUsage(cpu_cores=rng.uniform(0.1, 4), memory_bytes=rng.uniform(1, 8) * 2**30)
                 for c in pol.classes}
        t_decide, t_greedy, writes = [], [], 0
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            d = decide(pol, fs, inv, targets, usage)
            t_decide.append((time.perf_counter() - t0) * 1e3)
            writes = len(d.plan)
            problem = build_problem(pol, capacity(pol, inv), usage)
            del d
            gc.collect()
            t0 = time.perf_counter()
            greedy_allocate(problem)
            t_greedy.append((time.perf_counter() - t0) * 1e3)
    return {"classes": n, "decide_ms": statistics.median(t_decide), "greedy_ms": statistics.median(t_greedy),
            "plan_writes": writes}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    rows = [bench(n, args.repeats if n < 5000 else 3) for n in (10, 100, 1000, 5000)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("decide() = build + solve + plan (reads each class cgroup), median ms; greedy = solve only")
    print(f"{'classes':>8} {'decide_ms':>10} {'greedy_ms':>10} {'writes':>8}")
    for r in rows:
        print(f"{r['classes']:>8} {r['decide_ms']:>10.1f} {r['greedy_ms']:>10.2f} {r['plan_writes']:>8}")
    at_1000 = next(r for r in rows if r["classes"] == 1000)["decide_ms"]
    print(f"{'PASS' if at_1000 <= 50 else 'MISS'}  decide 1000 classes: {at_1000:.1f} ms (target 50 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
