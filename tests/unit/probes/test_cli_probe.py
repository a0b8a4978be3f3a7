"""`aios-host probe ...` (aios_host.cli.probe): user mistakes are one line and exit 1, never a traceback."""

import argparse
import json
import sys

import pytest

from aios_host.cli import probe as cli_probe
from tests.unit.probes.fakes import fake_probe_host


def run(argv, capsys):
    try:
        rc = cli_probe.main(argv)
    except SystemExit as exc:  # a usage mistake: argparse exits 2 after its one line
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(err, text):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aios-host: error: ") and text in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def host(tmp_path):
    return fake_probe_host(tmp_path)


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_run_needs_root(host, capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    rc, _, err = run(["run", "--duration", "1", "--root", str(host)], capsys)
    assert rc == 1
    one_line_error(err, "need root")


def test_run_without_bcc(host, capsys, monkeypatch, as_root):
    monkeypatch.setitem(sys.modules, "bcc", None)  # import bcc -> ImportError
    rc, _, err = run(["run", "--duration", "1", "--root", str(host)], capsys)
    assert rc == 1
    one_line_error(err, "bcc does not import")
    assert "python3-bpfcc" in err


def test_run_without_tracefs(tmp_path, capsys, as_root):
    fake_probe_host(tmp_path, tracefs=False)
    rc, _, err = run(["run", "--root", str(tmp_path)], capsys)
    assert rc == 1
    one_line_error(err, "mount -t tracefs nodev /sys/kernel/tracing")


@pytest.mark.parametrize("action", ["run", "stats"])
@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "1e400", "five"])
def test_bad_duration(host, capsys, action, value):
    rc, _, err = run([action, f"--duration={value}", "--root", str(host)], capsys)
    assert rc == 2
    one_line_error(err, "--duration")


def test_unknown_cgroup(host, capsys, as_root):
    rc, _, err = run(["run", "--cgroup", "nope.slice", "--root", str(host)], capsys)
    assert rc == 1
    one_line_error(err, "nope.slice")


def test_unknown_probe(host, capsys, as_root):
    rc, _, err = run(["list", "--probes", "sched,kprobes", "--root", str(host)], capsys)
    assert rc == 1
    one_line_error(err, "unknown probe 'kprobes'")


def test_raw_refused_with_fallback_headers(host, capsys, as_root):
    rc, _, err = run(["list", "--attach", "raw", "--root", str(host)], capsys)
    assert rc == 1
    one_line_error(err, "raw tracepoints need kernel 5.18+ and either kernel headers matching")


def test_list_table(host, capsys, as_root):
    rc, out, _ = run(["list", "--root", str(host)], capsys)
    assert rc == 0
    assert "sched:sched_switch" in out and "syscalls:sys_enter_exit_group" in out
    assert "attach: tracepoint (kernel headers are fallback" in out


def test_list_json_with_a_missing_tracepoint(tmp_path, capsys, as_root):
    fake_probe_host(tmp_path, missing=("exceptions:page_fault_user",))
    rc, out, _ = run(["list", "--json", "--root", str(tmp_path)], capsys)
    assert rc == 0
    doc = json.loads(out)
    st = {p["name"]: p for p in doc["probes"]}
    assert doc["attach"] == "tracepoint" and doc["headers"] == "fallback"
    assert st["faults"]["status"] == "unavailable" and "page_fault_user" in st["faults"]["detail"]
    assert st["sched"]["status"] == "ready"
    assert {"tracepoint": "sched:sched_switch", "attach": "tracepoint"} in st["sched"]["tracepoints"]


def test_list_raw_on_matching_headers(tmp_path, capsys, as_root):
    fake_probe_host(tmp_path, release="6.1.0-56-amd64", headers="6.1.0-56-amd64")
    rc, out, _ = run(["list", "--json", "--root", str(tmp_path)], capsys)
    doc = json.loads(out)
    assert doc["attach"] == "raw"
    sched = next(p for p in doc["probes"] if p["name"] == "sched")
    assert {t["attach"] for t in sched["tracepoints"]} == {"raw"}


def test_list_as_non_root_on_the_host_does_not_touch_tracefs(capsys, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    rc, out, _ = run(["list"], capsys)
    assert rc == 0 and "not root" in out


def test_add_parsers_fits_the_main_cli_shape():
    p = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="/")
    common.add_argument("--json", action="store_true")
    cli_probe.add_parsers(p.add_subparsers(dest="command"), common)
    args = p.parse_args(["probe", "run", "--duration", "2", "--cgroup", "a/b", "--json"])
    assert args.func is cli_probe.cmd_run and args.duration == 2.0 and args.cgroup == "a/b" and args.json
    assert p.parse_args(["probe", "stats"]).func is cli_probe.cmd_stats
