"""SystemdBus against the real manager: change a running unit's resource-control properties over
D-Bus, see them in its cgroup files, keep them across daemon-reload, and restore the originals
byte-exact. Observations (values, drop-ins) go to /out/systemd_dbus.json when /out is there."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from aios_host.kernel import systemd as sd
from aios_host.kernel.systemd import SystemdBus

UNIT = "aios-dbus-t1.service"
CG = Path("/sys/fs/cgroup/system.slice") / UNIT
FILES = ("cpu.weight", "memory.high", "cpu.max")
PROPS = ("CPUWeight", "MemoryHigh", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec")


def _read(name: str) -> bytes | None:
    try:
        return (CG / name).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        # Restoring CPUWeight/CPUQuota to "unset" lets systemd turn the cpu controller off for the
        # unit: a cpu.* file that was there when opened reads ENODEV. Absent, as for the kernel.
        if exc.errno == errno.ENODEV:
            return None
        raise


def _wait_for(name: str, want: bytes | None, timeout_s: float = 5.0) -> bytes | None:
    # SetUnitProperties realizes the cgroup before it replies; the wait only covers a manager
    # that queues it (it is not a retry of a wrong value: the last read is what is asserted).
    deadline = time.monotonic() + timeout_s
    got = _read(name)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.05)
        got = _read(name)
    return got


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def unit() -> Any:
    sd.stop_and_reset([UNIT])
    out = _run("systemd-run", f"--unit={UNIT.removesuffix('.service')}", "--quiet", "sleep", "300")
    assert out.returncode == 0, out.stderr
    try:
        yield UNIT
    finally:
        sd.stop_and_reset([UNIT])


def _drop_ins(bus: SystemdBus) -> dict[str, str]:
    paths = bus.get_properties(UNIT, ["DropInPaths"], interface=sd.UNIT_IFACE)["DropInPaths"]
    return {p: Path(p).read_text() for p in paths if Path(p).exists()}


@pytest.fixture
def obs() -> Any:
    """What the test saw, written out also when an assertion fails."""
    seen: dict[str, Any] = {}
    try:
        yield seen
    finally:
        _save(seen)


def test_set_properties_reload_and_restore(unit: str, obs: dict[str, Any]) -> None:
    with SystemdBus() as bus:
        main_pid = int(sd.show([unit], ["MainPID"])[0]["MainPID"])
        assert bus.unit_for_pid(main_pid) == unit
        cgroup = sd.show([unit], ["ControlGroup"])[0]["ControlGroup"]
        assert sd.unit_of_cgroup(cgroup) == (unit, False)
        assert bus.delegated(unit) is False

        orig_props = bus.get_properties(unit, PROPS)
        orig_files = {f: _read(f) for f in FILES}
        obs["original"] = {"props": orig_props, "files": {k: v and v.decode() for k, v in orig_files.items()}}

        # Through the translation the policy would use, plus a quota that is not on systemd's
        # 10 ms-per-second step, to see what daemon-reload does with it.
        props, missing = sd.files_to_properties({"cpu.weight": "300", "memory.high": "268435456"})
        assert not missing
        props["CPUQuotaPerSecUSec"] = 1_555_000
        bus.set_properties(unit, props, runtime=True)

        set_files = {f: _wait_for(f, w) for f, w in (("cpu.weight", b"300\n"), ("memory.high", b"268435456\n"),
                                                     ("cpu.max", b"155500 100000\n"))}
        obs["after_set"] = {"props": bus.get_properties(unit, PROPS),
                            "files": {k: v and v.decode() for k, v in set_files.items()},
                            "drop_ins": _drop_ins(bus)}
        assert set_files == {"cpu.weight": b"300\n", "memory.high": b"268435456\n", "cpu.max": b"155500 100000\n"}

        out = _run("systemctl", "daemon-reload")
        assert out.returncode == 0, out.stderr
        after_reload = bus.get_properties(unit, PROPS)
        reload_files = {f: _read(f) for f in FILES}
        obs["after_daemon_reload"] = {"props": after_reload,
                                      "files": {k: v and v.decode() for k, v in reload_files.items()}}
        assert after_reload["CPUWeight"] == 300 and after_reload["MemoryHigh"] == 268435456
        assert reload_files["cpu.weight"] == b"300\n" and reload_files["memory.high"] == b"268435456\n"
        # The drop-in keeps "CPUQuota=155%": 1555000 usec/s settles to 1550000 (quota_after_reload).
        assert after_reload["CPUQuotaPerSecUSec"] == sd.quota_after_reload(1_555_000) == 1_550_000
        assert reload_files["cpu.max"] == (sd.properties_to_file("cpu.max", after_reload) + "\n").encode()

        bus.set_properties(unit, {k: orig_props[k] for k in PROPS}, runtime=True)
        restored_files = {f: _wait_for(f, orig_files[f]) for f in FILES}
        obs["restored"] = {"props": bus.get_properties(unit, PROPS),
                           "files": {k: v and v.decode() for k, v in restored_files.items()},
                           "drop_ins": _drop_ins(bus)}
        assert obs["restored"]["props"] == orig_props
        assert restored_files == orig_files

        out = _run("systemctl", "daemon-reload")
        assert out.returncode == 0, out.stderr
        again = {f: _read(f) for f in FILES}
        obs["restored_after_daemon_reload"] = {"props": bus.get_properties(unit, PROPS),
                                               "files": {k: v and v.decode() for k, v in again.items()}}
        assert again == orig_files


def _save(obs: dict[str, Any]) -> None:
    text = json.dumps(obs, indent=1, default=lambda b: b.hex() if isinstance(b, bytes) else str(b))
    print(text)
    if os.path.isdir("/out") and os.access("/out", os.W_OK):
        Path("/out/systemd_dbus.json").write_text(text)
