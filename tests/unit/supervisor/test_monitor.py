"""Heartbeats -> hangs and stragglers (pure; the clock is an argument)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aios_host.supervisor.monitor import HealthMonitor, Report, find_stragglers


def test_report_roundtrip_and_garbage() -> None:
    r = Report(3, 1, 42, 0.125, 0.1)
    assert Report.decode(r.encode()) == r
    assert Report.decode(Report(0, 0, 0, 0.0).encode()) == Report(0, 0, 0, 0.0, None)
    for junk in (b"", b"hello", b"aios1 x 0 0 0 -", b"aios1 1 2 3 4", b"\xff\xfe"):
        assert Report.decode(junk) is None


def test_stragglers_leave_one_out_median() -> None:
    # With N=2 the plain median includes the straggler itself; leave-one-out still finds it.
    assert find_stragglers({0: 0.1, 1: 0.35}, 2.0) == [1]
    assert find_stragglers({0: 0.1, 1: 0.11, 2: 0.1, 3: 0.5}, 2.0) == [3]
    assert find_stragglers({0: 0.1, 1: 0.19}, 2.0) == []
    assert find_stragglers({0: 0.1}, 2.0) == []


def _feed(m: HealthMonitor, rank: int, times: list[float], t0: float, restart: int = 0,
          compute: bool = False) -> float:
    now = t0
    m.report(Report(rank, restart, 0, 0.0), now)
    for i, dt in enumerate(times, 1):
        now += dt
        m.report(Report(rank, restart, i, dt, dt if compute else None), now)
    return now


def test_straggler_needs_enough_reports_and_rearms() -> None:
    m = HealthMonitor([0, 1, 2], restart=0, timeout_s=0, straggler_k=2.0)
    _feed(m, 0, [0.1, 0.1], 0.0)
    _feed(m, 1, [0.1, 0.1], 0.0)
    _feed(m, 2, [0.5, 0.5], 0.0)
    assert m.new_stragglers() == []  # fewer than MIN_REPORTS steps each
    for r, dt in ((0, 0.1), (1, 0.1), (2, 0.5)):
        m.report(Report(r, 0, 3, dt), 10.0)
    found = m.new_stragglers()
    assert [s[0] for s in found] == [2] and abs(found[0][2] - 0.1) < 1e-9
    assert m.new_stragglers() == []  # reported once
    for step in range(4, 9):  # rank 2 recovers, then slows down again
        m.report(Report(2, 0, step, 0.1), 11.0)
    assert m.new_stragglers() == []
    for step in range(9, 14):
        m.report(Report(2, 0, step, 0.9), 12.0)
    assert [s[0] for s in m.new_stragglers()] == [2]


def test_compute_time_is_preferred_over_step_time() -> None:
    # A collective makes every rank's wall step equal; the compute part shows the straggler.
    m = HealthMonitor([0, 1], 0, 0, 2.0)
    for step in range(1, 6):
        m.report(Report(0, 0, step, 0.5, 0.1), 1.0)
        m.report(Report(1, 0, step, 0.5, 0.45), 1.0)
    assert [s[0] for s in m.new_stragglers()] == [1]


def test_hang_after_timeout_and_only_once_reporting_began() -> None:
    m = HealthMonitor([0, 1], restart=0, timeout_s=5.0, straggler_k=2.0)
    assert m.hang(1000.0) is None  # a script that never reports is not watched
    m.report(Report(0, 0, 0, 0.0), 10.0)
    assert m.hang(14.0) is None
    h = m.hang(15.5)  # rank 1 never reported: measured from the gang's first report
    assert h is not None and h.silent_ranks == (0, 1)
    m.report(Report(0, 0, 1, 1.0), 15.6)
    h = m.hang(15.7)
    assert h is not None and h.rank == 1 and h.silent_ranks == (1,)
    assert m.next_deadline() == 15.0


def test_reports_of_other_restarts_and_ranks_are_ignored() -> None:
    m = HealthMonitor([0], restart=2, timeout_s=1.0, straggler_k=2.0)
    assert not m.report(Report(0, 1, 5, 0.1), 1.0)
    assert not m.report(Report(7, 2, 5, 0.1), 1.0)
    assert m.first_report is None
    assert m.report(Report(0, 2, 5, 0.1), 1.0)


@given(step_s=st.floats(), compute=st.one_of(st.none(), st.floats()))
def test_hostile_reports_with_non_finite_times_are_dropped(step_s: float, compute: float | None) -> None:
    # the health socket is world-writable: nan/inf would poison the medians and the state's JSON
    c = "-" if compute is None else repr(compute)
    rep = Report.decode(f"aios1 0 0 3 {step_s!r} {c}".encode())
    times = [step_s] if compute is None else [step_s, compute]
    ok = all(t == t and abs(t) != float("inf") and t >= 0 for t in times)
    assert (rep is not None) == ok
    if rep is not None:
        assert rep.step_s == step_s and rep.compute_s == compute
