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
