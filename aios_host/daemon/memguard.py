"""The memory guard's decisions, pure (no I/O): senpai's memory.high loop, time to OOM, and the
escalation that acts before the kernel's OOM killer does.

- SenpaiLoop: one class's memory.high, as facebookincubator/senpai's senpai.py does it, per tick:
  sum the class's memory PSI `some` total (usec of stall) since the last adjustment; above the
  target pressure, back off at once (loosen by up to max_backoff, growing with the square of how
  far over target); below it, every interval ticks probe down (tighten by up to max_probe,
  growing as pressure falls under target). Senpai's defaults: interval 6 s, target 10 ms of stall
  per interval, max_probe 1%, max_backoff 100%, coefficients 10 and 20, min 100M. Unlike senpai it
  never goes below what cannot be reclaimed (the caller's floor: unevictable + shmem, and anon on
  a host without swap).
- OomClock: time to OOM from the slope of used memory and the headroom left: seconds = headroom /
  slope. Growth is taken at once, a slower one fades in with a half-life, a fall resets it:
  infinite when usage is flat or falling. 0 when the caller says the thing is at its limit now
  (a class whose memory.events max or oom rose: hit_own_limit).
- Escalation: when the host is in danger (available memory below a byte threshold, or time to
  OOM below a number of seconds), the classes of the lowest acting tier (never a protected class,
  never one above the acting tier) go through tighten (memory.high = what it uses now) -> freeze
  (cgroup.freeze) -> kill (cgroup.kill), one step per `step_s` while the danger lasts, each step an
  Action the daemon journals, writes and logs. When the host has been safe for `thaw_s`, frozen
  classes are thawed and tightened ones handed back to the policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

PAGE = 4096


@dataclass(frozen=True)
class SenpaiParams:
    interval_ticks: int = 6
    pressure_usec: int = 10_000
    max_probe: float = 0.01
    max_backoff: float = 1.0
    coeff_probe: float = 10.0
    coeff_backoff: float = 20.0
    min_bytes: int = 100 << 20
    max_bytes: int = 100 << 30


class SenpaiLoop:
    def __init__(self, params: SenpaiParams) -> None:
        self.p = params
        self.limit: int | None = None
        self.last_total: int | None = None
        self.integral = 0
        self.grace = params.interval_ticks

    def step(self, some_total_usec: int, current_bytes: int, floor_bytes: int) -> int | None:
        """The new memory.high, or None to leave it. Starts from what the class uses now."""
        p = self.p
        if self.last_total is None:
            self.last_total = some_total_usec
        delta = max(0, some_total_usec - self.last_total)
        self.last_total = some_total_usec
        self.integral += delta
        lo = max(p.min_bytes, floor_bytes)
        if self.limit is None:
            self.limit = self._clamp(current_bytes, lo)
            return self.limit
        if self.integral > p.pressure_usec:
            err = self.integral / p.pressure_usec
            adj = min((err / p.coeff_backoff) ** 2 * p.max_backoff, p.max_backoff)
            return self._adjust(adj, lo)
        if self.grace > 1:
            self.grace -= 1
            # a floor that rose above the limit (unevictable memory grew) is followed at once
            return self._adjust(0.0, lo) if self.limit < lo else None
        err = p.pressure_usec / max(self.integral, 1)
        adj = min((err / p.coeff_probe) ** 2 * p.max_probe, p.max_probe)
        return self._adjust(-adj, lo)

    def _adjust(self, factor: float, lo: int) -> int | None:
        assert self.limit is not None
        new = self._clamp(int(self.limit + self.limit * factor), lo)
        self.integral = 0
        self.grace = self.p.interval_ticks
        if new == self.limit:
            return None
        self.limit = new
        return new

    def _clamp(self, value: int, lo: int) -> int:
        return max(lo, min(self.p.max_bytes, value)) // PAGE * PAGE


@dataclass
class OomClock:
    """Time to OOM of one thing (a class, the host) from its used bytes over time."""

    half_life_s: float = 5.0
    slope_Bps: float = 0.0
    _last: tuple[float, int] | None = None

    def update(self, now_s: float, used_bytes: int, headroom_bytes: float, at_limit: bool = False) -> float:
        if self._last is not None:
            dt = now_s - self._last[0]
            if dt > 0:
                rate = (used_bytes - self._last[1]) / dt
                alpha = 1.0 - 2.0 ** (-dt / self.half_life_s)
                # growth is taken at once (a fast grower must not be averaged away); a slower growth
                # fades in with the half-life; a fall (memory freed now) ends the growth
                if rate > self.slope_Bps:
                    self.slope_Bps = rate
                elif rate <= 0:
                    self.slope_Bps = 0.0
                else:
                    self.slope_Bps += alpha * (rate - self.slope_Bps)
        self._last = (now_s, used_bytes)
        # at_limit: the kernel reclaimed or OOM-killed at the limit since the last reading; usage
        # then sits just under the limit (or falls after a kill), so neither slope nor headroom
        # would show it. The slope is still tracked above, for the ticks after.
        if headroom_bytes <= 0 or at_limit:
            return 0.0
        return headroom_bytes / self.slope_Bps if self.slope_Bps > 0 else math.inf


class MemoryEvents(NamedTuple):
    """A cgroup's memory.events counters, cumulative as the kernel counts them (since 5.2 they
    include its subtree's events). None: the kernel's file has no such key."""

    high_total: int | None = None  # over memory.high: throttled and reclaimed
    max_total: int | None = None  # about to go over memory.max: reclaimed at the limit
    oom_total: int | None = None  # reclaim at memory.max failed: the cgroup went OOM
    oom_kill_total: int | None = None  # processes the OOM killer took in it

    @classmethod
    def of(cls, counters: dict[str, int]) -> MemoryEvents:
        return cls(counters.get("high"), counters.get("max"), counters.get("oom"), counters.get("oom_kill"))


def hit_own_limit(before: MemoryEvents | None, now: MemoryEvents | None) -> bool:
    """Whether the cgroup's max or oom count rose between two readings of its own (local) events:
    the kernel reclaimed or OOM-killed at its memory.max meanwhile. No earlier reading: unknown
    when the counts grew, so no. A count that fell (the cgroup was made anew) is a new origin."""
    if before is None or now is None:
        return False
    return any(b is not None and n is not None and n > b
               for b, n in ((before.max_total, now.max_total), (before.oom_total, now.oom_total)))


@dataclass(frozen=True)
class GuardParams:
    danger_available_bytes: int = 256 << 20  # MemAvailable (+ free swap) below this: act
    danger_seconds: float = 10.0  # or time to OOM below this
    # or the host's memory PSI "full" avg10 (percent: every task stalled on memory) at or above
    # this, as systemd-oomd acts on pressure; None: off. MemAvailable counts page cache the host
    # is thrashing on as available: pressure sees the stall where the bytes do not.
    danger_pressure_full_pct: float | None = None
    safe_available_bytes: int = 512 << 20  # safe again above this (hysteresis)
    step_s: float = 2.0  # between escalation steps of one class
    thaw_s: float = 10.0  # safe this long: thaw and hand back


@dataclass(frozen=True)
class GuardClass:
    name: str
    priority: int
    protected: bool
    populated: bool
    current_bytes: int
    # A job in the class asked for a notice before the kill (its spec's guard_notice): the kill
    # waits this long after the notice. None: no notice, the kill follows the freeze.
    notice_grace_s: float | None = None


@dataclass(frozen=True)
class Action:
    cls: str
    step: str  # "tighten" | "freeze" | "notice" | "kill" | "thaw" | "release"
    reason: str
    value: int | None = None  # tighten and notice: the memory.high written


# Room a noticed gang gets above what it uses, to run its checkpoint handler: a class held above
# its memory.high is throttled on every return to user space (up to 2 s each, and without swap
# its anon pages cannot be reclaimed), so a handler that opens and writes a file did not finish
# within a 3 s grace in the VM. Bounded: the gang cannot grow more than this before the kill.
NOTICE_HEADROOM_BYTES = 64 << 20


STEPS = ("tighten", "freeze", "kill")


@dataclass
class Escalation:
    params: GuardParams
    level: dict[str, int] = field(default_factory=dict)  # class -> index into STEPS done
    last_step_at: dict[str, float] = field(default_factory=dict)
    noticed_at: dict[str, float] = field(default_factory=dict)  # class -> when its jobs were told
    safe_since: float | None = None
    in_danger: bool = False

    def danger(self, available_bytes: float, seconds_to_oom: float,
               pressure_full_pct: float | None = None) -> str | None:
        p = self.params
        if available_bytes < p.danger_available_bytes:
            return f"available {available_bytes / 2**20:.0f} MiB < {p.danger_available_bytes / 2**20:.0f} MiB"
        if seconds_to_oom < p.danger_seconds:
            return f"time to OOM {seconds_to_oom:.1f} s < {p.danger_seconds:g} s"
        limit = p.danger_pressure_full_pct
        if limit is not None and pressure_full_pct is not None and pressure_full_pct >= limit:
            return f"memory pressure full avg10 {pressure_full_pct:.1f}% >= {limit:g}%"
        return None

    def step(self, now_s: float, available_bytes: float, seconds_to_oom: float,
             classes: Sequence[GuardClass], pressure_full_pct: float | None = None) -> list[Action]:
        why = self.danger(available_bytes, seconds_to_oom, pressure_full_pct)
        if why is None and self.in_danger and available_bytes < self.params.safe_available_bytes:
            why = f"available {available_bytes / 2**20:.0f} MiB not yet above the safe level"
        if why is None:
            self.in_danger = False
            return self._recover(now_s)
        self.in_danger = True
        self.safe_since = None
        target = self._acting(classes)
        if target and any(self.level.get(c.name, -1) < 0 for c in target) and self.last_step_at \
                and now_s - max(self.last_step_at.values()) < self.params.step_s:
            return []  # a new tier waits until the last step (a kill: memory being freed) has had its time
        out = []
        for c in target:
            done = self.level.get(c.name, -1)
            if done + 1 >= len(STEPS):
                continue
            if done >= 0 and now_s - self.last_step_at.get(c.name, -math.inf) < self.params.step_s:
                continue
            step = STEPS[done + 1]
            if step == "kill" and c.notice_grace_s is not None:
                at = self.noticed_at.get(c.name)
                if at is None:  # tell the jobs first; the kill comes after their grace
                    self.noticed_at[c.name] = now_s
                    out.append(Action(c.name, "notice", why,
                                      (c.current_bytes + NOTICE_HEADROOM_BYTES) // PAGE * PAGE))
                    continue
                if now_s - at < c.notice_grace_s:
                    continue
            self.level[c.name] = done + 1
            self.last_step_at[c.name] = now_s
            out.append(Action(c.name, step, why, c.current_bytes // PAGE * PAGE if step == "tighten" else None))
        return out

    def _acting(self, classes: Sequence[GuardClass]) -> list[GuardClass]:
        """The lowest tier that still has something to give: populated, unprotected classes not yet
        killed. Protected classes and every tier above the acting one are left alone."""
        candidates = [c for c in classes if not c.protected and c.populated
                      and self.level.get(c.name, -1) < len(STEPS) - 1]
        if not candidates:
            return []
        tier = min(c.priority for c in candidates)
        return [c for c in candidates if c.priority == tier]

    def _recover(self, now_s: float) -> list[Action]:
        if not self.level:
            return []
        if self.safe_since is None:
            self.safe_since = now_s
        if now_s - self.safe_since < self.params.thaw_s:
            return []
        out = []
        for name, done in sorted(self.level.items()):
            if done >= STEPS.index("freeze"):  # frozen, or killed while frozen: a newcomer must not freeze
                out.append(Action(name, "thaw", f"safe for {self.params.thaw_s:g} s"))
            out.append(Action(name, "release", "the policy's memory.high again"))
        self.level.clear()
        self.last_step_at.clear()
        self.noticed_at.clear()
        return out

    def state(self, name: str) -> str:
        done = self.level.get(name, -1)
        if name in self.noticed_at and done < STEPS.index("kill"):
            return "notice"
        return STEPS[done] if done >= 0 else "ok"
