"""The cgroup v2 tree: find the mount, walk it, read and write interface files, create/remove
cgroups, kill them.

Cgroups are named by their path relative to the cgroup2 mount ("" is the root,
"aios.slice/training" a child), the way systemd and /proc/PID/cgroup name them. Parsing lives in
cgroup_format; this module only does I/O through a SysRoot. Controller files (cpu.max,
memory.high, ...) are read and written by name where they are used (the plan's writes, the
daemon's held files) and parsed there with cgroup_format: no typed accessor per file here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from aios_host.errors import AiosError, KernelError, NotFoundError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.procfs import parse_proc_cgroup, read_mounts
from aios_host.kernel.root import SysRoot

PressureResource = Literal["cpu", "memory", "io", "irq"]

# Controllers that hold resources we allocate; the order is the order we enable them in.
RESOURCE_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


def find_cgroup2_mount(root: SysRoot) -> str:
    """The cgroup2 mount point: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid."""
    mounts = [m for m in read_mounts(root) if m.fs_type == "cgroup2"]
    if not mounts:
        raise NotFoundError(
            f"{root.path('/proc/self/mountinfo')}: no cgroup2 mount; aios-host needs cgroup v2 "
            "(boot with systemd.unified_cgroup_hierarchy=1 or mount -t cgroup2 none /sys/fs/cgroup)"
        )
    # Prefer the canonical location when several namespaces mounted it.
    mounts.sort(key=lambda m: (m.mount_point != "/sys/fs/cgroup", len(m.mount_point)))
    return mounts[0].mount_point


def normalize(rel: str) -> str:
    parts = [p for p in rel.strip().split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise AiosError(f"cgroup path {rel!r}: '..' is not allowed")
    return "/".join(parts)


@dataclass(frozen=True)
class Cgroup:
    fs: CgroupFs
    rel: str

    def __str__(self) -> str:
        return "/" + self.rel

    @property
    def kernel_path(self) -> str:
        return f"{self.fs.mount}/{self.rel}" if self.rel else self.fs.mount

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1] if self.rel else ""

    @property
    def parent(self) -> Cgroup | None:
        if not self.rel:
            return None
        return Cgroup(self.fs, self.rel.rpartition("/")[0])

    def file(self, name: str) -> str:
        return f"{self.kernel_path}/{name}"

    def read(self, name: str) -> str:
        return self.fs.root.read_text(self.file(name))

    def read_optional(self, name: str) -> str | None:
        return self.fs.root.read_optional(self.file(name))

    def read_attrs(self, names: list[str]) -> dict[str, str | None]:
        """Several control files at once (one read(2) each); None where absent. Not for
        cgroup.procs / cgroup.threads, which are multi-record."""
        return self.fs.root.read_attrs(self.kernel_path, names)

    def write(self, name: str, value: str) -> None:
        self.fs.root.write_text(self.file(name), value)

    @property
    def id(self) -> int:
        """The cgroup id the kernel uses (bpf_get_current_cgroup_id): the directory's inode."""
        return self.fs.root.inode(self.kernel_path)

    def children(self) -> list[Cgroup]:
        return [
            Cgroup(self.fs, f"{self.rel}/{n}" if self.rel else n)
            for n in self.fs.root.subdirs(self.kernel_path)
        ]

    # -- core files ----------------------------------------------------------------------------

    def controllers(self) -> tuple[str, ...]:
        return fmt.parse_words(self.read("cgroup.controllers"))

    def subtree_control(self) -> tuple[str, ...]:
        return fmt.parse_words(self.read("cgroup.subtree_control"))

    def procs(self) -> tuple[int, ...]:
        return fmt.parse_pids(self.read("cgroup.procs"))

    def events(self) -> dict[str, int]:
        """cgroup.events: populated, frozen. Absent on the root cgroup."""
        return fmt.parse_flat_keyed(self.read("cgroup.events"), "cgroup.events")

    # -- pressure ------------------------------------------------------------------------------

    def pressure(self, resource: PressureResource) -> fmt.Pressure | None:
        """PSI of this cgroup; None when PSI is off (psi=0) or the file is absent."""
        text = self.read_optional(f"{resource}.pressure")
        return None if text is None or not text.strip() else fmt.parse_pressure(text, resource)

    # -- membership and lifecycle --------------------------------------------------------------

    def kill(self) -> None:
        """cgroup.kill (5.14+): SIGKILL every process in this subtree, atomically w.r.t. forks."""
        self.write("cgroup.kill", "1")

    def populated(self) -> bool:
        return bool(self.events().get("populated", 0))


