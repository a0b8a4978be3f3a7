"""`aios-host policy check | diff | apply | rollback | explain | schema`: the policy command group."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from aios_host.cli import base as cli_base
from aios_host.errors import AiosError
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import read_inventory
from aios_host.kernel.root import SysRoot
from aios_host.output import print_json
from aios_host.table import render

if TYPE_CHECKING:
    from aios_host.policy.engine import Decision
    from aios_host.policy.plan import Plan

_SOCKET = "/run/aios-host/api.sock"  # aios_host.api.SOCKET_PATH, without importing it here

# The engine (OR-Tools, pydantic) is imported by the commands that use it, so that `aios-host
# doctor` and the other commands start without paying for it.


def _decide(args: argparse.Namespace) -> tuple[Decision, CgroupFs]:
    from aios_host.policy.demand import measure
    from aios_host.policy.engine import decide
    from aios_host.policy.schema import load_policy
    from aios_host.policy.targets import resolve_targets

    policy = load_policy(args.file)
    root = SysRoot(args.root)
    fs = CgroupFs(root)
    inv = read_inventory(root)
    targets = resolve_targets(fs, policy)
    usage = measure(fs, targets, args.sample_ms / 1000.0)
    return decide(policy, fs, inv, targets, usage), fs


def _plan_rows(plan: Plan) -> list[tuple[object, ...]]:
    return [
        (i + 1, w.op, w.path, "-" if w.old is None else (w.old or '""'), w.new or "-",
         "" if w.available else f"NO {w.controller} controller here", w.reason)
        for i, w in enumerate(plan.writes)
    ]


def _print_plan(plan: Plan) -> None:
    if not plan.writes:
        print("nothing to change: the host already matches the policy")
        return
    print(render(["#", "op", "path", "old", "new", "host", "reason"], _plan_rows(plan)))
    if plan.unavailable:
        print(f"\n{len(plan.unavailable)} of {len(plan)} writes cannot be applied on this host "
              "(controller missing from its cgroup v2 tree)")


def _print_energy_notes(d: Decision) -> None:
    for note in d.energy_notes:
        print(f"energy: {note}")


def _plan_json(d: Decision, applied: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "policy": str(d.policy.description or ""),
        "writes": [w.to_dict() for w in d.plan.writes],
        "unavailable": len(d.plan.unavailable),
        "energy_notes": list(d.energy_notes),
    }
    if applied is not None:
        out["applied"] = applied
    return out


def cmd_check(args: argparse.Namespace) -> int:
    from aios_host.policy.engine import check_on_host
    from aios_host.policy.schema import load_policy

    root = SysRoot(args.root)
    inv = read_inventory(root)
    results, worst = [], 0
    for f in args.files:
        try:
            policy = load_policy(f)
            cap = check_on_host(policy, inv)
            results.append({"file": f, "ok": True, "classes": len(policy.classes)})
            if not args.json:
                print(f"{f}: ok ({len(policy.classes)} classes; capacity {cap.cpu_cores:g} cores, "
                      f"{cap.memory_bytes / 2**30:.1f} GiB after the reserve)")
        except AiosError as err:
            worst = 1
            results.append({"file": f, "ok": False, "error": str(err)})
            if not args.json:
                msg = str(err)
                print(msg if msg.startswith(f) else f"{f}: {msg}", file=sys.stderr)
    if args.json:
        print_json({"results": results})
    return worst


def cmd_diff(args: argparse.Namespace) -> int:
    d, _ = _decide(args)
    if args.json:
        print_json(_plan_json(d))
    else:
        _print_plan(d.plan)
        _print_energy_notes(d)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from aios_host.actuate.apply import apply_plan, refuse_unavailable

    if not args.dry_run and _daemon_answers(args):
        # The daemon owns the journal and the host's values while it runs: it switches policy.
        from aios_host import api

        reply = api.call({"cmd": "policy.apply", "path": os.path.abspath(args.file)}, args.socket)
        if not reply.get("ok"):
            raise AiosError(f"{args.file}: the daemon refused it: {reply.get('error')}")
        if args.json:
            print_json({"policy": args.file, "via": "daemon", "mode": reply.get("mode")})
        else:
            print(f"the daemon ({args.socket}) now runs {args.file}; it writes the plan over its next ticks "
                  "(see: aios-host status)")
        return 0
    if not args.dry_run and args.root == "/" and _systemd_pid1():
        raise AiosError(
            f"{args.file}: with systemd as PID 1, policies are applied by the daemon (its class cgroups "
            "live in its delegated subtree; systemd owns the rest): systemctl start aios-host, then run "
            "this again (or --dry-run to see the plan)")
    if not args.dry_run and args.root == "/" and os.geteuid() != 0:
        # Say so before measuring and deciding: the journal and the cgroup files are root's.
        raise AiosError(f"{args.file}: applying writes cgroup files and /run/aios-host: needs root "
                        "(or --dry-run to see the plan)")
    d, fs = _decide(args)
    if args.dry_run:
        if args.json:
            print_json(_plan_json(d, applied=False))
        else:
            _print_plan(d.plan)
            _print_energy_notes(d)
        return 0
    refuse_unavailable(d.plan, fs.mount)
    rec = apply_plan(fs.root, d.plan, str(args.file), fs.mount)
    if args.json:
        print_json(_plan_json(d, applied=rec is not None))
    elif rec is None:
        print("nothing to change: the host already matches the policy")
    else:
        print(f"applied {len(rec.writes)} writes from {args.file} (record {rec.id}); "
              "undo with: aios-host policy rollback")
    return 0


def _systemd_pid1() -> bool:
    from aios_host.kernel.procfs import read_pid1_comm

    return read_pid1_comm(SysRoot("/")) == "systemd"


def _daemon_answers(args: argparse.Namespace) -> bool:
    from aios_host import api

    if args.root != "/":
        return False
    try:
        return bool(api.call({"cmd": "status"}, args.socket, timeout_s=5.0).get("ok"))
    except AiosError:
        return False


def cmd_rollback(args: argparse.Namespace) -> int:
    from aios_host.actuate.apply import rollback

    if _daemon_answers(args):
        from aios_host import api

        reply = api.call({"cmd": "policy.rollback"}, args.socket)
        if not reply.get("ok"):
            raise AiosError(f"the daemon could not roll back: {reply.get('error')}")
        if not args.json:
            print(f"the daemon restored {reply.get('restored', 0)} changes and is paused "
                  "(until the next `policy apply`)")
    undone = rollback(SysRoot(args.root))
    if args.json:
        print_json({"rolled_back": [{"id": r.id, "policy": r.policy, "writes": len(r.writes)}
                                   for r in undone]})
    elif not undone:
        print("nothing to roll back")
    else:
        for r in undone:
            print(f"rolled back {r.id} ({r.policy}): {len(r.writes)} writes restored")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from aios_host.policy import explain

    d, _ = _decide(args)
    if args.json:
        print_json({
            "capacity": d.problem.capacity,
            "allocation": {k: dict(v) for k, v in d.allocation.amounts.items()},
            "satisfaction": {k: dict(v) for k, v in d.allocation.satisfaction.items()},
            "bindings": [b._asdict() for b in d.allocation.bindings],
            "exclusive_cpus": {k: list(v) for k, v in d.cores.cpus.items()},
            "explanation": explain.sentences(d),
            "energy_notes": list(d.energy_notes),
        })
        return 0
    cap = d.capacity
    print(f"capacity after reserve: {cap.cpu_cores:g} of {cap.cpus_total} cores, "
          f"{cap.memory_bytes / 2**30:.2f} of {cap.memory_total_bytes / 2**30:.2f} GiB")
    print(render(["class", "tier", "weight", "resource", "demand", "min", "max", "allocated", "x"],
                 explain.table_rows(d)))
    for name, cpus in sorted(d.cores.cpus.items()):
        print(f"{name}: exclusive cpus {','.join(map(str, cpus))}")
    for line in explain.sentences(d):
        print("- " + line)
    _print_energy_notes(d)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from aios_host.policy.schema import json_schema

    print_json(json_schema())
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("policy", help="check, diff, apply, roll back and explain policies")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    sample = argparse.ArgumentParser(add_help=False)
    sample.add_argument("--sample-ms", type=cli_base.int_arg(0, 60_000), default=500,
                        help="how long to measure CPU usage before deciding (default 500)")

    c = psub.add_parser("check", parents=[common], help="validate files and feasibility on this host")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=cmd_check)
    for name, func, helptext in (
        ("diff", cmd_diff, "the plan as a table"),
        ("explain", cmd_explain, "allocation, binding constraints and their worth"),
    ):
        q = psub.add_parser(name, parents=[common, sample], help=helptext)
        q.add_argument("file", metavar="FILE")
        q.set_defaults(func=func)
    a = psub.add_parser("apply", parents=[common, sample], help="write the plan (all or nothing)")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--dry-run", action="store_true", help="print the ordered plan, change nothing")
    a.add_argument("--socket", default=_SOCKET, help="the daemon's API: used when it answers there")
    a.set_defaults(func=cmd_apply)
    r = psub.add_parser("rollback", parents=[common], help="restore every recorded original")
    r.add_argument("--socket", default=_SOCKET, help="the daemon's API: used when it answers there")
    r.set_defaults(func=cmd_rollback)
    s = psub.add_parser("schema", parents=[common], help="JSON Schema of policy files")
    s.set_defaults(func=cmd_schema)
