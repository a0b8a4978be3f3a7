from __future__ import annotations

import random

import pytest

from aios_host.supervisor.backoff import restart_delay
from aios_host.supervisor.spec import RestartSpec


def test_exponential_capped_without_jitter() -> None:
    spec = RestartSpec(backoff=1.0, backoff_max=10.0, multiplier=2.0, jitter=0.0)
    assert [restart_delay(spec, k) for k in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_stays_within_bounds_and_varies() -> None:
    spec = RestartSpec(backoff=2.0, backoff_max=100.0, jitter=0.25)
    rng = random.Random(7)
    delays = [restart_delay(spec, 3, rng) for _ in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays)  # 8 s +- 25%
    assert len({round(d, 6) for d in delays}) > 100


def test_jitter_never_exceeds_the_cap() -> None:
    spec = RestartSpec(backoff=1.0, backoff_max=5.0, jitter=1.0)
    rng = random.Random(1)
    assert all(0.0 <= restart_delay(spec, 10, rng) <= 5.0 for _ in range(500))


def test_zero_backoff_restarts_at_once_and_huge_counts_do_not_overflow() -> None:
    assert restart_delay(RestartSpec(backoff=0.0), 5) == 0.0
    spec = RestartSpec(backoff=1.0, backoff_max=60.0, multiplier=100.0, jitter=0.0)
    assert restart_delay(spec, 10_000) == 60.0
    with pytest.raises(ValueError):
        restart_delay(spec, 0)
