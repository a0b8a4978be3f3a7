"""What the kernel takes in each control file aios-host writes, written down from the kernel's own
parsers (not from aios-host's validation, which the fuzzers check against this):

- cpu.weight: 1..10000 (CGROUP_WEIGHT_MIN/MAX);
- cpu.max: "max|QUOTA PERIOD", period 1 ms..1 s, quota >= 1 ms and <= max_cfs_runtime
  (MAX_BW = 2^44 - 1 usec) (tg_set_cfs_bandwidth);
- memory.min/low/high/max: "max" or bytes through memparse into u64, capped by the page counter at
  LONG_MAX; and, beyond what the kernel accepts, what does no harm: memory.high/max below one page
  are 0 (every process reclaimed to nothing or OOM-killed);
- io.weight: "default N", N 1..10000; io.max: "MAJ:MIN key=N|max ...", N u64, keys rbps wbps riops wiops;
- cpuset.cpus / cpuset.mems: lists of CPUs / nodes the host has;
- every path under the cgroup2 mount, with no '.' or '..' segment.
"""

from __future__ import annotations

import re

MOUNT = "/sys/fs/cgroup"
U64_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
MAX_CFS_RUNTIME_USEC = (1 << 44) - 1
PAGE = 4096
_IO_MAX_KEYS = {"rbps", "wbps", "riops", "wiops"}


def _list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def problem(path: str, value: str, cpus: int, nodes: int) -> str | None:
    """None when the kernel takes `value` in `path` and it harms no one; else what is wrong."""
    if not path.startswith(MOUNT + "/") and path != MOUNT:
        return "outside the cgroup2 mount"
    if any(seg in (".", "..") for seg in path.split("/")):
        return "a dot segment"
    file = path.rpartition("/")[2]
    v = value.strip()
    if file == "cpu.weight":
        return None if v.isdigit() and 1 <= int(v) <= 10000 else "cpu.weight outside 1..10000"
    if file == "cpu.max":
        q, _, p = v.partition(" ")
        if not p.isdigit() or not 1000 <= int(p) <= 1_000_000:
            return "cpu.max period outside 1 ms..1 s"
        if q != "max" and not (q.isdigit() and 1000 <= int(q) <= MAX_CFS_RUNTIME_USEC):
            return "cpu.max quota outside 1 ms..MAX_BW"
        return None
    if file in ("memory.min", "memory.low", "memory.high", "memory.max"):
        if v == "max":
            return None
        if not v.isdigit() or int(v) > LONG_MAX:
            return f"{file} not a size the page counter holds"
        if file in ("memory.high", "memory.max") and int(v) < PAGE:
            return f"{file} below one page: the class is OOM-killed"
        return None
    if file == "io.weight":
        m = re.fullmatch(r"default (\d+)", v)
        return None if m and 1 <= int(m.group(1)) <= 10000 else "io.weight outside 1..10000"
    if file == "io.max":
        dev, *pairs = v.split()
        if not re.fullmatch(r"\d+:\d+", dev):
            return "io.max device not MAJ:MIN"
        for pair in pairs:
            k, _, n = pair.partition("=")
            if k not in _IO_MAX_KEYS or not (n == "max" or (n.isdigit() and int(n) <= U64_MAX)):
                return f"io.max {pair!r}"
        return None
    if file == "cpuset.cpus":
        return None if _list(v) <= set(range(cpus)) else "cpuset.cpus names CPUs the host lacks"
    if file == "cpuset.mems":
        return None if _list(v) <= set(range(nodes)) else "cpuset.mems names nodes the host lacks"
    return None
