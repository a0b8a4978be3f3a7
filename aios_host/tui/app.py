"""The Textual application of `aios-host top`. Thin on purpose: what rows to show and in which order
comes from model.visible_rows, every text and colour level from cells; this module only puts them
on the screen and turns keys into ViewState changes.

The table is updated in place: rows are keyed by Row.key, a refresh changes only the cells whose
text changed (DataTable.update_cell), adds and removes only the rows that came and went, and
reorders with DataTable.sort. The cursor stays on the same row (by key) across refreshes, re-sorts
and filters, as top's and htop's selection does.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence
from dataclasses import replace

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static

from aios_host.errors import AiosError
from aios_host.tui.cells import (
    COLUMNS,
    HELP_LINES,
    Line,
    column_title,
    decision_lines,
    header_lines,
    jobs_lines,
    row_cells,
    row_details,
)
from aios_host.tui.model import Row, TopModel, ViewState, step_sort, visible_rows

STYLE = {"bold": "bold", "dim": "dim", "title": "bold cyan", "ok": "green", "warn": "yellow", "crit": "bold red"}
# Past this many rows to drop, clearing and re-adding is cheaper: DataTable.remove_row is O(rows).
REBUILD_AFTER_REMOVALS = 64

Cells = list[tuple[str, str | None]]


def to_text(lines: Sequence[Line]) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        for text, style in line:
            out.append(text, STYLE.get(style or "", ""))
    return out


class Cell:
    """A table cell that renders as one segment. DataTable renders every visible cell again after
    any update (its render cache is keyed by an update count), and a rich Text takes twice as long
    to render: at 1000 rows with values moving every second, that is the refresh's biggest cost.
    The text comes padded to the column's fixed width. `row_key` is set on the name column's cells:
    DataTable.sort hands its key function cell values, and this is how one says which row it is."""

    __slots__ = ("text", "style", "row_key")

    def __init__(self, text: str, style: Style | None = None, row_key: str = "") -> None:
        self.text = text
        self.style = style
        self.row_key = row_key

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.text, self.style)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(len(self.text), len(self.text))

    def __str__(self) -> str:
        return self.text


CELL_STYLE = {name: Style.parse(spec) for name, spec in {**STYLE, "": "none"}.items()}


class RowsTable(DataTable):
    """The classes-and-cgroups table, kept in sync with a list of (row key, cells)."""

    BINDINGS = [Binding("enter", "select_cursor", "Details")]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, cell_padding=0, **kwargs)  # type: ignore[arg-type]
        self._cells: dict[str, Cells] = {}  # what each row shows now
        self._order: list[str] = []
        self._latest: dict[str, tuple[Callable[[], Cells], bool]] = {}  # stale rows: their latest cells
        self._styles: dict[tuple[object, ...], Style] = {}  # _render_cell's style sums

    def add_fixed_columns(self, view: ViewState) -> None:
        for c in COLUMNS:
            self.add_column(self._title(c.id, view), width=c.width, key=c.id)

    @staticmethod
    def _title(column_id: str, view: ViewState) -> Text:
        col = next(c for c in COLUMNS if c.id == column_id)
        label = column_title(col, view)
        return Text(label.ljust(col.width) if col.fmt == "name" else label.rjust(col.width))

    def set_titles(self, view: ViewState) -> None:
        for c in COLUMNS:
            self.columns[c.id].label = self._title(c.id, view)  # type: ignore[index]
        self.refresh()

    def _cell(self, key: str, i: int, text: str, level: str | None, bold: bool) -> Cell:
        style = CELL_STYLE[level or ("bold" if bold else "")]
        col = COLUMNS[i]
        if col.fmt == "name":
            shown = text if len(text) <= col.width else text[:col.width - 1] + "…"
            return Cell(shown.ljust(col.width), style, key)
        return Cell(text.rjust(col.width), style)

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        """A body cell holding a Cell of exactly the column's width is one segment with the same
        style DataTable would give it (CSS base + component styles before the cell's own, the
        cursor's after: textual's Styled), without rich's render_lines/Padding/crop for each
        of the ~600 visible cells after every update (they were most of a refresh's render time).
        Anything else (the header, a cell of another width) goes DataTable's own way. The cache
        and its key are DataTable's, so updates invalidate these as they do its own."""
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cache_key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._update_count,
                     self._pseudo_class_state)
        lines = self._cell_render_cache.get(cache_key)
        if lines is not None:
            return lines  # type: ignore[no-any-return]
        cell = self._data.get(row_key, {}).get(column_key) if row_key is not None and column_key is not None else None
        if not isinstance(cell, Cell) or len(cell.text) != width or row_index < self.fixed_rows or \
                column_index < self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        # The style sums are the same refresh after refresh for a cell that stays where it is:
        # kept here (rich's own cache of Style sums holds 1024, fewer than a screen of cells).
        style_key = (row_index, column_index, base_style, component_style, post_style, cell.style)
        style = self._styles.get(style_key)
        if style is None:
            if len(self._styles) > 50_000:
                self._styles.clear()
            pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
            style = self._styles[style_key] = pre + cell.style + post_style if cell.style else pre + post_style
        lines = [[Segment(cell.text, style)]]
        self._cell_render_cache[cache_key] = lines
        return lines

    @property
    def selected_key(self) -> str | None:
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self._order[self.cursor_row]

    def sync(self, shown: Sequence[tuple[str, Callable[[], Cells], bool]]) -> None:
        """Make the table show `shown` (row key, its cells when asked, bold) in that order, touching
        only what changed. A row's cells are made and written only while it is on screen or within
        a screen of it: of 1000 rows whose values move every second, ~100 are; the others are
        marked stale and brought up to date when a scroll or a cursor move brings them near
        (watch_scroll_y). Order, filter and sort come from the model, never from stale cells."""
        selected = self.selected_key
        want = [k for k, _, _ in shown]
        want_set = set(want)
        gone = [k for k in self._cells if k not in want_set]
        if len(gone) > REBUILD_AFTER_REMOVALS:
            self.clear()
            self._cells, self._order = {}, []
            self._latest.clear()
        else:
            for k in gone:
                self.remove_row(k)
                del self._cells[k]
                self._latest.pop(k, None)
                self._order.remove(k)
        for k, cells_of, bold in shown:
            if k in self._cells:
                self._latest[k] = (cells_of, bold)  # written when near the screen (_fill_near)
                continue
            cells = cells_of()
            self.add_row(*(self._cell(k, i, t, lv, bold) for i, (t, lv) in enumerate(cells)), key=k)
            self._order.append(k)
            self._cells[k] = cells
        if self._order != want:
            pos = {k: i for i, k in enumerate(want)}
            self.sort("name", key=lambda cell: pos[cell.row_key])
            self._order = want
        if selected is not None and selected in want_set:
            index = want.index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)
        self._fill_near()

    def _fill_near(self) -> None:
        """Write the latest cells of the stale rows on screen or within a screen of it."""
        if not self._latest:
            return
        height = max(self.size.height, 1)
        top = int(self.scroll_y)
        for k in self._order[max(0, top - height):top + 2 * height]:
            got = self._latest.pop(k, None)
            if got is None:
                continue
            cells_of, bold = got
            cells, old = cells_of(), self._cells[k]
            if cells is old or cells == old:
                continue
            for i, (new, was) in enumerate(zip(cells, old, strict=True)):
                if new != was:
                    self.update_cell(k, COLUMNS[i].id, self._cell(k, i, new[0], new[1], bold))
            self._cells[k] = cells

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._fill_near()

    def _on_resize(self, event: events.Resize) -> None:
        super()._on_resize(event)
        self._fill_near()


