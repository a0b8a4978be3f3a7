"""The `auto` energy search: the setting (a GPU power limit in W, a locked SM clock in MHz, a CPU
max frequency in kHz: any number where lower saves power) that spends the least energy per
training step while keeping the step time within a bound of the fastest (default 5 %).

A pure, clock-free state machine: it decides, the caller measures. Loop:

    search = AutoSearch([700, 650, ..., 200])
    while isinstance(action := search.next_action(), Measure):
        apply(action.setting); m = measure(action.steps)   # whole steps, at that setting
        search.record(m)
    # action is Hold: keep action.setting; keep feeding search.record() while holding

How it searches, and why:
- It measures the top setting first (the baseline step time), then steps down one setting at a
  time. Step time only grows as power or clocks go down, so the first setting past the bound ends
  the walk: everything below it is slower still.
- A setting that measures past the bound is measured once more before the walk stops on it, and
  judged by the mean of both: one noisy window must not end the search early.
- Energy per step is not monotonic (race-to-idle: a low cap can stretch the step so much that the
  static power costs more than the dynamic power saved), so every setting within the bound is
  kept and the lowest-energy one is chosen, not simply the last.
- While holding, every measurement is checked against the one the choice was made on; step time
  drifting by more than `drift` (the job changed phase, another tenant, thermal) in
  `drift_confirmations` consecutive measurements restarts the search from the top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Measurement:
    setting: float
    steps: int  # whole training steps the window covered
    energy_per_step_j: float
    step_time_s: float


@dataclass(frozen=True)
class Measure:
    """Run `steps` whole steps at `setting`, then `record` the measurement."""

    setting: float
    steps: int
    why: str  # "baseline", "descend", "confirm"


@dataclass(frozen=True)
class Hold:
    """The search is done: keep `setting`; keep recording measurements at it (drift check)."""

    setting: float
    energy_per_step_j: float
    step_time_s: float
    slowdown: float  # step time / baseline step time - 1
    steps: int  # how many steps each drift-check measurement should cover


_TIE = 1e-9  # relative energy difference below which two settings cost the same


class Phase(StrEnum):
    BASELINE = "baseline"
    DESCEND = "descend"
    CONFIRM = "confirm"
    HOLD = "hold"


@dataclass(frozen=True)
class SettingResult:
    setting: float
    energy_per_step_j: float
    step_time_s: float
    slowdown: float
    within_bound: bool
    measurements: int


class AutoSearch:
    def __init__(self, settings: Sequence[float], max_slowdown: float = 0.05, steps_per_measurement: int = 20,
                 drift: float = 0.10, drift_confirmations: int = 2) -> None:
        ordered = sorted({float(s) for s in settings}, reverse=True)
        if not ordered or not all(math.isfinite(s) for s in ordered):
            raise ValueError(f"auto search needs at least one finite setting, got {list(settings)!r}")
        if not 0 <= max_slowdown < 1 or not 0 < drift < 1:
            raise ValueError(f"max_slowdown {max_slowdown} must be in [0, 1), drift {drift} in (0, 1)")
        if steps_per_measurement < 1 or drift_confirmations < 1:
            raise ValueError("steps_per_measurement and drift_confirmations must be at least 1")
        self.settings = tuple(ordered)
        self.max_slowdown = max_slowdown
        self.steps = steps_per_measurement
        self.drift = drift
        self.drift_confirmations = drift_confirmations
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.phase = Phase.BASELINE
        self._index = 0
        self._samples: dict[float, list[Measurement]] = {}
        self._baseline_s = 0.0
        self._hold: Hold | None = None
        self._drift_strikes = 0

    # -- what the caller does next -----------------------------------------------------------------

    def next_action(self) -> Measure | Hold:
        if self.phase is Phase.HOLD:
            assert self._hold is not None
            return self._hold
        return Measure(self.settings[self._index], self.steps, self.phase.value)

    def record(self, m: Measurement) -> None:
        """A measurement of what next_action() asked for (or, while holding, at the held setting)."""
        expected = self.next_action().setting
        if m.setting != expected:
            raise ValueError(f"measured setting {m.setting:g}, but the search asked for {expected:g}")
        if m.steps < self.steps:
            raise ValueError(f"measurement covers {m.steps} steps, the search asked for {self.steps}")
        if not (m.step_time_s > 0 and m.energy_per_step_j >= 0):
            raise ValueError(f"step time {m.step_time_s} s / energy {m.energy_per_step_j} J is not a measurement")
        if self.phase is Phase.HOLD:
            self._check_drift(m)
            return
        self._samples.setdefault(m.setting, []).append(m)
        if self.phase is Phase.BASELINE:
            self._baseline_s = self._mean(m.setting)[1]
            self._advance()
        elif self.phase is Phase.DESCEND:
            if self._within(m.setting):
                self._advance()
            else:
                self.phase = Phase.CONFIRM
        elif self.phase is Phase.CONFIRM:
            if self._within(m.setting):
                self._advance()
            else:
                self._finish()  # confirmed past the bound: every lower setting is slower still

    # -- internals -----------------------------------------------------------------------------

    def _mean(self, setting: float) -> tuple[float, float]:
        """(energy per step, step time) over every measurement at `setting`, weighted by steps."""
        ms = self._samples[setting]
        n = sum(x.steps for x in ms)
        # Weights first, so that one measurement's mean is that measurement to the last bit.
        w = [x.steps / n for x in ms]
        return (sum(wi * x.energy_per_step_j for wi, x in zip(w, ms, strict=True)),
                sum(wi * x.step_time_s for wi, x in zip(w, ms, strict=True)))

    def _slowdown(self, setting: float) -> float:
        return self._mean(setting)[1] / self._baseline_s - 1

    def _within(self, setting: float) -> bool:
        return self._slowdown(setting) <= self.max_slowdown

    def _advance(self) -> None:
        self._index += 1
        if self._index >= len(self.settings):
            self._finish()
        else:
            self.phase = Phase.DESCEND

    def _finish(self) -> None:
        kept = [r for r in self.results() if r.within_bound]
        # Lowest energy; on a tie the higher (faster) setting, which comes first. "Tie" within a
        # rounding error: every setting above the job's own draw costs the same, and the mean of
        # one measurement must not pick among them by its last bit.
        lowest = min(r.energy_per_step_j for r in kept)
        best = next(r for r in kept if r.energy_per_step_j <= lowest * (1 + _TIE))
        self._hold = Hold(best.setting, best.energy_per_step_j, best.step_time_s, best.slowdown, self.steps)
        self.phase = Phase.HOLD
        self._drift_strikes = 0

    def _check_drift(self, m: Measurement) -> None:
        assert self._hold is not None
        if abs(m.step_time_s / self._hold.step_time_s - 1) > self.drift:
            self._drift_strikes += 1
            if self._drift_strikes >= self.drift_confirmations:
                self.restarts += 1
                self._start()
        else:
            self._drift_strikes = 0

    # -- what it found -------------------------------------------------------------------------

    def results(self) -> list[SettingResult]:
        """Every setting measured so far, highest first (the one the walk stopped on included)."""
        out = []
        for s in self.settings:
            if s not in self._samples:
                continue
            e, t = self._mean(s)
            slow = t / self._baseline_s - 1
            out.append(SettingResult(s, e, t, slow, slow <= self.max_slowdown, len(self._samples[s])))
        return out

    @property
    def chosen(self) -> Hold | None:
        return self._hold if self.phase is Phase.HOLD else None
