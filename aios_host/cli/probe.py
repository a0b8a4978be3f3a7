"""`aios-host probe list | run | stats`: the eBPF probes from the command line.

Registered in aios_host.cli's build_parser; for debugging, `python -m aios_host.cli.probe ACTION ...`
runs the same commands.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from aios_host.cli import base as cli_base
from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.output import print_json
from aios_host.table import render

DURATION = cli_base.seconds_arg(0.01, 365 * 86400)

# bcc and the probe modules are imported by the commands, so that `aios-host --help` and the
# other commands start without them.


def _options(args: argparse.Namespace) -> Any:
    from aios_host.probes.loader import LoadOptions
    from aios_host.probes.specs import PROBE_NAMES

    names = PROBE_NAMES
    if args.probes:
        names = tuple(n.strip() for n in args.probes.split(",") if n.strip())
        unknown = [n for n in names if n not in PROBE_NAMES]
        if unknown:
            raise AiosError(f"unknown probe {unknown[0]!r}; probes: {', '.join(PROBE_NAMES)}")
    return LoadOptions(attach=args.attach, probes=names)


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def cmd_list(args: argparse.Namespace) -> int:
    from aios_host.probes.loader import choose_attach, probe_statuses, read_kernel_facts

    root = SysRoot(args.root)
    opts = _options(args)
    # tracefs is readable by root only: without root, list what would attach, status unknown
    facts = None if os.geteuid() != 0 and root.is_host else read_kernel_facts(root)
    if facts is None:
        from aios_host.probes.specs import get_spec

        statuses = [(get_spec(n), "unknown", "not root: tracefs is readable by root only") for n in opts.probes]
        rows = [(s.name if i == 0 else "", t, "?", st if i == 0 else "", why if i == 0 else "")
                for s, st, why in statuses for i, t in enumerate(s.tracepoints)]
        if args.json:
            print_json({"probes": [{"name": s.name, "status": st, "detail": why,
                                   "tracepoints": list(s.tracepoints)} for s, st, why in statuses]})
        else:
            print(render(["probe", "tracepoint", "attach", "status", "detail"], rows))
        return 0
    choice = choose_attach(opts.attach, facts.headers, facts.release, facts.btf_raw)
    statuses = probe_statuses(facts, choice, opts.probes)
    if args.json:
        print_json({
            "attach": choice.method, "reason": choice.reason, "kernel": facts.release,
            "headers": facts.headers, "tracefs": facts.tracefs,
            "probes": [{"name": s.name, "measures": s.measures, "status": s.status, "detail": s.detail,
                        "tracepoints": [{"tracepoint": t, "attach": m} for t, m in s.tracepoints]}
                       for s in statuses],
        })
        return 0
    rows = []
    for s in statuses:
        for i, (t, m) in enumerate(s.tracepoints):
            first = i == 0
            rows.append((s.name if first else "", t, m, s.status if first else "",
                         (s.detail or s.measures) if first else ""))
    print(render(["probe", "tracepoint", "attach", "status", "detail"], rows))
    print(f"\nattach: {choice.method} ({choice.reason})")
    return 0


def _event_line(ev: Any, paths: dict[int, str]) -> str:
    cg = paths.get(ev.cgroup_id, f"id:{ev.cgroup_id}")
    if ev.kind == "exec":
        return f"exec  pid={ev.pid} cgroup={cg} comm={ev.comm} file={ev.filename}"
    if ev.kind == "exit":
        return f"exit  pid={ev.pid} cgroup={cg} comm={ev.comm} {ev.status}"
    mem = f" anon_rss={ev.anon_rss_kb}kB" if ev.anon_rss_kb is not None else ""
    return f"oom   pid={ev.pid} cgroup={cg} comm={ev.comm}{mem}"


def cmd_run(args: argparse.Namespace) -> int:
    from aios_host.kernel.cgroup import CgroupFs
    from aios_host.probes.cgroup_ids import CgroupIndex
    from aios_host.probes.collect import measure
    from aios_host.probes.loader import ProbeSet

    duration = args.duration
    root = SysRoot(args.root)
    fs = CgroupFs(root)
    if args.cgroup:
        fs.cgroup(args.cgroup)  # NotFoundError: one line, before the probes take seconds to load
    index = CgroupIndex(fs)
    index.refresh()

    def show(ev: Any) -> None:
        if args.events and not args.json:
            print(_event_line(ev, {**index.known, 0: "(unknown)"}), flush=True)

    with ProbeSet(root, _options(args)) as probes:
        # Only the measurement itself: a signal while the probes load still ends the command at once.
        with cli_base.StopSignals() as stop:
            snap, events = measure(probes, fs, duration, subtree=args.cgroup or "", on_event=show, index=index,
                                   stop=stop)
    rows_src = [c for c in snap.cgroups if args.all or c.active]
    if args.json:
        print_json({
            "attach": snap.attach, "interval_s": snap.interval_s, "lost_events": snap.lost_events,
            "drops": dict(snap.drops or {}), "startup_s": probes.startup_s, "interrupted": stop.name,
            "cgroups": [asdict(c) for c in rows_src], "events": [asdict(e) for e in events],
        })
        return stop.report(snap.interval_s, duration)
    rows = [
        (c.path, c.runq_count, _fmt(c.runq_p50_usec), _fmt(c.runq_p99_usec), _fmt(c.oncpu_cores, 2),
         _fmt(c.preemptions_per_s), _fmt(c.faults_per_s), _fmt(c.reclaim_ms_per_s, 1),
         c.blk_ios, _fmt(c.blk_p99_usec), c.oom_kills, _fmt(c.cpu_some_avg10, 2))
        for c in rows_src
    ]
    print(render(["cgroup", "runq_n", "runq_p50_us", "runq_p99_us", "cpu_cores", "preempt/s",
                  "faults/s", "reclaim_ms/s", "blk_n", "blk_p99_us", "oom", "cpu_psi10"], rows))
    kinds = {k: sum(1 for e in events if e.kind == k) for k in ("exec", "exit", "oom")}
    attached = sorted(n for n, st in probes.statuses.items() if st.status == "attached")
    print(f"\n{snap.interval_s:.1f} s, attach {snap.attach}, probes {','.join(attached)}; "
          f"events: {kinds['exec']} exec, {kinds['exit']} exit, {kinds['oom']} oom; "
          f"lost events {snap.lost_events}" + (f"; kernel drops {dict(snap.drops)}" if snap.drops else ""))
    for st in probes.statuses.values():
        if st.status != "attached":
            print(f"probe {st.name}: {st.status}: {st.detail}")
    return stop.report(snap.interval_s, duration)


def cmd_stats(args: argparse.Namespace) -> int:
    from aios_host.probes.loader import ProbeSet
    from aios_host.probes.stats import bpf_stats_enabled, overhead

    duration = args.duration
    root = SysRoot(args.root)
    with ProbeSet(root, _options(args)) as probes, bpf_stats_enabled(root) as old:
        if old is None:
            raise AiosError("this kernel has no kernel.bpf_stats_enabled (5.1+): no run-time stats")
        before = probes.prog_counters()
        t0 = time.monotonic()
        # A signal ends the interval, not the process: the figures so far are printed and
        # kernel.bpf_stats_enabled is still restored on the way out (SIGTERM used to leave it on).
        with cli_base.StopSignals() as stop:
            while time.monotonic() - t0 < duration and not stop():
                probes.poll(timeout_ms=100)
        after = probes.prog_counters()
        interval = time.monotonic() - t0
    rows = overhead(before, after, interval, os.cpu_count() or 1)
    total_cpu = sum(r.cpu_pct for r in rows)
    if args.json:
        print_json({"interval_s": interval, "bpf_stats_enabled_before": old, "programs": [asdict(r) for r in rows],
                   "total_cpu_pct": total_cpu, "total_host_cpu_pct": total_cpu / (os.cpu_count() or 1),
                   "interrupted": stop.name})
        return stop.report(interval, duration)
    table = [(r.probe, r.program, f"{r.runs_per_s:.0f}", _fmt(r.ns_per_run), f"{r.cpu_pct:.3f}",
              f"{r.host_cpu_pct:.3f}") for r in rows]
    table.append(("total", "", f"{sum(r.runs_per_s for r in rows):.0f}", "", f"{total_cpu:.3f}",
                  f"{total_cpu / (os.cpu_count() or 1):.3f}"))
    print(render(["probe", "program", "runs/s", "ns/run", "cpu%_of_1", "host_cpu%"], table))
    print(f"\n{interval:.1f} s; kernel.bpf_stats_enabled was {old} and is restored")
    return stop.report(interval, duration)


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("probe", help="eBPF probes: list them, run them, measure their cost")
    psub = p.add_subparsers(dest="probe_command", required=True, metavar="ACTION")

    load = argparse.ArgumentParser(add_help=False)
    load.add_argument("--attach", choices=["auto", "raw", "tracepoint"], default="auto",
                      help="raw needs kernel headers matching the kernel (default: auto)")
    load.add_argument("--probes", default="", metavar="A,B",
                      help="a subset: sched,faults,reclaim,blkio,oom,proc (default: all)")

    ls = psub.add_parser("list", parents=[common, load], help="probes, tracepoints, attach method, status")
    ls.set_defaults(func=cmd_list)

    r = psub.add_parser("run", parents=[common, load], help="per-cgroup table over an interval")
    r.add_argument("--duration", type=DURATION, default=5.0, metavar="S", help="seconds (default 5)")
    r.add_argument("--cgroup", default="", metavar="PATH", help="only this cgroup v2 subtree")
    r.add_argument("--events", action="store_true", help="print exec/exit/OOM events as they come")
    r.add_argument("--all", action="store_true", help="also cgroups where nothing was measured")
    r.set_defaults(func=cmd_run)

    s = psub.add_parser("stats", parents=[common, load],
                        help="per-program BPF run time (enables kernel.bpf_stats_enabled meanwhile)")
    s.add_argument("--duration", type=DURATION, default=5.0, metavar="S", help="seconds (default 5)")
    s.set_defaults(func=cmd_stats)


def build_parser() -> argparse.ArgumentParser:
    return cli_base.build_parser(add_parsers)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aios_host.cli.probe ACTION ...` == `aios-host probe ACTION ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "probe" not in argv:
        at = next((i for i, a in enumerate(argv) if a in ("list", "run", "stats")), len(argv))
        argv.insert(at, "probe")
    return cli_base.run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
