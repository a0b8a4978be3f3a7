"""What every energy writer (cpufreq, NVML) returns, and the two ways a knob says no.

The contract of every writer in kernel/cpufreq.py and kernel/gpu.py: read the old value, write the
new one, read it back, and return a `KnobChange` holding all three. `old` is what a rollback
writes back through the same writer; `new` is what the kernel or driver actually took, which can
differ from `requested` (a clamp, a frequency table, a lower limit set elsewhere), and the caller
decides what that means. A writer never retries and never writes anything but its own knob.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from aios_host.errors import AiosError

T = TypeVar("T")


@dataclass(frozen=True)
class KnobChange(Generic[T]):
    knob: str  # the file written ("/sys/.../policy0/scaling_governor") or "gpu0 power_limit_mw"
    old: T  # read before the write: what a rollback writes back
    requested: T
    new: T  # read back after the write: what was actually taken
    written: bool = True  # False: `old` already was the request, so nothing was written
    note: str = ""  # why `new` is not `requested`, or what else binds (a lower enforced limit)

    @property
    def took(self) -> bool:
        """Whether the knob now holds exactly what was asked for."""
        return self.new == self.requested


class KnobRefused(AiosError):
    """The kernel or driver refused a value (EINVAL, EBUSY, an out-of-range request). One line
    naming the knob, the value and what it accepts. The knob is unchanged unless `changed` is set:
    a two-file change (min and max) refused at its second write, whose `old` a rollback restores."""

    def __init__(self, message: str, changed: KnobChange | None = None) -> None:
        super().__init__(message)
        self.changed = changed


class KnobUnavailable(AiosError):
    """The knob does not exist here or may not be written (no EPP on this driver, NVML's
    NO_PERMISSION / NOT_SUPPORTED, MIG): observe only."""
