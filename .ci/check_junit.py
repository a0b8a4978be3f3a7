#!/usr/bin/env python3
"""Fail CI when a test tier executed zero tests.

pytest exits 0 when every test of a run was skipped (no root, no bcc, not in the VM) or
deselected, so a tier can "pass" without testing anything. Each tier writes a junit XML file
(pytest --junitxml); this reads them and fails, with one line naming the tier, when a tier's
file is missing or unreadable or has no test that ran (executed = tests - skipped).

    check_junit.py TIER=PATH [TIER=PATH ...]

Prints one line of counts per tier, then one line per failing tier; exits 1 if any failed, 2 on
a usage mistake. Standard library only: it runs before (and without) the project's venv.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TierCounts:
    tests: int
    skipped: int
    failures: int
    errors: int
    skip_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def executed(self) -> int:
        return self.tests - self.skipped


class JunitError(Exception):
    """The file is missing or is not junit XML."""


def read_counts(path: str) -> TierCounts:
    """Counts from the <testcase> elements themselves (not the suites' attributes, which differ
    between junit writers): a testcase with a <skipped> child was skipped (pytest also writes
    xfail that way: it did not run to a verdict)."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise JunitError(f"no junit XML at {path} (the tier did not run, or died before writing it)") from None
    except (OSError, ET.ParseError) as exc:
        raise JunitError(f"{path}: not readable junit XML ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise JunitError(f"{path}: root element <{root.tag}>, expected <testsuites> or <testsuite>")
    tests = skipped = failures = errors = 0
    reasons: Counter[str] = Counter()
    for case in root.iter("testcase"):
        tests += 1
        skip = case.find("skipped")
        if skip is not None:
            skipped += 1
            reasons[skip.get("message") or "(no reason given)"] += 1
        if case.find("failure") is not None:
            failures += 1
        if case.find("error") is not None:
            errors += 1
    return TierCounts(tests, skipped, failures, errors, reasons)


def parse_args(argv: list[str]) -> list[tuple[str, str]]:
    tiers = []
    for arg in argv:
        name, sep, path = arg.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"argument {arg!r}: expected TIER=PATH")
        tiers.append((name, path))
    if not tiers:
        raise ValueError("no tiers given (usage: check_junit.py TIER=PATH [TIER=PATH ...])")
    return tiers


def check(tiers: list[tuple[str, str]], out=sys.stdout) -> int:
    """Print the counts and the failures; 0 when every tier executed at least one test."""
    failed: list[str] = []
    for name, path in tiers:
        try:
            c = read_counts(path)
        except JunitError as exc:
            print(f"{name:>6}: no result", file=out)
            failed.append(f"tier {name}: {exc}")
            continue
        print(f"{name:>6}: {c.executed} executed, {c.skipped} skipped, {c.failures} failed, "
              f"{c.errors} errors ({path})", file=out)
        if c.executed == 0:
            why = ""
            if c.skip_reasons:
                reason, n = c.skip_reasons.most_common(1)[0]
                why = f"; {n} skipped: {reason}"
            failed.append(f"tier {name} executed zero tests ({c.tests} collected{why}) in {path}")
    for line in failed:
        print(f"check_junit: FAIL: {line}", file=out)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    try:
        tiers = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"check_junit: {exc}", file=sys.stderr)
        return 2
    return check(tiers)


if __name__ == "__main__":
    sys.exit(main())