class TextScreen(ModalScreen[None]):
    """A dialog of text lines; any of Escape, Enter, q closes it."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll { width: 110; max-width: 95%; height: auto; max-height: 90%;
                                  border: round $accent; padding: 0 1; background: $surface; }
    TextScreen #body { width: auto; height: auto; }
    """

    def __init__(self, title: str, body: Text) -> None:
        super().__init__()
        self._title = title
        self._body = body

    def compose(self) -> ComposeResult:
        box = VerticalScroll(Static(self._body, id="body"))
        box.border_title = self._title
        box.border_subtitle = "Escape closes"
        yield box


def details_text(row: Row, model: TopModel) -> Text:
    pairs = row_details(row, model)
    width = max(len(k) for k, _ in pairs)
    return to_text([((k.ljust(width) + "  ", "bold"), (v, None)) for k, v in pairs])


class TopApp(App[None]):
    TITLE = "aios-host top"
    CSS = """
    #header { height: auto; padding: 0 1; }
    #header, #jobs, #decisions { text-wrap: nowrap; text-overflow: ellipsis; }
    RowsTable { height: 1fr; }
    #panels { height: 12; }
    #panels > VerticalScroll { width: 1fr; border: round $primary-darken-1; padding: 0 1; }
    #filter { dock: bottom; display: none; }
    """
    BINDINGS = [
        Binding("less_than_sign,comma", "sort(-1)", "Sort left", key_display="<"),
        Binding("greater_than_sign,full_stop", "sort(1)", "Sort right", key_display=">"),
        Binding("I", "invert", "Invert"),
        # priority: handled as the key arrives, before the keys queued behind it are dispatched, so
        # that "/app" typed fast lands in the filter box, not in the table the "/" was typed in
        Binding("slash", "filter", "Filter", key_display="/", priority=True),
        Binding("t", "tree", "Tree/flat"),
        Binding("space", "pause", "Pause"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "close_filter(True)", "Clear filter", show=False),
    ]

    def __init__(self, fetch: Callable[[], TopModel], interval_s: float = 1.0, view: ViewState | None = None,
                 threaded: bool = True, freeze_gc: bool = False) -> None:
        """fetch: one refresh (Collector.collect; a fake in tests). threaded: fetch off the UI
        thread (the command); False fetches inline, so that a test knows when a refresh is done.
        freeze_gc: once mounted, move every object so far (textual, rich, the widgets) out of the
        garbage collector's sight: its full collections then walk only the models, and the slowest
        refreshes of 1000 rows take a third less (bench_top.py's p95)."""
        super().__init__()
        self.freeze_gc = freeze_gc
        self.fetch = fetch
        self.interval_s = interval_s
        self.view = view or ViewState()
        self.threaded = threaded
        self.model: TopModel | None = None
        self.refresh_error: str | None = None
        self._shown: dict[str, list[Line]] = {}
        self._row_cells: dict[str, tuple[Row, int, bool, Cells]] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield RowsTable(id="rows")
        with Horizontal(id="panels"):
            jobs = VerticalScroll(Static(id="jobs"))
            jobs.border_title = "jobs"
            yield jobs
            decisions = VerticalScroll(Static(id="decisions"))
            decisions.border_title = "decisions"
            yield decisions
        yield Input(placeholder="filter by name; Enter keeps it, Escape clears it", id="filter")
        yield Footer()

    @property
    def table(self) -> RowsTable:
        return self.query_one(RowsTable)

    def on_mount(self) -> None:
        self.table.add_fixed_columns(self.view)
        self.table.focus()
        self.refresh_data()
        self.set_interval(self.interval_s, self.refresh_data)
        if self.freeze_gc:
            gc.freeze()

    # -- data ------------------------------------------------------------------------------------

    def refresh_data(self) -> None:
        """One refresh, unless paused: fetch a model and show it."""
        if self.view.paused:
            return
        if self.threaded:
            self._fetch_in_thread()
        else:
            self._fetched(*self._fetch_once())

    def _fetch_once(self) -> tuple[TopModel | None, str | None]:
        try:
            return self.fetch(), None
        except AiosError as exc:  # e.g. the cgroup tree went unreadable: say so, keep the last model
            return None, str(exc)

    @work(thread=True, exclusive=True, group="fetch")
    def _fetch_in_thread(self) -> None:
        model, error = self._fetch_once()
        self.call_from_thread(self._fetched, model, error)

    def _fetched(self, model: TopModel | None, error: str | None) -> None:
        self.refresh_error = error
        if model is not None:
            self.model = model
        self.show()

    def show(self) -> None:
        """Put the model on the screen as the view says."""
        m = self.model
        if m is None:
            return
        rows = visible_rows(m.rows, self.view)
        last, self._row_cells = self._row_cells, {}  # rows gone from the view leave the cache
        self.table.sync([(r.key, functools.partial(self._cells_of, r, depth, last), r.kind == "class")
                         for r, depth in rows])
        header = header_lines(m, self.view, len(rows))
        if self.refresh_error:
            header.append((("refresh failed: ", "bold"), (self.refresh_error, "crit")))
        self._update("#header", header)
        self._update("#jobs", jobs_lines(m))
        self._update("#decisions", decision_lines(m))

    def _cells_of(self, row: Row, depth: int, last: dict[str, tuple[Row, int, bool, Cells]]) -> Cells:
        """row_cells, reused while the row and its place are what they were at the last refresh
        (an idle cgroup's row does not change): the same list object, which sync skips at once."""
        tree = self.view.tree
        hit = last.get(row.key)
        if hit is not None and hit[0] == row and hit[1] == depth and hit[2] == tree:
            self._row_cells[row.key] = hit
            return hit[3]
        cells = row_cells(row, depth, tree)
        self._row_cells[row.key] = (row, depth, tree, cells)
        return cells

    def _update(self, selector: str, lines: list[Line]) -> None:
        """Static.update lays the screen out again: only when the lines changed (jobs and decisions
        change once in a while, not every second)."""
        if self._shown.get(selector) != lines:
            self._shown[selector] = lines
            self.query_one(selector, Static).update(to_text(lines))

    def set_view(self, view: ViewState) -> None:
        sort_changed = (view.sort_column, view.descending) != (self.view.sort_column, self.view.descending)
        self.view = view
        if sort_changed:
            self.table.set_titles(view)
        self.show()

    # -- keys ------------------------------------------------------------------------------------

    def action_sort(self, step: int) -> None:
        self.set_view(step_sort(self.view, step))

    def action_invert(self) -> None:
        self.set_view(replace(self.view, descending=not self.view.descending))

    def action_tree(self) -> None:
        self.set_view(replace(self.view, tree=not self.view.tree))

    def action_pause(self) -> None:
        self.set_view(replace(self.view, paused=not self.view.paused))
        if not self.view.paused:
            self.refresh_data()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:  # a "/" typed in the filter (a path) is text: the binding took it first
            box.insert_text_at_cursor("/")
            return
        box.value = self.view.filter_text
        # shown and focused now, not after the next refresh (as add_class and focus() would): the
        # keys typed right after "/" are already queued, and must land in the box
        box.display = True
        self.screen.set_focus(box)

    def action_close_filter(self, clear: bool) -> None:
        box = self.query_one("#filter", Input)
        if not box.display:
            return
        box.display = False
        if clear:
            self._set_filter("")
        self.screen.set_focus(self.table)

    def _set_filter(self, text: str) -> None:
        self.set_view(replace(self.view, filter_text=text))

    @on(Input.Changed, "#filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        self._set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_kept(self, _event: Input.Submitted) -> None:
        self.action_close_filter(False)

    def action_help(self) -> None:
        self.push_screen(TextScreen("aios-host top: keys and columns", to_text([((ln, None),) for ln in HELP_LINES])))

    @on(DataTable.RowSelected)
    def _details(self, event: DataTable.RowSelected) -> None:
        m = self.model
        row = next((r for r in m.rows if r.key == event.row_key.value), None) if m else None
        if m is not None and row is not None:
            self.push_screen(TextScreen(f"{row.kind} {row.path}", details_text(row, m)))


def run(fetch: Callable[[], TopModel], interval_s: float, view: ViewState) -> None:
    TopApp(fetch, interval_s, view, freeze_gc=True).run()

