"""Message sizes as nccl-tests takes them: "4K:256M" with a multiplication factor."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", re.IGNORECASE | re.ASCII)
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


MAX_SIZE = 64 << 30  # bytes per message: far over any GPU's memory


def parse_size(text: str) -> int:
    """Bytes, 1..MAX_SIZE: 0 would make a "0:1M" range loop for ever (0 * factor stays 0)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 4K, 256M)")
    n = int(m.group(1)) * _SCALE[m.group(2).upper()]
    if not 1 <= n <= MAX_SIZE:
        raise ValueError(f"{text!r} is outside 1..64G")
    return n


def parse_sizes(spec: str, factor: int = 2) -> list[int]:
    """"4K:256M" -> 4K, 8K, ... 256M (x factor); "4K,1M" -> those; "1M" -> one size."""
    if factor < 2:
        raise ValueError("factor must be >= 2")
    if "," in spec:
        return [parse_size(s) for s in spec.split(",") if s.strip()]
    lo_s, sep, hi_s = spec.partition(":")
    lo = parse_size(lo_s)
    if not sep:
        return [lo]
    hi = parse_size(hi_s)
    if hi < lo:
        raise ValueError(f"{spec!r}: the upper size is below the lower one")
    out = []
    s = lo
    while s <= hi:
        out.append(s)
        s *= factor
    return out


def format_size(n: float) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale:.0f}{unit}"
    return f"{n:.0f}"
