"""A simulated training job on a fake GPU, for the auto search's runner and the daemon's tests.

The step time under a power cap comes from test_auto_search.Job (above the job's own draw a cap
changes nothing; below, the compute share slows down as the SM clock drops); the board draws
min(need, cap), which FakeNvml integrates into its energy counter over the fake clock. `advance`
moves the clock and the job's completed steps together at the cap the GPU has now.

A MemJob is a memory-bound phase: it draws less than the lowest power limit (200 W), so no cap
binds (no SwPowerCap) and step time and power do not change with it; they change with the SM
clock the GPUs are locked to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.unit.energy.fake_nvml import FakeGpu
from tests.unit.energy.test_auto_search import Job


@dataclass(frozen=True)
class MemJob:
    static_w: float  # memory, leakage: whatever the SM clock
    dyn_w: float  # the SMs' share at the top clock, ~ f^exponent
    compute: float  # share of the step that scales with the SM clock
    t0_s: float
    exponent: float = 2.0
    top_mhz: int = 1980

    def power_w(self, mhz: float) -> float:
        return self.static_w + self.dyn_w * (mhz / self.top_mhz) ** self.exponent

    @property
    def need_w(self) -> float:
        return self.power_w(self.top_mhz)

    def step_time_s(self, mhz: float) -> float:
        return self.t0_s * ((1 - self.compute) + self.compute * self.top_mhz / mhz)

    def energy_j(self, mhz: float) -> float:
        return self.power_w(mhz) * self.step_time_s(mhz)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class SimJob:
    job: Job | MemJob
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
    def sm_clock_mhz(self) -> int:
        """The SM clock the job runs at: the top one, or the lowest lock's maximum."""
        return min(g.locked_mhz[1] if g.locked_mhz else g.graphics_clocks_mhz[0] for g in self.gpus)

    @property
    def step(self) -> int:
        return int(self.progress)

    def advance(self, dt: float) -> None:
        """`dt` seconds of training at the present cap (the caller changes caps between calls)."""
        if isinstance(self.job, MemJob):
            mhz = self.sm_clock_mhz
            assert self.job.power_w(mhz) <= self.cap_w, "a MemJob draws less than any cap"
            for g in self.gpus:  # FakeNvml integrates this draw over the interval at the next read
                g.demand_mw = round(self.job.power_w(mhz) * 1000)
            self.progress += dt / self.job.step_time_s(mhz)
        else:
            self.progress += dt / self.job.step_time_s(self.cap_w)
        self.clock.t += dt
