"""Batch mode (`aios-host top --once`, `-n N`): the --json document and the plain-text tables.

The document's shape is versioned ("schema": "aios-host-top/1", described by top.schema.json beside
this file): a consumer checks the version, and a change that renames or retypes a key bumps it.
Numbers only, in unit-suffixed keys; null where the source does not measure a value (and, for
limits, where nothing limits it).

Text is what the TUI's table shows, padded from the plain cell texts so that colour escapes (only
when stdout is a terminal) never shift a column.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from aios_host.tui.cells import (
    COLUMNS,
    Line,
    decision_lines,
    header_lines,
    jobs_lines,
    row_cells,
)
from aios_host.tui.model import SCHEMA, Row, TopModel, ViewState, visible_rows

SCHEMA_PATH = Path(__file__).with_name("top.schema.json")

_ROW_KEYS = ("key", "kind", "name", "path", "parent", "tier", "weight", "memory_guard", "seconds_to_oom",
             "cpu_demand_cores", "psi_cpu_full_percent")


def _row_dict(row: Row) -> dict[str, Any]:
    d = asdict(row)
    return {k: d[k] for k in (*_ROW_KEYS, *(c.id for c in COLUMNS if c.id != "name"))}


def _jsonable(x: Any) -> Any:
    """asdict keeps tuples; the document holds what JSON holds (a validator tells the two apart)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def to_document(model: TopModel) -> dict[str, Any]:
    """The --json document of one model. Rows in tree pre-order (parents first), whatever the
    TUI's sort: `parent` rebuilds the tree, and a consumer sorts as it likes."""
    h = model.host
    psi = {name: {"some_avg10_percent": p.some_percent, "full_avg10_percent": p.full_percent}
           for name, p in (("cpu", h.cpu), ("memory", h.memory), ("io", h.io))}
    d = model.daemon
    dec = model.decision
    return {
        "schema": SCHEMA,
        "time_unix": model.time_unix,
        "interval_seconds": model.interval_seconds,
        "source": model.source,
        "host": {
            "cpu_count": h.cpu_count,
            "cpu_usage_percent": h.cpu_usage_percent,
            "memory_total_bytes": h.memory_total_bytes,
            "memory_available_bytes": h.memory_available_bytes,
            "psi": psi,
        },
        "gpus": [asdict(g) for g in model.gpus],  # flat: no tuples inside
        "daemon": None if d is None else asdict(d),
        "daemon_note": model.daemon_note,
        "rows": [_row_dict(r) for r in model.rows],
        "jobs": [_jsonable(asdict(j)) for j in model.jobs],
        "decision": None if dec is None else _jsonable(asdict(dec)),
        "events": [asdict(e) for e in model.events],
    }


# -- text ------------------------------------------------------------------------------------------

JOBS_SHOWN = 10  # the --json document has them all
ANSI = {"bold": "1", "dim": "2", "title": "1;36", "ok": "32", "warn": "33", "crit": "1;31"}


def paint(text: str, style: str | None, colour: bool) -> str:
    if not colour or style is None or not text:
        return text
    return f"\x1b[{ANSI[style]}m{text}\x1b[0m"


def line_text(line: Line, colour: bool) -> str:
    return "".join(paint(t, s, colour) for t, s in line).rstrip()


def table_text(model: TopModel, view: ViewState, colour: bool) -> list[str]:
    rows = visible_rows(model.rows, view)
    cells = [row_cells(r, depth, view.tree) for r, depth in rows]
    widths = [max([len(c.title), *(len(row[i][0]) for row in cells)]) for i, c in enumerate(COLUMNS)]

    def fit(i: int, text: str) -> str:
        return text.ljust(widths[i]) if COLUMNS[i].fmt == "name" else text.rjust(widths[i])

    out = [paint(" ".join(fit(i, c.title) for i, c in enumerate(COLUMNS)).rstrip(), "bold", colour)]
    for row in cells:
        out.append(" ".join(paint(fit(i, text), lv, colour) for i, (text, lv) in enumerate(row)).rstrip())
    return out


def text_report(model: TopModel, view: ViewState, colour: bool) -> str:
    """One screen's worth as text: header, table, jobs, decisions (what `top -b` prints per frame)."""
    shown = len(visible_rows(model.rows, view))
    parts = [line_text(ln, colour) for ln in header_lines(model, view, shown)]
    parts += ["", *table_text(model, view, colour), ""]
    parts += [line_text(ln, colour) for ln in jobs_lines(model, limit=JOBS_SHOWN)]
    parts += [""] + [line_text(ln, colour) for ln in decision_lines(model)]
    return "\n".join(parts) + "\n"
