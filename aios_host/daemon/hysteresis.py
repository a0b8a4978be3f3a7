"""Which of a plan's writes to make now: a decision must hold, and a file must rest between changes.

The plan already leaves alone a value inside its deadband (plan.py: cpu.weight within 10% of what
the kernel has). On top of that, for every value write (cgroupfs file or systemd property):
- hold: the same wanted value (within the deadband) must come out of `hold_ticks` consecutive
  ticks before it is written, so one noisy tick never reaches the kernel;
- cool-down: at most one change per file per `cooldown_s`;
- except a rise: a value above the one in force (the one we last wrote, else the kernel's) gives
  the class more (cpu.weight, memory.low/min, a looser memory.high/max or cpu.max quota) and is
  written at once, as Kubernetes' autoscaler scales up at once and down only after a stable
  window, and senpai backs off at once. Falls keep the hold and the cool-down, so a flapping
  decision still reaches the kernel at most once per cool-down (on the way down). Measured in the
  VM isolation bench: holding a rise 3 ticks + 10 s left the protected server's weight low for the
  first seconds of every busy phase.
- and a fall that makes room for a higher tier: when the same decision raises a class of a higher
  priority on the same controller (that rise is written at once, or it is a rise of the class's
  allocation that no write of its own carries: a unit-matched class whose CPUWeight is already at
  its cap), the lower class's fall goes with it, unheld. A share is a ratio: raising the
  protected class's weight while the batch class keeps the weight it took in a light phase gives
  half the protection. Measured in the VM isolation bench: each busy phase after a light one ran
  ~10 s (the batch weight's cool-down) at half its protection. The other direction (a lower tier
  rising while a higher one falls) keeps the hold, so a flapping decision is still damped on one
  side.
Structural steps (mkdir, enabling a controller, moving a matched process into its class) are
never held: they carry no number to be noisy about, and a process waits in the wrong cgroup.
A wanted value that disappears from the plan (the kernel already has it) forgets its hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aios_host.policy.plan import CPU_WEIGHT_DEADBAND, Write

_HELD_OPS = frozenset(("write", "unit"))


def _close(path: str, a: str, b: str) -> bool:
    """Whether two wanted values are the same decision (cpu.weight / CPUWeight: within the deadband)."""
    if a == b:
        return True
    if (path.endswith("/cpu.weight") or path.endswith("/CPUWeight")) and a.isdigit() and b.isdigit():
        return abs(int(a) - int(b)) <= CPU_WEIGHT_DEADBAND * int(b)
    return False


def magnitude(path: str, value: str) -> float | None:
    """A control file value as one comparable number ("max" is infinite; cpu.max: its quota;
    io.weight "default N": N); None when it is not a number (JSON originals, "+cpu")."""
    file = path.rpartition("/")[2]
    tokens = value.split()
    if not tokens:
        return None
    tok = tokens[1] if file in ("io.weight", "IOWeight") and tokens[0] == "default" and len(tokens) > 1 \
        else tokens[0]
    if tok == "max":
        return float("inf")
    try:
        return float(int(tok))
    except ValueError:
        return None


@dataclass
class _Wanted:
    value: str
    ticks: int


class Hysteresis:
    def __init__(self, hold_ticks: int = 3, cooldown_s: float = 10.0) -> None:
        if hold_ticks < 1 or not cooldown_s >= 0:
            raise ValueError("hold_ticks >= 1 and cooldown_s >= 0")
        self.hold_ticks = hold_ticks
        self.cooldown_s = cooldown_s
        self._wanted: dict[str, _Wanted] = {}
        self._held: set[str] = set()  # the paths the last select() held back
        self._written_at: dict[str, float] = {}
        self._written_value: dict[str, str] = {}

    def _rise(self, w: Write) -> bool:
        before = self._written_value.get(w.path, w.old)
        a = magnitude(w.path, w.new)
        b = magnitude(w.path, before) if before is not None else None
        return a is not None and b is not None and a > b

    def select(self, writes: Iterable[Write], now_s: float,
               tier_of: Callable[[str], int | None] | None = None,
               rising: Mapping[str, int] | None = None) -> tuple[list[Write], int]:
        """(the writes to make now, how many value writes are held back). `tier_of` gives the
        priority of the class a written path belongs to (None: no class). `rising`: per
        controller, the highest tier whose allocation rose in this decision, whether or not that
        rise is a write of its own (a unit-matched class's CPUWeight can sit at its cap while its
        share must come from the classes under it)."""
        writes = list(writes)
        now_writes: list[Write] = []
        self._held = set()
        seen: set[str] = set()
        # the highest tier rising on each controller in this decision: lower tiers' falls go with it
        top_rise: dict[str | None, int] = dict(rising or {}) if tier_of is not None else {}
        if tier_of is not None:
            for w in writes:
                tier = tier_of(w.path) if w.op in _HELD_OPS and self._rise(w) else None
                if tier is not None and tier > top_rise.get(w.controller, -1):
                    top_rise[w.controller] = tier
        for w in writes:
            if w.op not in _HELD_OPS:
                now_writes.append(w)
                continue
            seen.add(w.path)
            cur = self._wanted.get(w.path)
            if cur is None or not _close(w.path, w.new, cur.value):
                cur = self._wanted[w.path] = _Wanted(w.new, 1)
            else:
                cur.ticks += 1
            rested = now_s - self._written_at.get(w.path, -float("inf")) >= self.cooldown_s
            tier = tier_of(w.path) if top_rise else None
            makes_room = tier is not None and tier < top_rise.get(w.controller, -1)
            if self._rise(w) or makes_room or (cur.ticks >= self.hold_ticks and rested):
                now_writes.append(w)
            else:
                self._held.add(w.path)
        for path in [p for p in self._wanted if p not in seen]:
            del self._wanted[path]
        return now_writes, len(self._held)

    def next_due_s(self) -> float:
        """When a held write could next be made without the decision changing: at once (-inf)
        while one still counts its hold ticks (it needs the next decisions), else when the first
        cool-down ends (+inf: nothing held). Deciding again before then only repeats the decision."""
        due = float("inf")
        for path in self._held:  # not a selected write the loop could not make (unavailable, failed)
            cur = self._wanted[path]
            if cur.ticks < self.hold_ticks:
                return -float("inf")
            due = min(due, self._written_at.get(path, -float("inf")) + self.cooldown_s)
        return due

    def written(self, writes: Iterable[Write], now_s: float) -> None:
        for w in writes:
            if w.op in _HELD_OPS:
                self._written_at[w.path] = now_s
                self._written_value[w.path] = w.new
                self._wanted.pop(w.path, None)

    def reset(self) -> None:
        """A new policy: its first decision is held like any other, but nothing is resting."""
        self._wanted.clear()
        self._held.clear()
        self._written_at.clear()
        self._written_value.clear()
