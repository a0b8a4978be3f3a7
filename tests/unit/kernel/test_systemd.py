"""kernel/systemd.py: sd_notify on a real datagram socket, the watchdog interval, cgroup path ->
unit, the cgroup-file <-> unit-property translation both ways, and SystemdBus over a real
dbus-daemon (a private bus) against a fake manager that answers like systemd's."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aios_host.errors import AiosError, ParseError
from aios_host.kernel import systemd as sd
from aios_host.kernel.systemd import (
    CGROUP_LIMIT_MAX,
    CGROUP_WEIGHT_INVALID,
    UINT64_MAX,
    UNSET,
    USEC_INFINITY,
    NotExpressible,
    SystemdBus,
    SystemdError,
    cpuset_from_dbus,
    cpuset_to_dbus,
    file_to_properties,
    files_to_properties,
    properties_to_file,
    quota_after_reload,
    unit_of_cgroup,
)

# -- sd_notify ----------------------------------------------------------------------------------


@pytest.fixture
def notify_sock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield s
    s.close()


def test_sd_notify_sends_one_datagram(notify_sock: socket.socket) -> None:
    assert sd.sd_notify("READY=1", "STATUS=serving 3 classes") is True
    assert notify_sock.recv(4096) == b"READY=1\nSTATUS=serving 3 classes"
    for msg in ("WATCHDOG=1", "RELOADING=1", "STOPPING=1"):
        assert sd.sd_notify(msg)
        assert notify_sock.recv(4096) == msg.encode()


def test_sd_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"aios-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd.sd_notify("READY=1")
        assert s.recv(4096) == b"READY=1"


def test_sd_notify_without_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd.sd_notify("READY=1") is False


def test_sd_notify_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with pytest.raises(SystemdError) as ei:
        sd.sd_notify("READY=1")
    assert str(tmp_path / "gone") in str(ei.value) and "\n" not in str(ei.value)
    assert isinstance(ei.value, AiosError)
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with pytest.raises(SystemdError, match="vsock"):
        sd.sd_notify("READY=1")
    with pytest.raises(ValueError):
        sd.sd_notify("READY")


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert sd.watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sd.watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sd.watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert sd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert sd.watchdog_interval_s() is None


# -- unit_of_cgroup -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rel", "want"), [
    ("system.slice/foo.service/x", ("foo.service", True)),
    ("system.slice/foo.service", ("foo.service", False)),
    ("/system.slice/foo.service/", ("foo.service", False)),
    ("system.slice", ("system.slice", False)),
    ("aios.slice/training", ("aios.slice", True)),
    ("aios.slice/aios-training.slice/aios-training-jobs.slice/aios-job-j-g0-r1.service",
     ("aios-job-j-g0-r1.service", False)),
    ("user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service", ("dbus.service", False)),
    ("user.slice/user-1000.slice/session-3.scope", ("session-3.scope", False)),
    ("system.slice/docker-abc.scope/inner/deeper", ("docker-abc.scope", True)),
    ("system.slice/sshd.socket", ("sshd.socket", False)),
    ("system.slice/boot.mount", ("boot.mount", False)),
    ("system.slice/dev-sda2.swap", ("dev-sda2.swap", False)),
    ("init.scope", ("init.scope", False)),
    ("", (None, False)),
    ("/", (None, False)),
    ("mine/leaf", (None, False)),
    ("system.slice/foo.target", ("system.slice", True)),  # targets have no cgroup: not a unit dir
])
def test_unit_of_cgroup(rel: str, want: tuple[str | None, bool]) -> None:
    assert unit_of_cgroup(rel) == want


# -- translation --------------------------------------------------------------------------------


def test_cpu_weight_both_ways() -> None:
    assert file_to_properties("cpu.weight", "300\n") == {"CPUWeight": 300}
    assert properties_to_file("cpu.weight", {"CPUWeight": 300}) == "300"
    # unset: the manager writes the default weight
    assert properties_to_file("cpu.weight", {"CPUWeight": CGROUP_WEIGHT_INVALID}) == "100"
    with pytest.raises(ParseError):
        file_to_properties("cpu.weight", "0")
    with pytest.raises(ParseError):
        file_to_properties("cpu.weight", "lots")


def test_io_weight_both_ways() -> None:
    assert file_to_properties("io.weight", "default 250") == {"IOWeight": 250}
    assert properties_to_file("io.weight", {"IOWeight": 250}) == "default 250"
    assert properties_to_file("io.weight", {"IOWeight": CGROUP_WEIGHT_INVALID}) == "default 100"
    per_dev = file_to_properties("io.weight", "default 100\n8:0 300")
    assert isinstance(per_dev, NotExpressible) and "IODeviceWeight" in per_dev.reason


def test_cpu_max_both_ways_and_rounding() -> None:
    # 1.5 CPUs at the default period: exact both ways, the period left to systemd's default
    p = file_to_properties("cpu.max", "150000 100000")
    assert p == {"CPUQuotaPerSecUSec": 1_500_000, "CPUQuotaPeriodUSec": USEC_INFINITY}
    assert properties_to_file("cpu.max", p) == "150000 100000"
    # no cap
    p = file_to_properties("cpu.max", "max 100000")
    assert p == {"CPUQuotaPerSecUSec": USEC_INFINITY, "CPUQuotaPeriodUSec": USEC_INFINITY}
    assert properties_to_file("cpu.max", p) == "max 100000"
    # a period of its own travels as CPUQuotaPeriodUSec
    p = file_to_properties("cpu.max", "25000 50000")
    assert p == {"CPUQuotaPerSecUSec": 500_000, "CPUQuotaPeriodUSec": 50_000}
    assert properties_to_file("cpu.max", p) == "25000 50000"
    # "max P" with P not the default: systemd writes infinity with the default period always
    assert properties_to_file("cpu.max", file_to_properties("cpu.max", "max 50000")) == "max 100000"
    # Not a multiple of 10 ms per second: rounded to the nearest step, so that the drop-in's
    # "CPUQuota=156%" re-reads (daemon-reload) to the same value.
    p = file_to_properties("cpu.max", "155500 100000")
    assert p["CPUQuotaPerSecUSec"] == 1_560_000
    assert quota_after_reload(p["CPUQuotaPerSecUSec"]) == 1_560_000
    assert properties_to_file("cpu.max", p) == "156000 100000"
    # what an unrounded value set over D-Bus becomes after a reload (the drop-in truncates)
    assert quota_after_reload(1_555_000) == 1_550_000
    assert quota_after_reload(USEC_INFINITY) == USEC_INFINITY
    # tiny quotas: at least one step (systemd refuses 0), and systemd widens the period so the
    # quota per period stays >= 1 ms (cgroup_cpu_adjust_period)
    p = file_to_properties("cpu.max", "100 100000")
    assert p["CPUQuotaPerSecUSec"] == 10_000
    assert properties_to_file("cpu.max", p) == "1000 100000"
    assert properties_to_file("cpu.max", {"CPUQuotaPerSecUSec": 5_000, "CPUQuotaPeriodUSec": USEC_INFINITY}) \
        == "1000 200000"
    # period clamped to at most 1 s
    assert properties_to_file("cpu.max", {"CPUQuotaPerSecUSec": 2_000_000, "CPUQuotaPeriodUSec": 2_000_000}) \
        == "2000000 1000000"
    # the unset state is "max"
    assert properties_to_file("cpu.max", {k: UNSET[k] for k in ("CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec")}) \
        == "max 100000"
    with pytest.raises(ParseError):
        file_to_properties("cpu.max", "0 100000")


def test_every_quota_step_round_trips() -> None:
    # Every whole percent of 1..64 CPUs at the default period: file -> properties -> file is exact.
    for pct in range(1, 6401):
        text = f"{pct * 1000} 100000"
        assert properties_to_file("cpu.max", file_to_properties("cpu.max", text)) == text  # type: ignore[arg-type]


def test_cpuset_encoding() -> None:
    # systemd's cpu_set_to_dbus: bit i%8 of byte i//8, as many bytes as the highest CPU needs
    assert cpuset_to_dbus("0-3,8") == bytes([0x0F, 0x01])
    assert cpuset_to_dbus("0") == b"\x01"
    assert cpuset_to_dbus("7") == b"\x80"
    assert cpuset_to_dbus("63") == bytes(7) + b"\x80"
    assert cpuset_to_dbus("") == b""
    assert cpuset_from_dbus(bytes([0x0F, 0x01])) == "0-3,8"
    assert cpuset_from_dbus([0xF0, 0x00, 0x03]) == "4-7,16-17"
    assert cpuset_from_dbus(b"") == ""
    for text in ("0-3,8", "1,3,5-7,100-127", "0", "2-5"):
        assert cpuset_from_dbus(cpuset_to_dbus(text)) == text


def test_cpuset_files_both_ways() -> None:
    assert file_to_properties("cpuset.cpus", "0-3,8") == {"AllowedCPUs": bytes([0x0F, 0x01])}
    assert file_to_properties("cpuset.mems", "0-1") == {"AllowedMemoryNodes": b"\x03"}
    assert properties_to_file("cpuset.cpus", {"AllowedCPUs": bytes([0x0F, 0x01])}) == "0-3,8"
    assert properties_to_file("cpuset.mems", {"AllowedMemoryNodes": b"\x03"}) == "0-1"
    # unset: empty, i.e. the parent's effective set
    assert file_to_properties("cpuset.cpus", "") == {"AllowedCPUs": b""}
    assert properties_to_file("cpuset.cpus", {"AllowedCPUs": UNSET["AllowedCPUs"]}) == ""


@pytest.mark.parametrize(("file", "prop"), [
    ("memory.min", "MemoryMin"), ("memory.low", "MemoryLow"), ("memory.high", "MemoryHigh"),
    ("memory.max", "MemoryMax"), ("memory.swap.max", "MemorySwapMax"),
])
def test_memory_both_ways(file: str, prop: str) -> None:
    assert file_to_properties(file, "268435456\n") == {prop: 268435456}
    assert properties_to_file(file, {prop: 268435456}) == "268435456"
    assert file_to_properties(file, "max") == {prop: CGROUP_LIMIT_MAX}
    assert properties_to_file(file, {prop: UINT64_MAX}) == "max"
    # the unset value writes the kernel's default back: "max" for limits, "0" for protections
    assert properties_to_file(file, {prop: UNSET[prop]}) == ("0" if file in ("memory.min", "memory.low") else "max")


def test_memory_zero_limits() -> None:
    assert file_to_properties("memory.low", "0") == {"MemoryLow": 0}
    refused = file_to_properties("memory.max", "0")
    assert isinstance(refused, NotExpressible) and "MemoryMax=0" in str(refused)


def test_not_expressible() -> None:
    for file, value in (("io.max", "8:0 rbps=1048576 wbps=max riops=max wiops=max"),
                        ("io.max 8:0", "8:0 rbps=1048576 wbps=max riops=max wiops=max")):
        got = file_to_properties(file, value)
        assert isinstance(got, NotExpressible) and "device node path" in got.reason
        assert str(got).startswith(f"{file} ") and "\n" not in str(got)
    assert isinstance(file_to_properties("cpu.idle", "1"), NotExpressible)


def test_files_to_properties_merges() -> None:
    props, missing = files_to_properties({
        "cpu.weight": "200", "cpu.max": "200000 100000", "cpuset.cpus": "2-3", "memory.high": "max",
        "io.weight": "default 200", "io.max 8:0": "8:0 rbps=1 wbps=max riops=max wiops=max",
    })
    assert props == {"CPUWeight": 200, "CPUQuotaPerSecUSec": 2_000_000, "CPUQuotaPeriodUSec": USEC_INFINITY,
                     "AllowedCPUs": b"\x0c", "MemoryHigh": CGROUP_LIMIT_MAX, "IOWeight": 200}
    assert [m.file for m in missing] == ["io.max 8:0"]


def test_properties_to_file_needs_its_properties() -> None:
    with pytest.raises(SystemdError, match="CPUQuotaPeriodUSec"):
        properties_to_file("cpu.max", {"CPUQuotaPerSecUSec": 10_000})


def test_unit_interface() -> None:
    assert sd.unit_interface("a.service") == "org.freedesktop.systemd1.Service"
    assert sd.unit_interface("a.slice") == "org.freedesktop.systemd1.Slice"
    assert sd.unit_interface("a.scope") == "org.freedesktop.systemd1.Scope"
    with pytest.raises(SystemdError, match="a.target"):
        sd.unit_interface("a.target")


def test_journal_argv() -> None:
    assert sd.journal_argv(["JOB=t", "RANK=1"], output="cat") == [
        "journalctl", "--no-pager", "-o", "cat", "JOB=t", "RANK=1"]
    assert sd.journal_argv(["JOB=t"], follow=True, lines=20)[-3:] == ["--follow", "--lines=20", "JOB=t"]


# -- SystemdBus over a private dbus-daemon ------------------------------------------------------

_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

_SIGS = {"Id": "s", "CPUWeight": "t", "MemoryHigh": "t", "AllowedCPUs": "ay", "Delegate": "b",
         "CPUQuotaPerSecUSec": "t"}


def _unit_path(name: str) -> str:
    # systemd's bus_label_escape: [A-Za-z0-9] kept, everything else _xx
    return "/org/freedesktop/systemd1/unit/" + "".join(
        c if c.isalnum() else f"_{ord(c):02x}" for c in name)


class FakeManager:
    """Answers GetUnit / GetUnitByPID / SetUnitProperties / Properties.Get like systemd's manager:
    properties only on the unit type's interface (Id on .Unit), argument types checked."""

    def __init__(self) -> None:
        self.units: dict[str, dict[str, Any]] = {
            "aios-t.service": {"Id": "aios-t.service", "CPUWeight": UINT64_MAX, "MemoryHigh": UINT64_MAX,
                               "AllowedCPUs": b"", "Delegate": False, "CPUQuotaPerSecUSec": UINT64_MAX},
            "aios.slice": {"Id": "aios.slice", "CPUWeight": 100, "MemoryHigh": UINT64_MAX,
                           "AllowedCPUs": b"", "Delegate": False, "CPUQuotaPerSecUSec": UINT64_MAX},
            "user@1000.service": {"Id": "user@1000.service", "CPUWeight": UINT64_MAX,
                                  "MemoryHigh": UINT64_MAX, "AllowedCPUs": b"", "Delegate": True,
                                  "CPUQuotaPerSecUSec": UINT64_MAX},
        }
        self.by_path = {_unit_path(n): n for n in self.units}
        self.pids = {4242: "aios-t.service"}
        self.calls: list[tuple[str, bool, list[tuple[str, str, Any]]]] = []

    def handle(self, msg: Any) -> Any:
        from dbus_fast import Message, MessageType, Variant

        if msg.message_type != MessageType.METHOD_CALL or msg.path is None:
            return None
        if msg.member == "Hang":
            return True
        if msg.interface == sd.MANAGER_IFACE and msg.member == "GetUnit":
            (name,) = msg.body
            if name == "hang.service":
                return True  # handled, never answered
            if name not in self.units:
                return Message.new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
            return Message.new_method_return(msg, "o", [_unit_path(name)])
        if msg.interface == sd.MANAGER_IFACE and msg.member == "GetUnitByPID":
            (pid,) = msg.body
            if pid not in self.pids:
                return Message.new_error(msg, "org.freedesktop.systemd1.NoUnitForPID",
                                         f"PID {pid} does not belong to any loaded unit.")
            return Message.new_method_return(msg, "o", [_unit_path(self.pids[pid])])
        if msg.interface == sd.MANAGER_IFACE and msg.member == "SetUnitProperties":
            if msg.signature != "sba(sv)":
                return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", f"bad {msg.signature}")
            name, runtime, props = msg.body
            for k, v in props:
                if v.signature != _SIGS.get(k):
                    return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs",
                                             f"Invalid type for {k}: {v.signature}")
            self.calls.append((name, runtime, [(k, v.signature, v.value) for k, v in props]))
            for k, v in props:
                self.units[name][k] = v.value
            return Message.new_method_return(msg)
        if msg.interface == sd.PROPERTIES_IFACE and msg.member == "Get":
            iface, prop = msg.body
            unit = self.units[self.by_path[msg.path]]
            want_iface = sd.UNIT_IFACE if prop == "Id" else sd.unit_interface(unit["Id"])
            if iface != want_iface or prop not in unit:
                return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty",
                                         f"Unknown interface {iface} or property {prop}.")
            return Message.new_method_return(msg, "v", [Variant(_SIGS[prop], unit[prop])])
        return None


