"""Each class's demand inputs, smoothed over ticks (an EWMA per class and signal).

- CPU: the rate of cpu.stat usage_usec between two ticks, smoothed with a half-life of
  `half_life_s` (alpha = 1 - 2^(-dt / half_life), so irregular ticks weigh by their length);
- run-queue p99 (sched probe): smoothed the same way; PSI avg10 is the kernel's own 10 s average
  and is taken as it is;
- a class with nothing running (cgroup.events: populated 0 in all its cgroups) demands nothing:
  its smoothed values drop to 0 at once (it keeps its guaranteed mins in the solver). Without this
  an empty class, having no measurement, asked for the whole host;
- a class seen for the first time has no rate yet: cpu None for one tick (the solver then uses
  its max, as a one-shot `policy apply` does), held back by the hysteresis like any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aios_host.daemon.measure import ClassProbeFigures, ClassReading
from aios_host.policy.demand import ClassUsage


def ewma(prev: float | None, value: float, dt_s: float, half_life_s: float) -> float:
    if prev is None or half_life_s <= 0:
        return value
    alpha = 1.0 - 2.0 ** (-dt_s / half_life_s)
    return prev + alpha * (value - prev)


@dataclass
class _State:
    usage_usec: int | None = None
    at_s: float | None = None
    cpu: float | None = None
    runq: float | None = None


class UsageSmoother:
    def __init__(self, half_life_s: float = 5.0) -> None:
        self.half_life_s = half_life_s
        self._state: dict[str, _State] = {}

    def update(
        self,
        readings: Mapping[str, ClassReading],
        probes: Mapping[str, ClassProbeFigures] | None,
        now_s: float,
    ) -> dict[str, ClassUsage]:
        out: dict[str, ClassUsage] = {}
        for name, r in readings.items():
            st = self._state.setdefault(name, _State())
            p = probes.get(name) if probes else None
            if not r.populated:
                st.cpu = st.runq = 0.0
                st.usage_usec, st.at_s = r.cpu_usage_usec, now_s
                out[name] = ClassUsage(cpu_cores=0.0, memory_bytes=0.0)
                continue
            if r.cpu_usage_usec is not None and st.usage_usec is not None and st.at_s is not None:
                dt = now_s - st.at_s
                if dt > 0:
                    rate = max(0, r.cpu_usage_usec - st.usage_usec) / 1e6 / dt
                    st.cpu = ewma(st.cpu, rate, dt, self.half_life_s)
                    if p is not None and p.runq_p99_usec is not None:
                        st.runq = ewma(st.runq, p.runq_p99_usec, dt, self.half_life_s)
            elif p is not None and p.runq_p99_usec is not None and st.runq is None:
                st.runq = p.runq_p99_usec
            st.usage_usec, st.at_s = r.cpu_usage_usec, now_s
            out[name] = ClassUsage(
                cpu_cores=st.cpu,
                memory_bytes=float(r.memory_current_bytes) if r.memory_current_bytes is not None else None,
                cpu_some_avg10=r.cpu_some_avg10 or 0.0,
                memory_some_avg10=r.memory_some_avg10 or 0.0,
                runq_p99_usec=st.runq if p is not None else None,
            )
        for gone in [n for n in self._state if n not in readings]:
            del self._state[gone]
        return out
