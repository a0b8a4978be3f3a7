"""`aios-host top`: a top-style view of the host, its policy classes and cgroups, jobs and decisions.

Interactive (a terminal, the [tui] extra): refreshes every --interval; keys as htop's (see `?`).
Batch, like `top -b` and `below dump` (--once, -n N, --json, or stdout not a terminal): rates are
measured over one --interval, so the first frame comes after it; text without colour unless stdout
is a terminal; --json is one document (schema aios-host-top/1), with -n N one JSON line per frame.

Data: the daemon's API on --socket when it answers, else a local read-only snapshot of cgroupfs and
PSI. With --root other than /, the daemon (which serves the real host) is asked only when --socket
is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from aios_host.cli.base import int_arg, seconds_arg
from aios_host.errors import AiosError
from aios_host.output import print_json

INSTALL_HINT = "aios-host top needs textual: pip install 'aios-host[tui]' (or --once for batch output)"


def _socket(args: argparse.Namespace) -> str | None:
    from aios_host.api import SOCKET_PATH

    if args.local:
        return None
    if args.socket is not None:
        return args.socket
    return SOCKET_PATH if os.path.realpath(args.root) == "/" else None


def _batch(args: argparse.Namespace) -> bool:
    return args.once or args.iterations is not None or args.json or not sys.stdout.isatty()


def run_batch(args: argparse.Namespace, collector, view) -> int:  # type: ignore[no-untyped-def]
    from aios_host.tui.document import text_report, to_document

    frames = args.iterations or 1
    stream = args.iterations is not None
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    collector.collect()  # the first reading: rates need a second one, one interval later
    next_at = time.monotonic() + args.interval
    for i in range(frames):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += args.interval
        model = collector.collect()
        if args.json and stream:
            sys.stdout.write(json.dumps(to_document(model), sort_keys=True) + "\n")
        elif args.json:
            print_json(to_document(model))
        else:
            sys.stdout.write(("\n" if i else "") + text_report(model, view, colour))
        sys.stdout.flush()
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from aios_host.tui.model import ViewState
    from aios_host.tui.sources import default_collector

    view = ViewState(sort_column=args.sort, descending=args.sort != "name", tree=not args.flat,
                     filter_text=args.filter)
    collector = default_collector(args.root, _socket(args), args.interval)
    try:
        if _batch(args):
            return run_batch(args, collector, view)
        try:
            from aios_host.tui import app
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in ("textual", "rich"):
                raise AiosError(INSTALL_HINT) from None
            raise
        app.run(collector.collect, args.interval, view)
        return 0
    finally:
        collector.close()


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from aios_host.tui.model import COLUMN_IDS

    t = sub.add_parser("top", parents=[common],
                       help="top-style view: host, classes and cgroups, jobs, decisions (interactive or batch)")
    t.add_argument("--socket", default=None,
                   help="the daemon's API socket (default /run/aios-host/api.sock; none with --root other than /)")
    t.add_argument("--local", action="store_true", help="do not ask the daemon: a local read-only snapshot")
    t.add_argument("--once", action="store_true", help="batch: print one frame and exit")
    t.add_argument("-n", "--iterations", type=int_arg(1, 10**9), default=None, metavar="N",
                   help="batch: print N frames, one --interval apart (with --json: one JSON line each)")
    t.add_argument("--interval", "-d", type=seconds_arg(0.1, 3600), default=1.0,
                   help="refresh interval, 100ms to 1h (default 1s)")
    t.add_argument("--sort", choices=COLUMN_IDS, default="cpu_usage_cores", metavar="COLUMN",
                   help="column to sort by (default cpu_usage_cores; any --json row key of a column)")
    t.add_argument("--flat", action="store_true", help="a flat list instead of the tree")
    t.add_argument("--filter", default="", help="show only rows whose name or path contains this")
    t.set_defaults(func=cmd_top)
