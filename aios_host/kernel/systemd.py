"""Every call this project makes to systemd: systemctl / systemd-run / journalctl, sd_notify, and
the manager's D-Bus API (org.freedesktop.systemd1).

Four parts:

- Command wrappers (`show`, `reset_failed`, `run_transient`, `kill`, `stop_and_reset`,
  `journal_argv`): the launcher's and the job CLI's subprocess calls, unchanged in behaviour.
- `sd_notify` / `watchdog_interval_s`: the notification protocol of sd_notify(3), without
  libsystemd (one datagram on $NOTIFY_SOCKET).
- `unit_of_cgroup`: which unit owns a cgroup path, and whether the path is inside that unit's
  own subtree (systemd owns it unless the unit is delegated).
- `SystemdBus` and the translation between cgroup v2 control-file values (as the policy
  engine's plan writes them) and systemd.resource-control(5) properties, so that a class that
  lives in a systemd unit is changed through the manager (which would otherwise rewrite the
  files on its next daemon-reload or unit start) rather than behind its back on cgroupfs.

Sources for the D-Bus semantics are systemd v252's src/core/dbus-cgroup.c (what SetUnitProperties
accepts) and src/core/cgroup.c (what it then writes to the cgroup files); see `UNSET` and
`properties_to_file`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aios_host import osthread
from aios_host.errors import AiosError, ParseError
from aios_host.kernel import cgroup_format as fmt


class SystemdError(AiosError):
    """A systemd call failed: a systemctl command, a D-Bus call, or a notification."""


# -- systemctl / systemd-run / journalctl -------------------------------------------------------


def show(units: Sequence[str], props: Sequence[str], timeout_s: float = 30.0) -> list[dict[str, str]]:
    """`systemctl show --property=... -- UNITS`: one dict per unit, in the order systemctl prints
    them (the order given; a unit systemd does not know still gets a block, with defaults)."""
    try:
        out = subprocess.run(
            ["systemctl", "show", *[f"--property={p}" for p in props], "--", *units],
            capture_output=True, text=True, check=False, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise SystemdError(f"systemctl show {' '.join(units)} failed: no answer in {timeout_s:g} s") from None
    if out.returncode != 0:
        raise SystemdError(f"systemctl show {' '.join(units)} failed: {out.stderr.strip()}")
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in out.stdout.splitlines() + [""]:
        if not line:
            if cur:
                blocks.append(cur)
            cur = {}
            continue
        k, _, v = line.partition("=")
        cur[k] = v
    return blocks


def _systemctl_quiet(*args: str) -> None:
    # Best effort by design: these run on units that may already be gone (stopped, garbage
    # collected, never started), where systemctl's non-zero exit is the expected answer.
    subprocess.run(["systemctl", *args], capture_output=True, check=False)


def reset_failed(units: Sequence[str]) -> None:
    """`systemctl reset-failed`: forget failed units of these names (a unit of the same name left
    by a crashed supervisor would make systemd-run refuse the name)."""
    if units:
        _systemctl_quiet("reset-failed", "--", *units)


def kill(units: Sequence[str], sig: int) -> None:
    """`systemctl kill --signal=SIG`: to every process of each unit (best effort)."""
    if units:
        _systemctl_quiet("kill", f"--signal={int(sig)}", "--", *units)


def stop_and_reset(units: Sequence[str]) -> None:
    """`systemctl stop` then `reset-failed`: the units are gone afterwards, failed or not."""
    if units:
        _systemctl_quiet("stop", "--", *units)
        _systemctl_quiet("reset-failed", "--", *units)


def run_transient(argvs: Sequence[Sequence[str]], timeout_s: float = 120.0) -> list[str | None]:
    """Run systemd-run command lines concurrently (each waits for the manager to start its unit);
    per command None when it succeeded, else its error as one line."""
    procs = [subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    errors: list[str | None] = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            errors.append(f"systemd-run gave no answer in {timeout_s:g} s")
            continue
        errors.append(None if p.returncode == 0 else (err.strip() or f"systemd-run exit {p.returncode}"))
    return errors


def journal_argv(matches: Sequence[str], output: str = "short-iso", follow: bool = False,
                 lines: int | None = None) -> list[str]:
    """The journalctl command line for the entries matching FIELD=VALUE `matches`."""
    argv = ["journalctl", "--no-pager", "-o", output]
    if follow:
        argv.append("--follow")
    if lines is not None:
        argv.append(f"--lines={lines}")
    return argv + list(matches)


def journal(matches: Sequence[str], output: str = "short-iso", follow: bool = False,
            lines: int | None = None) -> int:
    """journalctl to our stdout; its exit status."""
    return subprocess.call(journal_argv(matches, output, follow, lines))


# -- sd_notify ----------------------------------------------------------------------------------


def sd_notify(*assignments: str) -> bool:
    """Send "READY=1", "STATUS=...", "WATCHDOG=1", "RELOADING=1", "STOPPING=1" (sd_notify(3)) to
    the service manager, as one datagram on $NOTIFY_SOCKET. False when there is no socket (not
    started by systemd, or Type= does not listen); raises SystemdError when the send fails."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    for a in assignments:
        if "=" not in a or "\n" in a:
            raise ValueError(f"sd_notify assignment {a!r} is not one VAR=VALUE line")
    if path.startswith("@"):
        addr = "\0" + path[1:]  # Linux abstract namespace
    elif path.startswith("/"):
        addr = path
    else:
        raise SystemdError(f"NOTIFY_SOCKET={path}: not a path or @abstract name (vsock is not supported)")
    data = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            n = s.sendto(data, addr)
    except OSError as exc:
        raise SystemdError(f"NOTIFY_SOCKET={path}: send of {assignments[0] if assignments else ''!r}"
                           f" failed: {exc.strerror or exc}") from None
    if n != len(data):
        raise SystemdError(f"NOTIFY_SOCKET={path}: short send {n}/{len(data)}")
    return True


