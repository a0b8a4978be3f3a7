"""One job over three "hosts" made of network namespaces: an aios-host agent per host, the agents
agree through torch's TCPStore on node 0, the ranks rendezvous with torch's env:// (c10d TCPStore
on MASTER_ADDR), gloo runs over veth pairs and a bridge. Only addresses inside the namespaces.

    h0 (10.77.<n>.1) --veth-- sw: br0 --veth-- h1 (10.77.<n>.2)
                                   \\--veth-- h2 (10.77.<n>.3)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.jobs.helpers import GANG, alive, cgroup_gone, name, popen, status

pytestmark = pytest.mark.netns
HOSTS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def hosts() -> Iterator[tuple[list[str], list[str]]]:
    tag = f"{os.getpid() % 10000}"
    net = os.getpid() % 200 + 20
    sw = f"aios-sw{tag}"
    names = [f"aios-h{i}-{tag}" for i in range(HOSTS)]
    addrs = [f"10.77.{net}.{i + 1}" for i in range(HOSTS)]
    made = []
    try:
        _ip("netns", "add", sw)
        made.append(sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(names, addrs, strict=True)):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield names, addrs
    finally:
        for ns in reversed(made):  # deleting a namespace deletes its veth ends and the bridge
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _run_all(names: list[str], args: list[str]) -> list[subprocess.CompletedProcess[str]]:
    procs = [popen(*args, netns=ns) for ns in names]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_job_spans_three_hosts(hosts: tuple[list[str], list[str]]) -> None:
    names, addrs = hosts
    job = name("mh")
    res = _run_all(names, ["job", "run", "--name", job, "--nproc", "1", "--hosts", ",".join(addrs),
                           "--rdzv-port", "29411", *GANG, "--steps", "10"])
    for r in res:
        assert r.returncode == 0, r.stderr
    assert f"gangcheck: {HOSTS} ranks, 10 steps, restart 0: ok" in res[0].stdout
    sts = status(job)
    assert [s["key"] for s in sts] == [f"{job}.node{i}" for i in range(HOSTS)]
    assert {s["master_addr"] for s in sts} == {addrs[0]} and len({s["master_port"] for s in sts}) == 1
    assert [s["ranks"][0]["rank"] for s in sts] == list(range(HOSTS))
    assert all(s["status"] == "succeeded" and cgroup_gone(s) for s in sts)


def test_a_rank_killed_on_one_host_ends_the_gang_on_every_host(hosts: tuple[list[str], list[str]],
                                                                tmp_path: object) -> None:
    names, addrs = hosts
    job = name("mhff")
    res = _run_all(names, ["job", "run", "--name", job, "--nproc", "1", "--hosts", ",".join(addrs),
                           "--rdzv-port", "29412", *GANG, "--forever", "--step-ms", "20",
                           "--fail-rank", "2", "--fail-step", "10", "--fail-code", "kill",
                           "--pids", str(tmp_path)])
    assert [r.returncode for r in res] == [137] * HOSTS, [r.stderr for r in res]
    assert "a rank on node 2 failed: rank 2 on node 2 was killed by SIGKILL" in res[0].stderr
    sts = status(job)
    assert sts[0]["cause"]["kind"] == "peer" and sts[2]["cause"]["kind"] == "signal"
    assert sts[0]["ranks"][0]["status"] == "killed"  # ended by its agent, not by a gloo timeout
    assert all(cgroup_gone(s) for s in sts)
    assert not [p for p in (int(f.read_text()) for f in tmp_path.glob("*.pid")) if alive(p)]  # type: ignore[attr-defined]


def test_gang_restarts_on_every_host(hosts: tuple[list[str], list[str]]) -> None:
    names, addrs = hosts
    job = name("mhre")
    res = _run_all(names, ["job", "run", "--name", job, "--nproc", "1", "--hosts", ",".join(addrs),
                           "--rdzv-port", "29413", "--max-restarts", "1", "--backoff", "0.2s",
                           *GANG, "--steps", "15", "--fail-rank", "1", "--fail-step", "4", "--fail-code", "9"])
    assert [r.returncode for r in res] == [0] * HOSTS, [r.stderr for r in res]
    assert all(s["restart"] == 1 for s in status(job))