@pytest.fixture
def private_bus(tmp_path: Path) -> Iterator[tuple[str, FakeManager]]:
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed")
    sock = tmp_path / "bus"
    conf = tmp_path / "bus.conf"
    conf.write_text(_BUS_CONF.format(path=sock))
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--nopidfile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "dbus-daemon exited"
        assert time.monotonic() < deadline, "dbus-daemon did not listen"
        time.sleep(0.02)
    address = f"unix:path={sock}"
    fake = FakeManager()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> Any:
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_address=address).connect()
        bus.add_message_handler(fake.handle)
        await bus.request_name(sd.SYSTEMD_BUS_NAME)
        return bus

    server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    try:
        yield address, fake
    finally:
        loop.call_soon_threadsafe(server.disconnect)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        proc.terminate()
        proc.wait(10)


def test_bus_get_set_restore(private_bus: tuple[str, FakeManager]) -> None:
    address, fake = private_bus
    with SystemdBus(address) as bus:
        assert bus.unit_for_pid(4242) == "aios-t.service"
        old = bus.get_properties("aios-t.service", ["CPUWeight", "MemoryHigh", "AllowedCPUs"])
        assert old == {"CPUWeight": UINT64_MAX, "MemoryHigh": UINT64_MAX, "AllowedCPUs": b""}
        new_props, _ = files_to_properties({"cpu.weight": "300", "memory.high": "268435456",
                                            "cpuset.cpus": "0-3,8"})
        bus.set_properties("aios-t.service", new_props)
        assert fake.calls[-1] == ("aios-t.service", True, [
            ("CPUWeight", "t", 300), ("MemoryHigh", "t", 268435456), ("AllowedCPUs", "ay", b"\x0f\x01")])
        got = bus.get_properties("aios-t.service", list(new_props))
        assert got == new_props
        assert properties_to_file("cpuset.cpus", got) == "0-3,8"
        bus.set_properties("aios-t.service", old, runtime=False)
        assert fake.calls[-1][1] is False
        assert bus.get_properties("aios-t.service", list(old)) == old
        # a cpuset list string is accepted for AllowedCPUs too
        bus.set_properties("aios-t.service", {"AllowedCPUs": "2-3"})
        assert fake.calls[-1][2] == [("AllowedCPUs", "ay", b"\x0c")]
        assert bus.delegated("user@1000.service") is True
        assert bus.delegated("aios-t.service") is False
        # the slice's properties are read from the Slice interface
        assert bus.get_properties("aios.slice", ["CPUWeight"]) == {"CPUWeight": 100}


