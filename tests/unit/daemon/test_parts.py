"""The daemon's parts on their own: hysteresis, EWMA, slow sources, the journal of originals."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_host.actuate.state import DAEMON_RECORD, DaemonJournal, StateStore
from aios_host.daemon.hysteresis import Hysteresis, magnitude
from aios_host.daemon.measure import ClassReading
from aios_host.daemon.smoothing import UsageSmoother, ewma
from aios_host.daemon.sources import SlowSource
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write


def w(path: str, new: str, op: str = "write") -> Write:
    return Write(op, path, "old", new, "why")


def test_a_value_must_hold_for_n_ticks_and_rest_between_changes():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    assert h.select([w("/a/memory.max", "2")], 0) == ([], 1)
    assert h.select([w("/a/memory.max", "2")], 1) == ([], 1)
    now, held = h.select([w("/a/memory.max", "2")], 2)
    assert [x.new for x in now] == ["2"] and held == 0
    h.written(now, 2)
    for t in (3, 4, 5):  # a lower value holds 3 ticks, but the file rests until t=12
        assert h.select([w("/a/memory.max", "1")], t)[0] == []
    assert [x.new for x in h.select([w("/a/memory.max", "1")], 12)[0]] == ["1"]


def test_a_flapping_decision_is_never_written():
    h = Hysteresis(hold_ticks=2, cooldown_s=0)
    for t in range(20):
        assert h.select([w("/a/memory.high", str(t % 2))], t)[0] == []


def test_cpu_weight_within_the_deadband_counts_as_the_same_decision():
    h = Hysteresis(hold_ticks=3, cooldown_s=0)
    h.select([w("/a/cpu.weight", "100")], 0)
    h.select([w("/a/cpu.weight", "105")], 1)
    assert h.select([w("/a/cpu.weight", "97")], 2)[0]


def test_structural_steps_are_never_held():
    h = Hysteresis(hold_ticks=5, cooldown_s=100)
    steps = [w("/a", "", "mkdir"), w("/cgroup.subtree_control", "+cpu", "enable"), w("/a/cgroup.procs", "7", "move")]
    assert h.select(steps, 0) == (steps, 0)


@given(st.floats(0, 1e3), st.floats(0, 1e3), st.floats(0.01, 100), st.floats(0.1, 100))
def test_ewma_stays_between_old_and_new(prev, value, dt, half_life):
    out = ewma(prev, value, dt, half_life)
    assert min(prev, value) - 1e-9 <= out <= max(prev, value) + 1e-9


def test_ewma_weighs_by_elapsed_time():
    one_half_life = ewma(0.0, 8.0, 5.0, 5.0)
    assert one_half_life == pytest.approx(4.0)
    assert ewma(0.0, 8.0, 1.0, 5.0) < one_half_life


def test_an_empty_class_drops_to_zero_at_once():
    s = UsageSmoother(half_life_s=5)
    busy = ClassReading(True, 0, None, None, None, None)
    s.update({"a": busy}, None, 0)
    u = s.update({"a": ClassReading(True, 4_000_000, None, None, None, None)}, None, 1)
    assert u["a"].cpu_cores and u["a"].cpu_cores > 0
    u = s.update({"a": ClassReading(False, 4_000_000, None, None, None, None)}, None, 2)
    assert u["a"].cpu_cores == 0.0


def test_a_stalled_source_gives_a_stale_sample_never_a_stalled_caller():
    gate = threading.Event()
    calls = []

    def sample() -> int:
        calls.append(1)
        if len(calls) > 1:
            gate.wait(30)  # the second read hangs, like a bcc map walk on a wedged system
        return len(calls)

    src = SlowSource("slow", sample, interval_s=0.01, deadline_s=0.2).start()
    try:
        assert src.wait_ready(5)
        assert src.latest().value == 1
        time.sleep(0.4)
        t0 = time.monotonic()
        got = src.latest()
        assert time.monotonic() - t0 < 0.05
        assert got.value == 1 and not got.fresh and src.skips >= 1
        assert not src.health().ok
    finally:
        gate.set()
        src.stop()


def test_a_source_that_cannot_start_is_reported_not_raised():
    def setup() -> None:
        raise RuntimeError("bcc: cannot compile\nmore")

    src = SlowSource("probes", lambda: 1, 0.01, 1.0, setup=setup).start()
    assert not src.wait_ready(5)
    h = src.health()
    assert not h.ok and h.last_error == "bcc: cannot compile"
    src.stop()


def test_the_journal_keeps_the_first_original_of_every_path(tmp_path):
    store = StateStore(SysRoot(tmp_path))
    j = DaemonJournal(store, "p.toml")
    assert j.open() == 0
    j.record([Write("write", "/x/memory.max", "max", "100", "r")])
    j.record([Write("write", "/x/memory.max", "100", "200", "r"), Write("mkdir", "/y", None, "", "r")])
    # a crash: a new daemon adopts the record
    j2 = DaemonJournal(store, "p.toml")
    assert j2.open() == 2
    j2.record([Write("write", "/x/memory.max", "200", "300", "r")])
    recs = store.load()
    assert [r.id for r in recs] == [DAEMON_RECORD]
    by_path = {x.path: x for x in recs[0].writes}
    assert by_path["/x/memory.max"].old == "max" and by_path["/x/memory.max"].new == "300"


def test_concurrent_journal_writers_lose_no_record(tmp_path):
    store = StateStore(SysRoot(tmp_path))
    j = DaemonJournal(store, "p.toml")
    j.open()

    def cli_applies() -> None:
        for i in range(20):
            with store.locked():
                recs, _ = store.begin(f"cli-{i}", [Write("write", f"/c/{i}", "0", "1", "r")])

    t = threading.Thread(target=cli_applies)
    t.start()
    for i in range(20):
        j.record([Write("write", f"/d/{i}", "0", "1", "r")])
    t.join()
    recs = store.load()
    assert len([r for r in recs if r.policy.startswith("cli-")]) == 20
    assert len(next(r for r in recs if r.id == DAEMON_RECORD).writes) == 20


def test_a_rise_is_written_at_once_a_fall_holds_and_rests():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    up = Write("write", "/a/cpu.weight", "100", "5000", "why")
    now, held = h.select([up], 0)
    assert now == [up] and held == 0
    h.written(now, 0)
    down = Write("write", "/a/cpu.weight", "5000", "100", "why")
    for t in range(1, 10):  # held 3 ticks, then resting until t=10
        assert h.select([down], t)[0] == []
    assert h.select([down], 10)[0] == [down]


def test_a_held_write_is_due_at_once_while_it_counts_ticks_then_when_its_file_has_rested():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    assert h.next_due_s() == float("inf")  # nothing held
    up = Write("write", "/a/cpu.weight", "100", "5000", "why")
    h.written(h.select([up], 0)[0], 0)
    down = Write("write", "/a/cpu.weight", "5000", "100", "why")
    h.select([down], 1)
    assert h.next_due_s() == -float("inf")  # 1 of 3 ticks: the next decisions are needed
    h.select([down], 2)
    h.select([down], 3)
    assert h.next_due_s() == 10  # held 3 ticks: only the cool-down is left
    assert h.select([down], 10)[0] == [down]  # one decision at t=10 writes it
    h.written([down], 10)
    assert h.next_due_s() == float("inf")


def test_a_selected_write_the_loop_could_not_make_does_not_make_a_held_one_due():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    up = Write("write", "/a/cpu.weight", "100", "5000", "why")
    h.written(h.select([up], 0)[0], 0)
    down = Write("write", "/a/cpu.weight", "5000", "100", "why")
    refused = Write("write", "/b/cpu.weight", "100", "200", "why")  # a rise: selected, never written
    for t in (1, 2, 3):
        now, held = h.select([down, refused], t)
        assert now == [refused] and held == 1
    assert h.next_due_s() == 10  # the held fall's cool-down, not "at once" for the refused write


def test_a_flapping_value_rises_once_and_never_falls_back_within_the_hold():
    h = Hysteresis(hold_ticks=3, cooldown_s=0)
    writes = 0
    cur = "100"
    for t in range(30):
        new = "200" if t % 2 == 0 else "100"
        if new == cur:
            h.select([], t)
            continue
        now, _ = h.select([Write("write", "/a/memory.low", cur, new, "why")], t)
        h.written(now, t)
        writes += len(now)
        cur = now[0].new if now else cur
    assert writes == 1 and cur == "200"


@pytest.mark.parametrize("path,value,expect", [
    ("/a/memory.max", "max", float("inf")), ("/a/cpu.max", "50000 100000", 50000.0),
    ("/a/cpu.max", "max 100000", float("inf")), ("/a/io.weight", "default 100", 100.0),
    ("u.service/IOWeight", "default 1000", 1000.0), ("/a/cgroup.subtree_control", "+cpu", None),
    ("u.service/cpu.weight", '{"CPUWeight": 1}', None), ("/a/memory.low", "", None),
])
def test_magnitude_of_control_values(path, value, expect):
    assert magnitude(path, value) == expect


def test_usage_rises_at_once_and_falls_with_the_half_life():
    s = UsageSmoother(half_life_s=5)
    reading = lambda usec: ClassReading(True, usec, None, None, None, None)  # noqa: E731
    s.update({"a": reading(0)}, None, 0)
    assert s.update({"a": reading(100_000)}, None, 1)["a"].cpu_cores == pytest.approx(0.1)
    assert s.update({"a": reading(2_100_000)}, None, 2)["a"].cpu_cores == pytest.approx(2.0)
    falling = s.update({"a": reading(2_100_000)}, None, 7)["a"].cpu_cores  # idle for one half-life
    assert falling == pytest.approx(1.0)


def _cw(path: str, old: str, new: str) -> Write:
    return Write("write", path, old, new, "why", "cpu")


TIERS = {"/cg/prot/": 10, "/cg/batch/": 0, "/cg/web/": 5}


def _tier(path: str) -> int | None:
    return next((t for p, t in TIERS.items() if path.startswith(p)), None)


def test_a_fall_that_makes_room_for_a_higher_tier_goes_with_its_rise():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    h.written([_cw("/cg/batch/cpu.weight", "1", "139")], 0)  # batch got more in a light phase
    # busy again: prot rises, batch falls in the same decision; both at once, cool-down or not
    up, down = _cw("/cg/prot/cpu.weight", "5000", "10000"), _cw("/cg/batch/cpu.weight", "139", "1")
    assert h.select([up, down], 2, _tier) == ([up, down], 0)
    # without the tiers (or with no higher rise) the fall waits as before
    h2 = Hysteresis(hold_ticks=3, cooldown_s=10)
    h2.written([_cw("/cg/batch/cpu.weight", "1", "139")], 0)
    assert h2.select([up, down], 2) == ([up], 1)
    assert h2.select([down], 3, _tier) == ([], 1)


def test_an_allocation_rise_with_no_write_of_its_own_makes_room_too():
    """A unit-matched protected class whose CPUWeight already sits at its cap writes nothing when
    its allocation rises; the batch class's fall goes with that rise all the same."""
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    h.written([_cw("/cg/batch/cpu.weight", "1", "139")], 0)
    down = _cw("/cg/batch/cpu.weight", "139", "1")
    assert h.select([down], 2, _tier) == ([], 1)  # no rise anywhere: held
    assert h.select([down], 3, _tier, rising={"cpu": 10}) == ([down], 0)
    h2 = Hysteresis(hold_ticks=3, cooldown_s=10)
    h2.written([_cw("/cg/prot/cpu.weight", "10000", "5000")], 0)
    prot_down = _cw("/cg/prot/cpu.weight", "5000", "1000")
    assert h2.select([prot_down], 2, _tier, rising={"cpu": 5}) == ([], 1)  # above the rising tier: held
    assert h2.select([down], 2, _tier, rising={"memory": 10}) == ([], 1)  # another controller: held


