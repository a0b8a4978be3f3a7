"""`aios-host doctor` and `aios-host snapshot`: what this host can do, and its cgroup tree, read-only."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from aios_host.cli import base as cli_base
from aios_host.energy.status import gather_energy_status
from aios_host.kernel.cgroup import CgroupFs, sample
from aios_host.kernel.features import Features, Status, detect_features
from aios_host.kernel.inventory import read_inventory
from aios_host.kernel.root import SysRoot
from aios_host.output import print_json
from aios_host.table import render

_MARK = {Status.OK: "ok", Status.DEGRADED: "degraded", Status.MISSING: "MISSING"}


def cmd_doctor(args: argparse.Namespace) -> int:
    root = SysRoot(args.root)
    features: Features = detect_features(root)
    inv = read_inventory(root)
    energy = gather_energy_status(root, interval_s=0)  # settings and owners only: no measuring window
    if args.json:
        print_json(
            {
                **features.to_dict(),
                "inventory": {
                    "cpus": inv.cpu_count,
                    "cores": len(inv.cores),
                    "smt": inv.smt,
                    "numa_nodes": {str(k): list(v) for k, v in inv.numa_nodes.items()},
                    "memory_total_bytes": inv.memory_total_bytes,
                    "gpus": [asdict(g) for g in inv.gpus],
                },
                "energy": energy.to_dict(),
            }
        )
    else:
        rows = [(f.name, _MARK[f.status], f.detail, f.without) for f in features.items]
        print(render(["feature", "status", "detail", "without it"], rows))
        print(
            f"\nhost: {inv.cpu_count} CPUs in {len(inv.cores)} cores"
            f"{' (SMT)' if inv.smt else ''}, {len(inv.numa_nodes)} NUMA node(s), "
            f"{inv.memory_total_bytes / 2**30:.1f} GiB, {len(inv.gpus)} NVIDIA GPU(s)"
        )
        print("energy:\n" + "\n".join(f"  {line}" for line in energy.summary_lines()))
        print(
            "minimum (cgroup v2 mount): "
            + ("present" if features.minimum_met else "MISSING - aios-host cannot run here")
        )
    return 0 if features.minimum_met else 1


def cmd_snapshot(args: argparse.Namespace) -> int:
    fs = CgroupFs(SysRoot(args.root))
    samples = [sample(cg) for cg in fs.walk(args.cgroup, max_depth=args.depth)]
    if args.json:
        print_json({"mount": fs.mount, "cgroups": [asdict(s) for s in samples]})
        return 0

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [
        (
            s.path,
            s.id,
            s.nr_procs,
            "-" if s.cpu_usage_usec is None else f"{s.cpu_usage_usec / 1e6:.1f}",
            "-" if s.memory_current_bytes is None else f"{s.memory_current_bytes / 2**20:.1f}",
            pct(s.cpu_some_avg10),
            pct(s.memory_some_avg10),
            pct(s.io_some_avg10),
            " ".join(s.subtree_control) or "-",
        )
        for s in samples
    ]
    print(f"cgroup v2 at {fs.mount}")
    print(
        render(
            ["cgroup", "id", "procs", "cpu_s", "mem_MiB", "cpu_psi10", "mem_psi10", "io_psi10",
             "subtree_control"],
            rows,
        )
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("doctor", parents=[common], help="what this host can do, and what is missing")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("snapshot", parents=[common], help="read-only snapshot of the cgroup tree")
    s.add_argument("--cgroup", default="", help="subtree to show (default: the whole tree)")
    s.add_argument("--depth", type=cli_base.int_arg(0, 4096), default=None, help="maximum depth below --cgroup")
    s.set_defaults(func=cmd_snapshot)
