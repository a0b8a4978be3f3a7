"""Captured kernel files (tests/fixtures/<origin>/...) and fake kernel roots built from them.

Every fixture's first line is "# captured: <where> kernel <release> on <date> from <path>";
`load` strips it so parsers see exactly what the kernel printed.
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HYBRID = "host-hybrid-6.18"  # this project's dev/CI hosts: cgroup2 at /sys/fs/cgroup/unified
VM = "vm-bookworm-6.1"  # the QEMU test VM: unified cgroup v2 with every controller, systemd


def load(origin: str, name: str) -> str:
    text = (FIXTURES / origin / name).read_text()
    first, _, rest = text.partition("\n")
    assert first.startswith("# captured:"), f"{origin}/{name} lacks its '# captured:' line"
    return rest


def put(root: Path, kernel_path: str, text: str) -> Path:
    p = root / kernel_path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def fake_cgroup(root: Path, cgroup_dir: str, origin: str, files: dict[str, str] | None = None) -> None:
    """A cgroup directory filled with every captured interface file of `origin` (+ overrides)."""
    src = FIXTURES / origin / "cgroup"
    for f in sorted(src.iterdir()):
        put(root, f"{cgroup_dir}/{f.name}", load(origin, f"cgroup/{f.name}"))
    for name, text in (files or {}).items():
        put(root, f"{cgroup_dir}/{name}", text)


def fake_host(root: Path, origin: str, *, cpus: int = 2, pid1: str = "systemd") -> Path:
    """A kernel root that looks like the captured host: mounts, meminfo, PSI, cgroup root, CPUs."""
    put(root, "/proc/self/mountinfo", load(origin, "proc/mountinfo"))
    put(root, "/proc/meminfo", load(origin, "proc/meminfo"))
    put(root, "/proc/pressure/cpu", load(origin, "proc/pressure_cpu"))
    put(root, "/proc/1/comm", pid1 + "\n")
    put(root, "/proc/sys/kernel/osrelease", "6.1.0-test-amd64\n")
    put(root, "/sys/devices/system/cpu/online", f"0-{cpus - 1}\n")
    return root


class FakeCgroupRoot:
    """Mixin factory: a SysRoot whose mkdir under /sys/fs/cgroup behaves like cgroupfs — the new
    directory comes with the VM's captured interface files, and rmdir removes them."""

    @staticmethod
    def make(root: Path):
        import shutil

        from aios_host.kernel.root import SysRoot

        class _Root(SysRoot):
            def mkdir(self, kernel_path):
                super().mkdir(kernel_path)
                if str(kernel_path).startswith("/sys/fs/cgroup"):
                    fake_cgroup(self.root, str(kernel_path), VM,
                                {"cgroup.procs": "", "cgroup.subtree_control": "\n",
                                 "cgroup.events": "populated 0\nfrozen 0\n"})

            def write_text(self, kernel_path, value):
                name = str(kernel_path).rsplit("/", 1)[-1]
                p = self.path(kernel_path)
                if name == "cgroup.subtree_control" and p.exists():
                    # "+cpu -io" edits the enabled set, as cgroup_subtree_control_write() does
                    enabled = p.read_text().split()
                    for tok in value.split():
                        ctrl = tok[1:]
                        if tok[0] == "+" and ctrl not in enabled:
                            enabled.append(ctrl)
                        elif tok[0] == "-" and ctrl in enabled:
                            enabled.remove(ctrl)
                    value = " ".join(enabled) + "\n"  # the kernel prints "\n" for none
                elif name == "io.max" and p.exists():
                    # one device line replaces that device's line; all-"max" removes it
                    dev = value.split()[0]
                    lines = [ln for ln in p.read_text().splitlines() if ln and ln.split()[0] != dev]
                    if any(not tok.endswith("=max") for tok in value.split()[1:]):
                        lines.append(value.strip())
                    value = "".join(ln + "\n" for ln in lines)
                elif not value.endswith("\n"):
                    value += "\n"  # kernel files end in a newline whatever was written
                super().write_text(kernel_path, value)

            def rmdir(self, kernel_path):
                p = self.path(kernel_path)
                if p.is_dir() and not any(c.is_dir() for c in p.iterdir()):
                    shutil.rmtree(p)
                    return
                super().rmdir(kernel_path)

        return _Root(root)


def fake_v2_host(root: Path, cpus: int = 4) -> Path:
    """A full cgroup v2 host (VM captures) with `cpus` CPUs on one node and 8 GiB of memory."""
    fake_host(root, VM, cpus=cpus)
    put(root, "/proc/meminfo", "MemTotal:       8388608 kB\n")
    fake_cgroup(root, "/sys/fs/cgroup", VM, {
        "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
        "cgroup.subtree_control": "\n",
        "cgroup.procs": "1\n",
    })
    put(root, "/sys/devices/system/node/node0/cpulist", f"0-{cpus - 1}\n")
    return root
