"""Write a Plan to the kernel, all or nothing.

Originals are journaled before the first write. If any write fails, every write already made by
this apply is undone in reverse order and the error (path + errno) is raised: the tree is left
as it was. `rollback` undoes every recorded apply, newest first, restoring the originals.
"""

from __future__ import annotations

import errno
import os

from aios_host.actuate.state import ApplyRecord, StateStore
from aios_host.errors import AiosError, KernelError
from aios_host.kernel.root import SysRoot
from aios_host.log import get_logger
from aios_host.policy.plan import Plan, Write

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


def _do(root: SysRoot, w: Write) -> None:
    if w.op == "mkdir":
        root.mkdir(w.path)
    else:
        root.write_text(w.path, w.new if w.new else "\n")


def _undo(root: SysRoot, w: Write) -> None:
    """Reverse one write. Gone things (a removed cgroup, an exited pid) are not errors here."""
    try:
        if w.op == "mkdir":
            root.rmdir(w.path)
        elif w.op == "move":
            if w.old is not None:
                root.write_text(w.old, w.new)
        elif w.old is not None:
            root.write_text(w.path, w.old if w.old else "\n")
    except KernelError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return
        raise


def _undo_all(root: SysRoot, writes: list[Write]) -> list[str]:
    failures = []
    for w in reversed(writes):
        try:
            _undo(root, w)
            log.info("cgroup_undo", op=w.op, path=w.path, restored=w.old)
        except KernelError as exc:
            failures.append(str(exc))
            log.error("cgroup_undo_failed", op=w.op, path=w.path, error=str(exc))
    return failures


def apply_plan(root: SysRoot, plan: Plan, policy_name: str, mount: str) -> ApplyRecord | None:
    """Returns the record, or None when the plan is empty (nothing to change)."""
    refuse_unavailable(plan, mount)
    if not plan.writes:
        return None
    store = StateStore(root)
    records, rec = store.begin(policy_name, list(plan.writes))
    done: list[Write] = []
    for w in plan.writes:
        try:
            _do(root, w)
        except KernelError as exc:
            failures = _undo_all(root, done)
            rec.status = "undone"
            store.save(records)
            log.error("policy_apply_failed", path=w.path, errno=exc.errno_name, undone=len(done))
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
    records = store.load()
    undone = []
    for rec in reversed(records):
        if rec.status not in ("applied", "in-progress"):
            continue
        failures = _undo_all(root, rec.writes)
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