class CgroupFs:
    """The cgroup v2 hierarchy under one mount point, reached through a SysRoot."""

    def __init__(self, root: SysRoot, mount: str | None = None) -> None:
        self.root = root
        self.mount = (mount or find_cgroup2_mount(root)).rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"CgroupFs({self.root!r}, {self.mount!r})"

    def cgroup(self, rel: str = "") -> Cgroup:
        """A cgroup that must exist."""
        cg = Cgroup(self, normalize(rel))
        if not self.root.is_dir(cg.kernel_path):
            raise NotFoundError(f"cgroup {'/' + cg.rel}: no such cgroup under {self.mount}")
        return cg

    def exists(self, rel: str) -> bool:
        return self.root.is_dir(Cgroup(self, normalize(rel)).kernel_path)

    def walk(self, rel: str = "", max_depth: int | None = None) -> Iterator[Cgroup]:
        """Pre-order walk; a cgroup removed while we walk is skipped, not an error."""
        stack: list[tuple[Cgroup, int]] = [(self.cgroup(rel), 0)]
        while stack:
            cg, depth = stack.pop()
            yield cg
            if max_depth is not None and depth >= max_depth:
                continue
            stack.extend((c, depth + 1) for c in reversed(cg.children()))

    def create(self, rel: str, exist_ok: bool = False) -> Cgroup:
        """Create one cgroup and its missing ancestors (mkdir -p). Returns the leaf."""
        path = normalize(rel)
        if not path:
            return self.cgroup("")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            cg = Cgroup(self, "/".join(parts[:i]))
            if self.root.is_dir(cg.kernel_path):
                if i == len(parts) and not exist_ok:
                    raise AiosError(f"cgroup /{cg.rel}: already exists")
                continue
            self.root.mkdir(cg.kernel_path)
        return Cgroup(self, path)

    def remove(self, rel: str) -> None:
        """rmdir of an empty cgroup (no processes, no children), as the kernel requires."""
        cg = self.cgroup(rel)
        if not cg.rel:
            raise AiosError("refusing to remove the root cgroup")
        self.root.rmdir(cg.kernel_path)

    def enable_controllers(self, rel: str, controllers: Iterable[str]) -> list[tuple[Cgroup, str]]:
        """Enable controllers top-down so that `rel` gets their interface files.

        The kernel only lets a cgroup enable what its parent enabled (cgroup-v2.rst, "Top-down
        Constraint"), so each ancestor from the root down gets "+ctrl" in cgroup.subtree_control.
        Returns the (cgroup, controller) pairs actually enabled, for rollback.
        """
        target = self.cgroup(rel)
        wanted = [c for c in RESOURCE_CONTROLLERS if c in set(controllers)] + [
            c for c in controllers if c not in RESOURCE_CONTROLLERS
        ]
        chain: list[Cgroup] = []
        node: Cgroup | None = target.parent
        while node is not None:
            chain.append(node)
            node = node.parent
        done: list[tuple[Cgroup, str]] = []
        for cg in reversed(chain):
            available = set(cg.controllers())
            enabled = set(cg.subtree_control())
            for ctrl in wanted:
                if ctrl in enabled:
                    continue
                if ctrl not in available:
                    raise KernelError(
                        f"enable controller {ctrl!r}",
                        self.root.path(cg.file("cgroup.subtree_control")),
                        2,
                        f"controller not available in {cg.file('cgroup.controllers')}",
                    )
                cg.write("cgroup.subtree_control", f"+{ctrl}")
                done.append((cg, ctrl))
        return done

    def cgroup_of_pid(self, pid: int) -> Cgroup:
        text = self.root.read_text(f"/proc/{int(pid)}/cgroup")
        rel = parse_proc_cgroup(text).get("")
        if rel is None:
            raise NotFoundError(f"/proc/{pid}/cgroup: process has no cgroup v2 entry")
        return Cgroup(self, normalize(rel))


@dataclass(frozen=True)
class CgroupSample:
    """What one cgroup looks like right now; the read-only snapshot `aios-host snapshot` prints."""

    path: str
    id: int
    nr_procs: int
    controllers: tuple[str, ...]
    subtree_control: tuple[str, ...]
    cpu_usage_usec: int | None
    memory_current_bytes: int | None
    cpu_some_avg10: float | None
    memory_some_avg10: float | None
    io_some_avg10: float | None


def sample(cg: Cgroup) -> CgroupSample:
    """Read the cheap files of one cgroup. Files a controller does not provide read as None."""
    cpu_stat = cg.read_optional("cpu.stat")
    mem = cg.read_optional("memory.current")
    pressures = {r: cg.pressure(r) for r in ("cpu", "memory", "io")}
    procs = cg.read_optional("cgroup.procs")
    return CgroupSample(
        path=str(cg),
        id=cg.id,
        nr_procs=len(fmt.parse_pids(procs)) if procs is not None else 0,
        controllers=cg.controllers(),
        subtree_control=cg.subtree_control(),
        cpu_usage_usec=(
            fmt.parse_flat_keyed(cpu_stat, "cpu.stat").get("usage_usec") if cpu_stat else None
        ),
        memory_current_bytes=fmt.parse_int(mem, "memory.current") if mem is not None else None,
        cpu_some_avg10=pressures["cpu"].some.avg10 if pressures["cpu"] else None,
        memory_some_avg10=pressures["memory"].some.avg10 if pressures["memory"] else None,
        io_some_avg10=pressures["io"].some.avg10 if pressures["io"] else None,
    )
