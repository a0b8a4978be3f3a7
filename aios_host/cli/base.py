"""What every aios-host command line shares: global options, the parser skeleton, and running a
parsed command so that a user mistake is one line on stderr and a non-zero exit.

aios_host.cli builds the whole tool from it; cli.job and cli.probe also build standalone parsers from
it (`python -m aios_host.cli.job` is how a detached supervisor runs).
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from aios_host import log
from aios_host.errors import AiosError, shown

AddParsers = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]

_log = log.get_logger("aios_host.cli")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (`aios-host: error: policy diff: argument
    --sample-ms: ...`), as every other aios-host error is, and
    exit 2, like every other aios-host error; --help still prints the whole usage."""

    def error(self, message: str) -> NoReturn:
        from aios_host.errors import one_line

        command = self.prog.removeprefix("aios-host").strip()
        where = f"{command}: " if command else ""
        sys.stderr.write(f"aios-host: error: {where}{one_line(message)} (see: {self.prog} --help)\n")
        sys.exit(2)


def seconds_arg(lo_s: float, hi_s: float) -> Callable[[str], float]:
    """An argparse type: "1", "1.5s", "500ms", "2m", "1h" -> seconds, finite and within [lo, hi]."""

    def parse(text: str) -> float:
        t = text.strip().lower()
        scale = 1.0
        for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
            if t.endswith(suffix):
                t, scale = t[: -len(suffix)], mult
                break
        try:
            v = float(t) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a duration (e.g. 1s, 500ms)") from None
        if not math.isfinite(v) or not lo_s <= v <= hi_s:
            raise argparse.ArgumentTypeError(f"{shown(text)}: must be a duration from {lo_s:g} s to {hi_s:g} s")
        return v

    return parse


def int_arg(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number within [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v}: must be from {lo} to {hi}")
        return v

    return parse


def build_parser(*add_parsers: AddParsers, description: str | None = None) -> argparse.ArgumentParser:
    """`aios-host` with --log-level, and each command group given, sharing --root and --json."""
    p = OneLineParser(prog="aios-host", description=description)
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="default: info for the daemon (every write is an event), warning otherwise")
    common = OneLineParser(add_help=False)
    common.add_argument("--root", default="/", help="kernel root to act on (default /)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in add_parsers:
        add(sub, common)
    return p


def check_root(root: str) -> None:
    """--root must be an existing directory. Every kernel path is looked up below it, and most
    commands take a missing file for "not there" (no journal: "nothing to roll back", exit 0), so a
    mistyped root would otherwise look like an empty host."""
    name = root if root and len(root) <= 200 else shown(root, 200)  # "" and a hostile 4 KiB path
    try:
        st = os.stat(root)
    except OSError as exc:
        reasons = {errno.ENOENT: "no such directory", errno.ENOTDIR: "not a directory",
                   errno.EACCES: "permission denied"}
        reason = reasons.get(exc.errno or 0, os.strerror(exc.errno or errno.EIO))
        raise AiosError(f"--root {name}: {reason}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise AiosError(f"--root {name}: not a directory")


class StopSignals:
    """While held, SIGINT and SIGTERM end a measuring loop instead of the process: the command
    prints what it measured so far and exits 128+signal (130, 143), as ping and perf stat do.

    The handler only sets a flag (a loop that polls with a timeout sees it within one poll):
    raising from a signal handler could land anywhere, e.g. between two map reads. Leaving the
    block puts the previous handlers back, so a second Ctrl-C while the partial result is printed
    interrupts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread: signals cannot be caught there, nothing to do
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            # None: a handler not installed from Python; the default is the closest we can restore
            signal.signal(s, signal.SIG_DFL if old is None else old)
        self._old.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def __call__(self) -> bool:
        """The `stop` a measuring loop polls: True once a signal came."""
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + self.signum

    def report(self, measured_s: float, planned_s: float) -> int:
        """After an interrupted measurement has been printed: the note (stderr, so that stdout keeps
        the format of a normal end) and the exit code. A measurement that ran its course: 0."""
        if self.signum is None:
            return 0
        _log.info("measurement_interrupted", signal=self.name, measured_s=round(measured_s, 3),
                  planned_s=planned_s)
        print(f"aios-host: interrupted by {self.name} after {measured_s:.1f} s of {planned_s:g} s; "
              f"the figures cover those {measured_s:.1f} s", file=sys.stderr, flush=True)
        return self.exit_code


def run(args: argparse.Namespace) -> int:
    log.configure(args.log_level or ("info" if getattr(args, "command", "") == "daemon" else "warning"))
    try:
        root = getattr(args, "root", None)
        if root is not None:
            check_root(root)
        return int(args.func(args))
    except AiosError as err:
        print(f"aios-host: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
