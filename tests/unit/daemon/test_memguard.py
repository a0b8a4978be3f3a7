"""The memory guard's decisions on their own: senpai's loop, time to OOM, the escalation."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from aios_host.daemon.memguard import (
    NOTICE_HEADROOM_BYTES,
    Escalation,
    GuardClass,
    GuardParams,
    MemoryEvents,
    OomClock,
    SenpaiLoop,
    SenpaiParams,
    hit_own_limit,
)

MIB = 1 << 20


def test_senpai_starts_at_usage_probes_down_when_calm_and_backs_off_at_once():
    s = SenpaiLoop(SenpaiParams(min_bytes=64 * MIB))
    assert s.step(0, 1000 * MIB, 0) == 1000 * MIB  # starts where the class is
    highs = [s.step(0, 1000 * MIB, 0) for _ in range(18)]  # no stall at all: probe every 6 ticks
    probes = [h for h in highs if h is not None]
    assert len(probes) == 3 and probes[0] == (1000 * MIB - 10 * MIB) // 4096 * 4096  # 1% (max_probe)
    assert all(b < a for a, b in zip(probes, probes[1:], strict=False))
    before = s.limit
    up = s.step(400_000, 1000 * MIB, 0)  # 400 ms of stall in one tick: 40x the target
    assert up is not None and up > before  # backs off at once, not after the interval


@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 8 << 30)), min_size=1, max_size=60),
       st.integers(0, 4 << 30))
def test_senpai_never_goes_below_the_floor_or_the_minimum(steps, floor):
    p = SenpaiParams(min_bytes=100 * MIB, max_bytes=16 << 30)
    s = SenpaiLoop(p)
    total = 0
    for stall, current in steps:
        total += stall
        new = s.step(total, current, floor)
        if new is not None:
            assert new >= min(p.max_bytes, max(p.min_bytes, floor)) // 4096 * 4096
            assert new <= p.max_bytes and new % 4096 == 0


def test_a_class_of_unreclaimable_memory_is_not_squeezed_below_it():
    s = SenpaiLoop(SenpaiParams(min_bytes=MIB))
    s.step(0, 900 * MIB, 800 * MIB)
    for _ in range(600):  # ten minutes of calm
        s.step(0, 900 * MIB, 800 * MIB)
    assert s.limit is not None and s.limit >= 800 * MIB


def test_time_to_oom_follows_the_slope():
    c = OomClock()
    assert c.update(0.0, 1000 * MIB, 1000 * MIB) == math.inf
    assert c.update(1.0, 1100 * MIB, 900 * MIB) == 9.0  # growth taken at once: 100 MiB/s, 900 MiB left
    assert c.update(2.0, 1150 * MIB, 850 * MIB) > 8.5  # slower growth: the slope fades, time grows
    assert c.update(3.0, 1000 * MIB, 1000 * MIB) == math.inf  # memory freed: no growth now
    assert c.update(4.0, 1000 * MIB, 0) == 0.0


def test_time_to_oom_is_zero_at_the_limit_and_the_slope_goes_on():
    c = OomClock()
    c.update(0.0, 1000 * MIB, 1000 * MIB)
    assert c.update(1.0, 1000 * MIB, 1000 * MIB, at_limit=True) == 0.0  # flat use, headroom left: still 0
    assert c.update(2.0, 1100 * MIB, 900 * MIB) == 9.0  # the slope was tracked through it


def test_hit_own_limit_is_a_rise_of_max_or_oom():
    ev = MemoryEvents(high_total=0, max_total=3, oom_total=1, oom_kill_total=1)
    assert not hit_own_limit(None, ev)  # first reading: when the counts grew is unknown
    assert not hit_own_limit(ev, None)
    assert not hit_own_limit(ev, ev._replace(high_total=9, oom_kill_total=5))  # not its memory.max
    assert hit_own_limit(ev, ev._replace(max_total=4))
    assert hit_own_limit(ev, ev._replace(oom_total=2))
    assert not hit_own_limit(ev, ev._replace(max_total=0, oom_total=0))  # a new cgroup: a new origin
    assert not hit_own_limit(MemoryEvents(), ev)  # keys the kernel lacked
    assert MemoryEvents.of({"low": 0, "high": 2, "max": 1, "oom": 0}) == MemoryEvents(2, 1, 0, None)


def _classes(batch_mb=1000, populated=True):
    return [GuardClass("prot", 10, True, True, 500 * MIB), GuardClass("web", 5, False, True, 300 * MIB),
            GuardClass("batch", 0, False, populated, batch_mb * MIB)]


def test_escalation_acts_on_the_lowest_tier_tighten_freeze_kill_in_order_then_recovers():
    e = Escalation(GuardParams(danger_available_bytes=200 * MIB, safe_available_bytes=400 * MIB, step_s=2,
                               thaw_s=5))
    assert e.step(0, 1000 * MIB, math.inf, _classes()) == []  # safe
    steps = []
    for t in range(0, 6):  # t=5: the kill at 4 is still freeing memory, the next tier waits
        steps += [(t, a.cls, a.step) for a in e.step(t, 100 * MIB, 3.0, _classes())]
    assert steps == [(0, "batch", "tighten"), (2, "batch", "freeze"), (4, "batch", "kill")]
    # batch is done; still in danger: the next tier up, never the protected class
    acts = e.step(7, 100 * MIB, 3.0, _classes(populated=False))
    assert [(a.cls, a.step) for a in acts] == [("web", "tighten")]
    assert e.state("batch") == "kill" and e.state("prot") == "ok"
    # between the danger and the safe level: still acting state, nothing handed back
    assert e.step(8, 300 * MIB, math.inf, _classes(populated=False)) == []
    assert e.step(9, 800 * MIB, math.inf, _classes(populated=False)) == []  # safe, waiting thaw_s
    back = e.step(14, 800 * MIB, math.inf, _classes(populated=False))
    assert {(a.cls, a.step) for a in back} == {("batch", "thaw"), ("batch", "release"), ("web", "release")}
    assert e.state("web") == "ok"


def test_a_frozen_class_is_thawed_when_the_danger_has_passed():
    e = Escalation(GuardParams(step_s=1, thaw_s=3))
    e.step(0, 0, 0.0, _classes())
    e.step(1, 0, 0.0, _classes())
    assert e.state("batch") == "freeze"
    e.step(2, 8 << 30, math.inf, _classes())
    back = e.step(5, 8 << 30, math.inf, _classes())
    assert [(a.cls, a.step) for a in back] == [("batch", "thaw"), ("batch", "release")]


def test_protected_classes_are_never_acted_on():
    e = Escalation(GuardParams(step_s=0))
    only_protected = [GuardClass("prot", 0, True, True, 4 << 30)]
    for t in range(10):
        assert e.step(t, 0, 0.0, only_protected) == []


def test_a_job_that_asked_for_a_notice_gets_it_and_its_grace_before_the_kill():
    e = Escalation(GuardParams(danger_available_bytes=200 * MIB, safe_available_bytes=400 * MIB, step_s=1,
                               thaw_s=5))
    prot, web = _classes()[:2]
    batch = GuardClass("batch", 0, False, True, 1000 * MIB, notice_grace_s=5.0)
    steps, values = [], {}
    for t in range(0, 8):  # (at 8 the next tier, web, would be tightened: batch is done)
        acts = e.step(t, 100 * MIB, 3.0, [prot, web, batch])
        steps += [(t, a.cls, a.step) for a in acts]
        values.update({a.step: a.value for a in acts})
        if t == 2:
            assert e.state("batch") == "notice"
    # tighten, freeze, then the notice where the kill was due, and the kill after the grace of 5 s
    assert steps == [(0, "batch", "tighten"), (1, "batch", "freeze"), (2, "batch", "notice"), (7, "batch", "kill")]
    # tightened to its use; at the notice, room above it to run the checkpoint handler unthrottled
    assert values["tighten"] == 1000 * MIB and values["notice"] == 1000 * MIB + NOTICE_HEADROOM_BYTES
    assert e.state("batch") == "kill"


def test_the_danger_passing_during_the_grace_spares_the_job():
    e = Escalation(GuardParams(danger_available_bytes=200 * MIB, safe_available_bytes=400 * MIB, step_s=1,
                               thaw_s=2))
    batch = GuardClass("batch", 0, False, True, 1000 * MIB, notice_grace_s=30.0)
    for t in range(0, 3):
        e.step(t, 100 * MIB, 3.0, [batch])
    assert e.state("batch") == "notice"
    e.step(3, 800 * MIB, math.inf, [batch])
    back = e.step(6, 800 * MIB, math.inf, [batch])
    assert {a.step for a in back} == {"thaw", "release"} and e.state("batch") == "ok"
    assert not [a for t in range(7, 12) for a in e.step(t, 800 * MIB, math.inf, [batch])]  # no kill later


def test_memory_pressure_full_is_a_danger_only_when_the_policy_sets_a_limit():
    batch = GuardClass("batch", 0, False, True, 1000 * MIB)
    plenty = 4000 * MIB  # MemAvailable says all is well: the host thrashes on its page cache
    off = Escalation(GuardParams(step_s=0))
    assert off.danger(plenty, math.inf, 80.0) is None and off.step(0, plenty, math.inf, [batch], 80.0) == []
    on = Escalation(GuardParams(step_s=0, danger_pressure_full_pct=20.0))
    assert on.danger(plenty, math.inf, 19.9) is None
    assert on.danger(plenty, math.inf, None) is None  # no PSI on this host: no opinion
    assert "memory pressure full avg10 25.0% >= 20%" == on.danger(plenty, math.inf, 25.0)
    assert [a.step for a in on.step(0, plenty, math.inf, [batch], 25.0)] == ["tighten"]
