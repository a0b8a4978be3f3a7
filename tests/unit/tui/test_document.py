"""Batch mode: the --json document against the schema we ship, golden outputs of `top --once` built
from a fixed model (clock frozen), -n streaming, colour only on a terminal, and the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jsonschema
import pytest

from aios_host.cli import main
from aios_host.tui.document import SCHEMA_PATH, text_report, to_document
from aios_host.tui.model import SCHEMA, TopModel, ViewState
from tests.unit.tui.fakes import daemon_model, local_model
from tests.unit.tui.test_sources import fake_tree

GOLDEN = Path(__file__).with_name("golden")
# UPDATE_GOLDEN=1 rewrites the golden files from this run's output (then read the diff before committing)
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))


def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("model", [daemon_model(), local_model(), TopModel(0.0, 1.0, "local", local_model().host)],
                         ids=["daemon", "local", "empty"])
def test_documents_follow_the_schema(model):
    doc = to_document(model)
    errors = sorted(validator().iter_errors(doc), key=str)
    assert not errors, errors[0].message
    assert doc["schema"] == SCHEMA


def test_the_schema_refuses_a_unit_string_and_a_missing_key():
    doc = to_document(daemon_model())
    v = validator()
    doc["gpus"][0]["sm_clock_mhz"] = "1980MHz"
    assert not v.is_valid(doc)
    doc = to_document(daemon_model())
    del doc["rows"][0]["memory_current_bytes"]
    assert not v.is_valid(doc)


def test_every_number_is_in_a_unit_suffixed_key():
    """A number's key says its unit (or is a count, an index or an id)."""
    units = ("_cores", "_bytes", "_seconds", "_percent", "_per_second", "_total", "_unix", "_watts", "_celsius",
             "_mhz", "_files", "_writes", "_count")
    unitless = {"cpu_count", "nr_procs", "pid", "tier", "weight", "index", "rank", "restart", "restarts",
                "max_restarts", "world_size", "nproc", "nnodes", "last_step", "priority", "shadow_price",
                "factor", "stragglers_total"}

    def walk(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from walk(v, k)
        elif isinstance(x, list):
            for v in x:
                yield from walk(v, key)
        elif isinstance(x, int | float) and not isinstance(x, bool):
            yield key

    bad = {k for k in walk(to_document(daemon_model())) if not k.endswith(units) and k not in unitless}
    assert not bad


class FakeCollector:
    """What cmd_top gets instead of the real one: the fixed models, in turn."""

    def __init__(self, models):
        self.models = list(models)
        self.calls = 0
        self.closed = False

    def collect(self):
        self.calls += 1
        return self.models[min(self.calls, len(self.models)) - 1]

    def close(self):
        self.closed = True


@pytest.fixture
def fixed(monkeypatch):
    def use(*models):
        fake = FakeCollector(models)
        monkeypatch.setattr("aios_host.tui.sources.default_collector", lambda root, sock, interval: fake)
        return fake
    return use


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"differs from {path} (UPDATE_GOLDEN=1 rewrites it)"


def test_once_json_golden(fixed, capsys):
    fake = fixed(daemon_model(), daemon_model())
    assert main(["top", "--once", "--json", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    golden("top-once-daemon.json", out)
    assert fake.calls == 2 and fake.closed  # one reading to start the rates, one shown
    assert validator().is_valid(json.loads(out))


def test_once_text_golden_has_no_colour_off_a_terminal(fixed, capsys):
    fixed(local_model(), local_model())
    assert main(["top", "--once", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    golden("top-once-local.txt", out)


def test_sort_flat_and_filter_options(fixed, capsys):
    fixed(local_model())
    assert main(["top", "--once", "--interval", "0.1", "--flat", "--sort", "memory_current_bytes",
                 "--filter", "system"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("NAME"))) + 1:]
    names = [x.split()[0] for x in table[:table.index("")]]
    # the matches only, biggest memory first, whole paths
    assert names == ["/system.slice", "/system.slice/journald.service", "/system.slice/sshd.service"]


def test_colour_on_a_terminal():
    coloured = text_report(local_model(), ViewState(), colour=True)
    assert "\x1b[1;31m" in coloured  # the batch cgroup's CPU pressure is critical
    plain = text_report(local_model(), ViewState(), colour=False)
    assert "\x1b[" not in plain
    strip = __import__("re").sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert strip == plain  # colour never moves a column


def test_n_streams_json_lines(fixed, capsys):
    models = [local_model(time_unix=float(t)) for t in range(5)]
    fake = fixed(*models)
    assert main(["top", "-n", "3", "--json", "--interval", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and fake.calls == 4
    docs = [json.loads(x) for x in lines]
    assert [d["time_unix"] for d in docs] == [1.0, 2.0, 3.0]
    assert all(validator().is_valid(d) for d in docs)


def test_once_on_a_fake_root(tmp_path, capsys):
    root = fake_tree(tmp_path)
    assert main(["top", "--once", "--json", "--interval", "0.1", "--root", str(root)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert validator().is_valid(doc)
    assert doc["source"] == "local" and doc["daemon_note"] == "not asked (--local)"
    assert [r["path"] for r in doc["rows"]] == ["/", "/web.slice", "/web.slice/app"]
    assert doc["rows"][1]["memory_high_bytes"] == 1 << 30 and doc["gpus"] == []


@pytest.mark.parametrize(("argv", "words"), [
    (["top", "--sort", "bogus"], "argument --sort: invalid choice"),
    (["top", "-n", "0"], "argument -n/--iterations: 0: must be from 1"),
    (["top", "--interval", "5ms"], "argument --interval/-d"),
    (["top", "--bogus"], "unrecognized arguments"),
])
def test_usage_errors_are_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and words in err, err


def test_no_cgroup2_is_one_line(tmp_path, capsys):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text("22 1 0:5 / /proc rw - proc proc rw\n")
    assert main(["top", "--once", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cgroup2 mount" in err


def test_without_textual_the_tui_is_one_clear_line(tmp_path, monkeypatch, capsys):
    """`import textual` failing (the [tui] extra not installed) is the install hint, not a traceback."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # interactive: would start the TUI
    for name in [m for m in sys.modules if m == "aios_host.tui.app" or m.split(".")[0] in ("textual", "rich")]:
        monkeypatch.delitem(sys.modules, name)
    import aios_host.tui

    monkeypatch.delattr(aios_host.tui, "app", raising=False)  # the package's handle on a loaded app module
    monkeypatch.setitem(sys.modules, "textual", None)  # import textual -> ImportError
    assert main(["top", "--root", str(fake_tree(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err == "aios-host: error: aios-host top needs textual: pip install 'aios-host[tui]' " \
                  "(or --once for batch output)\n"
