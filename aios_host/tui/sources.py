"""The I/O of `aios-host top`: readings from the daemon's API, from cgroupfs and procfs (read-only),
NVML and journald, turned into one TopModel per refresh by the pure builders of model.py.

Collector.collect() is the refresh: the daemon when one answers on the socket, else a local
snapshot of the whole cgroup tree. It runs off the UI thread in the app, so a slow daemon or a big
tree never freezes the screen; its CPU cost per refresh is bench_top.py's subject.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aios_host.errors import AiosError, KernelError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import HeldFiles, SysRoot
from aios_host.tui.model import (
    CgroupReading,
    GpuStats,
    HostReading,
    Psi,
    TopModel,
    daemon_rows,
    daemon_state,
    decision_of,
    events_of,
    host_stats,
    job_view,
    jobs_in_order,
    local_rows,
    push_history,
)

# -- fast parsers for the files read every second, per cgroup ----------------------------------------
# cgroup_format's parsers build dicts of every key; at 1000 cgroups x 11 files a second the
# refresh needs one value from most files. tests/unit/tui check these against cgroup_format's.


def psi_avg10(text: str | None) -> Psi:
    """*.pressure -> its two avg10s (kernel/cgroup_format's reader); a file that is empty or
    unparsable (PSI off) reads as no figures, never an error in the middle of a refresh."""
    from aios_host.errors import ParseError
    from aios_host.kernel.cgroup_format import pressure_avg10s

    if not text:
        return Psi()
    try:
        return Psi(*pressure_avg10s(text))
    except ParseError:
        return Psi()


def keyed_value(text: str | None, key: str) -> int | None:
    """The value of `key` in a flat-keyed file (cpu.stat, memory.events, memory.stat), None if absent."""
    if not text:
        return None
    if text.startswith(key + " "):
        start = len(key) + 1
    else:
        i = text.find("\n" + key + " ")
        if i < 0:
            return None
        start = i + len(key) + 2
    end = text.find("\n", start)
    return int(text[start:] if end < 0 else text[start:end])


def limit_bytes(text: str | None) -> int | None:
    """memory.high / memory.max: None for "max" and for an absent file (nothing limits it)."""
    if text is None:
        return None
    t = text.strip()
    return None if t == "max" or not t else int(t)


def cpu_max_cores(text: str | None) -> float | None:
    return None if not text else fmt.parse_cpu_max(text).cores


def _int_or_none(text: str | None) -> int | None:
    return None if text is None or not text.strip() else int(text)


# -- local: cgroupfs and procfs --------------------------------------------------------------------

CGROUP_FILES = ("cgroup.procs", "cpu.stat", "cpu.max", "memory.current", "memory.high", "memory.max",
                "memory.events", "memory.stat", "cpu.pressure", "memory.pressure", "io.pressure")
# How many refreshes a file found missing stays "missing" (a controller enabled later shows up).
FORGET_EVERY = 30


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (1000 cgroups x 11 files held open do not fit
    in the usual 1024) and return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class LocalReader:
    """Reads the cgroup tree and the host's totals, read-only.

    Files are held open and re-read with pread from offset 0 (one syscall instead of
    open+read+close: a kernfs file stays readable through its fd) while the fd budget lasts, then
    read one-shot. A file found missing is remembered as missing until the next FORGET_EVERY-th
    refresh. The tree is walked with os.scandir from the mount's host path: at 1000 cgroups the
    walk and the 11000 reads are most of a refresh.
    """

    def __init__(self, root: SysRoot, fd_budget: int | None = None) -> None:
        self.root = root
        self.fs = CgroupFs(root)  # finds the cgroup2 mount, or says there is none (one line)
        self.mount = str(root.path(self.fs.mount)).rstrip("/")
        self.held = HeldFiles(root, (raise_fd_limit() - 256) if fd_budget is None else fd_budget)
        self._seen: set[str] = set()
        self._reads = 0

    @property
    def held_files(self) -> int:
        return len(self.held)

    def close(self) -> None:
        self.held.close()

    def _read(self, host_path: str) -> str | None:
        """The file's text; None when it does not exist, or exists with the feature off (PSI)."""
        try:
            return self.held.read_host_path(host_path)
        except KernelError:
            # ENODEV: its cgroup was removed since the fd was opened; look again by name
            return self.held.read_once(host_path)

    def read_cgroup(self, path: str) -> CgroupReading | None:
        """One cgroup ("/a/b"); None when it is gone (removed since the walk)."""
        base = self.mount + ("" if path == "/" else path) + "/"
        text = {name: self._read(base + name) for name in CGROUP_FILES}
        procs = text["cgroup.procs"]
        if procs is None and text["cpu.stat"] is None:
            return None  # every cgroup has both: this one is gone
        try:
            return CgroupReading(
                path=path,
                nr_procs=None if procs is None else procs.count("\n"),
                cpu_usage_usec=keyed_value(text["cpu.stat"], "usage_usec"),
                cpu_max_cores=cpu_max_cores(text["cpu.max"]),
                memory_current_bytes=_int_or_none(text["memory.current"]),
                memory_high_bytes=limit_bytes(text["memory.high"]),
                memory_max_bytes=limit_bytes(text["memory.max"]),
                memory_faults_total=keyed_value(text["memory.stat"], "pgfault"),
                oom_kills_total=keyed_value(text["memory.events"], "oom_kill"),
                cpu=psi_avg10(text["cpu.pressure"]),
                memory=psi_avg10(text["memory.pressure"]),
                io=psi_avg10(text["io.pressure"]),
            )
        except (ValueError, AiosError):
            return CgroupReading(path=path)  # a file in a format we do not know: the row stays blank

    def walk(self) -> list[str]:
        """Every cgroup's path, pre-order (the root first, each parent before its children, siblings
        by name); one that goes away during the walk is skipped."""
        out: list[str] = []
        stack = [("/", self.mount)]
        while stack:
            path, host = stack.pop()
            # most cgroups are leaves: cgroup.stat says so in one pread, where listing a directory
            # of some 50 interface files costs ten times that
            if keyed_value(self._read(host + "/cgroup.stat"), "nr_descendants") == 0:
                out.append(path)
                continue
            try:
                with os.scandir(host) as it:
                    kids = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise KernelError.from_oserror("list", host, exc) from None
            out.append(path)
            prefix = "" if path == "/" else path
            stack.extend((f"{prefix}/{k}", f"{host}/{k}") for k in reversed(kids))
        return out

    def _housekeeping(self, now_seen: set[str]) -> None:
        """Close the fds of cgroups that are gone; every FORGET_EVERY refreshes close all of them,
        so that files missing before (a controller enabled since) are looked for again."""
        self._reads += 1
        if self._reads % FORGET_EVERY == 0:
            self.close()
        else:
            gone = self._seen - now_seen
            if gone:
                self.held.forget_prefixes(tuple(self.mount + ("" if p == "/" else p) + "/" for p in gone))
        self._seen = now_seen

    def read_tree(self) -> list[CgroupReading]:
        out = [r for r in map(self.read_cgroup, self.walk()) if r is not None]
        self._housekeeping({r.path for r in out})
        return out

    def read_paths(self, paths: Iterable[str]) -> dict[str, CgroupReading]:
        out = {}
        for p in paths:
            if os.path.isdir(self.mount + p):
                r = self.read_cgroup(p)
                if r is not None:
                    out[p] = r
        self._housekeeping(set(out))
        return out

    def read_host(self) -> HostReading:
        stat = self._read_host_file("/proc/stat") or ""
        busy = total = 0
        cpus = 0
        for line in stat.splitlines():
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal (guest is inside user already)
                v += [0] * (8 - len(v))
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                total = busy + v[3] + v[4]
            elif line.startswith("cpu"):
                cpus += 1
        if not cpus:
            online = self.root.read_optional("/sys/devices/system/cpu/online")
            cpus = len(fmt.parse_cpu_list(online)) if online else 0
        mem = self._read_host_file("/proc/meminfo") or ""
        total_b = keyed_meminfo(mem, "MemTotal") or 0
        avail = keyed_meminfo(mem, "MemAvailable")
        psi = {r: psi_avg10(self._read_host_file(f"/proc/pressure/{r}")) for r in ("cpu", "memory", "io")}
        return HostReading(cpus, busy, total, total_b, avail, psi["cpu"], psi["memory"], psi["io"])

    def _read_host_file(self, kernel_path: str) -> str | None:
        try:
            return self._read(str(self.root.path(kernel_path)))
        except AiosError:
            return None


def keyed_meminfo(text: str, key: str) -> int | None:
    """A /proc/meminfo value in bytes (the file says kB and means KiB)."""
    i = text.find(key + ":")
    if i < 0:
        return None
    parts = text[i + len(key) + 1:text.find("\n", i) if text.find("\n", i) > 0 else None].split()
    if not parts:
        return None
    return int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)


