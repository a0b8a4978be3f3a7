"""One measurement interval: probe samples and cgroupfs samples at both ends -> HostSnapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aios_host.errors import KernelError
from aios_host.kernel.cgroup import CgroupFs, CgroupSample, normalize, sample
from aios_host.model.snapshot import HostSnapshot, build_snapshot
from aios_host.probes.cgroup_ids import UNKNOWN_ID, CgroupIndex
from aios_host.probes.loader import ProbeSet
from aios_host.probes.structs import Event


def sample_cgroups(fs: CgroupFs, paths: Iterable[str]) -> dict[str, CgroupSample]:
    """cgroupfs stats and PSI by path; cgroups removed meanwhile are left out."""
    out = {}
    for p in paths:
        if not p.startswith("/"):
            continue  # "(unknown)"
        try:
            out[p] = sample(fs.cgroup(p))
        except KernelError:
            continue
    return out


def in_subtree(path: str, subtree: str) -> bool:
    top = "/" + normalize(subtree)
    return top == "/" or path == top or path.startswith(top + "/")


def measure(
    probes: ProbeSet,
    fs: CgroupFs,
    duration_s: float,
    subtree: str = "",
    on_event: Callable[[Event], None] | None = None,
    poll_ms: int = 100,
    index: CgroupIndex | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[HostSnapshot, list[Event]]:
    """Measure for `duration_s`; events are collected (and passed to on_event as they arrive).

    `stop` is asked before every poll: when it says True (a SIGINT/SIGTERM came, see
    cli.base.StopSignals) the interval ends there and the snapshot covers the time measured so far.
    """
    index = index or CgroupIndex(fs)
    index.refresh()
    in_tree = {i: p for i, p in index.known.items() if in_subtree(p, subtree)}
    cg0 = sample_cgroups(fs, in_tree.values())
    s0 = probes.read()
    events: list[Event] = []
    deadline = time.monotonic() + duration_s
    while stop is None or not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for ev in probes.poll(timeout_ms=int(min(poll_ms, left * 1000)) or 1):
            events.append(ev)
            if on_event is not None:
                on_event(ev)
    s1 = probes.read()
    for ev in probes.poll(0):
        events.append(ev)
        if on_event is not None:
            on_event(ev)
    seen = set(s1.cgroups) | set(in_tree)
    paths = {i: p for i, p in index.resolve(seen).items() if i == UNKNOWN_ID or in_subtree(p, subtree)}
    if subtree and normalize(subtree):
        paths.pop(UNKNOWN_ID, None)
    cg1 = sample_cgroups(fs, paths.values())
    return build_snapshot(s0, s1, paths, cg0, cg1), events
