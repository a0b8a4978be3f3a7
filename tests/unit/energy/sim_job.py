"""A simulated training job on a fake GPU, for the auto search's runner and the daemon's tests.

The step time under a power cap comes from test_auto_search.Job (above the job's own draw a cap
changes nothing; below, the compute share slows down as the SM clock drops); the board draws
min(need, cap), which FakeNvml integrates into its energy counter over the fake clock. `advance`
moves the clock and the job's completed steps together at the cap the GPU has now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.unit.energy.fake_nvml import FakeGpu
from tests.unit.energy.test_auto_search import Job


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class SimJob:
    job: Job
    gpus: list[FakeGpu]
    clock: Clock
    progress: float = 0.0  # steps completed, fractional
    cap_history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for g in self.gpus:
            g.demand_mw = round(self.job.need_w * 1000)

    @property
    def cap_w(self) -> float:
        return min(g.enforced_mw for g in self.gpus) / 1000

    @property
    def step(self) -> int:
        return int(self.progress)

    def advance(self, dt: float) -> None:
        """`dt` seconds of training at the present cap (the caller changes caps between calls)."""
        self.progress += dt / self.job.step_time_s(self.cap_w)
        self.clock.t += dt
