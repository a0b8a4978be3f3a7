"""aios-host command line. Every user mistake is one line on stderr and a non-zero exit.

The package is one module per command group, each with `add_parsers(sub, common)`: host (doctor,
snapshot), policy, probe, job (job, bench), daemon, status and top; base holds the parser skeleton and `run`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aios_host import __version__
from aios_host.cli import base

_DESCRIPTION = "aios-host command line. Every user mistake is one line on stderr and a non-zero exit."


def build_parser() -> argparse.ArgumentParser:
    # The groups are imported here, not at the top: `python -m aios_host.cli.job` (how a detached
    # supervisor runs) imports this package first, and must not find the job module already loaded.
    from aios_host.cli import daemon, energy, host, job, policy, probe, status, top

    groups: tuple[base.AddParsers, ...] = (
        host.add_parsers,
        policy.add_parsers,
        probe.add_parsers,
        job.add_parsers,
        daemon.add_parsers,
        status.add_parsers,
        energy.add_parsers,
        top.add_parsers,
    )
    p = base.build_parser(*groups, description=_DESCRIPTION)
    p.add_argument("--version", action="version", version=f"aios-host {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return base.run(build_parser().parse_args(argv))