def listen_sockets() -> dict[str, socket.socket]:
    """The sockets systemd passed this process (socket activation, sd_listen_fds_with_names(3)),
    by FileDescriptorName= (default: the socket unit's name); {} when none were meant for it. The
    LISTEN_* variables are unset, so that children do not take the sockets for theirs."""
    try:
        from systemd.daemon import listen_fds_with_names  # python3-systemd
    except ImportError:
        return {}
    return {name: socket.socket(fileno=fd) for fd, name in listen_fds_with_names(unset_environment=True).items()}


def watchdog_interval_s() -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC (sd_watchdog_enabled(3) advises
    pinging at half the timeout), when the watchdog is meant for this process ($WATCHDOG_PID unset
    or ours); None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1e6


# -- cgroup path -> unit ------------------------------------------------------------------------

UNIT_CGROUP_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")


def unit_of_cgroup(rel: str) -> tuple[str | None, bool]:
    """For a cgroup path relative to the cgroup2 mount ("system.slice/foo.service/x"): the
    deepest component that is a unit name, and whether the path goes below it. True means the
    cgroup is inside that unit's own subtree, which only the unit's processes may manage, and
    only when the unit is delegated (Delegate=yes); systemd owns everything else on the path.
    (None, False) for the root cgroup or a path without any unit component."""
    parts = [p for p in rel.split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].endswith(UNIT_CGROUP_SUFFIXES):
            return parts[i], i < len(parts) - 1
    return None, False


# -- cgroup files <-> systemd resource-control properties ---------------------------------------

UINT64_MAX = 2**64 - 1
# systemd's sentinels, all (uint64_t) -1 on the wire: CGROUP_LIMIT_MAX ("infinity" for memory
# limits), USEC_INFINITY (no CPU quota; default quota period) and CGROUP_WEIGHT_INVALID (weight
# not set: the manager writes CGROUP_WEIGHT_DEFAULT, 100).
CGROUP_LIMIT_MAX = UINT64_MAX
USEC_INFINITY = UINT64_MAX
CGROUP_WEIGHT_INVALID = UINT64_MAX
CGROUP_WEIGHT_DEFAULT = 100
CPU_QUOTA_DEFAULT_PERIOD_USEC = 100_000
# CPUQuota= is kept as an integer percentage in the unit's drop-in (dbus-cgroup.c writes
# "CPUQuota=%0.f%%" of quota_per_sec / 10000, a truncating integer division), so whatever is set
# over D-Bus becomes a multiple of 10 ms per second at the next daemon-reload.
CPU_QUOTA_STEP_USEC_PER_S = 10_000

