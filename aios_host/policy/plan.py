"""A Plan is a value: the ordered writes that take the host from what it is to what the policy
wants, each with the value that restores it. `--dry-run` prints it; actuate.apply writes it.

Order (each rule is a kernel requirement or a way to never pass through a worse state):
  1. mkdir class cgroups, parents first;
  2. enable controllers top-down (a cgroup can only enable what its parent enabled);
  3. per cgroup: cpuset.mems before cpuset.cpus (cpus need memory nodes), never an empty cpuset;
     cpu; memory.min/low; memory.high before memory.max when shrinking, max before high when
     growing (so high never sits above max); io;
  4. move processes last, into cgroups whose limits are already in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from aios_host.errors import AiosError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import Cgroup, CgroupFs

Op = Literal["mkdir", "enable", "write", "move"]
FILE_ORDER = (
    "cpuset.mems", "cpuset.cpus", "cpu.weight", "cpu.max", "memory.min", "memory.low",
    "memory.high", "memory.max", "memory.swap.max", "io.weight", "io.max",
)


CPU_WEIGHT_DEADBAND = 0.10  # relative change of cpu.weight below which we leave it alone


class PlanError(AiosError):
    pass


@dataclass(frozen=True)
class Write:
    op: Op
    path: str  # kernel path: the directory for mkdir, else the file written
    old: str | None  # what restores the previous state (None: it did not exist)
    new: str
    reason: str
    controller: str | None = None
    available: bool = True  # False: this host's cgroup v2 lacks the controller

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    writes: tuple[Write, ...]

    @property
    def unavailable(self) -> tuple[Write, ...]:
        return tuple(w for w in self.writes if not w.available)

    def __len__(self) -> int:
        return len(self.writes)


@dataclass(frozen=True)
class DesiredCgroup:
    rel: str
    create: bool  # an owned class cgroup that may not exist yet
    files: Mapping[str, tuple[str, str]]  # file -> (value, reason)
    move_pids: tuple[int, ...] = ()
    cls: str = ""


def controller_of(file: str) -> str | None:
    head = file.split(".", 1)[0]
    return head if head in ("cpu", "cpuset", "memory", "io", "pids") else None


def _normalize(file: str, text: str) -> object:
    """What a file says, in a form where "max 100000" == "max 100000\\n" and 4G == 4294967296."""
    if file == "cpu.max":
        return fmt.parse_cpu_max(text)
    if file in ("cpuset.cpus", "cpuset.mems"):
        return fmt.parse_cpu_list(text)
    if file.startswith("memory.") or file == "cpu.weight":
        return fmt.parse_limit(text)
    if file == "io.weight":
        return fmt.parse_io_weight(text).get("default")
    return text.strip()


def _io_lines(text: str) -> dict[str, dict[str, fmt.Limit]]:
    return fmt.parse_io_max(text)


def _limit_num(v: object) -> float:
    return math.inf if v == fmt.MAX else float(v)  # type: ignore[arg-type]


def _file_writes(fs: CgroupFs, d: DesiredCgroup, exists: bool, available: set[str]) -> list[Write]:
    cg = Cgroup(fs, d.rel)
    out: list[Write] = []
    # keys are file names, or "io.max MAJ:MIN" (one io.max line per device)
    def order(key: str) -> int:
        f = key.split(" ", 1)[0]
        return FILE_ORDER.index(f) if f in FILE_ORDER else len(FILE_ORDER)

    files = sorted(d.files, key=order)
    # memory.high vs memory.max: shrink -> high first; grow -> max first.
    if "memory.high" in files and "memory.max" in files and exists:
        old_max = cg.read_optional("memory.max")
        new_max = _limit_num(fmt.parse_limit(d.files["memory.max"][0]))
        if old_max is not None and new_max > _limit_num(fmt.parse_limit(old_max)):
            i, j = files.index("memory.high"), files.index("memory.max")
            files[i], files[j] = files[j], files[i]
    for key in files:
        value, reason = d.files[key]
        file = key.split(" ", 1)[0]
        ctrl = controller_of(file)
        ok = ctrl is None or ctrl in available
        if file in ("cpuset.cpus", "cpuset.mems") and not fmt.parse_cpu_list(value):
            raise PlanError(f"{cg.file(file)}: refusing to write an empty cpuset ({reason})")
        old_text = cg.read_optional(file) if exists else None
        if file == "io.max":
            dev = value.split()[0]
            old_dev = _io_lines(old_text).get(dev, {}) if old_text is not None else None
            new_dev = fmt.parse_io_max(value)[dev]
            if old_dev is not None and all(old_dev.get(k, "max") == new_dev.get(k, "max")
                                           for k in fmt.IO_MAX_KEYS):
                continue
            restore = None if old_dev is None else fmt.format_io_max_line(
                dev, {k: old_dev.get(k, fmt.MAX) for k in fmt.IO_MAX_KEYS})
            out.append(Write("write", cg.file(file), restore, value, reason, ctrl, ok))
            continue
        if old_text is not None and _normalize(file, old_text) == _normalize(file, value):
            continue
        if file == "cpu.weight" and old_text is not None and old_text.strip().isdigit():
            # Deadband: cpu.weight follows measured usage; moving it for a few percent of noise
            # would make every apply (and every daemon tick) rewrite it.
            old_w = int(old_text)
            if abs(int(value) - old_w) <= CPU_WEIGHT_DEADBAND * old_w:
                continue
        if file == "io.weight" and old_text is not None:
            restore: str | None = f"default {fmt.parse_io_weight(old_text).get('default', 100)}"
        else:
            restore = None if old_text is None else old_text.strip()
        out.append(Write("write", cg.file(file), restore, value, reason, ctrl, ok))
    return out


def make_plan(fs: CgroupFs, desired: list[DesiredCgroup]) -> Plan:
    root_cg = fs.cgroup("")
    available = set(root_cg.controllers())
    mkdirs: list[Write] = []
    enables: list[Write] = []
    writes: list[Write] = []
    moves: list[Write] = []
    will_exist: set[str] = set()
    enabled_now: dict[str, set[str]] = {}
    exists_now: dict[str, bool] = {}

    def exists(rel: str) -> bool:
        if rel not in exists_now:
            exists_now[rel] = fs.exists(rel)
        return exists_now[rel]

    def subtree(rel: str) -> set[str]:
        if rel not in enabled_now:
            cg = Cgroup(fs, rel)
            text = cg.read_optional("cgroup.subtree_control") if exists(rel) else None
            enabled_now[rel] = set(fmt.parse_words(text or ""))
        return enabled_now[rel]

    for d in desired:
        parts = d.rel.split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if not exists(rel) and rel not in will_exist:
                if not d.create:
                    raise PlanError(f"cgroup /{d.rel}: no such cgroup under {fs.mount}")
                will_exist.add(rel)
                mkdirs.append(Write("mkdir", Cgroup(fs, rel).kernel_path, None, "",
                                    f"class {d.cls}: class cgroup"))
        used = {controller_of(k.partition(" ")[0]) for k in d.files}
        needed = [c for c in ("cpuset", "cpu", "io", "memory") if c in used]
        ancestors = [""] + ["/".join(parts[:i]) for i in range(1, len(parts))]
        for rel in ancestors:
            for ctrl in needed:
                if ctrl in subtree(rel):
                    continue
                subtree(rel).add(ctrl)
                enables.append(Write(
                    "enable", Cgroup(fs, rel).file("cgroup.subtree_control"), f"-{ctrl}",
                    f"+{ctrl}", f"class {d.cls}: {ctrl} controller for /{d.rel}", ctrl,
                    ctrl in available))
        writes.extend(_file_writes(fs, d, exists(d.rel), available))
        cg = Cgroup(fs, d.rel)
        for pid in d.move_pids:
            try:
                src = fs.cgroup_of_pid(pid)
            except AiosError:
                continue  # exited
            if src.rel == d.rel or src.rel.startswith(d.rel + "/"):
                continue  # already in the class, e.g. a job rank in its own rank cgroup below it
            moves.append(Write("move", cg.file("cgroup.procs"), src.file("cgroup.procs"), str(pid),
                               f"class {d.cls}: process {pid} matches", None, True))
    # Enables: the order above is per class; make it strictly top-down across classes.
    enables.sort(key=lambda w: w.path.count("/"))
    return Plan(tuple(mkdirs + enables + writes + moves))
