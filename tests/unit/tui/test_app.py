"""The Textual app under Pilot: keys change the view, the table follows the model by row key
(cursor kept, cells updated in place), pause, filter, details and help."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual import events

from aios_host.errors import AiosError
from aios_host.tui.app import RowsTable, TextScreen, TopApp
from aios_host.tui.model import COLUMN_IDS, TopModel, ViewState, local_rows, visible_rows
from tests.unit.tui.fakes import big_rows, daemon_model, local_model, local_tree

SIZE = (160, 48)


class Models:
    """fetch() for the app: the given models in turn, the last one repeated; counts the calls."""

    def __init__(self, *models: TopModel) -> None:
        self.models = list(models)
        self.calls = 0

    def __call__(self) -> TopModel:
        self.calls += 1
        return self.models[min(self.calls, len(self.models)) - 1]


def app_of(*models: TopModel, view: ViewState | None = None) -> tuple[TopApp, Models]:
    fetch = Models(*models)
    # a long interval: the tests refresh by hand, and know when a refresh is done (threaded=False)
    return TopApp(fetch, interval_s=3600, view=view, threaded=False), fetch


def shown_keys(table: RowsTable) -> list[str]:
    return [row.key.value for row in table.ordered_rows]


def expected_keys(app: TopApp) -> list[str]:
    return [r.key for r, _ in visible_rows(app.model.rows, app.view)]


async def test_the_table_shows_the_rows_in_the_views_order():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE):
        assert shown_keys(app.table) == expected_keys(app)
        assert shown_keys(app.table)[0] == "cgroup:/"


@pytest.mark.parametrize(("keys", "column", "descending"), [
    ((">",), COLUMN_IDS[COLUMN_IDS.index("cpu_usage_cores") + 1], True),
    ((".",), COLUMN_IDS[COLUMN_IDS.index("cpu_usage_cores") + 1], True),
    (("<",), COLUMN_IDS[COLUMN_IDS.index("cpu_usage_cores") - 1], True),
    ((",", ",", ",", ","), "name", False),
    (("I",), "cpu_usage_cores", False),
    (("I", "I"), "cpu_usage_cores", True),
])
async def test_sort_keys(keys, column, descending):
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*keys)
        assert (app.view.sort_column, app.view.descending) == (column, descending)
        assert shown_keys(app.table) == expected_keys(app)
        title = str(app.table.columns[column].label).strip()
        assert title.endswith("▼" if descending else "▲")


async def test_sorting_by_memory_flat_puts_the_biggest_first():
    app, _ = app_of(local_model(), view=ViewState(sort_column="memory_current_bytes", tree=False))
    async with app.run_test(size=SIZE):
        assert shown_keys(app.table)[:2] == ["cgroup:/aios.slice", "cgroup:/aios.slice/training"]


async def test_t_switches_tree_and_flat():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        name = app.table.get_cell("cgroup:/aios.slice/training", "name")
        assert str(name).rstrip() == "    training"
        await pilot.press("t")
        assert not app.view.tree
        assert str(app.table.get_cell("cgroup:/aios.slice/training", "name")).rstrip() == "/aios.slice/training"
        assert shown_keys(app.table) == expected_keys(app)
        await pilot.press("t")
        assert app.view.tree


async def test_filter_typed_kept_and_cleared():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "b", "a", "t", "q")  # q is typed into the filter, does not quit
        assert app.is_running and app.view.filter_text == "batq"
        assert shown_keys(app.table) == []
        await pilot.press("backspace")
        assert shown_keys(app.table) == ["cgroup:/", "cgroup:/aios.slice", "cgroup:/aios.slice/batch"]
        await pilot.press("enter")  # keeps it
        assert app.view.filter_text == "bat" and app.focused is app.table
        await pilot.press("slash", "escape")  # clears it
        assert app.view.filter_text == "" and len(shown_keys(app.table)) == len(app.model.rows)


async def test_space_pauses_refreshing():
    app, fetch = app_of(local_model(), local_model(time_unix=2e9))
    async with app.run_test(size=SIZE) as pilot:
        assert fetch.calls == 1
        await pilot.press("space")
        assert app.view.paused
        app.refresh_data()
        assert fetch.calls == 1 and "PAUSED" in str(app.query_one("#header").render())
        await pilot.press("space")  # unpausing refreshes at once
        assert not app.view.paused and fetch.calls == 2 and app.model.time_unix == 2e9


def moved(model: TopModel) -> TopModel:
    """The same rows, with /user.slice now the busiest: it moves to the top of its siblings."""
    prev = {r.path: r for r in local_tree(1.0)}
    tree = local_tree(1.0 + 0.9 / 9000)
    tree = [replace(r, cpu_usage_usec=r.cpu_usage_usec + 10**9) if r.path == "/user.slice" else r for r in tree]
    return replace(model, rows=local_rows(tree, prev, 1.0))


async def test_the_cursor_stays_on_its_row_across_a_refresh_that_moves_it():
    app, _ = app_of(local_model(), moved(local_model()))
    async with app.run_test(size=SIZE) as pilot:
        target = "cgroup:/user.slice"
        while app.table.selected_key != target:
            await pilot.press("down")
        before = app.table.cursor_row
        app.refresh_data()
        await pilot.pause()
        assert app.table.selected_key == target
        assert app.table.cursor_row != before and shown_keys(app.table) == expected_keys(app)


async def test_the_cursor_stays_on_its_row_when_the_sort_changes():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down", "down")
        target = app.table.selected_key
        await pilot.press("<", "I")
        assert app.table.selected_key == target


async def test_a_refresh_with_the_same_rows_updates_cells_in_place(monkeypatch):
    """1000 rows, every value changed: no row added or removed, only update_cell of changed cells."""
    def model(scale: float) -> TopModel:
        prev = {r.path: r for r in big_rows(1000, 1.0)}
        return local_model(rows=local_rows(big_rows(1000, scale), prev, 1.0))

    app, _ = app_of(model(1.5), model(2.0))
    async with app.run_test(size=SIZE) as pilot:
        assert app.table.row_count == 1000
        await pilot.press("down", "down")
        target = app.table.selected_key
        calls = {"add_row": 0, "remove_row": 0, "clear": 0, "update_cell": 0}
        for name in calls:
            orig = getattr(app.table, name)

            def spy(*a, _orig=orig, _name=name, **kw):
                calls[_name] += 1
                return _orig(*a, **kw)
            monkeypatch.setattr(app.table, name, spy)
        app.refresh_data()
        await pilot.pause()
        assert calls["add_row"] == calls["remove_row"] == calls["clear"] == 0
        # CPU and faults/s changed on the rows that use any: only those cells were written
        changed = sum(1 for r in app.model.rows if r.cpu_usage_cores) + \
            sum(1 for r in app.model.rows if r.faults_per_second)
        assert 0 < calls["update_cell"] <= changed
        assert app.table.selected_key == target
        assert shown_keys(app.table) == expected_keys(app)


async def test_only_rows_near_the_screen_are_written_and_a_scroll_brings_the_rest_up_to_date(monkeypatch):
    """1000 rows whose values all move: a refresh makes and writes the cells of the rows on screen
    or within a screen of it, no others; scrolling to the end shows the latest values there."""
    import aios_host.tui.app as app_mod

    def model(scale: float) -> TopModel:
        prev = {r.path: r for r in big_rows(1000, 1.0)}
        return local_model(rows=local_rows(big_rows(1000, scale), prev, 1.0))

    app, _ = app_of(model(1.5), model(2.0), view=ViewState(sort_column="name", descending=False, tree=False))
    async with app.run_test(size=SIZE) as pilot:
        made: list[str] = []
        orig = app_mod.row_cells

        def counted(row, depth, tree):  # type: ignore[no-untyped-def]
            made.append(row.key)
            return orig(row, depth, tree)

        monkeypatch.setattr(app_mod, "row_cells", counted)
        app.refresh_data()
        await pilot.pause()
        height = app.table.size.height
        assert 0 < len(made) <= 2 * height + 1, (len(made), height)  # not 1000
        assert set(made) <= set(shown_keys(app.table)[:2 * height + 1])

        def cells_shown(key: str) -> list[str]:
            return [str(c) for c in app.table.get_row(key)]

        last = shown_keys(app.table)[-1]
        want = [t for t, _ in orig(next(r for r in app.model.rows if r.key == last), 0, False)]
        assert [c.strip() for c in cells_shown(last)] != [t.strip() for t in want]  # stale, off screen
        await pilot.press("ctrl+end")  # the cursor to the last row: the table scrolls there
        await pilot.pause()
        assert app.table.selected_key == last
        assert [c.strip() for c in cells_shown(last)] == [t.strip() for t in want]
        assert shown_keys(app.table) == expected_keys(app)


async def test_rows_that_come_and_go():
    small = local_model(rows=local_model().rows[:3])
    app, _ = app_of(local_model(), small, local_model())
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_data()
        await pilot.pause()
        assert shown_keys(app.table) == expected_keys(app) and app.table.row_count == 3
        app.refresh_data()
        await pilot.pause()
        assert shown_keys(app.table) == expected_keys(app) and app.table.row_count == len(local_model().rows)


async def test_enter_shows_the_rows_details_and_escape_closes_them():
    app, _ = app_of(daemon_model())
    async with app.run_test(size=SIZE) as pilot:
        while app.table.selected_key != "class:batch":
            await pilot.press("down")
        await pilot.press("enter")
        assert isinstance(app.screen, TextScreen)
        body = str(app.screen.query_one("#body").render())
        assert "memory_guard" in body and "tighten" in body and "/aios.slice/batch" in body
        await pilot.press("escape")
        assert not isinstance(app.screen, TextScreen)


async def test_help_and_quit():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, TextScreen)
        assert "sort by the column" in str(app.screen.query_one("#body").render())
        await pilot.press("escape", "q")
        assert not app.is_running


async def test_a_failed_refresh_is_shown_and_the_last_model_kept():
    good = local_model()
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) > 1:
            raise AiosError("/sys/fs/cgroup: read failed: EACCES")
        return good

    app = TopApp(fetch, interval_s=3600, threaded=False)
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_data()
        await pilot.pause()
        assert app.model is good and "refresh failed: /sys/fs/cgroup" in str(app.query_one("#header").render())


async def test_refreshes_in_a_thread_by_default():
    fetch = Models(local_model(), daemon_model())
    app = TopApp(fetch, interval_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if app.model is not None and app.model.source == "daemon":
                break
        assert app.model.source == "daemon" and shown_keys(app.table) == expected_keys(app)


async def test_keys_typed_fast_after_the_slash_land_in_the_filter():
    """A terminal delivers "/bat<Enter>" typed fast (or pasted by tmux send-keys) as one burst."""
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        for key, char in [("slash", "/"), ("b", "b"), ("a", "a"), ("t", "t"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await pilot.pause(0.3)
        assert app.view.filter_text == "bat" and app.focused is app.table


async def test_a_slash_typed_in_the_filter_is_part_of_it():
    app, _ = app_of(local_model())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "e", "slash", "b", "enter")
        assert app.view.filter_text == "e/b"
        assert shown_keys(app.table) == ["cgroup:/", "cgroup:/aios.slice", "cgroup:/aios.slice/batch"]
