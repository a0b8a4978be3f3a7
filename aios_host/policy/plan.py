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

import contextlib
import errno
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from aios_host.errors import AiosError, KernelError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import Cgroup, CgroupFs
from aios_host.kernel.root import OpenDir

Op = Literal["mkdir", "enable", "write", "move", "unit", "cpufreq", "nvml"]
ENERGY_OPS = frozenset({"cpufreq", "nvml"})  # energy/plan.py: through the checking writers, not root.write_text
FILE_ORDER = (
    "cpuset.mems", "cpuset.cpus", "cpu.weight", "cpu.max", "memory.min", "memory.low",
    "memory.high", "memory.max", "memory.swap.max", "io.weight", "io.max",
)


CPU_WEIGHT_DEADBAND = 0.10  # relative change of cpu.weight below which we leave it alone


class PlanError(AiosError):
    pass


# Write and DesiredCgroup are NamedTuples, not frozen dataclasses: decide() makes one of each per
# class file and per class cgroup (thousands), and a frozen dataclass's __init__ costs 4x a tuple's.
class Write(NamedTuple):
    op: Op
    path: str  # kernel path: the directory for mkdir, else the file written
    old: str | None  # what restores the previous state (None: it did not exist)
    new: str
    reason: str
    controller: str | None = None
    available: bool = True  # False: this host's cgroup v2 lacks the controller

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


@dataclass(frozen=True)
class Plan:
    writes: tuple[Write, ...]

    @property
    def unavailable(self) -> tuple[Write, ...]:
        return tuple(w for w in self.writes if not w.available)

    def __len__(self) -> int:
        return len(self.writes)


class DesiredCgroup(NamedTuple):
    rel: str
    create: bool  # an owned class cgroup that may not exist yet
    files: Mapping[str, tuple[str, str]]  # file -> (value, reason)
    move_pids: tuple[int, ...] = ()
    cls: str = ""
    class_weight: int = 100  # the policy's `weight` of the class (systemd's scale: 100 by default)
    cpu_alloc_cores: float = 0.0  # of the LP's CPU for the class, what it has demand for (0: idle)


_CONTROLLERS = frozenset(("cpu", "cpuset", "memory", "io", "pids"))


def controller_of(file: str) -> str | None:
    head = file.partition(".")[0]
    return head if head in _CONTROLLERS else None


def _normalize(file: str, text: str) -> object:
    """What a file says, in a form where "max  100000" == "max 100000" and "0-3" == "0,1,2,3"."""
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


_FILE_RANK = {f: i for i, f in enumerate(FILE_ORDER)}


def _order(key: str) -> int:
    # keys are file names, or "io.max MAJ:MIN" (one io.max line per device)
    return _FILE_RANK.get(key.partition(" ")[0], len(FILE_ORDER))


def _same(file: str, old_s: str, value: str) -> bool:
    """Whether the file's current text (stripped) already says `value`."""
    if old_s == value:  # the kernel prints what we write in the form we write it: the usual case
        return True
    if old_s.isdigit():
        if file == "cpu.weight":
            # Deadband: cpu.weight follows measured usage; moving it for a few percent of noise
            # would make every apply (and every daemon tick) rewrite it.
            old_w = int(old_s)
            return abs(int(value) - old_w) <= CPU_WEIGHT_DEADBAND * old_w
        if value.isdigit():  # two numbers in the kernel's form (no sign, no leading zeros)
            return int(old_s) == int(value)
    elif file == "io.weight" and "\n" not in old_s and old_s.startswith("default "):
        return old_s.split() == value.split()
    return _normalize(file, old_s) == _normalize(file, value)


def _restore(file: str, old_s: str) -> str:
    """What to write to put back `old_s`: io.weight's per-device lines cannot be written back
    together with its default, so only the default is restored (as the kernel documents)."""
    if file == "io.weight" and (not old_s.startswith("default ") or "\n" in old_s):
        return f"default {fmt.parse_io_weight(old_s).get('default', 100)}"
    return old_s


def _io_max_write(path: str, old_text: str | None, value: str, reason: str, ctrl: str | None,
                  ok: bool) -> Write | None:
    """io.max holds one line per device: compare and restore just the device we set."""
    dev = value.split()[0]
    old_dev = _io_lines(old_text).get(dev, {}) if old_text is not None else None
    new_dev = fmt.parse_io_max(value)[dev]
    if old_dev is not None and all(old_dev.get(k, "max") == new_dev.get(k, "max") for k in fmt.IO_MAX_KEYS):
        return None
    restore = None if old_dev is None else fmt.format_io_max_line(
        dev, {k: old_dev.get(k, fmt.MAX) for k in fmt.IO_MAX_KEYS})
    return Write("write", path, restore, value, reason, ctrl, ok)


@dataclass(frozen=True)
class _Layout:
    """What only depends on which files a class sets: computed once per distinct set of keys."""
    items: tuple[tuple[str, str, str | None], ...]  # (key, file, controller) in FILE_ORDER
    reads: list[str]  # each file once (an io.max with several devices is read once)
    controllers: tuple[str, ...]  # to enable in the ancestors, top-down order
    # memory.high and memory.max swapped: the order when the limit grows (max before high)
    growing: tuple[tuple[str, str, str | None], ...] | None


