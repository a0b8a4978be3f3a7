"""Write a Plan to the kernel, all or nothing.

Originals are journaled before the first write. If any write fails, every write already made by
this apply is undone in reverse order and the error (path + errno) is raised: the tree is left
as it was. `rollback` undoes every recorded apply, newest first, restoring the originals.

Writes go to cgroupfs, or for op "unit" (a class matched to a systemd unit, whose cgroup systemd
owns) to systemd over D-Bus through a UnitSetter: path "UNIT/FILE", `new` the control file's value
(turned into the unit properties that make systemd write it), `old` the unit's original properties
as JSON. Both directions (apply and undo) take the same route.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Protocol

from aios_host.actuate.state import ApplyRecord, StateStore
from aios_host.errors import AiosError, KernelError
from aios_host.kernel import systemd
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.policy.plan import ENERGY_OPS, Plan, Write

log = get_logger("aios_host.actuate")


class ApplyError(AiosError):
    pass


def refuse_unavailable(plan: Plan, mount: str) -> None:
    missing = plan.unavailable
    if missing:
        ctrls = sorted({w.controller or "?" for w in missing})
        raise ApplyError(
            f"{mount}/cgroup.controllers: this host's cgroup v2 lacks {', '.join(ctrls)}; "
            f"{len(missing)} of {len(plan)} writes cannot be applied (first: {missing[0].path}); "
            "nothing was changed (use --dry-run to see the plan)"
        )


class UnitSetter(Protocol):
    """Changes and restores a systemd unit's resource-control properties at runtime."""

    def set_unit_file(self, unit: str, file: str, value: str) -> None: ...
    def restore_unit(self, unit: str, props_json: str) -> None: ...


class SystemdUnitSetter:
    """UnitSetter over kernel.systemd.SystemdBus (D-Bus SetUnitProperties, runtime)."""

    def __init__(self, bus: systemd.SystemdBus) -> None:
        self.bus = bus

    def set_unit_file(self, unit: str, file: str, value: str) -> None:
        props = systemd.file_to_properties(file, value)
        if isinstance(props, systemd.NotExpressible):
            raise ApplyError(f"{unit}: {props}")
        self.bus.set_properties(unit, props, runtime=True)

    def restore_unit(self, unit: str, props_json: str) -> None:
        props = {k: bytes(v) if isinstance(v, list) else v for k, v in json.loads(props_json).items()}
        self.bus.set_properties(unit, props, runtime=True)

    def originals(self, unit: str, file: str) -> str:
        """The unit's current properties behind `file`, as the JSON restore_unit takes."""
        props = self.bus.get_properties(unit, list(systemd.FILE_PROPERTIES[file]))
        return json.dumps({k: list(v) if isinstance(v, bytes) else v for k, v in props.items()}, sort_keys=True)


def _unit_of(bus: UnitSetter | None, w: Write) -> tuple[UnitSetter, str, str]:
    if bus is None:
        raise ApplyError(f"{w.path}: a systemd unit's property, and no D-Bus connection to systemd")
    unit, _, file = w.path.rpartition("/")
    return bus, unit, file


def do_write(root: SysRoot, w: Write, bus: UnitSetter | None = None) -> None:
    if w.op in ENERGY_OPS:
        from aios_host.energy.plan import set_value

        set_value(root, w.op, w.path, w.new)
    elif w.op == "mkdir":
        root.mkdir(w.path)
    elif w.op == "unit":
        setter, unit, file = _unit_of(bus, w)
        setter.set_unit_file(unit, file, w.new)
    else:
        root.write_text(w.path, w.new if w.new else "\n")



def _undo(root: SysRoot, w: Write, bus: UnitSetter | None = None) -> None:
    """Reverse one write. Gone things (a removed cgroup, an exited pid) are not errors here."""
    try:
        if w.op in ENERGY_OPS:
            if w.old is not None:
                from aios_host.energy.plan import set_value

                set_value(root, w.op, w.path, w.old)
        elif w.op == "mkdir":
            root.rmdir(w.path)
        elif w.op == "unit":
            if w.old is not None:
                setter, unit, _ = _unit_of(bus, w)
                setter.restore_unit(unit, w.old)
        elif w.op == "move":
            if w.old is not None:
                root.write_text(w.old, w.new)
        elif w.old is not None:
            root.write_text(w.path, w.old if w.old else "\n")
    except KernelError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return
        raise


def undo_all(root: SysRoot, writes: list[Write], bus: UnitSetter | None = None) -> list[str]:
    """Undo `writes` newest first; returns one message per write that could not be undone."""
    failures = []
    for w in reversed(writes):
        try:
            _undo(root, w, bus)
            log.info("cgroup_undo", op=w.op, path=w.path, restored=w.old)
        except AiosError as exc:
            failures.append(str(exc))
            log.error("cgroup_undo_failed", op=w.op, path=w.path, error=str(exc))
    return failures



def apply_plan(root: SysRoot, plan: Plan, policy_name: str, mount: str) -> ApplyRecord | None:
    """Returns the record, or None when the plan is empty (nothing to change)."""
    refuse_unavailable(plan, mount)
    if not plan.writes:
        return None
    store = StateStore(root)
    with store.locked():
        return _apply_locked(root, plan, policy_name, store)


def _apply_locked(root: SysRoot, plan: Plan, policy_name: str, store: StateStore) -> ApplyRecord:
    records, rec = store.begin(policy_name, list(plan.writes))
    done: list[Write] = []
    for w in plan.writes:
        try:
            do_write(root, w)
        except AiosError as exc:  # a KernelError (errno), or an energy writer's refusal (KnobRefused)
            failures = undo_all(root, done)
            rec.status = "undone"
            store.save(records)
            log.error("policy_apply_failed", path=w.path, errno=getattr(exc, "errno_name", None),
                      error=str(exc), undone=len(done))
            tail = f"; undo failed for {len(failures)}: {failures[0]}" if failures else ""
            raise ApplyError(f"{exc}; all {len(done)} earlier writes were undone{tail}") from None
        done.append(w)
        log.info("cgroup_write", op=w.op, path=w.path, old=w.old, new=w.new, reason=w.reason)
    rec.status = "applied"
    store.save(records)
    log.info("policy_applied", policy=policy_name, writes=len(done), id=rec.id)
    return rec


def rollback(root: SysRoot) -> list[ApplyRecord]:
    """Undo every recorded apply, newest first. Returns what was undone."""
    store = StateStore(root)
    with store.locked():
        return _rollback_locked(root, store)


def _rollback_locked(root: SysRoot, store: StateStore) -> list[ApplyRecord]:
    records = store.load()
    if not any(w.op == "unit" for r in records for w in r.writes):
        return _undo_records(root, store, records, None)
    with systemd.SystemdBus() as dbus:
        return _undo_records(root, store, records, SystemdUnitSetter(dbus))


def _undo_records(root: SysRoot, store: StateStore, records: list[ApplyRecord],
                  bus: UnitSetter | None) -> list[ApplyRecord]:
    undone = []
    for rec in reversed(records):
        if rec.status not in ("applied", "in-progress"):
            continue
        failures = undo_all(root, rec.writes, bus)
        if failures:
            store.save(records)
            raise ApplyError(f"rollback of {rec.id} incomplete: {failures[0]}")
        rec.status = "rolled-back"
        undone.append(rec)
        store.save(records)
    if undone or records:
        store.save([])
    log.info("policy_rolled_back", applies=len(undone), pid=os.getpid())
    return undone
