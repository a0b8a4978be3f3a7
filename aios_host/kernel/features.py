"""What this host can do, probed once, with what aios-host does without each feature.

`aios-host doctor` prints this table; the daemon logs it at start and picks one code path per
feature (bcc's habit: BPF.support_raw_tracepoint() once, not try/except everywhere).
Python-module and privilege checks are injectable so tests can describe any host.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from aios_host.errors import AiosError
from aios_host.kernel.cgroup import RESOURCE_CONTROLLERS, CgroupFs
from aios_host.kernel.procfs import read_mounts, read_osrelease, read_pid1_comm
from aios_host.kernel.root import SysRoot


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # present but limited: aios-host uses a reduced path
    MISSING = "missing"


@dataclass(frozen=True)
class Feature:
    name: str
    status: Status
    detail: str
    without: str = ""  # what aios-host does when this is not fully there


@dataclass(frozen=True)
class Features:
    items: tuple[Feature, ...]
    cgroup2_mount: str | None
    controllers_available: tuple[str, ...] = ()
    controllers_enabled: tuple[str, ...] = ()
    headers: str = "missing"  # "matching" | "fallback" | "missing"

    def get(self, name: str) -> Feature:
        for f in self.items:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def minimum_met(self) -> bool:
        """The one thing aios-host cannot work without: a cgroup v2 mount."""
        return self.cgroup2_mount is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "minimum_met": self.minimum_met,
            "cgroup2_mount": self.cgroup2_mount,
            "controllers_available": list(self.controllers_available),
            "controllers_enabled": list(self.controllers_enabled),
            "headers": self.headers,
            "features": [{**asdict(f), "status": f.status.value} for f in self.items],
        }


def _module_version(name: str) -> str | None:
    """Import a module and return its version ("" if it has none), None when it does not import."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        mod = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install (bcc without libbcc.so) is "missing" too
        return None
    return str(getattr(mod, "__version__", ""))


def _nvml_gpu_count() -> int | None:
    """GPUs NVML can see, None when NVML (the driver's libnvidia-ml) is not there."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - pynvml raises NVMLError_LibraryNotFound etc.
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


@dataclass(frozen=True)
class HostChecks:
    """Checks that cannot be redirected to a SysRoot: Python modules, NVML, our privileges."""

    module_version: Callable[[str], str | None] = _module_version
    nvml_gpu_count: Callable[[], int | None] = _nvml_gpu_count
    euid: Callable[[], int] = field(default=os.geteuid)


UTS_RE = re.compile(r'#define UTS_RELEASE "([^"]+)"')


def _headers(root: SysRoot, release: str) -> tuple[str, str]:
    """("matching" | "fallback" | "missing", detail) for bcc's /lib/modules/$(uname -r)/build."""
    build = f"/lib/modules/{release}/build"
    uts = root.read_optional(f"{build}/include/generated/utsrelease.h")
    if uts is None:
        return "missing", f"{build} absent"
    m = UTS_RE.search(uts)
    headers_release = m.group(1) if m else "unknown"
    if headers_release == release:
        return "matching", f"{build} ({headers_release})"
    return "fallback", f"{build} holds {headers_release} headers for a {release} kernel"


