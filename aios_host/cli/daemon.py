"""`aios-host daemon`: run the host service in the foreground (systemd runs it the same way)."""

from __future__ import annotations

import argparse

from aios_host.cli.base import int_arg, seconds_arg


def cmd_daemon(args: argparse.Namespace) -> int:
    from aios_host.daemon.loop import DaemonOptions
    from aios_host.daemon.service import run

    opts = DaemonOptions(
        policy_path=args.policy, interval_s=args.interval, dry_run=args.dry_run,
        keep_on_exit=args.keep_on_exit, probes=not args.no_probes, energy=not args.no_energy, root=args.root,
        hold_ticks=args.hold_ticks, cooldown_s=args.cooldown)
    return run(opts, socket_path=args.socket, metrics_port=args.metrics_port or None,
               metrics_host=args.metrics_address)


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from aios_host.api import SOCKET_PATH
    from aios_host.metrics import DEFAULT_PORT

    d = sub.add_parser("daemon", parents=[common], help="run the host service (sense, decide, write every interval)")
    d.add_argument("--policy", default="/etc/aios-host/policy.toml", help="policy file (default %(default)s)")
    d.add_argument("--interval", type=seconds_arg(0.05, 3600), default=1.0,
                   help="tick interval, 50ms to 1h (default 1s)")
    d.add_argument("--dry-run", action="store_true", help="compute and log plans, write nothing")
    d.add_argument("--keep-on-exit", action="store_true",
                   help="leave the applied values in place on exit (default: restore the originals)")
    d.add_argument("--no-probes", action="store_true", help="do not attach the eBPF probes")
    d.add_argument("--no-energy", action="store_true",
                   help="do not sample RAPL, NVML and cpufreq, and run no `auto` GPU power search")
    d.add_argument("--hold-ticks", type=int_arg(1, 3600), default=3,
                   help="ticks a decision must hold before it is written")
    d.add_argument("--cooldown", type=seconds_arg(0, 86400), default=10.0,
                   help="minimum time between changes of one file")
    d.add_argument("--socket", default=SOCKET_PATH, help="API socket (default %(default)s)")
    d.add_argument("--metrics-port", type=int_arg(0, 65535), default=DEFAULT_PORT,
                   help="Prometheus metrics port on --metrics-address (default %(default)s; 0: off)")
    d.add_argument("--metrics-address", default="127.0.0.1", help="default %(default)s")
    d.set_defaults(func=cmd_daemon)
