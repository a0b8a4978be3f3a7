import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_host.model.hist import (
    hist_count,
    hist_delta,
    percentile,
    percentile_slot,
    rate,
    slot_bounds,
)
from aios_host.probes.structs import HIST_SLOTS, slot_of


def hist(**slots):
    h = [0] * HIST_SLOTS
    for k, v in slots.items():
        h[int(k[1:])] = v
    return tuple(h)


def test_slot_bounds_agree_with_the_slot_function():
    for v in (0, 1, 2, 3, 4, 5, 1000, 65536):
        low, high = slot_bounds(slot_of(v))
        assert low <= v < high


def test_single_slot():
    h = hist(s5=10)  # values in [16, 32)
    assert percentile_slot(h, 0.5) == 5
    assert percentile(h, 0.5) == pytest.approx(24.0)
    assert percentile(h, 1.0) == pytest.approx(32.0)
    assert percentile(h, 0.1) == pytest.approx(17.6)


def test_p99_picks_the_tail_slot():
    h = hist(s3=99, s12=1)
    assert percentile_slot(h, 0.50) == 3
    assert percentile_slot(h, 0.99) == 3  # 99 of 100 are <= slot 3
    assert percentile_slot(h, 0.995) == 12
    h2 = hist(s3=98, s12=2)
    assert percentile_slot(h2, 0.99) == 12
    assert 2048 <= percentile(h2, 0.99) < 4096


def test_empty_and_bad_quantiles():
    assert percentile(hist(), 0.5) is None and percentile_slot(hist(), 0.99) is None
    with pytest.raises(ValueError):
        percentile(hist(s1=1), 0)
    with pytest.raises(ValueError):
        percentile(hist(s1=1), 1.5)


def test_delta_and_count():
    a, b = hist(s2=5, s4=1), hist(s2=7, s4=1, s6=3)
    assert hist_delta(a, b) == hist(s2=2, s6=3)
    assert hist_delta(b, a)[6] == 0 and hist_delta(b, a)[2] == 5  # went down: pruned, count afresh
    assert hist_count(b) == 11
    assert hist_delta((1, 2), (1, 2, 3)) == (0, 0, 3)


def test_rate():
    assert rate(10, 2.0) == 5.0
    assert rate(-3, 1.0) == 0.0
    with pytest.raises(ValueError):
        rate(1, 0)


hists = st.lists(st.integers(min_value=0, max_value=10_000), min_size=HIST_SLOTS, max_size=HIST_SLOTS).filter(
    lambda h: sum(h) > 0
)


@given(hists, st.floats(min_value=0.01, max_value=1.0), st.floats(min_value=0.01, max_value=1.0))
def test_percentile_is_monotonic_and_inside_its_slot(h, q1, q2):
    lo, hi = sorted((q1, q2))
    assert percentile(h, lo) <= percentile(h, hi) + 1e-9
    low, high = slot_bounds(percentile_slot(h, hi))
    assert low <= percentile(h, hi) <= high


@given(st.lists(st.integers(min_value=0, max_value=2**31), min_size=1, max_size=200))
def test_percentile_slot_brackets_the_exact_quantile(values):
    h = [0] * HIST_SLOTS
    for v in values:
        h[slot_of(v)] += 1
    exact = sorted(values)[max(0, -(-len(values) * 99 // 100) - 1)]  # nearest-rank p99
    assert percentile_slot(h, 0.99) == slot_of(exact)