def detect_features(root: SysRoot, checks: HostChecks | None = None) -> Features:
    checks = checks or HostChecks()
    items: list[Feature] = []
    add = items.append
    release = read_osrelease(root)
    mounts = read_mounts(root)

    # -- cgroup v2 -----------------------------------------------------------------------------
    mount: str | None = None
    available: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()
    try:
        fs = CgroupFs(root)
        mount = fs.mount
        top = fs.cgroup("")
        available, enabled = top.controllers(), top.subtree_control()
    except AiosError as exc:
        add(Feature("cgroup2", Status.MISSING, str(exc), "nothing: cgroup v2 is required"))
    v1 = sorted(
        {o for m in mounts if m.fs_type == "cgroup" for o in m.super_options}
        & set(RESOURCE_CONTROLLERS + ("blkio", "cpuacct"))
    )
    if mount is not None:
        add(Feature("cgroup2", Status.OK, f"mounted at {mount}" + (" (hybrid)" if v1 else "")))
        missing = [c for c in RESOURCE_CONTROLLERS if c not in available]
        add(
            Feature(
                "cgroup2 controllers",
                Status.DEGRADED if missing else Status.OK,
                f"available: {' '.join(available) or 'none'}; enabled at root: "
                f"{' '.join(enabled) or 'none'}"
                + (f"; missing: {' '.join(missing)}" if missing else ""),
                "plans are computed and shown; writes to missing controllers are refused"
                if missing
                else "",
            )
        )
    if v1:
        add(
            Feature(
                "cgroup v1 hierarchies",
                Status.DEGRADED,
                f"v1 holds: {' '.join(v1)}",
                "left untouched; those controllers cannot be used through cgroup v2",
            )
        )

    # -- PSI, BTF, tracepoints, kprobes --------------------------------------------------------
    psi = root.read_optional("/proc/pressure/cpu")
    add(
        Feature("psi", Status.OK, "/proc/pressure/* readable")
        if psi
        else Feature("psi", Status.MISSING, "no /proc/pressure (boot with psi=1)",
                     "demand is estimated from usage alone")
    )
    add(
        Feature("btf", Status.OK, "/sys/kernel/btf/vmlinux")
        if root.exists("/sys/kernel/btf/vmlinux")
        else Feature("btf", Status.MISSING, "no /sys/kernel/btf/vmlinux",
                     "probes use tracepoint-format programs only")
    )
    tracefs = next(
        (p for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
         if root.exists(f"{p}/events/sched/sched_switch")),
        None,
    )
    if tracefs:
        add(Feature("tracepoints", Status.OK, f"tracefs at {tracefs}"))
        kprobes = root.exists(f"{tracefs}/kprobe_events")
        add(
            Feature("kprobes", Status.OK, f"{tracefs}/kprobe_events")
            if kprobes
            else Feature("kprobes", Status.MISSING, "no kprobe_events (CONFIG_KPROBES off)",
                         "none needed: every probe uses tracepoints")
        )
    else:
        add(Feature("tracepoints", Status.MISSING,
                    "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)",
                    "eBPF probes cannot attach until tracefs is mounted"))

    # -- bcc and kernel headers ----------------------------------------------------------------
    headers, headers_detail = _headers(root, release)
    bcc_version = checks.module_version("bcc")
    if bcc_version is None:
        add(Feature("bcc", Status.MISSING, "python module bcc does not import",
                    "no eBPF probes; PSI and cgroupfs stats only (apt-get install python3-bpfcc)"))
    else:
        add(Feature("bcc", Status.OK, f"bcc {bcc_version or '(unknown version)'}"))
    if headers == "matching":
        add(Feature("kernel headers", Status.OK, headers_detail))
    elif headers == "fallback":
        add(Feature("kernel headers", Status.DEGRADED, headers_detail,
                    "only tracepoint-format probes are trustworthy (no struct dereferences)"))
    else:
        add(Feature("kernel headers", Status.MISSING, headers_detail,
                    "bcc cannot compile probes (make setup installs a fallback)"))

    # -- energy and GPUs -----------------------------------------------------------------------
    cpufreq = "/sys/devices/system/cpu/cpufreq"
    policies = [d for d in root.subdirs(cpufreq) if d.startswith("policy")]
    if policies:
        gov = (root.read_optional(f"{cpufreq}/{policies[0]}/scaling_governor") or "?").strip()
        drv = (root.read_optional(f"{cpufreq}/{policies[0]}/scaling_driver") or "?").strip()
        add(Feature("cpufreq", Status.OK, f"{len(policies)} policies, driver {drv}, governor {gov}"))
    else:
        add(Feature("cpufreq", Status.MISSING, f"no {cpufreq}/policy*",
                    "no DVFS: energy profiles leave CPU frequency alone"))
    rapl = "/sys/class/powercap/intel-rapl:0/energy_uj"
    add(
        Feature("rapl", Status.OK, rapl)
        if root.exists(rapl)
        else Feature("rapl", Status.MISSING, "no intel-rapl powercap zone",
                     "CPU energy is not measured")
    )
    gpus = checks.nvml_gpu_count()
    add(
        Feature("nvml", Status.OK, f"{gpus} GPU(s)")
        if gpus is not None
        else Feature("nvml", Status.MISSING, "NVML not loadable (no NVIDIA driver)",
                     "no GPU sensors or power/clock limits")
    )

    # -- systemd, D-Bus, journald --------------------------------------------------------------
    pid1 = read_pid1_comm(root)
    add(
        Feature("systemd", Status.OK, "systemd is PID 1")
        if pid1 == "systemd"
        else Feature("systemd", Status.MISSING, f"PID 1 is {pid1 or 'unknown'}",
                     "job ranks run in aios-host's own cgroups, not transient units")
    )
    add(
        Feature("dbus", Status.OK, "/run/dbus/system_bus_socket")
        if root.exists("/run/dbus/system_bus_socket")
        else Feature("dbus", Status.MISSING, "no system bus socket",
                     "no transient units over D-Bus")
    )
    journal_socket = root.exists("/run/systemd/journal/socket")
    journal_module = checks.module_version("systemd.journal") is not None
    if journal_socket and journal_module:
        add(Feature("journald", Status.OK, "/run/systemd/journal/socket + python3-systemd"))
    else:
        why = "no journal socket" if not journal_socket else "python3-systemd missing"
        add(Feature("journald", Status.MISSING, why, "logs go to stderr as JSON lines"))

    euid = checks.euid()
    add(
        Feature("root", Status.OK, "running as root")
        if euid == 0
        else Feature("root", Status.MISSING, f"euid {euid}",
                     "read-only: no probes, no cgroup writes")
    )
    return Features(
        items=tuple(items),
        cgroup2_mount=mount,
        controllers_available=available,
        controllers_enabled=enabled,
        headers=headers,
    )
