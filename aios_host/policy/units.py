"""Human quantities in policy files: sizes ("4G", "512MiB", 1073741824), shares ("50%"),
cores (2.5). Parsed into Quantity values resolved against host capacity later."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from aios_host.errors import shown

PAGE_SIZE_BYTES = 4096
# The largest size a cgroup limit can hold: the kernel parses sizes into 64 bits (memparse wraps
# past 2^64: "16384P" became memory.max = 0) and the page counter caps at LONG_MAX bytes. Above it
# the only meaningful value is "max", i.e. leaving the limit unset. Sizes are floats here (1.5G),
# and the largest float below 2^63 is 2^63 - 1024: 2^63 - 1 itself would round up to 2^63.
SIZE_MAX_BYTES = (1 << 63) - 1024
# x86_64's largest CONFIG_NR_CPUS (MAXSMP): no kernel has more CPUs to share.
CORES_MAX = 8192

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*$", re.IGNORECASE)
_SHARE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass(frozen=True)
class Quantity:
    """An absolute amount (bytes, cores) or a percentage of what the host has after the reserve."""

    value: float
    percent: bool = False

    def resolve(self, capacity: float) -> float:
        return capacity * self.value / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}"


def parse_share(text: str) -> float | None:
    m = _SHARE_RE.match(text)
    return float(m.group(1)) if m else None


def _finite(value: object, number: float, what: str) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{shown(value)} is not a finite {what}")
    return number


def _bytes_in_range(value: object, n_bytes: float) -> Quantity:
    _finite(value, n_bytes, "size")
    if float(n_bytes) > SIZE_MAX_BYTES:
        raise ValueError(f"{shown(value)} is above the largest size the kernel takes (8E, 2^63-1 bytes); "
                         "leave the key out for no limit")
    return Quantity(float(n_bytes))


def parse_size(value: object) -> Quantity:
    """Bytes from 4096, "4G", "1.5GiB", "512M", "50%". Binary units, like the kernel and systemd."""
    if isinstance(value, Quantity):  # already parsed (a validator ran first)
        return value
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not a size (e.g. 4G)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{shown(value)} is negative")
        return _bytes_in_range(value, value)
    if isinstance(value, str):
        share = parse_share(value)
        if share is not None:
            if _finite(value, share, "share") > 100:
                raise ValueError(f"{shown(value)} is more than 100%")
            return Quantity(share, percent=True)
        m = _SIZE_RE.match(value)
        if m and (m.group(2) or not m.group(3) or m.group(3).upper() == "B"):
            return _bytes_in_range(value, float(m.group(1)) * _SCALE[m.group(2).upper()])
    raise ValueError(f"{shown(value)} is not a size (e.g. 4G)")


def parse_cores(value: object) -> Quantity:
    """Cores as a number (2, 2.5) or a share of the host's CPUs ("50%")."""
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not a number of cores (e.g. 2.5 or \"50%\")")
    if isinstance(value, int | float):
        if _finite(value, float(value), "number of cores") < 0:
            raise ValueError(f"{shown(value)} is negative")
        if value > CORES_MAX:
            raise ValueError(f"{shown(value)} is more cores than any kernel has ({CORES_MAX})")
        return Quantity(float(value))
    if isinstance(value, str):
        share = parse_share(value)
        if share is not None and _finite(value, share, "share") <= 100:
            return Quantity(share, percent=True)
    raise ValueError(f"{shown(value)} is not a number of cores (e.g. 2.5 or \"50%\")")


def round_to_page(n_bytes: float) -> int:
    """The kernel rounds memory.* limits down to pages; we write what it will read back."""
    return int(n_bytes) // PAGE_SIZE_BYTES * PAGE_SIZE_BYTES


def format_bytes(n: float) -> str:
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}B"