# D-Bus signature of each property we set (SetUnitProperties takes a(sv): the variant must carry
# exactly the type the manager reads, "t" for a weight, not "u" or "i").
PROPERTY_SIGNATURES: dict[str, str] = {
    "CPUWeight": "t", "StartupCPUWeight": "t", "IOWeight": "t", "StartupIOWeight": "t",
    "CPUQuotaPerSecUSec": "t", "CPUQuotaPeriodUSec": "t",
    "AllowedCPUs": "ay", "AllowedMemoryNodes": "ay",
    "MemoryMin": "t", "MemoryLow": "t", "MemoryHigh": "t", "MemoryMax": "t", "MemorySwapMax": "t",
    "TasksMax": "t", "CPUAccounting": "b", "MemoryAccounting": "b", "IOAccounting": "b",
    "TasksAccounting": "b", "Delegate": "b",
}

# The properties behind each control file, for reading the current state before a change.
FILE_PROPERTIES: dict[str, tuple[str, ...]] = {
    "cpu.weight": ("CPUWeight",),
    "cpu.max": ("CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec"),
    "cpuset.cpus": ("AllowedCPUs",),
    "cpuset.mems": ("AllowedMemoryNodes",),
    "memory.min": ("MemoryMin",),
    "memory.low": ("MemoryLow",),
    "memory.high": ("MemoryHigh",),
    "memory.max": ("MemoryMax",),
    "memory.swap.max": ("MemorySwapMax",),
    "io.weight": ("IOWeight",),
}

# What SetUnitProperties accepts to put each property back to "not set" (v252 dbus-cgroup.c):
# - CPUWeight/IOWeight: BUS_DEFINE_SET_CGROUP_WEIGHT checks CGROUP_WEIGHT_IS_OK, which lets
#   CGROUP_WEIGHT_INVALID through and records "CPUWeight=" (an empty assignment: reset).
# - CPUQuotaPerSecUSec: any value > 0; USEC_INFINITY records "CPUQuota=" (reset). 0 is refused.
# - CPUQuotaPeriodUSec: USEC_INFINITY records "CPUQuotaPeriodSec=" (reset to the 100 ms default).
# - AllowedCPUs/AllowedMemoryNodes: an empty array is the empty set, i.e. not set (cpuset.cpus
#   written empty: the parent's effective CPUs).
# - MemoryHigh/MemoryMax: minimum 1; CGROUP_LIMIT_MAX records "MemoryHigh=infinity", which is
#   also the default. MemorySwapMax likewise, minimum 0.
# - MemoryMin/MemoryLow: minimum 0, and 0 is the default value, but setting them also sets
#   memory_min_set/memory_low_set: a unit restored to 0 no longer inherits its slice's
#   DefaultMemoryMin=/DefaultMemoryLow=. No D-Bus value clears that flag; only removing the
#   drop-in (`systemctl revert UNIT`) does.
# Each SetUnitProperties(runtime=true) leaves a drop-in, 50-NAME.conf in
# /run/systemd/system.control/UNIT.d/ (for a transient unit /run/systemd/transient/UNIT.d/; the
# VM test saw "CPUWeight=300", "CPUQuota=155%"). Restoring rewrites it with the reset assignment
# ("CPUWeight=", "CPUQuota=", "MemoryHigh=infinity") rather than deleting it, so daemon-reload
# keeps the restored values; and a controller that only the change needed is switched off
# again (cpu.weight/cpu.max of the VM test's unit were absent before and after, as they were).
UNSET: dict[str, Any] = {
    "CPUWeight": CGROUP_WEIGHT_INVALID, "IOWeight": CGROUP_WEIGHT_INVALID,
    "CPUQuotaPerSecUSec": USEC_INFINITY, "CPUQuotaPeriodUSec": USEC_INFINITY,
    "AllowedCPUs": b"", "AllowedMemoryNodes": b"",
    "MemoryHigh": CGROUP_LIMIT_MAX, "MemoryMax": CGROUP_LIMIT_MAX, "MemorySwapMax": CGROUP_LIMIT_MAX,
    "MemoryMin": 0, "MemoryLow": 0,
}


@dataclass(frozen=True)
class NotExpressible:
    """A control-file value that has no unit-property form; the caller reports it and keeps the
    file as it is (or writes it on cgroupfs where the unit is delegated)."""

    file: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} {self.value!r}: not expressible as a unit property: {self.reason}"