def test_bus_errors_are_one_line(private_bus: tuple[str, FakeManager]) -> None:
    address, fake = private_bus
    with SystemdBus(address, timeout_s=0.5) as bus:
        with pytest.raises(SystemdError) as ei:
            bus.get_properties("nope.service", ["CPUWeight"])
        assert str(ei.value).startswith("nope.service: GetUnit failed: org.freedesktop.systemd1.NoSuchUnit")
        with pytest.raises(SystemdError, match=r"aios-t.service: get Bogus failed: .*UnknownProperty"):
            bus.get_properties("aios-t.service", ["Bogus"])
        with pytest.raises(SystemdError, match=r"pid 1: GetUnitByPID failed: .*NoUnitForPID"):
            bus.unit_for_pid(1)
        with pytest.raises(SystemdError, match=r"aios-t.service: set Frobnicate failed: no known D-Bus signature"):
            bus.set_properties("aios-t.service", {"Frobnicate": 1})
        with pytest.raises(SystemdError, match=r"aios-t.service: set CPUWeight failed: -1 is not a 't'"):
            bus.set_properties("aios-t.service", {"CPUWeight": -1})
        t0 = time.monotonic()
        with pytest.raises(SystemdError) as ei:
            bus.get_properties("hang.service", ["CPUWeight"])
        assert time.monotonic() - t0 < 3
        assert str(ei.value) == f"hang.service: GetUnit failed: no answer from {address} in 0.5 s"
        # still usable after a timeout
        assert bus.get_properties("aios-t.service", ["CPUWeight"]) == {"CPUWeight": UINT64_MAX}
    assert not fake.calls


def test_bus_connect_failure_and_closed_use(tmp_path: Path) -> None:
    bus = SystemdBus(f"unix:path={tmp_path}/no-bus", timeout_s=1)
    with pytest.raises(SystemdError, match=r"no-bus: connect failed"):
        bus.connect()
    with pytest.raises(SystemdError, match="not connected"):
        bus.get_properties("a.service", ["CPUWeight"])
    bus.close()  # idempotent
