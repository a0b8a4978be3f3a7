"""SIGINT/SIGTERM during `probe run` / `probe stats`: what was measured so far is printed in the normal
format, a note on stderr says after how long, and the exit code is 128+signal (130, 143).

The probes are a fake ProbeSet (no bcc, no root) whose poll() sends the signal to this process, as a
Ctrl-C or `kill` would, mid-measurement.
"""

import json
import os
import signal
import time

import pytest

from aios_host.cli import probe as cli_probe
from aios_host.cli.base import StopSignals
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.probes import loader
from aios_host.probes.cgroup_ids import walk_ids
from aios_host.probes.collect import measure
from aios_host.probes.loader import ProbeStatus
from aios_host.probes.sample import CgroupCounters, ProbeSample
from aios_host.probes.structs import ExecEvent
from tests.unit.probes.fakes import fake_probe_host

SECOND_NS = 10**9


class FakeProbes:
    """Stands in for ProbeSet. Its samples' clock is the number of waiting polls (one second each),
    every cgroup is busy half a CPU, each waiting poll brings one exec event, and the `signal_at`-th
    waiting poll sends `signum` to this process (without a signum, polls wait as the real ones do)."""

    def __init__(self, root, signum=None, signal_at=3):
        self.ids = list(walk_ids(CgroupFs(SysRoot(root))))
        self.signum = signum
        self.signal_at = signal_at
        self.polls = 0
        self.statuses = {"sched": ProbeStatus("sched", "run queue", (("sched:sched_switch", "tracepoint"),),
                                              "attached")}
        self.startup_s = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def read(self):
        t = self.polls * SECOND_NS
        return ProbeSample(t_ns=t + 1, attach="tracepoint",
                           cgroups={i: CgroupCounters(oncpu_ns=t // 2, switches=self.polls) for i in self.ids})

    def poll(self, timeout_ms=0):
        if timeout_ms == 0:  # the drain after the interval
            return []
        self.polls += 1
        if self.signum is None:
            time.sleep(timeout_ms / 1000)  # as the real one waits: the interval ends by the clock
        elif self.polls == self.signal_at:
            os.kill(os.getpid(), self.signum)
        elif self.polls > 50:
            raise AssertionError("the signal did not end the measurement")
        return [ExecEvent(ts_ns=self.polls, cgroup_id=self.ids[0], pid=100 + self.polls, tid=100 + self.polls,
                          uid=0, comm="sh", old_pid=0, filename="/bin/true")]

    def prog_counters(self):
        return []


@pytest.fixture
def host(tmp_path):
    return fake_probe_host(tmp_path)


@pytest.fixture
def fake(host, monkeypatch):
    """`probe run/stats` load this FakeProbes; the test sets its signal."""
    probes = FakeProbes(host)
    monkeypatch.setattr(loader, "ProbeSet", lambda root, options: probes)
    return probes


@pytest.fixture(autouse=True)
def _handlers_restored():
    """Every interruptible block must put the previous handlers back (or pytest's Ctrl-C breaks)."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_measure_stops_at_the_signal_with_what_it_has(host):
    probes = FakeProbes(host, signal.SIGINT, signal_at=3)
    fs = CgroupFs(SysRoot(host))
    with StopSignals() as stop:
        snap, events = measure(probes, fs, 3600.0, stop=stop)
    assert stop.signum == signal.SIGINT and stop.exit_code == 130
    assert probes.polls == 3  # the poll that brought the signal is the last one
    assert snap.interval_s == pytest.approx(3.0)
    assert [e.pid for e in events] == [101, 102, 103]
    root = {c.path: c for c in snap.cgroups}.get("/")
    assert root is not None and root.oncpu_cores == pytest.approx(0.5)


def test_measure_without_a_signal_runs_its_duration(host):
    probes = FakeProbes(host)
    with StopSignals() as stop:
        measure(probes, CgroupFs(SysRoot(host)), 0.05, poll_ms=1, stop=stop)
    assert stop.signum is None and stop.exit_code == 0 and probes.polls >= 1


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_probe_run_prints_the_partial_table_and_exits_128_plus_signal(host, fake, capsys, signum, code):
    fake.signum = signum
    rc = cli_probe.main(["run", "--duration", "3600", "--root", str(host)])
    out, err = capsys.readouterr()
    assert rc == code
    # the normal table and summary line, over the 3 s measured
    assert out.splitlines()[0].split()[:3] == ["cgroup", "runq_n", "runq_p50_us"]
    assert "\n3.0 s, attach tracepoint, probes sched; events: 3 exec, 0 exit, 0 oom" in out
    name = signal.Signals(signum).name
    assert err.strip() == f"aios-host: interrupted by {name} after 3.0 s of 3600 s; the figures cover those 3.0 s"
    assert "Traceback" not in err


def test_probe_run_json_says_it_was_interrupted(host, fake, capsys):
    fake.signum = signal.SIGTERM
    rc = cli_probe.main(["run", "--json", "--duration", "3600", "--root", str(host)])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert rc == 143
    assert doc["interrupted"] == "SIGTERM" and doc["interval_s"] == pytest.approx(3.0)
    assert len(doc["events"]) == 3 and doc["cgroups"][0]["oncpu_cores"] == pytest.approx(0.5)
    assert "interrupted by SIGTERM after 3.0 s" in err


def test_probe_run_that_ends_normally_exits_0_and_says_nothing_about_signals(host, fake, capsys):
    rc = cli_probe.main(["run", "--json", "--duration", "0.05", "--root", str(host)])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["interrupted"] is None and "interrupted" not in err


def test_probe_stats_interrupted_restores_bpf_stats_enabled(tmp_path, fake, capsys):
    from tests.unit.fixtures import put

    sysctl = put(tmp_path, "/proc/sys/kernel/bpf_stats_enabled", "0\n")
    fake.signum = signal.SIGTERM
    rc = cli_probe.main(["stats", "--duration", "3600", "--root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 143
    assert "kernel.bpf_stats_enabled was 0 and is restored" in out
    assert sysctl.read_text() == "0"
    assert "interrupted by SIGTERM after" in err and "of 3600 s" in err
