"""Tracepoint format files (tracefs events/<category>/<name>/format): parse, and read via a SysRoot.

The probes configure themselves from what the running kernel's formats say rather than from the
kernel headers, which on a host with fallback headers describe another kernel:
- sched_switch's prev_state encoding (TASK_REPORT_MAX, the "R+" preempted bit, and the X/Z bits of
  a dead task), from the __print_flags table of its print fmt;
- whether sched_process_exit has group_dead (6.16+) and oom:mark_victim has memory fields (6.8+).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aios_host.errors import ParseError
from aios_host.kernel.root import SysRoot

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_FIELD_RE = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d+);"
)
_FLAG_RE = re.compile(r"\{\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*\"([A-Za-z+]+)\"\s*\}")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True)
class TracepointFormat:
    name: str
    id: int | None
    fields: dict[str, Field]
    print_fmt: str

    def has(self, field: str) -> bool:
        return field in self.fields


def parse_format(text: str) -> TracepointFormat:
    """Parse one tracefs `format` file. Common fields (common_pid, ...) are kept too."""
    name, ident, print_fmt = "", None, ""
    fields: dict[str, Field] = {}
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            ident = int(line.split(":", 1)[1])
        elif line.startswith("print fmt:"):
            print_fmt = line.split(":", 1)[1].strip()
        else:
            m = _FIELD_RE.match(line)
            if not m:
                continue
            decl = m.group("decl").strip()
            # "unsigned long address", "char prev_comm[16]", "__data_loc char[] filename"
            fname = re.sub(r"\[.*?\]$", "", decl.split()[-1])
            ftype = decl[: decl.rfind(decl.split()[-1])].strip()
            fields[fname] = Field(fname, ftype, int(m.group("offset")), int(m.group("size")),
                                  m.group("signed") == "1")
    if not name or not fields:
        raise ParseError("tracepoint format", text, "no name: line or no field: lines")
    return TracepointFormat(name, ident, fields, print_fmt)


@dataclass(frozen=True)
class SwitchStateBits:
    """How sched_switch's prev_state reports a task: 0 "R" (still TASK_RUNNING), report_max "R+"
    (preempted), and dead = the "X" | "Z" bits of a task's final switch-out."""

    report_max: int
    dead: int


DEFAULT_SWITCH_BITS = SwitchStateBits(report_max=0x100, dead=0x30)  # 4.14+ (TASK_REPORT_MAX)


def switch_state_bits(fmt: TracepointFormat) -> SwitchStateBits:
    """From the __print_flags table of sched_switch's print fmt: { 0x01, "S" }, ..., { 0x80, "I" }.

    TASK_REPORT_MAX is the bit above the highest reported state (it prints as the '+' of "R+").
    """
    flags = {letter: int(value, 0) for value, letter in _FLAG_RE.findall(fmt.print_fmt)}
    if not flags:
        return DEFAULT_SWITCH_BITS
    report_max = max(flags.values()) << 1
    dead = flags.get("X", 0) | flags.get("Z", 0)
    return SwitchStateBits(report_max=report_max, dead=dead or DEFAULT_SWITCH_BITS.dead)


def find_tracefs(root: SysRoot) -> str | None:
    """The tracefs directory with events in it, or None when tracefs is not mounted."""
    for d in TRACEFS_DIRS:
        if root.exists(f"{d}/events/sched/sched_switch"):
            return d
    return None


def tracepoint_exists(root: SysRoot, tracefs: str, tracepoint: str) -> bool:
    category, name = tracepoint.split(":", 1)
    return root.exists(f"{tracefs}/events/{category}/{name}")


def read_format(root: SysRoot, tracefs: str, tracepoint: str) -> TracepointFormat | None:
    """The format of "category:name", None when the kernel does not have that tracepoint."""
    category, name = tracepoint.split(":", 1)
    text = root.read_optional(f"{tracefs}/events/{category}/{name}/format")
    return None if text is None else parse_format(text)