@functools.lru_cache(maxsize=256)
def _layout_of(keys_as_given: tuple[str, ...]) -> _Layout:
    keys = sorted(keys_as_given, key=_order)
    items = tuple((k, k.partition(" ")[0], controller_of(k.partition(" ")[0])) for k in keys)
    growing = None
    if "memory.high" in keys and "memory.max" in keys:
        i, j = keys.index("memory.high"), keys.index("memory.max")
        swapped = list(items)
        swapped[i], swapped[j] = items[j], items[i]
        growing = tuple(swapped)
    ctrls = {c for _, _, c in items}
    return _Layout(items, list(dict.fromkeys(f for _, f, _ in items)),
                   tuple(c for c in ("cpuset", "cpu", "io", "memory") if c in ctrls), growing)


def _layout(files: Mapping[str, object]) -> _Layout:
    return _layout_of(tuple(files))


def _file_writes(kdir: str, d: DesiredCgroup, layout: _Layout, current: dict[str, str | None],
                 exists: bool, available: set[str], out: list[Write]) -> None:
    """Append to `out` the writes that give the class cgroup at `kdir` the files it wants;
    `current` holds what its files say now (empty when it does not exist yet)."""
    files = d.files
    items = layout.items
    # memory.high vs memory.max: shrink -> high first; grow -> max first.
    if layout.growing is not None and exists:
        old_max = current.get("memory.max")
        new_max = _limit_num(fmt.parse_limit(files["memory.max"][0]))
        if old_max is not None and new_max > _limit_num(fmt.parse_limit(old_max)):
            items = layout.growing
    base = kdir + "/"
    for key, file, ctrl in items:
        value, reason = files[key]
        ok = ctrl is None or ctrl in available
        old_text = current.get(file)
        if file == "io.max":
            w = _io_max_write(base + file, old_text, value, reason, ctrl, ok)
            if w is not None:
                out.append(w)
            continue
        if file in ("cpuset.cpus", "cpuset.mems") and not fmt.parse_cpu_list(value):
            raise PlanError(f"{base}{file}: refusing to write an empty cpuset ({reason})")
        if old_text is None:
            out.append(Write("write", base + file, None, value, reason, ctrl, ok))
            continue
        old_s = old_text.strip()
        if not _same(file, old_s, value):
            out.append(Write("write", base + file, _restore(file, old_s), value, reason, ctrl, ok))


def make_plan(fs: CgroupFs, desired: list[DesiredCgroup]) -> Plan:
    with contextlib.ExitStack() as held:
        return _make_plan(fs, desired, held)


def _make_plan(fs: CgroupFs, desired: list[DesiredCgroup], held: contextlib.ExitStack) -> Plan:
    available = set(fs.cgroup("").controllers())
    mkdirs: list[Write] = []
    enables: list[Write] = []
    writes: list[Write] = []
    moves: list[Write] = []
    will_exist: set[str] = set()
    enabled_now: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}
    # The parents of class cgroups, held open (until `held` closes): every class file is read by a
    # short path relative to its parent (on cgroupfs 6.5 usec per open+close, 8.1 by the whole path).
    parents: dict[str, OpenDir] = {}

    def exists(rel: str) -> bool:
        # From one listing of the parent, not one stat per class cgroup.
        if not rel:
            return True
        parent, _, name = rel.rpartition("/")
        if parent not in children:
            children[parent] = set()
            if exists(parent):
                try:
                    parents[parent] = held.enter_context(fs.root.open_dir(Cgroup(fs, parent).kernel_path))
                except KernelError as exc:
                    if exc.errno != errno.ENOENT:  # ENOENT: removed since its parent was listed
                        raise
                else:
                    children[parent] = parents[parent].subdirs()
        return name in children[parent]

    def subtree(rel: str) -> set[str]:
        if rel not in enabled_now:
            cg = Cgroup(fs, rel)
            text = cg.read_optional("cgroup.subtree_control") if exists(rel) else None
            enabled_now[rel] = set(fmt.parse_words(text or ""))
        return enabled_now[rel]

    enabled_for: set[tuple[str, tuple[str, ...]]] = set()  # (parent, controllers) already handled
    for d in desired:
        parts = d.rel.split("/")
        parent, _, leaf = d.rel.rpartition("/")
        present = exists(d.rel)
        for i in range(1, len(parts) + 1 if not present else 1):
            rel = "/".join(parts[:i])
            if not exists(rel) and rel not in will_exist:
                if not d.create:
                    raise PlanError(f"cgroup /{d.rel}: no such cgroup under {fs.mount}")
                will_exist.add(rel)
                mkdirs.append(Write("mkdir", Cgroup(fs, rel).kernel_path, None, "",
                                    f"class {d.cls}: class cgroup"))
        layout = _layout(d.files)
        if (parent, layout.controllers) not in enabled_for:
            enabled_for.add((parent, layout.controllers))
            for rel in [""] + ["/".join(parts[:i]) for i in range(1, len(parts))]:
                for ctrl in layout.controllers:
                    if ctrl in subtree(rel):
                        continue
                    subtree(rel).add(ctrl)
                    enables.append(Write(
                        "enable", Cgroup(fs, rel).file("cgroup.subtree_control"), f"-{ctrl}",
                        f"+{ctrl}", f"class {d.cls}: {ctrl} controller for /{d.rel}", ctrl,
                        ctrl in available))
        kdir = f"{fs.mount}/{d.rel}" if d.rel else fs.mount  # Cgroup(fs, d.rel).kernel_path
        if not present:
            current: dict[str, str | None] = {}
        elif parent in parents:
            current = parents[parent].read_attrs(leaf, layout.reads)
        else:  # the root cgroup
            current = fs.root.read_attrs(kdir, layout.reads)
        _file_writes(kdir, d, layout, current, present, available, writes)
        if d.move_pids:
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
