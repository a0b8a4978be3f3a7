"""log2 histograms as the probes keep them, and rates.

Slot k >= 2 holds values in [2^(k-1), 2^k - 1]; slot 1 holds 0 and 1 (bcc's bpf_log2l); slot 0 is
never used. The last slot also holds everything above it (the C caps the slot).
"""

from __future__ import annotations

from collections.abc import Sequence


def slot_bounds(slot: int) -> tuple[float, float]:
    """[low, high) of the values in one slot."""
    if slot <= 1:
        return 0.0, 2.0
    return float(2 ** (slot - 1)), float(2**slot)


def hist_delta(before: Sequence[int], after: Sequence[int]) -> tuple[int, ...]:
    """after - before, slot by slot. A slot that went down (map entry pruned and re-created)
    counts from zero."""
    n = max(len(before), len(after))
    b = list(before) + [0] * (n - len(before))
    a = list(after) + [0] * (n - len(after))
    return tuple(x - y if x >= y else x for x, y in zip(a, b, strict=True))


def hist_count(hist: Sequence[int]) -> int:
    return int(sum(hist))


def percentile_slot(hist: Sequence[int], q: float) -> int | None:
    """The slot holding the q-quantile (0 < q <= 1), None for an empty histogram."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} is not in (0, 1]")
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    cum = 0
    for slot, c in enumerate(hist):
        cum += c
        if c and cum >= rank:
            return slot
    return len(hist) - 1


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile, interpolated linearly inside its slot; None for an empty histogram.

    The true value lies in the slot's [low, high); the interpolation assumes the values of one
    slot are spread evenly, so the answer is never off by more than the slot's width.
    """
    slot = percentile_slot(hist, q)
    if slot is None:
        return None
    total = sum(hist)
    low, high = slot_bounds(slot)
    if slot <= 1:  # slots 0 and 1 share [0, 2): one range, or the interpolation would step back
        below, count = 0, sum(hist[:2])
    else:
        below, count = sum(hist[:slot]), hist[slot]
    frac = (q * total - below) / count
    return low + (high - low) * min(max(frac, 0.0), 1.0)


def rate(delta: float, interval_s: float) -> float:
    """Per second. A counter that went backwards (reset) is taken as 0."""
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    return max(0.0, float(delta)) / interval_s