def cpuset_to_dbus(cpus: str) -> bytes:
    """A cpuset list ("0-3,8") as systemd's AllowedCPUs= byte array: bit i%8 of byte i//8 is
    CPU i (cpu_set_to_dbus: a little-endian bitmask, as long as the highest CPU needs)."""
    ids = fmt.parse_cpu_list(cpus)
    if not ids:
        return b""
    out = bytearray(ids[-1] // 8 + 1)
    for i in ids:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def cpuset_from_dbus(mask: bytes | Sequence[int]) -> str:
    """Inverse of cpuset_to_dbus, in the kernel's list form ("0-3,8"; "" for the empty set)."""
    return fmt.format_cpu_list(i * 8 + b for i, byte in enumerate(bytes(mask)) for b in range(8)
                               if byte >> b & 1)


def _limit_to_prop(file: str, value: str) -> int:
    lim = fmt.parse_limit(value, file)
    return CGROUP_LIMIT_MAX if lim == fmt.MAX else lim


def _round_quota(quota_per_s: float) -> int:
    step = CPU_QUOTA_STEP_USEC_PER_S
    return max(step, round(quota_per_s / step) * step)


def file_to_properties(file: str, value: str) -> dict[str, Any] | NotExpressible:
    """The unit properties (D-Bus values) that make systemd write `value` to `file`.

    cpu.max: CPUQuotaPerSecUSec = quota * 1e6 / period, rounded to the nearest 10 ms per second
    (at least 10 ms) so that it survives daemon-reload unchanged (see
    CPU_QUOTA_STEP_USEC_PER_S); plus CPUQuotaPeriodUSec, infinity for the kernel's default
    100 ms. `properties_to_file` gives what systemd then writes: "150000 100000" comes back
    byte-equal, "155500 100000" as "156000 100000".
    Raises ParseError on a value the file's format does not allow."""
    v = value.strip()
    if file in ("cpu.weight", "io.weight"):
        if file == "io.weight":
            w = fmt.parse_io_weight(v)
            if set(w) - {"default"}:
                return NotExpressible(file, v, "per-device weights need IODeviceWeight= with a device "
                                               "node path, not MAJ:MIN")
            if "default" not in w:
                raise ParseError(file, value, "no 'default N' line")
            n = w["default"]
        else:
            n = fmt.parse_int(v, file)
        if not 1 <= n <= 10000:
            raise ParseError(file, value, "weight outside 1..10000")
        return {"CPUWeight" if file == "cpu.weight" else "IOWeight": n}
    if file == "cpu.max":
        cm = fmt.parse_cpu_max(v)
        period = USEC_INFINITY if cm.period_usec == CPU_QUOTA_DEFAULT_PERIOD_USEC else cm.period_usec
        if cm.quota_usec is None:
            return {"CPUQuotaPerSecUSec": USEC_INFINITY, "CPUQuotaPeriodUSec": period}
        if cm.quota_usec <= 0 or cm.period_usec <= 0:
            raise ParseError(file, value, "quota and period must be positive")
        return {"CPUQuotaPerSecUSec": _round_quota(cm.quota_usec * 1_000_000 / cm.period_usec),
                "CPUQuotaPeriodUSec": period}
    if file in ("cpuset.cpus", "cpuset.mems"):
        return {"AllowedCPUs" if file == "cpuset.cpus" else "AllowedMemoryNodes": cpuset_to_dbus(v)}
    if file in ("memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max"):
        prop = FILE_PROPERTIES[file][0]
        n = _limit_to_prop(file, v)
        if n == 0 and file in ("memory.high", "memory.max"):
            # BUS_DEFINE_SET_CGROUP_LIMIT(memory, ..., minimum 1) refuses it.
            return NotExpressible(file, v, f"systemd refuses {prop}=0")
        return {prop: n}
    if file.partition(" ")[0] == "io.max":
        return NotExpressible(file, v, "IOReadBandwidthMax= and the like take a device node path, not MAJ:MIN")
    return NotExpressible(file, v, "no resource-control property for this file")


def files_to_properties(files: Mapping[str, str]) -> tuple[dict[str, Any], list[NotExpressible]]:
    """file_to_properties of several files: the merged properties, and what had no form."""
    props: dict[str, Any] = {}
    missing: list[NotExpressible] = []
    for file, value in files.items():
        got = file_to_properties(file, value)
        if isinstance(got, NotExpressible):
            missing.append(got)
        else:
            props.update(got)
    return props, missing


def _adjust_period(period: int, quota: int) -> int:
    # cgroup_cpu_adjust_period(period, quota, USEC_PER_MSEC, USEC_PER_SEC): the kernel needs both
    # the period and quota*period/1s to be at least 1 ms; the period is at most 1 s.
    return min(max(period, 1000, 1000 * 1_000_000 // quota), 1_000_000)


def properties_to_file(file: str, props: Mapping[str, Any]) -> str:
    """What systemd writes to `file` for these property values (as get_properties returns them),
    without the newline: cgroup.c's cgroup_apply_unified_* in v252. Unset values give what the
    manager writes then (cpu.weight "100", io.weight "default 100", memory limits "max")."""
    try:
        vals = [props[p] for p in FILE_PROPERTIES[file]]
    except KeyError as exc:
        raise SystemdError(f"{file}: property {exc.args[0]} needed, not given") from None
    if file in ("cpu.weight", "io.weight"):
        w = vals[0] if vals[0] != CGROUP_WEIGHT_INVALID else CGROUP_WEIGHT_DEFAULT
        return str(w) if file == "cpu.weight" else f"default {w}"
    if file == "cpu.max":
        quota, period = vals
        if period == USEC_INFINITY:
            period = CPU_QUOTA_DEFAULT_PERIOD_USEC
        if quota == USEC_INFINITY:
            return f"max {CPU_QUOTA_DEFAULT_PERIOD_USEC}"  # infinity always gets the default period
        period = _adjust_period(period, quota)
        return f"{max(quota * period // 1_000_000, 1000)} {period}"
    if file in ("cpuset.cpus", "cpuset.mems"):
        return cpuset_from_dbus(vals[0])
    return "max" if vals[0] == CGROUP_LIMIT_MAX else str(vals[0])


def quota_after_reload(quota_per_s_usec: int) -> int:
    """CPUQuotaPerSecUSec after a daemon-reload re-reads the drop-in that SetUnitProperties wrote
    ("CPUQuota=N%", N truncated): what a value set over D-Bus settles to."""
    if quota_per_s_usec == USEC_INFINITY:
        return USEC_INFINITY
    return quota_per_s_usec // CPU_QUOTA_STEP_USEC_PER_S * CPU_QUOTA_STEP_USEC_PER_S


# -- D-Bus --------------------------------------------------------------------------------------

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
# The interface that carries a unit type's resource-control properties (the cgroup vtable is
# registered on each type's own interface, not on .Unit).
TYPE_IFACES = {
    ".service": "org.freedesktop.systemd1.Service",
    ".slice": "org.freedesktop.systemd1.Slice",
    ".scope": "org.freedesktop.systemd1.Scope",
    ".socket": "org.freedesktop.systemd1.Socket",
    ".mount": "org.freedesktop.systemd1.Mount",
    ".swap": "org.freedesktop.systemd1.Swap",
}
DEFAULT_TIMEOUT_S = 5.0

T = TypeVar("T")


def unit_interface(unit: str) -> str:
    """The D-Bus interface with `unit`'s resource-control properties."""
    for suffix, iface in TYPE_IFACES.items():
        if unit.endswith(suffix):
            return iface
    raise SystemdError(f"{unit}: not a unit type with a cgroup (want one of {', '.join(TYPE_IFACES)})")


def _variant(unit: str, name: str, value: Any) -> Any:
    from dbus_fast import Variant

    if isinstance(value, Variant):
        return value
    sig = PROPERTY_SIGNATURES.get(name)
    if sig is None:
        raise SystemdError(f"{unit}: set {name} failed: no known D-Bus signature; pass a dbus_fast.Variant")
    if sig == "ay" and isinstance(value, str):
        value = cpuset_to_dbus(value)
    try:
        return Variant(sig, bytes(value) if sig == "ay" else value)
    except Exception as exc:  # dbus-fast raises plain errors on a value that does not fit
        raise SystemdError(f"{unit}: set {name} failed: {value!r} is not a {sig!r}: {exc}") from None


class SystemdBus:
    """A synchronous client of the systemd manager on the system bus (dbus-fast).

    dbus-fast is asyncio-only; the client runs a private event loop in a daemon thread and each
    call waits for its coroutine with a timeout (default 5 s), so a manager that hangs (e.g. busy
    in a daemon-reload) cannot block the caller forever. A timeout or D-Bus error raises
    SystemdError naming the unit and the property or method.

        with SystemdBus() as bus:
            old = bus.get_properties("x.service", ["CPUWeight"])
            bus.set_properties("x.service", {"CPUWeight": 300})
    """

    def __init__(self, address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = address  # None: the system bus
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bus: Any = None
        self._paths: dict[str, str] = {}

    @property
    def where(self) -> str:
        return self.address or "system bus"

    def connect(self) -> SystemdBus:
        if self._bus is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=osthread.named("aios-dbus", loop.run_forever), name="aios-systemd-bus",
                                  daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def _connect() -> Any:
            from dbus_fast import BusType
            from dbus_fast.aio import MessageBus

            if self.address is None:
                return await MessageBus(bus_type=BusType.SYSTEM).connect()
            return await MessageBus(bus_address=self.address).connect()

        try:
            self._bus = self._run(_connect(), f"D-Bus {self.where}: connect")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        loop, thread, bus = self._loop, self._thread, self._bus
        self._loop = self._thread = self._bus = None
        self._paths.clear()
        if loop is None:
            return
        if bus is not None:
            loop.call_soon_threadsafe(bus.disconnect)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(self.timeout_s)
        if thread is None or not thread.is_alive():
            loop.close()

    def __enter__(self) -> SystemdBus:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        if self._loop is None:
            coro.close()
            raise SystemdError(f"{what} failed: not connected")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(self.timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise SystemdError(f"{what} failed: no answer from {self.where} in {self.timeout_s:g} s") from None
        except SystemdError:
            raise
        except Exception as exc:
            from dbus_fast.errors import DBusError

            if isinstance(exc, DBusError):
                raise SystemdError(f"{what} failed: {exc.type}: {exc.text}") from None
            raise SystemdError(f"{what} failed: {type(exc).__name__}: {exc}") from None

    async def _call(self, path: str, iface: str, member: str, signature: str = "",
                    body: Sequence[Any] = ()) -> list[Any]:
        from dbus_fast import Message, MessageType
        from dbus_fast.errors import DBusError

        reply = await self._bus.call(Message(destination=SYSTEMD_BUS_NAME, path=path, interface=iface,
                                             member=member, signature=signature, body=list(body)))
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed",
                            reply.body[0] if reply.body else "", reply)
        return list(reply.body)

    def _unit_path(self, unit: str) -> str:
        path = self._paths.get(unit)
        if path is None:
            body = self._run(self._call(SYSTEMD_PATH, MANAGER_IFACE, "GetUnit", "s", [unit]), f"{unit}: GetUnit")
            path = self._paths[unit] = body[0]
        return path

    def unit_for_pid(self, pid: int) -> str:
        """The unit whose cgroup holds `pid` (Manager.GetUnitByPID), e.g. "sshd.service"."""
        what = f"pid {pid}: GetUnitByPID"

        async def _get() -> str:
            path = (await self._call(SYSTEMD_PATH, MANAGER_IFACE, "GetUnitByPID", "u", [pid]))[0]
            idv = (await self._call(path, PROPERTIES_IFACE, "Get", "ss", [UNIT_IFACE, "Id"]))[0]
            return str(idv.value)

        return self._run(_get(), what)

    def get_properties(self, unit: str, names: Sequence[str], interface: str | None = None) -> dict[str, Any]:
        """Properties of a loaded unit, as plain Python values (t -> int, ay -> bytes, ...), from
        its type's interface (Service, Slice, Scope, ...) unless `interface` says otherwise."""
        iface = interface or unit_interface(unit)
        path = self._unit_path(unit)
        out: dict[str, Any] = {}
        for name in names:
            v = self._run(self._call(path, PROPERTIES_IFACE, "Get", "ss", [iface, name]), f"{unit}: get {name}")[0]
            out[name] = bytes(v.value) if v.signature == "ay" else v.value
        return out

    def set_properties(self, unit: str, props: Mapping[str, Any], runtime: bool = True) -> None:
        """Manager.SetUnitProperties: change properties of a loaded unit and apply them to its
        cgroup. runtime=True: until the next reboot (a drop-in under /run); else persistent (under
        /etc). Values as in PROPERTY_SIGNATURES (or dbus_fast.Variant for others); AllowedCPUs /
        AllowedMemoryNodes also accept a cpuset list string."""
        if not props:
            return
        body = [(name, _variant(unit, name, v)) for name, v in props.items()]
        self._run(self._call(SYSTEMD_PATH, MANAGER_IFACE, "SetUnitProperties", "sba(sv)", [unit, runtime, body]),
                  f"{unit}: set {', '.join(props)}")

    def delegated(self, unit: str) -> bool:
        """Whether the unit has Delegate=yes: its processes, not systemd, own the cgroups below."""
        return bool(self.get_properties(unit, ["Delegate"])["Delegate"])


# -- the delegated scope that holds aios-host's class cgroups ------------------------------------

def _unit_state(bus: SystemdBus, unit: str) -> tuple[str, str] | None:
    """(ActiveState, ControlGroup) of a loaded unit, None when systemd does not know it."""
    try:
        props = bus.get_properties(unit, ["ActiveState"], interface=UNIT_IFACE)
    except SystemdError as exc:
        if "NoSuchUnit" in str(exc):
            return None
        raise
    cg = bus.get_properties(unit, ["ControlGroup"])["ControlGroup"]
    return str(props["ActiveState"]), str(cg)


def start_delegated_scope(bus: SystemdBus, unit: str, slice_: str, pids: Sequence[int], description: str,
                          wait_s: float = 10.0) -> str:
    """Manager.StartTransientUnit of a scope with Delegate=yes holding `pids`; returns its cgroup
    path relative to the cgroup2 mount once systemd has made it (the job is asynchronous)."""
    from dbus_fast import Variant

    props = [("Description", Variant("s", description)), ("Slice", Variant("s", slice_)),
             ("Delegate", Variant("b", True)), ("PIDs", Variant("au", list(pids))),
             # stays loaded while it has processes; nothing else in the host depends on it
             ("DefaultDependencies", Variant("b", False))]
    return _start_transient(bus, unit, props, wait_s)


def _start_transient(bus: SystemdBus, unit: str, props: list[tuple[str, Any]], wait_s: float) -> str:
    """StartTransientUnit, then wait until the unit is active (the job is asynchronous); its cgroup
    path relative to the cgroup2 mount."""
    bus._paths.pop(unit, None)
    bus._run(bus._call(SYSTEMD_PATH, MANAGER_IFACE, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                       [unit, "fail", props, []]), f"{unit}: StartTransientUnit")
    deadline = time.monotonic() + wait_s
    while True:
        state = _unit_state(bus, unit)
        if state is not None and state[0] == "active" and state[1]:
            return state[1].strip("/")
        if time.monotonic() > deadline:
            raise SystemdError(f"{unit}: not active {wait_s:g} s after StartTransientUnit (state {state})")
        time.sleep(0.05)


def process_scope_properties(pids: Sequence[int], description: str, slice_: str) -> list[tuple[str, str, Any]]:
    """(name, D-Bus signature, value) of a scope that holds `pids` and lives exactly as long as
    they do: a scope goes inactive when its last process exits, however it exits (SIGKILL too),
    and so stops every unit with BindsTo= on it. Pure, so tests can read it."""
    return [("Description", "s", description), ("Slice", "s", slice_), ("PIDs", "au", list(pids)),
            # unloaded once inactive, failed or not: the next supervisor gets a fresh name anyway
            ("CollectMode", "s", "inactive-or-failed")]


def start_process_scope(bus: SystemdBus, unit: str, pids: Sequence[int], description: str,
                        slice_: str = "system.slice", wait_s: float = 10.0) -> str:
    """Manager.StartTransientUnit of a scope holding `pids` (moved into it); its cgroup path."""
    from dbus_fast import Variant

    props = [(name, Variant(sig, value)) for name, sig, value in process_scope_properties(pids, description, slice_)]
    return _start_transient(bus, unit, props, wait_s)


def active_unit_cgroup(bus: SystemdBus, unit: str) -> str | None:
    """The cgroup (relative to the mount) of an active unit, None when it is not active."""
    state = _unit_state(bus, unit)
    if state is None or state[0] != "active" or not state[1]:
        return None
    return state[1].strip("/")


def stop_unit(bus: SystemdBus, unit: str) -> None:
    """Manager.StopUnit (mode "replace"); the job runs on, asynchronously."""
    bus._run(bus._call(SYSTEMD_PATH, MANAGER_IFACE, "StopUnit", "ss", [unit, "replace"]), f"{unit}: StopUnit")
