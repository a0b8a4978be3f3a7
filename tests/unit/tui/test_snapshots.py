"""SVG snapshots of the app (pytest-textual-snapshot) on models built here, clock frozen.

Update after a deliberate change of the screen: .venv/bin/python -m pytest tests/unit/tui/test_snapshots.py
--snapshot-update, then look at the SVGs under __snapshots__ before committing them."""

from __future__ import annotations

from aios_host.tui.app import TopApp
from aios_host.tui.model import ViewState
from tests.unit.tui.fakes import daemon_model, local_model

SIZE = (160, 48)


def app(model, view: ViewState | None = None) -> TopApp:
    return TopApp(lambda: model, interval_s=3600, view=view, threaded=False)


def test_local_snapshot_tree(snap_compare):
    assert snap_compare(app(local_model()), terminal_size=SIZE)


def test_daemon_classes_jobs_and_decisions(snap_compare):
    assert snap_compare(app(daemon_model()), terminal_size=SIZE)


def test_flat_sorted_by_memory_with_a_filter(snap_compare):
    assert snap_compare(app(local_model()), press=[",", ",", "slash", "s", "l", "i", "c", "e", "enter", "t"],
                        terminal_size=SIZE)


def test_paused(snap_compare):
    assert snap_compare(app(local_model()), press=["space"], terminal_size=SIZE)


def test_details_of_a_class(snap_compare):
    assert snap_compare(app(daemon_model()), press=["down", "down", "down", "down", "enter"], terminal_size=SIZE)


def test_help(snap_compare):
    assert snap_compare(app(local_model()), press=["question_mark"], terminal_size=SIZE)
