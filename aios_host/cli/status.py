"""`aios-host status`: the daemon's state in the manner of `systemctl status` / `tuned-adm active`.

Exit codes as systemctl's: 0 running (active or degraded), 3 not running.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from aios_host.cli.base import seconds_arg
from aios_host.output import print_json


def _ago(unix: float | None) -> str:
    if unix is None:
        return "never"
    s = max(0.0, time.time() - unix)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def render_status(st: dict[str, Any]) -> list[str]:
    verdict = st["verdict"]
    mode = st["mode"] + (f" ({st['mode_reason']})" if st.get("mode_reason") else "")
    lines = [f"aios-host: {verdict} - {mode}",
             f"  policy: {st['policy_path']}" + (f" ({st['policy_description']})" if st["policy_description"] else ""),
             f"  daemon: pid {st['pid']}, up {_ago(st['started_unix']).replace(' ago', '')}, "
             f"{st['ticks_total']} ticks every {st['interval_seconds']:g} s, last tick "
             f"{1000 * (st['last_tick_seconds'] or 0):.2f} ms",
             f"  last decision: {_ago(st['last_decision_unix'])}"
             + (f", {len(st['last_writes'])} writes" if st["last_writes"] else ""),
             f"  writes: {st['writes_total']} made, {st['writes_failed_total']} failed, "
             f"{st['writes_pending']} pending (hysteresis), {st['writes_unavailable']} refused by this host",
             f"  classes: {st['classes']}"]
    if st["sources"]:
        for s in st["sources"]:
            age = "no sample" if s["age_seconds"] is None else f"sample {s['age_seconds']:.1f} s old"
            state = "ok" if s["ok"] else "STALE"
            err = f", {s['last_error']}" if s.get("last_error") else ""
            lines.append(f"  source {s['name']}: {state} ({age}, {s['skips_total']} skipped ticks{err})")
        lines.append("  probes: " + (", ".join(st["probes_attached"]) or "none attached"))
    else:
        lines.append("  probes: off")
    guard = st.get("memory_guard", "off")
    if guard != "off":
        avail, tto = st.get("host_available_bytes"), st.get("host_seconds_to_oom")
        lines.append(f"  memory guard: {guard}; host available "
                     + (f"{avail / 2**20:.0f} MiB" if avail is not None else "?")
                     + ", time to OOM " + (f"{tto:.0f} s" if tto is not None else "not growing"))
        for c in st.get("memory_guard_classes", [])[:10]:
            t = c["seconds_to_oom"]
            # a daemon from before memory.events was read answers without it
            events = {k: n for k, n in (c.get("memory_events") or {}).items() if n is not None}
            lines.append(f"    {c['name']}: {c['state']}, time to OOM " + (f"{t:.0f} s" if t is not None else "-")
                         + ("" if not events else
                            ", memory.events " + " ".join(f"{k} {n}" for k, n in events.items())))
    drift = st["drift"]
    lines.append("  drift: none" if not drift else f"  drift: {len(drift)} file(s) differ from what was written")
    for d in drift[:5]:
        lines.append(f"    {d['path']}: wrote {d['applied']!r}, kernel has {d['now']!r}")
    if st.get("last_error"):
        lines.append(f"  last error: {st['last_error']}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from aios_host import api

    try:
        reply = api.call({"cmd": "status"}, path=args.socket, timeout_s=args.timeout)
    except api.NotRunning as exc:
        if args.json:
            print_json({"verdict": "not running", "error": str(exc)})
        else:
            print(f"aios-host: not running ({exc})")
        return 3
    if not reply.get("ok"):
        from aios_host.errors import AiosError

        raise AiosError(f"{args.socket}: {reply.get('error')}")
    st = reply["status"]
    if args.json:
        print_json(st)
    else:
        print("\n".join(render_status(st)))
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from aios_host.api import SOCKET_PATH

    s = sub.add_parser("status", parents=[common], help="is the daemon running, and what is it doing")
    s.add_argument("--socket", default=SOCKET_PATH, help="API socket (default %(default)s)")
    s.add_argument("--timeout", type=seconds_arg(0.1, 3600), default=5.0,
                   help="how long to wait for the daemon (default 5s)")
    s.set_defaults(func=cmd_status)
