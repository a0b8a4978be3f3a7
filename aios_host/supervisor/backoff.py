"""Delay before the k-th gang restart: exponential, capped, with multiplicative jitter.

    delay(k) = min(backoff_max, backoff * multiplier**(k-1)) * (1 + jitter * u),  u ~ U[-1, 1]

Jitter spreads restarts of many jobs (or many hosts of one job) that failed for one shared
reason, the way AWS's "Exponential Backoff And Jitter" recommends; it never goes below 0 or
above backoff_max.
"""

from __future__ import annotations

import random

from aios_host.supervisor.spec import RestartSpec


def restart_delay(spec: RestartSpec, restart: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before restart number `restart` (1 = the first restart)."""
    if restart < 1:
        raise ValueError("restart numbers start at 1")
    if spec.backoff <= 0:
        return 0.0
    # Cap the exponent first: multiplier**10000 overflows a float.
    base = spec.backoff
    for _ in range(restart - 1):
        base *= spec.multiplier
        if base >= spec.backoff_max:
            base = spec.backoff_max
            break
    base = min(base, spec.backoff_max)
    u = (rng or random).uniform(-1.0, 1.0)
    return max(0.0, min(spec.backoff_max, base * (1.0 + spec.jitter * u)))
