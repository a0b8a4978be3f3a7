"""What every aios-host command line shares: global options, the parser skeleton, and running a
parsed command so that a user mistake is one line on stderr and a non-zero exit.

aios_host.cli builds the whole tool from it; cli.job and cli.probe also build standalone parsers from
it (`python -m aios_host.cli.job` is how a detached supervisor runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from aios_host import log
from aios_host.errors import AiosError

AddParsers = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]


def build_parser(*add_parsers: AddParsers, description: str | None = None) -> argparse.ArgumentParser:
    """`aios-host` with --log-level, and each command group given, sharing --root and --json."""
    p = argparse.ArgumentParser(prog="aios-host", description=description)
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="default: info for the daemon (every write is an event), warning otherwise")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="/", help="kernel root to act on (default /)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in add_parsers:
        add(sub, common)
    return p


def run(args: argparse.Namespace) -> int:
    log.configure(args.log_level or ("info" if getattr(args, "command", "") == "daemon" else "warning"))
    try:
        return int(args.func(args))
    except AiosError as err:
        print(f"aios-host: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
