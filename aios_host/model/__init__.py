"""The model: what the host looks like over one interval, as rates and percentiles (HostSnapshot).

Pure functions over sensor samples (probes' cumulative counters, cgroupfs stats and PSI); nothing
here touches the OS.
"""

from aios_host.model.snapshot import CgroupMetrics, HostSnapshot, build_snapshot

__all__ = ["CgroupMetrics", "HostSnapshot", "build_snapshot"]
