"""Pure parsers for procfs files, plus thin readers that take a SysRoot."""

from __future__ import annotations

from dataclasses import dataclass

from aios_host.errors import ParseError
from aios_host.kernel.root import SysRoot


@dataclass(frozen=True)
class Mount:
    mount_id: int
    mount_point: str
    fs_type: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...): fs/proc_namespace.c
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo (proc(5)): optional fields end at a lone "-"."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    mount_point=_unescape(fields[4]),
                    fs_type=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
                )
            )
        except (ValueError, IndexError):
            raise ParseError("mountinfo line", line, "not in proc(5) format") from None
    return mounts


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in bytes (the file says kB and means KiB)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            raise ParseError("meminfo", line, "value is not an integer") from None
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup: "ID:CONTROLLERS:PATH" lines; the cgroup v2 entry has id 0 and key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ParseError("/proc/PID/cgroup line", line, "expected ID:CONTROLLERS:PATH")
        out[parts[1]] = parts[2]
    return out


@dataclass(frozen=True)
class PidStat:
    state: str  # R, S, D, Z (zombie), X (dead), ...
    start_ticks: int  # starttime: clock ticks after boot; with the pid, names one process for good
    ppid: int = 0


def parse_pid_stat(text: str) -> PidStat:
    """/proc/PID/stat (proc(5)). comm, field 2, is in parentheses and may itself hold spaces and
    ')', so the fields are counted from the last ')': state is field 3, ppid 4, starttime 22."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        raise ParseError("/proc/PID/stat", text, "fewer than 22 fields after comm")
    try:
        return PidStat(fields[0], int(fields[19]), int(fields[1]))
    except ValueError:
        raise ParseError("/proc/PID/stat", text, "ppid or starttime is not an integer") from None


def read_pid_stat(root: SysRoot, pid: int) -> PidStat | None:
    """None when there is no such process (pids <= 0 name none: kill(2) would take them as groups)."""
    if pid <= 0:
        return None
    text = root.read_optional(f"/proc/{pid}/stat")
    return parse_pid_stat(text) if text else None


def pid_alive(root: SysRoot, pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs and, when its start time was recorded, is still that process (a pid is
    reused once its process is gone). A zombie has ended: only its parent has not reaped it."""
    st = read_pid_stat(root, pid) if pid else None
    if st is None or st.state in ("Z", "X", "x"):
        return False
    return start_ticks is None or st.start_ticks == start_ticks


def read_mounts(root: SysRoot) -> list[Mount]:
    return parse_mountinfo(root.read_text("/proc/self/mountinfo"))


def read_meminfo(root: SysRoot) -> dict[str, int]:
    return parse_meminfo(root.read_text("/proc/meminfo"))


def read_osrelease(root: SysRoot) -> str:
    return root.read_text("/proc/sys/kernel/osrelease").strip()


def read_pid1_comm(root: SysRoot) -> str:
    return (root.read_optional("/proc/1/comm") or "").strip()
