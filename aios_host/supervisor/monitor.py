"""Heartbeats -> hangs and stragglers. Pure: the supervisor feeds reports and the clock.

Reports come from aios_host.supervisor.health (one datagram per step(): rank, restart, step,
step seconds, compute seconds). Two rules:

- hang: once any rank of the gang has reported, every rank must report at least once per
  `timeout` seconds (a rank that never reports is measured from the first report of the gang,
  so a rank stuck before its first step is caught too). The culprit is the rank silent longest;
  in a collective job the others block in all_reduce behind it and go silent a little later.
- straggler: a rank whose typical step time (median of its last WINDOW reports, compute time
  when the script gives it, else step time) exceeds k x the median of the OTHER ranks' typical
  times. Leave-one-out, because with the plain median of all ranks a 2-rank job could never flag
  anyone for k >= 2: the straggler itself would pull the median up. Synchronous collectives make
  wall-clock step times equal on all ranks; that is why health.step() accepts compute seconds.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

WINDOW = 5
MIN_REPORTS = 3


@dataclass(frozen=True)
class Report:
    rank: int
    restart: int
    step: int
    step_s: float  # wall time since the previous step() of this rank (0 for the first)
    compute_s: float | None = None  # the part the script timed as its own work, if it did

    def encode(self) -> bytes:
        c = "-" if self.compute_s is None else f"{self.compute_s:.6f}"
        return f"aios1 {self.rank} {self.restart} {self.step} {self.step_s:.6f} {c}".encode()

    @classmethod
    def decode(cls, data: bytes) -> Report | None:
        """None for anything that is not a well-formed report (the socket is world-writable
        inside the job's run directory; a garbage datagram must not crash the supervisor)."""
        parts = data.decode("ascii", "replace").split()
        if len(parts) != 6 or parts[0] != "aios1":
            return None
        try:
            rep = cls(int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]),
                      None if parts[5] == "-" else float(parts[5]))
        except ValueError:
            return None
        # float() takes "nan" and "inf": they would poison the medians and the state file's JSON
        times = [rep.step_s] if rep.compute_s is None else [rep.step_s, rep.compute_s]
        if not all(math.isfinite(t) and t >= 0 for t in times):
            return None
        return rep


def find_stragglers(times: Mapping[int, float], k: float) -> list[int]:
    """Ranks whose time exceeds k x the median of the other ranks' times."""
    out = []
    for rank, t in sorted(times.items()):
        others = [v for r, v in times.items() if r != rank]
        if not others:
            continue
        med = statistics.median(others)
        if med > 0 and t > k * med:
            out.append(rank)
    return out


@dataclass
class RankHealth:
    last_report: float | None = None
    step: int = -1
    times: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def typical(self) -> float | None:
        return statistics.median(self.times) if len(self.times) >= MIN_REPORTS else None


@dataclass(frozen=True)
class Hang:
    rank: int  # silent longest
    silent_s: float
    last_step: int
    silent_ranks: tuple[int, ...] = ()  # every rank over the timeout


class HealthMonitor:
    def __init__(self, ranks: Iterable[int], restart: int, timeout_s: float, straggler_k: float) -> None:
        self.restart = restart
        self.timeout_s = timeout_s
        self.k = straggler_k
        self.ranks: dict[int, RankHealth] = {r: RankHealth() for r in ranks}
        self.first_report: float | None = None
        self.flagged: set[int] = set()

    def report(self, r: Report, now: float) -> bool:
        """Take one report; False when it is not for this gang (old restart, unknown rank)."""
        h = self.ranks.get(r.rank)
        if h is None or r.restart != self.restart:
            return False
        h.last_report = now
        h.step = max(h.step, r.step)
        if self.first_report is None:
            self.first_report = now
        t = r.compute_s if r.compute_s is not None else r.step_s
        if r.step > 0 and t > 0:  # the first step() only marks the start
            h.times.append(t)
        return True

    def hang(self, now: float) -> Hang | None:
        if self.timeout_s <= 0 or self.first_report is None:
            return None
        worst: Hang | None = None
        silent_ranks = []
        for rank, h in sorted(self.ranks.items()):
            since = h.last_report if h.last_report is not None else self.first_report
            silent = now - since
            if silent > self.timeout_s:
                silent_ranks.append(rank)
                if worst is None or silent > worst.silent_s:
                    worst = Hang(rank, silent, h.step)
        if worst is None:
            return None
        return Hang(worst.rank, worst.silent_s, worst.last_step, tuple(silent_ranks))

    def typical_times(self) -> dict[int, float]:
        return {r: t for r, h in self.ranks.items() if (t := h.typical()) is not None}

    def new_stragglers(self) -> list[tuple[int, float, float]]:
        """(rank, its time, the others' median) for ranks that became stragglers since last call;
        a rank that recovers is re-armed."""
        times = self.typical_times()
        now_slow = set(find_stragglers(times, self.k)) if len(times) >= 2 else set()
        out = []
        for rank in sorted(now_slow - self.flagged):
            others = [v for r, v in times.items() if r != rank]
            out.append((rank, times[rank], statistics.median(others)))
        self.flagged = (self.flagged & now_slow) | now_slow
        return out

    def next_deadline(self) -> float | None:
        """When hang() could next become true, for the poll timeout."""
        if self.timeout_s <= 0 or self.first_report is None:
            return None
        lasts = [h.last_report if h.last_report is not None else self.first_report
                 for h in self.ranks.values()]
        return min(lasts) + self.timeout_s
