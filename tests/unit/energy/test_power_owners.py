import subprocess

import pytest

from aios_host.errors import AiosError
from aios_host.kernel import power_owners
from aios_host.kernel.power_owners import OwnerChecks, detect_knob_owners
from aios_host.kernel.systemd import SystemdError


def checks(booted=True, units=(), names=(), units_error=None, bus_error=None) -> OwnerChecks:
    def units_active(wanted):
        if units_error:
            raise SystemdError(units_error)
        return {u for u in units if u in wanted}

    def bus_names(wanted):
        if bus_error:
            raise AiosError(bus_error)
        return {n for n in names if n in wanted}

    return OwnerChecks(sd_booted=lambda: booted, units_active=units_active, bus_names_with_owner=bus_names)


def test_nothing_else_owns_the_knobs():
    o = detect_knob_owners(checks())
    assert o.owners == () and o.unknown == ()
    assert o.summary() == "none (no tuned, power-profiles-daemon or TLP unit active, none of their D-Bus names owned)"


def test_an_active_unit_and_a_bus_name_name_their_programs_once():
    o = detect_knob_owners(checks(units={"tuned.service", "tlp.service"}, names={"com.redhat.tuned"}))
    assert o.owners == ("tuned", "TLP")
    assert o.summary() == "tuned, TLP (tuned.service active; tlp.service active; com.redhat.tuned owned on D-Bus)"


def test_power_profiles_daemon_outside_systemd_is_found_on_the_bus():
    o = detect_knob_owners(checks(booted=False, names={"org.freedesktop.UPower.PowerProfiles"}))
    assert o.owners == ("power-profiles-daemon",)
    assert o.summary().endswith("; not checked: systemd: not PID 1 (no /run/systemd/system)")


def test_neither_check_answers():
    o = detect_knob_owners(checks(booted=False, bus_error="no system bus"))
    assert o.summary() == "unknown (systemd: not PID 1 (no /run/systemd/system); D-Bus: no system bus)"
    assert o.to_dict() == {"owners": [], "units_active": [], "bus_names_owned": [],
                           "unknown": ["systemd: not PID 1 (no /run/systemd/system)", "D-Bus: no system bus"]}


def test_one_check_answers_none():
    o = detect_knob_owners(checks(units_error="systemctl show failed: timeout"))
    assert o.summary() == "none found (systemd: systemctl show failed: timeout)"


def test_units_active_reads_systemctl_show(monkeypatch):
    out = ("Id=tuned.service\nActiveState=inactive\n\nId=power-profiles-daemon.service\nActiveState=active\n\n"
           "Id=tlp.service\nActiveState=inactive\n")
    seen = []

    def fake_run(argv, **kw):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert power_owners._units_active(list(power_owners.UNITS)) == {"power-profiles-daemon.service"}
    assert seen[0][:4] == ["systemctl", "show", "--property=Id", "--property=ActiveState"]


def test_no_system_bus_is_one_line(monkeypatch):
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    monkeypatch.setattr(power_owners, "SYSTEM_BUS_SOCKET", "/nonexistent/bus")
    with pytest.raises(AiosError, match=r"no system bus \(/nonexistent/bus absent\)"):
        power_owners.bus_names_with_owner(["com.redhat.tuned"])



_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    {receive}
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _accepts(sock) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def private_bus(tmp_path, monkeypatch, answers: bool = True) -> subprocess.Popen:
    """A dbus-daemon as DBUS_SYSTEM_BUS_ADDRESS; answers=False: it drops every reply to clients."""
    import shutil
    import time

    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed")
    sock, conf = tmp_path / "bus", tmp_path / "bus.conf"
    receive = '<allow eavesdrop="true"/>' if answers else '<deny receive_type="method_return"/>'
    conf.write_text(_BUS_CONF.format(path=sock, receive=receive))
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--nopidfile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _accepts(sock):  # the socket file exists from bind(2), a moment before listen(2)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("dbus-daemon did not listen")
        time.sleep(0.02)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={sock}")
    return proc


def test_bus_names_with_owner_on_a_private_system_bus(tmp_path, monkeypatch):
    import asyncio

    proc = private_bus(tmp_path, monkeypatch)
    try:
        async def own_and_ask():
            from dbus_fast.aio import MessageBus

            bus = await MessageBus(bus_address=f"unix:path={tmp_path / 'bus'}").connect()
            await bus.request_name("net.hadess.PowerProfiles")
            try:  # asked from another thread, while this loop keeps serving the name
                return await asyncio.to_thread(power_owners.bus_names_with_owner, list(power_owners.BUS_NAMES))
            finally:
                bus.disconnect()

        async def bounded():  # a bus that does not answer must fail this test, not hang it
            return await asyncio.wait_for(own_and_ask(), 10)

        assert asyncio.run(bounded()) == {"net.hadess.PowerProfiles"}
        assert power_owners.bus_names_with_owner(["net.hadess.PowerProfiles"]) == set()  # released
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_bus_that_does_not_answer_is_a_timeout_not_a_hang(tmp_path, monkeypatch):
    proc = private_bus(tmp_path, monkeypatch, answers=False)
    try:
        with pytest.raises(AiosError, match=r"^system bus gave no answer in 0.3 s$"):
            power_owners.bus_names_with_owner(["com.redhat.tuned"], timeout_s=0.3)
    finally:
        proc.terminate()
        proc.wait(10)
