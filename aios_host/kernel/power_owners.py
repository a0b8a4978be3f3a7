"""Who else sets CPU frequency knobs on this host: tuned, power-profiles-daemon, TLP.

Each of them writes the governor, EPP, min/max or boost on its own schedule (a profile change, AC
plugged in, a boot-time oneshot), so a second writer would silently undo aios-host's writes and the
other way round. Two independent signs of each are checked: its systemd unit being active (TLP is
a oneshot with RemainAfterExit=yes, so "active" means it applied its settings), and its D-Bus name
having an owner (a daemon started outside systemd). Neither check can be redirected to a SysRoot;
both are injectable (`OwnerChecks`) so tests can describe any host. Read-only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aios_host.errors import AiosError
from aios_host.kernel import systemd

UNITS = {"tuned.service": "tuned", "power-profiles-daemon.service": "power-profiles-daemon", "tlp.service": "TLP"}
BUS_NAMES = {
    "com.redhat.tuned": "tuned",
    "net.hadess.PowerProfiles": "power-profiles-daemon",
    "org.freedesktop.UPower.PowerProfiles": "power-profiles-daemon",  # its name since 0.20
}
_ACTIVE_STATES = frozenset({"active", "activating", "reloading"})
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
_CHECKS = 2  # systemd units, D-Bus names


def _sd_booted() -> bool:
    # sd_booted(3): systemd is PID 1 exactly when /run/systemd/system/ exists.
    return os.path.isdir("/run/systemd/system")


def bus_names_with_owner(names: Iterable[str], timeout_s: float = 2.0) -> set[str]:
    """The names (of `names`) that have an owner on the system bus (org.freedesktop.DBus.NameHasOwner).
    AiosError when the bus cannot be asked."""
    wanted = list(names)
    if "DBUS_SYSTEM_BUS_ADDRESS" not in os.environ and not os.path.exists(SYSTEM_BUS_SOCKET):
        raise AiosError(f"no system bus ({SYSTEM_BUS_SOCKET} absent)")

    async def query() -> set[str]:
        from dbus_fast import BusType, Message, MessageType
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            owned = set()
            for name in wanted:
                reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                               interface="org.freedesktop.DBus", member="NameHasOwner",
                                               signature="s", body=[name]))
                if reply.message_type == MessageType.ERROR:
                    raise AiosError(f"D-Bus NameHasOwner {name}: {reply.error_name}")
                if reply.body[0]:
                    owned.add(name)
            return owned
        finally:
            bus.disconnect()

    async def bounded() -> set[str]:
        return await asyncio.wait_for(query(), timeout_s)

    # A fresh loop in a worker thread: the caller may itself be running an event loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aios-owners") as pool:
        try:
            return pool.submit(asyncio.run, bounded()).result()
        except AiosError:
            raise
        except TimeoutError:
            raise AiosError(f"system bus gave no answer in {timeout_s:g} s") from None
        except Exception as exc:  # dbus-fast raises plain errors (refused, auth failed)
            raise AiosError(f"system bus: {type(exc).__name__}: {exc}") from None


def _units_active(units: Sequence[str]) -> set[str]:
    blocks = systemd.show(units, ["Id", "ActiveState"], timeout_s=5.0)
    return {b.get("Id", "") for b in blocks if b.get("ActiveState") in _ACTIVE_STATES}


@dataclass(frozen=True)
class OwnerChecks:
    sd_booted: Callable[[], bool] = _sd_booted
    units_active: Callable[[Sequence[str]], set[str]] = _units_active
    bus_names_with_owner: Callable[[Iterable[str]], set[str]] = field(default=bus_names_with_owner)


@dataclass(frozen=True)
class KnobOwners:
    units: tuple[str, ...]  # active units of UNITS
    bus_names: tuple[str, ...]  # owned names of BUS_NAMES
    unknown: tuple[str, ...]  # why a check could not answer ("systemd: ...", "D-Bus: ...")

    @property
    def owners(self) -> tuple[str, ...]:
        """The programs found ("tuned", "TLP"), each once."""
        found = [UNITS[u] for u in self.units] + [BUS_NAMES[n] for n in self.bus_names]
        return tuple(dict.fromkeys(found))

    def summary(self) -> str:
        """One line: "tuned (tuned.service active)", "none (...)", "none found (what could not be
        checked)" or "unknown (why neither check answered)"."""
        unknown = "; ".join(self.unknown)
        if self.units or self.bus_names:
            seen = [f"{u} active" for u in self.units] + [f"{n} owned on D-Bus" for n in self.bus_names]
            return f"{', '.join(self.owners)} ({'; '.join(seen)})" + (f"; not checked: {unknown}" if unknown else "")
        if len(self.unknown) >= _CHECKS:
            return f"unknown ({unknown})"
        if self.unknown:
            return f"none found ({unknown})"
        return "none (no tuned, power-profiles-daemon or TLP unit active, none of their D-Bus names owned)"

    def to_dict(self) -> dict[str, object]:
        return {"owners": list(self.owners), "units_active": list(self.units),
                "bus_names_owned": list(self.bus_names), "unknown": list(self.unknown)}


def detect_knob_owners(checks: OwnerChecks | None = None) -> KnobOwners:
    checks = checks or OwnerChecks()
    unknown: list[str] = []
    units: set[str] = set()
    if not checks.sd_booted():
        unknown.append("systemd: not PID 1 (no /run/systemd/system)")
    else:
        try:
            units = checks.units_active(list(UNITS))
        except AiosError as exc:
            unknown.append(f"systemd: {exc}")
    names: set[str] = set()
    try:
        names = checks.bus_names_with_owner(list(BUS_NAMES))
    except AiosError as exc:
        unknown.append(f"D-Bus: {exc}")
    return KnobOwners(tuple(u for u in UNITS if u in units), tuple(n for n in BUS_NAMES if n in names),
                      tuple(unknown))
