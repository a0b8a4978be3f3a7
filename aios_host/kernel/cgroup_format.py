"""Pure parsers and formatters for the cgroup v2 interface file formats.

One function per format of Documentation/admin-guide/cgroup-v2.rst, "Interface Files Format":
newline- and space-separated values, flat keyed, nested keyed, single values ("max" or a number),
"$MAX $PERIOD" (cpu.max), cpuset lists ("0-3,8") and PSI lines. No I/O here: tests feed them
files captured from real hosts (tests/fixtures).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aios_host.errors import ParseError

MAX: Literal["max"] = "max"
Limit = int | Literal["max"]


def _int(what: str, text: str, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ParseError(what, text, f"{token!r} is not an integer") from None


# -- simple values ------------------------------------------------------------------------------


def parse_limit(text: str, what: str = "limit") -> Limit:
    """A single value that may be "max" (memory.max, memory.high, pids.max, memory.swap.max)."""
    token = text.strip()
    if token == MAX:
        return MAX
    return _int(what, text, token)


def format_limit(value: Limit) -> str:
    return MAX if value == MAX else str(int(value))


def parse_int(text: str, what: str = "value") -> int:
    """A single integer (cpu.weight, memory.current, memory.peak, memory.min/low)."""
    return _int(what, text, text.strip())


def parse_words(text: str) -> tuple[str, ...]:
    """Space-separated values (cgroup.controllers, cgroup.subtree_control)."""
    return tuple(text.split())


def parse_pids(text: str) -> tuple[int, ...]:
    """Newline-separated pids (cgroup.procs, cgroup.threads)."""
    return tuple(_int("pid list", text, line) for line in text.split())


# -- keyed formats ------------------------------------------------------------------------------


def parse_flat_keyed(text: str, what: str = "flat keyed file") -> dict[str, int]:
    """`KEY VALUE` per line (cpu.stat, memory.stat, memory.events, cgroup.events, cgroup.stat)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ParseError(what, text, f"line {line!r} is not 'KEY VALUE'")
        out[parts[0]] = _int(what, text, parts[1])
    return out


def parse_nested_keyed(text: str, what: str = "nested keyed file") -> dict[str, dict[str, str]]:
    """`KEY SUB=VAL SUB=VAL ...` per line (io.stat, io.max, *.pressure). Values stay strings."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields: dict[str, str] = {}
        for token in parts[1:]:
            key, sep, val = token.partition("=")
            if not sep:
                raise ParseError(what, text, f"{token!r} is not SUBKEY=VALUE")
            fields[key] = val
        out[parts[0]] = fields
    return out


# -- cpu.max ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuMax:
    """cpu.max: at most quota_usec of CPU time every period_usec. quota None means "max"."""

    quota_usec: int | None
    period_usec: int

    @property
    def cores(self) -> float | None:
        return None if self.quota_usec is None else self.quota_usec / self.period_usec


def parse_cpu_max(text: str) -> CpuMax:
    parts = text.split()
    if len(parts) not in (1, 2):
        raise ParseError("cpu.max", text, "expected '$MAX $PERIOD'")
    quota = None if parts[0] == MAX else _int("cpu.max", text, parts[0])
    period = _int("cpu.max", text, parts[1]) if len(parts) == 2 else 100_000
    return CpuMax(quota, period)


# -- cpuset lists -------------------------------------------------------------------------------


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """A cpuset/sysfs list such as "0-3,8,10-11" (also cpuset.mems, node cpulists). Sorted, unique."""
    ids: set[int] = set()
    for chunk in text.strip().split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        lo, sep, hi = chunk.partition("-")
        if sep:
            a, b = _int("cpu list", text, lo), _int("cpu list", text, hi)
            if b < a:
                raise ParseError("cpu list", text, f"range {chunk!r} runs backwards")
            ids.update(range(a, b + 1))
        else:
            ids.add(_int("cpu list", text, lo))
    return tuple(sorted(ids))


def format_cpu_list(ids: Iterable[int]) -> str:
    """Inverse of parse_cpu_list, with ranges collapsed the way the kernel prints them."""
    sorted_ids = sorted(set(ids))
    chunks: list[str] = []
    i = 0
    while i < len(sorted_ids):
        j = i
        while j + 1 < len(sorted_ids) and sorted_ids[j + 1] == sorted_ids[j] + 1:
            j += 1
        a, b = sorted_ids[i], sorted_ids[j]
        chunks.append(str(a) if a == b else f"{a}-{b}")
        i = j + 1
    return ",".join(chunks)


# -- io -----------------------------------------------------------------------------------------


def parse_io_weight(text: str) -> dict[str, int]:
    """io.weight: "default 100" then "MAJ:MIN WEIGHT" lines. Key "default" or "MAJ:MIN"."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ParseError("io.weight", text, f"line {line!r} is not 'DEV WEIGHT'")
        out[parts[0]] = _int("io.weight", text, parts[1])
    return out


IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")


def parse_io_max(text: str) -> dict[str, dict[str, Limit]]:
    """io.max: "MAJ:MIN rbps=max wbps=1048576 riops=max wiops=max" per device with a limit."""
    out: dict[str, dict[str, Limit]] = {}
    for dev, fields in parse_nested_keyed(text, "io.max").items():
        limits: dict[str, Limit] = {}
        for key, val in fields.items():
            if key not in IO_MAX_KEYS:
                raise ParseError("io.max", text, f"unknown key {key!r}")
            limits[key] = parse_limit(val, "io.max")
        out[dev] = limits
    return out


def format_io_max_line(dev: str, limits: dict[str, Limit]) -> str:
    return " ".join([dev, *(f"{k}={format_limit(limits[k])}" for k in IO_MAX_KEYS if k in limits)])


# -- PSI ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PressureLine:
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


@dataclass(frozen=True)
class Pressure:
    """cpu/memory/io.pressure (and /proc/pressure/*). `full` is absent for cpu before 5.13."""

    some: PressureLine
    full: PressureLine | None


def pressure_avg10s(text: str, what: str = "pressure") -> tuple[float, float | None]:
    """The some and full avg10 of a *.pressure file (full None where the kernel has no full line):
    the figure read every second for every cgroup (the daemon's tick, `top`'s refresh). The kernel's
    own layout is read without parse_pressure's dicts (~5x faster); anything else goes through
    parse_pressure, with its errors."""
    try:
        first, _, rest = text.partition("\n")
        if first.startswith(_SOME_AVG10):
            some = float(first[_AVG10_AT:first.index(" ", _AVG10_AT)])
            if not rest.strip():
                return some, None
            if rest.startswith(_FULL_AVG10) and rest.find("\n") in (-1, len(rest) - 1):
                return some, float(rest[_AVG10_AT:rest.index(" ", _AVG10_AT)])
    except ValueError:
        pass  # not the kernel's layout after all
    p = parse_pressure(text, what)
    return p.some.avg10, None if p.full is None else p.full.avg10


_SOME_AVG10, _FULL_AVG10 = "some avg10=", "full avg10="
_AVG10_AT = len(_SOME_AVG10)


def parse_pressure(text: str, what: str = "pressure") -> Pressure:
    lines: dict[str, PressureLine] = {}
    for key, fields in parse_nested_keyed(text, what).items():
        try:
            lines[key] = PressureLine(
                avg10=float(fields["avg10"]),
                avg60=float(fields["avg60"]),
                avg300=float(fields["avg300"]),
                total_usec=int(fields["total"]),
            )
        except (KeyError, ValueError) as exc:
            raise ParseError(what, text, f"bad {key!r} line ({exc})") from None
    if "some" not in lines:
        raise ParseError(what, text, "no 'some' line")
    return Pressure(some=lines["some"], full=lines.get("full"))