def test_only_a_lower_tier_on_the_same_controller_goes_unheld():
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    web_up = _cw("/cg/web/cpu.weight", "100", "500")
    prot_down = _cw("/cg/prot/cpu.weight", "10000", "5000")  # higher than the rising tier: held
    batch_down = _cw("/cg/batch/cpu.weight", "100", "10")  # lower: goes
    batch_mem = Write("write", "/cg/batch/memory.high", "max", str(1 << 30), "why", "memory")  # other controller
    now, held = h.select([web_up, prot_down, batch_down, batch_mem], 0, _tier)
    assert now == [web_up, batch_down] and held == 2


@given(st.lists(st.tuples(st.sampled_from(sorted(TIERS)), st.integers(1, 10000).filter(lambda v: v != 100)),
                min_size=1, max_size=6))
def test_a_lower_tier_never_rises_past_the_hold_because_of_the_rule(changes):
    """The rule only ever lets falls through: whatever the decision, no write selected is a rise
    that the plain rule would hold, and every write let through early is a fall below a rising tier."""
    h = Hysteresis(hold_ticks=3, cooldown_s=10)
    writes = [_cw(f"{p}cpu.weight", "100", str(v)) for p, v in changes]
    plain = Hysteresis(hold_ticks=3, cooldown_s=10).select(writes, 0)[0]
    tiered = h.select(writes, 0, _tier)[0]
    extra = [x for x in tiered if x not in plain]
    rising = [_tier(x.path) for x in writes if int(x.new) > 100]
    for x in extra:
        assert int(x.new) < 100 and rising and _tier(x.path) < max(rising)


def test_a_source_is_not_late_before_its_first_deadline():
    """The daemon's first tick comes before the energy/probe threads' first sample: not a skip."""
    import threading

    t = [100.0]
    gate = threading.Event()
    src = SlowSource("slow", lambda: gate.wait(5) or 1, interval_s=1.0, deadline_s=3.0, clock=lambda: t[0]).start()
    try:
        got = src.latest()
        assert got.value is None and not got.fresh and src.skips == 0 and src.health().skips_total == 0
        t[0] += 3.5  # past the deadline and still nothing: now it is late
        assert src.latest().value is None and src.skips == 1
    finally:
        gate.set()
        src.stop()