def local_jobs(root: SysRoot) -> list[dict[str, Any]]:
    """The supervisors' job states under /run/aios-host/jobs, as the API's `jobs` gives them, with
    the live status `job ls` shows (a dead supervisor's job says so)."""
    from aios_host.supervisor.state import JobStore

    store = JobStore(root)
    out = []
    for k in store.keys():
        with contextlib.suppress(AiosError, OSError):
            st = store.load(k)
            d = st.to_dict()
            d["status"] = store.live_status(st)
            out.append(d)
    return out


# -- the daemon ----------------------------------------------------------------------------------

DAEMON_CMDS = ("status", "snapshot", "plan", "explain", "jobs")


def ask_daemon(socket_path: str, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """Every read command's reply. api.NotRunning when nothing answers, AiosError on a refusal."""
    from aios_host import api

    out = {}
    for cmd in DAEMON_CMDS:
        reply = api.call({"cmd": cmd}, path=socket_path, timeout_s=timeout_s)
        if not reply.get("ok"):
            raise AiosError(f"{socket_path}: {cmd}: {reply.get('error')}")
        out[cmd] = reply
    return out


# -- GPUs (NVML) ---------------------------------------------------------------------------------


class NvmlGpus:
    """GPU utilisation, memory, power, temperature and SM clock from NVML, when the driver is there."""

    def __init__(self) -> None:
        self.note = "no GPU"
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
            self.note = "no GPU (NVML not loadable)"
            return
        try:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception:  # noqa: BLE001
            self.note = "no GPU (NVML found no device)"

    def read(self) -> tuple[GpuStats, ...]:
        if self._nvml is None:
            return ()
        nv = self._nvml

        def get(f: Callable[[], Any]) -> Any:
            try:
                return f()
            except Exception:  # noqa: BLE001 - a field this GPU or driver does not support
                return None

        out = []
        for i, h in enumerate(self._handles):
            name = get(lambda h=h: nv.nvmlDeviceGetName(h))
            util = get(lambda h=h: nv.nvmlDeviceGetUtilizationRates(h))
            mem = get(lambda h=h: nv.nvmlDeviceGetMemoryInfo(h))
            power_mw = get(lambda h=h: nv.nvmlDeviceGetPowerUsage(h))
            temp = get(lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            sm = get(lambda h=h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            out.append(GpuStats(
                index=i, name=name.decode() if isinstance(name, bytes) else str(name or "?"),
                utilization_percent=None if util is None else float(util.gpu),
                memory_used_bytes=None if mem is None else int(mem.used),
                memory_total_bytes=None if mem is None else int(mem.total),
                power_watts=None if power_mw is None else power_mw / 1000.0,
                temperature_celsius=None if temp is None else float(temp),
                sm_clock_mhz=None if sm is None else float(sm)))
        return tuple(out)


# -- journald --------------------------------------------------------------------------------------


class JournalTail:
    """The last events aios-host logged to journald, re-read at most every `every_s`. Optional:
    without journalctl, or when it fails or is slow, the tail is empty and nothing is said."""

    def __init__(self, identifier: str = "aios-host", lines: int = 20, every_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.argv = ["journalctl", "-o", "json", "-n", str(lines), "--no-pager", "-q",
                     f"SYSLOG_IDENTIFIER={identifier}"]
        self.every_s = every_s
        self.monotonic = monotonic
        self.enabled = shutil.which("journalctl") is not None
        self._at: float | None = None
        self._events: tuple[Any, ...] = ()

    def read(self) -> tuple[Any, ...]:
        if not self.enabled:
            return ()
        now = self.monotonic()
        if self._at is not None and now - self._at < self.every_s:
            return self._events
        self._at = now
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=2.0, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return self._events
        if out.returncode == 0:
            self._events = events_of(out.stdout)
        return self._events


# -- one refresh -----------------------------------------------------------------------------------


class Collector:
    """Builds a TopModel per call, remembering the previous readings for rates and the history.

    socket_path None: never ask a daemon (a local snapshot only)."""

    def __init__(self, root: SysRoot, socket_path: str | None, interval_s: float = 1.0, *,
                 gpus: NvmlGpus | None = None, journal: JournalTail | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 daemon_timeout_s: float = 2.0) -> None:
        self.root = root
        self.socket_path = socket_path
        self.interval_s = interval_s
        self.reader = LocalReader(root)
        self.gpus = gpus
        self.journal = journal
        self.clock = clock
        self.monotonic = monotonic
        self.daemon_timeout_s = daemon_timeout_s
        self._prev_mono: float | None = None
        self._prev_host: HostReading | None = None
        self._prev_readings: Mapping[str, CgroupReading] = {}
        self._prev_classes: Mapping[str, Mapping[str, Any]] = {}
        self._history: Mapping[str, tuple[float, ...]] = {}

    def close(self) -> None:
        self.reader.close()

    def collect(self) -> TopModel:
        mono = self.monotonic()
        elapsed = 0.0 if self._prev_mono is None else mono - self._prev_mono
        host_r = self.reader.read_host()
        host = host_stats(self._prev_host, host_r)
        self._history = push_history(self._history, host)
        replies, note = None, ""
        if self.socket_path is None:
            note = "not asked (--local)"
        else:
            try:
                replies = ask_daemon(self.socket_path, self.daemon_timeout_s)
            except AiosError as exc:  # api.NotRunning included
                note = str(exc)
        if replies is not None:
            classes = replies["snapshot"].get("classes") or []
            readings = self.reader.read_paths({p for c in classes for p in c.get("cgroups") or ()})
            rows = daemon_rows(classes, self._prev_classes, readings, self._prev_readings, elapsed)
            self._prev_classes = {str(c["name"]): c for c in classes}
            jobs = replies["jobs"].get("jobs") or []
            extra: dict[str, Any] = dict(
                source="daemon", daemon=daemon_state(replies["status"]["status"]),
                decision=decision_of(replies["plan"], replies["explain"]))
        else:
            tree = self.reader.read_tree()
            rows = local_rows(tree, self._prev_readings, elapsed)
            readings = {r.path: r for r in tree}
            self._prev_classes = {}
            jobs = local_jobs(self.root)
            extra = dict(source="local", daemon_note=note)
        self._prev_mono, self._prev_host, self._prev_readings = mono, host_r, readings
        return TopModel(
            time_unix=self.clock(), interval_seconds=self.interval_s, host=host, rows=rows,
            history=self._history,
            gpus=self.gpus.read() if self.gpus else (),
            gpu_note=self.gpus.note if self.gpus else "no GPU",
            jobs=jobs_in_order(job_view(j) for j in jobs),
            events=self.journal.read() if self.journal else (),
            **extra)


def default_collector(root: str, socket_path: str | None, interval_s: float) -> Collector:
    """What the command runs: GPUs and the journal only for the real host (--root /)."""
    sys_root = SysRoot(root)
    on_host = os.path.realpath(root) == "/"
    return Collector(sys_root, socket_path, interval_s,
                     gpus=NvmlGpus() if on_host else None,
                     journal=JournalTail() if on_host else None)
