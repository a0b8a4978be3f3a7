"""Each class's demand inputs, smoothed over ticks (an EWMA per class and signal).

- CPU: the rate of cpu.stat usage_usec between two ticks, smoothed with a half-life of
  `half_life_s` (alpha = 1 - 2^(-dt / half_life), so irregular ticks weigh by their length) on the
  way down and `rise_half_life_s` (default 0: at once) on the way up: fast attack, slow release,
  as autoscalers and senpai do. A class whose load comes back is given its share at the next
  decision; one that goes quiet keeps it a while (the VM isolation bench: a symmetric 5 s
  half-life left the protected server under-weighted for the first seconds of each busy phase);
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


def attack_release(prev: float | None, value: float, dt_s: float, rise_half_life_s: float,
                   fall_half_life_s: float) -> float:
    """An EWMA with one half-life for rises and another for falls."""
    rising = prev is None or value > prev
    return ewma(prev, value, dt_s, rise_half_life_s if rising else fall_half_life_s)


@dataclass
class _State:
    usage_usec: int | None = None
    at_s: float | None = None
    cpu: float | None = None
    runq: float | None = None


class UsageSmoother:
    def __init__(self, half_life_s: float = 5.0, rise_half_life_s: float = 0.0) -> None:
        self.half_life_s = half_life_s
        self.rise_half_life_s = rise_half_life_s
        self._state: dict[str, _State] = {}

    def update(
        self,
        readings: Mapping[str, ClassReading],
        probes: Mapping[str, ClassProbeFigures] | None,
        now_s: float,
    ) -> dict[str, ClassUsage]:
        out: dict[str, ClassUsage] = {}
        states = self._state
        for name, r in readings.items():
            st = states.get(name)
            if st is None:  # not setdefault: that builds a _State per class per tick
                st = states[name] = _State()
            p = probes.get(name) if probes else None
            if not r.populated:
                st.cpu = st.runq = 0.0
                st.usage_usec, st.at_s = r.cpu_usage_usec, now_s
                out[name] = ClassUsage(cpu_cores=0.0, memory_bytes=0.0)
                continue
            if not r.cpu_fresh:
                pass  # its usage was carried, not read: the next read's rate spans both ticks
            elif r.cpu_usage_usec is not None and st.usage_usec is not None and st.at_s is not None:
                dt = now_s - st.at_s
                if dt > 0:
                    rate = max(0, r.cpu_usage_usec - st.usage_usec) / 1e6 / dt
                    st.cpu = attack_release(st.cpu, rate, dt, self.rise_half_life_s, self.half_life_s)
                    if p is not None and p.runq_p99_usec is not None:
                        st.runq = attack_release(st.runq, p.runq_p99_usec, dt, self.rise_half_life_s,
                                                 self.half_life_s)
            elif p is not None and p.runq_p99_usec is not None and st.runq is None:
                st.runq = p.runq_p99_usec
            if r.cpu_fresh:
                st.usage_usec, st.at_s = r.cpu_usage_usec, now_s
            out[name] = ClassUsage(  # positional: cpu, memory, cpu PSI, memory PSI, run-queue p99
                st.cpu,
                float(r.memory_current_bytes) if r.memory_current_bytes is not None else None,
                r.cpu_some_avg10 or 0.0,
                r.memory_some_avg10 or 0.0,
                st.runq if p is not None else None,
            )
        if len(states) != len(out):
            for gone in [n for n in states if n not in readings]:
                del states[gone]
        return out
