"""Human quantities in policy files: sizes ("4G", "512MiB", 1073741824), shares ("50%"),
cores (2.5). Parsed into Quantity values resolved against host capacity later."""

from __future__ import annotations

import re
from dataclasses import dataclass

PAGE_SIZE_BYTES = 4096

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


def parse_size(value: object) -> Quantity:
    """Bytes from 4096, "4G", "1.5GiB", "512M", "50%". Binary units, like the kernel and systemd."""
    if isinstance(value, Quantity):  # already parsed (a validator ran first)
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (e.g. 4G)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return Quantity(float(value))
    if isinstance(value, str):
        share = parse_share(value)
        if share is not None:
            if share > 100:
                raise ValueError(f"{value!r} is more than 100%")
            return Quantity(share, percent=True)
        m = _SIZE_RE.match(value)
        if m and (m.group(2) or not m.group(3) or m.group(3).upper() == "B"):
            return Quantity(float(m.group(1)) * _SCALE[m.group(2).upper()])
    raise ValueError(f"{value!r} is not a size (e.g. 4G)")


def parse_cores(value: object) -> Quantity:
    """Cores as a number (2, 2.5) or a share of the host's CPUs ("50%")."""
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of cores (e.g. 2.5 or \"50%\")")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return Quantity(float(value))
    if isinstance(value, str):
        share = parse_share(value)
        if share is not None and share <= 100:
            return Quantity(share, percent=True)
    raise ValueError(f"{value!r} is not a number of cores (e.g. 2.5 or \"50%\")")


def round_to_page(n_bytes: float) -> int:
    """The kernel rounds memory.* limits down to pages; we write what it will read back."""
    return int(n_bytes) // PAGE_SIZE_BYTES * PAGE_SIZE_BYTES


def format_bytes(n: float) -> str:
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}B"
