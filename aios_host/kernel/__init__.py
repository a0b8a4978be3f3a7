"""The only package that touches /proc, /sys, cgroupfs, NVML, systemd and journald.

Everything is reached through a `SysRoot`, so tests hand it a temp dir.
"""
