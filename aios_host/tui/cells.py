"""What a person sees of a TopModel: column titles, cell texts with units, colour levels, and the
header's and panels' lines. Pure and free of textual, so that batch mode (`--once`) prints the same
texts without the [tui] extra and tests read them without a terminal.

A line is a tuple of (text, style) segments; the style is one of STYLES or None. The app turns a
line into rich Text, batch mode into ANSI escapes (or nothing when stdout is not a terminal).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from aios_host.tui.model import COLUMN_IDS, HostStats, Row, TopModel, ViewState

Segment = tuple[str, str | None]
Line = tuple[Segment, ...]
STYLES = ("bold", "dim", "title", "ok", "warn", "crit")


@dataclass(frozen=True)
class Column:
    id: str  # a Row attribute, a --json key, and the DataTable's column key
    title: str
    width: int  # cells, fixed: a refresh never re-measures 1000 rows
    fmt: str  # how to show it: name, count, cores, bytes, ms, percent, rate


COLUMNS = (
    Column("name", "NAME", 30, "name"),
    Column("nr_procs", "PROCS", 6, "count"),
    Column("cpu_allocation_cores", "CPU.AL", 7, "cores"),
    Column("cpu_usage_cores", "CPU", 6, "cores"),
    Column("cpu_max_cores", "CPU.MX", 7, "cores"),
    Column("memory_current_bytes", "MEM", 7, "bytes"),
    Column("memory_high_bytes", "MEM.HI", 7, "bytes"),
    Column("memory_max_bytes", "MEM.MX", 7, "bytes"),
    Column("runq_p50_seconds", "RQ50ms", 7, "ms"),
    Column("runq_p99_seconds", "RQ99ms", 7, "ms"),
    Column("psi_cpu_some_percent", "CPU.S%", 7, "percent"),
    Column("psi_memory_some_percent", "MEM.S%", 7, "percent"),
    Column("psi_memory_full_percent", "MEM.F%", 7, "percent"),
    Column("psi_io_some_percent", "IO.S%", 6, "percent"),
    Column("psi_io_full_percent", "IO.F%", 6, "percent"),
    Column("faults_per_second", "FLT/s", 7, "rate"),
    Column("reclaim_seconds_per_second", "RCLms/s", 8, "ms"),
    Column("oom_kills_total", "OOM", 4, "count"),
)
COLUMN_BY_ID = {c.id: c for c in COLUMNS}
assert tuple(COLUMN_BY_ID) == COLUMN_IDS, "cells.COLUMNS and model.COLUMN_IDS list the same columns"

HELP_LINES = (
    "NAME     cgroup (tree: indented under its parent) or policy class (daemon: its cgroups below it)",
    "PROCS    processes in it",
    "CPU.AL   cores the policy engine allocated (daemon)      CPU  cores used     CPU.MX  cpu.max, in cores",
    "MEM      memory.current     MEM.HI  memory.high     MEM.MX  memory.max   (a blank limit: none, 'max')",
    "RQ50/99  run-queue wait percentiles, ms (eBPF probes)",
    "x.S% x.F%  PSI some / full avg10 for cpu, memory, io: share of time tasks stalled",
    "FLT/s    page faults per second   RCLms/s  reclaim stall, ms per second   OOM  OOM kills",
    "",
    "< > , .  sort by the column to the left / right     I  invert the order",
    "/        filter by name (Enter keeps it, Escape clears it)     t  tree / flat",
    "space    pause refreshing     Enter  details of the row     ?  this help     q  quit",
    "",
    "Colours: yellow = warning, red = critical (thresholds in aios_host/tui/cells.py THRESHOLDS).",
)

# (warning, critical) per column, in the column's own unit. Memory and CPU are judged against
# their limits instead (LIMIT_WARN_RATIO): 90% of a limit is a warning, reaching it is critical
# (memory.high throttles, cpu.max throttles, memory.max OOM-kills).
THRESHOLDS: dict[str, tuple[float, float]] = {
    "runq_p50_seconds": (0.001, 0.010),
    "runq_p99_seconds": (0.005, 0.050),
    "psi_cpu_some_percent": (10.0, 40.0),
    "psi_memory_some_percent": (10.0, 40.0),
    "psi_io_some_percent": (10.0, 40.0),
    "psi_memory_full_percent": (5.0, 20.0),
    "psi_io_full_percent": (5.0, 20.0),
    "reclaim_seconds_per_second": (0.010, 0.100),
    "oom_kills_total": (1.0, 1.0),
    "host_cpu_usage_percent": (80.0, 95.0),
    "host_memory_used_percent": (90.0, 95.0),
}
LIMIT_WARN_RATIO = 0.9
# Using more than this times its allocation: the class takes CPU the policy gave to others.
OVER_ALLOCATION_RATIO = 1.25


def _by(value: float | None, thresholds: tuple[float, float]) -> str | None:
    if value is None:
        return None
    warn, crit = thresholds
    return "crit" if value >= crit else "warn" if value >= warn else None


def _against(value: float | None, limit: float | None) -> str | None:
    if value is None or limit is None or limit <= 0:
        return None
    ratio = value / limit
    return "crit" if ratio >= 1.0 else "warn" if ratio >= LIMIT_WARN_RATIO else None


def level(column: str, row: Row) -> str | None:
    """"warn", "crit" or None: the colour of one cell."""
    if column == "cpu_usage_cores":
        lv = _against(row.cpu_usage_cores, row.cpu_max_cores)
        if lv is None and row.cpu_usage_cores is not None and row.cpu_allocation_cores:
            over = row.cpu_usage_cores / row.cpu_allocation_cores
            lv = "warn" if over >= OVER_ALLOCATION_RATIO else None
        return lv
    if column == "memory_current_bytes":
        limits = [v for v in (row.memory_high_bytes, row.memory_max_bytes) if v is not None]
        return _against(row.memory_current_bytes, min(limits)) if limits else None
    if column in THRESHOLDS:
        return _by(getattr(row, column), THRESHOLDS[column])
    if column == "name" and row.memory_guard not in (None, "ok"):
        return "crit"
    return None


# -- numbers ---------------------------------------------------------------------------------------


def fmt_bytes(v: float | None) -> str:
    """IEC, 3-4 significant characters: 512B 4.0K 1.5M 230M 23.4G."""
    if v is None:
        return ""
    for unit, scale in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if abs(v) >= scale:
            x = v / scale
            return f"{x:.1f}{unit}" if x < 100 else f"{x:.0f}{unit}"
    return f"{v:.0f}B"


def fmt_count(v: float | None) -> str:
    if v is None:
        return ""
    if -1000 < v < 1000:  # most cells: procs, OOM kills, an idle cgroup's faults
        return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
    unit, scale = next((u, k) for u, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)) if abs(v) >= k)
    x = v / scale
    return f"{x:.1f}{unit}" if x < 100 else f"{x:.0f}{unit}"


def fmt_cores(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def fmt_percent(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


_FORMATTERS = {"count": fmt_count, "cores": fmt_cores, "bytes": fmt_bytes, "ms": fmt_ms,
               "percent": fmt_percent, "rate": fmt_count}


def cell_text(column: Column, row: Row, indent: int = 0, tree: bool = True) -> str:
    if column.fmt == "name":
        if row.kind == "class":
            return row.name
        if not tree:
            return row.path
        return "  " * indent + row.name
    return _FORMATTERS[column.fmt](getattr(row, column.id))


_VALUES = operator.attrgetter(*(c.id for c in COLUMNS))
_CELL_FORMATTERS = tuple(None if c.fmt == "name" else _FORMATTERS[c.fmt] for c in COLUMNS)
_THRESHOLD_AT = tuple(THRESHOLDS.get(c.id) for c in COLUMNS)
_AGAINST_LIMITS_AT = tuple(c.id in ("cpu_usage_cores", "memory_current_bytes") for c in COLUMNS)
_BLANK = ("", None)


# Formatted text per column by value: most cells repeat a value seen in another row or at the last
# refresh (procs, limits, an idle cgroup's PSI and faults), and formatting is half of row_cells.
# Cleared when it grows past _TEXT_CACHE_MAX (values that only ever move, like CPU seconds).
_TEXT_CACHE: tuple[dict[float, str], ...] = tuple({} for _ in COLUMNS)
_TEXT_CACHE_MAX = 4096


def row_cells(row: Row, indent: int, tree: bool) -> list[tuple[str, str | None]]:
    """(text, level) per column, in COLUMNS order: what cell_text and level give, for every row
    every refresh (1000 rows x 18 columns): attribute reads batched, thresholds inlined, blank
    cells and columns without a colour rule short-cut, texts reused by value."""
    values = _VALUES(row)
    out = [(cell_text(COLUMNS[0], row, indent, tree), level("name", row))]
    for i in range(1, len(COLUMNS)):
        v = values[i]
        if v is None:
            out.append(_BLANK)
            continue
        thresholds = _THRESHOLD_AT[i]
        if thresholds is not None:
            lv = "crit" if v >= thresholds[1] else "warn" if v >= thresholds[0] else None
        elif _AGAINST_LIMITS_AT[i]:
            lv = level(COLUMNS[i].id, row)
        else:
            lv = None
        texts = _TEXT_CACHE[i]
        text = texts.get(v)
        if text is None:
            if len(texts) >= _TEXT_CACHE_MAX:
                texts.clear()
            text = texts[v] = _CELL_FORMATTERS[i](v)  # type: ignore[misc]
        out.append((text, lv))
    return out


def column_title(column: Column, view: ViewState) -> str:
    if column.id != view.sort_column:
        return column.title
    return column.title + ("▼" if view.descending else "▲")


# -- time ------------------------------------------------------------------------------------------


def ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    s = max(0.0, now - then)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.0f} h ago"


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


# -- header ----------------------------------------------------------------------------------------

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 20, lo: float = 0.0, hi: float | None = 100.0) -> str:
    """The last `width` values as block characters, scaled from lo to hi (hi None: the series' max),
    right-aligned: the newest value is the rightmost."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    top = hi if hi is not None else max(max(vals), lo + 1e-9)
    span = max(top - lo, 1e-9)
    out = []
    for v in vals:
        f = min(1.0, max(0.0, (v - lo) / span))
        out.append(SPARK[min(len(SPARK) - 1, int(f * (len(SPARK) - 1) + 0.5))])
    return "".join(out)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _psi(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def host_line(model: TopModel) -> Line:
    h: HostStats = model.host
    hist = model.history
    cpu_lv = _by(h.cpu_usage_percent, THRESHOLDS["host_cpu_usage_percent"])
    mem_lv = _by(h.memory_used_percent, THRESHOLDS["host_memory_used_percent"])
    used = None if h.memory_available_bytes is None else h.memory_total_bytes - h.memory_available_bytes
    return (
        ("cpu ", "bold"), (f"{_pct(h.cpu_usage_percent):>6}", cpu_lv), (f" of {h.cpu_count} CPUs ", None),
        (sparkline(hist.get("cpu_usage_percent", ()), 20), "ok"),
        ("  mem ", "bold"), (f"{fmt_bytes(used) or '-'}/{fmt_bytes(h.memory_total_bytes)} ", None),
        (f"{_pct(h.memory_used_percent):>6} ", mem_lv),
        (sparkline(hist.get("memory_used_percent", ()), 20), "ok"),
    )


def psi_line(model: TopModel) -> Line:
    h = model.host
    some = THRESHOLDS["psi_cpu_some_percent"]
    full = THRESHOLDS["psi_memory_full_percent"]
    series = [model.history.get(k, ()) for k in
              ("psi_cpu_some_percent", "psi_memory_some_percent", "psi_io_some_percent")]
    peak = max([max(s) for s in series if s] + [1.0])  # one scale for the three: they compare
    out: list[Segment] = [("psi ", "bold"), ("some/full % ", "dim")]
    for name, p, s in (("cpu", h.cpu, series[0]), ("mem", h.memory, series[1]), ("io", h.io, series[2])):
        out += [(f"{name} ", None), (_psi(p.some_percent), _by(p.some_percent, some)), ("/", "dim"),
                (_psi(p.full_percent), _by(p.full_percent, full)), (" ", None),
                (sparkline(s, 10, hi=peak), "ok"), ("  ", None)]
    return tuple(out)


def gpu_lines(model: TopModel) -> list[Line]:
    if not model.gpus:
        return [(("gpu ", "bold"), (model.gpu_note, "dim"))]
    out = []
    for g in model.gpus:
        mem = (f"{fmt_bytes(g.memory_used_bytes)}/{fmt_bytes(g.memory_total_bytes)}"
               if g.memory_total_bytes else "-")
        out.append((
            (f"gpu{g.index} ", "bold"), (f"{g.name}  ", None),
            ("util ", "dim"), (_pct(g.utilization_percent), None),
            ("  mem ", "dim"), (mem, None),
            ("  power ", "dim"), ("-" if g.power_watts is None else f"{g.power_watts:.0f} W", None),
            ("  temp ", "dim"), ("-" if g.temperature_celsius is None else f"{g.temperature_celsius:.0f} C", None),
            ("  sm ", "dim"), ("-" if g.sm_clock_mhz is None else f"{g.sm_clock_mhz:.0f} MHz", None),
        ))
    return out


def daemon_line(model: TopModel) -> Line:
    d = model.daemon
    if d is None:
        return (("daemon ", "bold"), (model.daemon_note or "not asked", "warn"),
                ("  showing a local snapshot (read-only)", "dim"))
    verdict_lv = "ok" if d.verdict == "active" else "warn"
    mode = d.mode + (f" ({d.mode_reason})" if d.mode_reason else "")
    policy = d.policy_path + (f" ({d.policy_description})" if d.policy_description else "")
    out: list[Segment] = [
        ("daemon ", "bold"), (d.verdict, verdict_lv),
        (("" if mode == d.verdict else f", mode {mode}") + f", pid {d.pid}", None),
        ("  policy ", "bold"), (policy, None),
        ("  last decision ", "bold"), (ago(d.last_decision_unix, model.time_unix), None),
    ]
    if d.last_decision_unix is not None:
        out.append((f" at {clock(d.last_decision_unix)}, {d.last_writes_count} writes", None))
    if d.last_error:
        out += [("  error ", "bold"), (d.last_error, "crit")]
    return tuple(out)


def title_line(model: TopModel, view: ViewState, rows_shown: int) -> Line:
    src = "daemon" if model.source == "daemon" else "local snapshot"
    out: list[Segment] = [("aios-host top", "title"), (f"  {clock(model.time_unix)}", None),
                          (f"  source: {src}", None), (f"  {rows_shown}/{len(model.rows)} rows", "dim"),
                          (f"  sort: {COLUMN_BY_ID[view.sort_column].title} "
                           f"{'desc' if view.descending else 'asc'}", "dim"),
                          (f"  {'tree' if view.tree else 'flat'}", "dim")]
    if view.filter_text:
        out.append((f"  filter: {view.filter_text}", "warn"))
    if view.paused:
        out.append(("  PAUSED", "crit"))
    return tuple(out)


def header_lines(model: TopModel, view: ViewState, rows_shown: int) -> list[Line]:
    return [title_line(model, view, rows_shown), host_line(model), psi_line(model), *gpu_lines(model),
            daemon_line(model)]


# -- panels ----------------------------------------------------------------------------------------


def jobs_lines(model: TopModel, limit: int | None = None) -> list[Line]:
    """The jobs table (running first); at most `limit` jobs, then how many more there are."""
    if not model.jobs:
        return [(("jobs ", "bold"), ("none", "dim"))]
    out: list[Line] = [((f"{'JOB':<20} {'STATE':<11} RANKS RESTARTS STEP ms p50/max  STRAGGLERS", "bold"),)]
    shown = model.jobs if limit is None else model.jobs[:limit]
    for j in shown:
        lv = "crit" if j.status in ("failed", "dead (supervisor gone)") else (
            "warn" if j.status == "restarting" else "ok" if j.status == "running" else None)
        step = (f"{fmt_ms(j.step_median_seconds)}/{fmt_ms(j.step_max_seconds)}"
                if j.step_median_seconds is not None else "-")
        last = j.stragglers[-1] if j.stragglers else None
        strag = "0" if last is None else f"{j.stragglers_total}, last: rank {last.rank} {last.factor:g}x"
        out.append(((f"{j.key[:20]:<20} ", None), (f"{j.status[:11]:<11} ", lv),
                    (f"{j.world_size:>5} ", None),
                    (f"{j.restarts}/{j.max_restarts}".rjust(8) + " ", "warn" if j.restarts else None),
                    (f"{step:>15}  ", None), (strag, "warn" if last else None)))
    if len(shown) < len(model.jobs):
        out.append(((f"... {len(model.jobs) - len(shown)} more ended jobs (aios-host job ls)", "dim"),))
    return out


MAX_WRITES_SHOWN = 6
MAX_BINDINGS_SHOWN = 6


def decision_lines(model: TopModel, events: int = 5) -> list[Line]:
    d = model.decision
    out: list[Line] = []
    if d is None:
        out.append((("last plan ", "bold"), ("no daemon: nothing decided", "dim")))
    else:
        out.append((("last plan ", "bold"), (ago(d.last_decision_unix, model.time_unix), None),
                    (f": {len(d.writes)} writes, {d.pending_writes} pending, {d.unavailable_writes} refused"
                     f" by this host, {d.drift_files} drifted", None)))
        for w in d.writes[:MAX_WRITES_SHOWN]:
            # "write": a value into a file; mkdir / enable / move say what they do to the path
            what = f"{w.path} = {w.new.strip()}" if w.op == "write" else f"{w.op} {w.path} {w.new.strip()}"
            out.append(((f"  {what.rstrip()}", None if w.available else "dim"), (f"  {w.reason}", "dim")))
        if len(d.writes) > MAX_WRITES_SHOWN:
            out.append(((f"  ... {len(d.writes) - MAX_WRITES_SHOWN} more", "dim"),))
        if d.bindings:
            out.append((("binding constraints ", "bold"), ("shadow price per unit", "dim")))
        for b in sorted(d.bindings, key=lambda b: -b.shadow_price)[:MAX_BINDINGS_SHOWN]:
            who = b.cls or ("-> " + ",".join(b.to) if b.to else "")
            out.append(((f"  {b.kind}:{b.resource} tier {b.tier} {who}", None),
                        (f"  {b.shadow_price:.4g}", "warn" if b.shadow_price > 0 else "dim")))
    if model.events:
        out.append((("events", "bold"),))
        for e in model.events[-events:]:
            lv = "crit" if e.priority <= 3 else "warn" if e.priority == 4 else None
            out.append(((f"  {clock(e.time_unix)} ", "dim"), (e.message, lv)))
    return out


def row_details(row: Row, model: TopModel) -> list[tuple[str, str]]:
    """Every field of a row with its unit, for the Enter dialog."""
    out = []
    for f in fields(row):
        v = getattr(row, f.name)
        if f.name in ("key", "parent"):
            continue
        if v is None:
            shown = "no limit (max)" if f.name in ("cpu_max_cores", "memory_high_bytes", "memory_max_bytes") \
                else "-"
        elif f.name.endswith("_bytes"):
            shown = f"{v} ({fmt_bytes(v)})"
        elif f.name.endswith("_seconds") or f.name == "reclaim_seconds_per_second":
            shown = f"{v:.6g} ({fmt_ms(v)} ms)"
        elif isinstance(v, float):
            shown = f"{v:.6g}"
        else:
            shown = str(v)
        out.append((f.name, shown))
    if row.kind == "class":
        cg = [r.path for r in model.rows if r.parent == row.key]
        out.append(("cgroups", ", ".join(cg) or "-"))
    return out
