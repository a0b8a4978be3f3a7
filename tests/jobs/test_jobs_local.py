"""Real jobs on this host under the own-cgroup supervisor (no systemd): gloo over loopback."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from tests.jobs.helpers import GANG, alive, cgroup_gone, cli, name, pids_in, popen, start_forever, status, wait_for


def test_allreduce_4_ranks_job_completes() -> None:
    job = name("ar4")
    r = cli("job", "run", "examples/allreduce-4.toml", "--name", job)
    assert r.returncode == 0, r.stderr
    assert "correctness: all results exact" in r.stdout
    assert "ring model T = 2(N-1)(alpha + M/(N B))" in r.stdout and "ps2 model T = 2(alpha + W M/(K B))" in r.stdout
    st = status(job)[0]
    assert st["status"] == "succeeded" and st["world_size"] == 4 and st["launcher"] == "cgroup"
    assert st["cgroup"].endswith(f"training/aios-jobs.slice/{job}") and cgroup_gone(st)
    assert all(rk["status"] == "exited" for rk in st["ranks"])


def test_sigkill_of_a_rank_ends_every_rank_and_leaves_no_orphan(tmp_path: Path) -> None:
    job = name("kill")
    r = cli("job", "run", "--name", job, "--nproc", "4", *GANG, "--forever", "--step-ms", "10",
            "--fail-rank", "2", "--fail-step", "5", "--fail-code", "kill", "--spawn-daemon",
            "--pids", str(tmp_path))
    assert r.returncode == 137, r.stderr  # 128 + SIGKILL, like a shell
    assert "rank 2 was killed by SIGKILL" in r.stderr
    pids = pids_in(tmp_path)
    assert len(pids) == 8, pids  # 4 ranks + 4 daemons in sessions of their own
    assert not [p for p in pids.values() if alive(p)], "orphans survived the gang"
    st = status(job)[0]
    assert st["cause"]["kind"] == "signal" and st["cause"]["rank"] == 2
    assert sorted(rk["status"] for rk in st["ranks"]) == ["failed", "killed", "killed", "killed"]
    assert cgroup_gone(st)


def test_external_sigkill_of_a_running_rank(tmp_path: Path) -> None:
    job = name("extkill")
    start_forever(job, 3, tmp_path, step_ms=10)
    st = status(job)[0]
    victim = st["ranks"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: status(job)[0]["status"] == "failed", timeout=60)
    st = status(job)[0]
    assert st["exit_code"] == 137 and st["cause"]["rank"] == 1
    assert not [p for p in pids_in(tmp_path).values() if alive(p)]
    assert cgroup_gone(st)


def test_gang_restarts_with_backoff_then_succeeds() -> None:
    job = name("restart")
    r = cli("job", "run", "--name", job, "--nproc", "3", "--max-restarts", "2", "--backoff", "0.2s",
            *GANG, "--steps", "20", "--fail-rank", "1", "--fail-step", "3", "--fail-code", "3")
    assert r.returncode == 0, r.stderr
    assert "rank 1 exited with status 3" in r.stderr and "restarting all ranks (1/2)" in r.stderr
    assert "gangcheck: 3 ranks, 20 steps, restart 1: ok" in r.stdout
    st = status(job)[0]
    assert st["restart"] == 1 and [c["kind"] for c in st["causes"]] == ["exit", "success"]
    logs = cli("job", "logs", job, "--rank", "1", "--restart", "0").stdout
    assert "injected failure at step 3" in logs
    assert "injected failure" not in cli("job", "logs", job, "--rank", "1", "--restart", "1").stdout


def test_restart_budget_exhausted_exits_with_the_rank_status() -> None:
    job = name("budget")
    r = cli("job", "run", "--name", job, "--nproc", "2", "--max-restarts", "2", "--backoff", "0",
            *GANG, "--steps", "20", "--fail-rank", "0", "--fail-step", "2", "--fail-code", "5",
            "--fault-restart", "-1")
    assert r.returncode == 5, r.stderr
    st = status(job)[0]
    assert st["status"] == "failed" and [c["kind"] for c in st["causes"]] == ["exit"] * 3


def test_hung_rank_is_detected_stacks_dumped_and_gang_restarted() -> None:
    job = name("hang")
    r = cli("job", "run", "--name", job, "--nproc", "3", "--max-restarts", "1", "--backoff", "0",
            "--heartbeat-timeout", "3s", *GANG, "--steps", "15", "--step-ms", "20",
            "--hang-rank", "1", "--hang-step", "5")
    assert r.returncode == 0, r.stderr
    st = status(job)[0]
    assert [c["kind"] for c in st["causes"]] == ["hang", "success"]
    hang = st["hangs"][0]
    assert hang["last_step"] == 4 and set(hang["silent_ranks"]) <= {0, 1, 2}
    log1 = cli("job", "logs", job, "--rank", "1", "--restart", "0").stdout
    assert "--- aios-host: stacks of rank 1" in log1
    if hang["stacks"]["1"] == "py-spy":  # py-spy installed: the culprit is named
        assert hang["rank"] == 1 and "gangcheck.py" in log1
    else:  # faulthandler via SIGUSR1
        assert "Current thread" in log1 or "Thread 0x" in log1


def test_straggler_is_reported() -> None:
    job = name("strag")
    r = cli("job", "run", "--name", job, "--nproc", "3", *GANG, "--steps", "15", "--step-ms", "10",
            "--slow-rank", "2", "--slow-ms", "60")
    assert r.returncode == 0, r.stderr
    st = status(job)[0]
    assert [s["rank"] for s in st["stragglers"]] == [2], st["stragglers"]
    assert "straggler: rank 2" in r.stderr


def test_two_concurrent_jobs_get_distinct_ports() -> None:
    jobs = [name("conc"), name("conc")]
    results: dict[str, object] = {}

    def run(job: str) -> None:
        results[job] = cli("job", "run", "--name", job, "--nproc", "2", *GANG, "--steps", "30", "--step-ms", "5")

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for j in jobs:
        assert results[j].returncode == 0, results[j].stderr  # type: ignore[attr-defined]
    ports = {status(j)[0]["master_port"] for j in jobs}
    assert len(ports) == 2


def test_port_reservations_from_many_processes_never_collide(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, time\nfrom aios_host.kernel.root import SysRoot\n"
            "from aios_host.supervisor.ports import reserve_port\n"
            "rs = [reserve_port(SysRoot('/'), 'collide') for _ in range(10)]\n"
            "[r.handoff() for r in rs]\nprint(' '.join(str(r.port) for r in rs), flush=True)\n"
            "time.sleep(2)\n[r.release() for r in rs]\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    ports = [int(p) for pr in procs for p in pr.communicate(timeout=60)[0].split()]
    assert len(ports) == 60 and len(set(ports)) == 60


def test_stop_sends_sigterm_then_cgroup_kill_after_grace(tmp_path: Path) -> None:
    job = name("stop")
    r = cli("job", "run", "--name", job, "--nproc", "2", "--stop-grace", "1s", "--detach",
            *GANG, "--forever", "--step-ms", "20", "--ignore-sigterm", "--pids", str(tmp_path), "--spawn-daemon")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: all((rk["last_step"] or 0) > 2 for rk in status(job)[0]["ranks"]))
    ls = cli("job", "ls", "--json")
    assert any(j["key"] == job and j["status"] == "running" for j in json.loads(ls.stdout)["jobs"])
    stop = cli("job", "stop", job)
    assert stop.returncode == 0 and "stopped (exit 143)" in stop.stdout, stop.stdout + stop.stderr
    st = status(job)[0]
    assert st["status"] == "stopped" and "killed after 1s grace" in st["cause"]["text"]
    assert not [p for p in pids_in(tmp_path).values() if alive(p)]
    assert cgroup_gone(st)


def test_supervisor_killed_leaves_no_rank_and_stop_cleans_up(tmp_path: Path) -> None:
    job = name("dead")
    start_forever(job, 2, tmp_path, step_ms=20)
    st = status(job)[0]
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    # PR_SET_PDEATHSIG: the ranks die with their supervisor
    assert wait_for(lambda: not [p for p in pids_in(tmp_path).values() if alive(p)], timeout=30)
    st = status(job)[0]
    assert st["status"] == "dead (supervisor gone)"  # the state file says running, its lock is free
    assert {rk["status"] for rk in st["ranks"]} == {"gone"}  # its pids, checked against /proc
    assert "dead (supervisor gone)" in cli("job", "ls").stdout
    stop = cli("job", "stop", job)
    assert stop.returncode == 0 and "supervisor was dead" in stop.stdout
    assert cgroup_gone(status(job)[0])


def test_second_run_of_a_running_job_is_refused(tmp_path: Path) -> None:
    job = name("dup")
    r = cli("job", "run", "--name", job, "--nproc", "1", "--detach", *GANG, "--forever", "--step-ms", "20")
    assert r.returncode == 0, r.stderr
    again = cli("job", "run", "--name", job, "--nproc", "1", *GANG, "--steps", "1")
    assert again.returncode == 1 and f"job {job} is already running" in again.stderr
    assert cli("job", "stop", job).returncode == 0


def test_bad_spec_starts_nothing(tmp_path: Path) -> None:
    r = cli("job", "run", "examples/bad-spec.toml")
    assert r.returncode == 2
    assert r.stderr.strip() == ("aios-host: error: examples/bad-spec.toml: unknown key 'nprocs'; "
                                "did you mean 'nproc'?")
    assert cli("job", "status", "bad").returncode == 1


def test_ddp_example_trains() -> None:
    job = name("ddp")
    r = cli("job", "run", "examples/ddp-example.toml", "--name", job, "--nproc", "2")
    assert r.returncode == 0, r.stderr
    assert "replicas identical" in r.stdout
    first, last = (float(x) for x in r.stdout.split("ddp_example:")[1].split("loss")[1].split(",")[0].split("->"))
    assert last < first


def test_bench_allreduce_cli_tables_and_check(tmp_path: Path) -> None:
    png = tmp_path / "ar.png"
    r = cli("bench", "allreduce", "--nproc", "2", "--sizes", "4K:256K", "--factor", "8", "--iters", "3",
            "--warmup", "1", "--name", name("bench"), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = r.stdout
    assert "torch time(us)" in out and "ring time(us)" in out and "ps1 time(us)" in out
    assert "correctness: all results exact" in out and "meas/model" in out
    assert "ps1: 0:w 262144/262144 (1.000), 1:s 262144/262144 (1.000)" in out  # bytes counted, not assumed
    rows = [line for line in out.splitlines() if line.strip().startswith(("4K", "32K", "256K"))]
    assert len(rows) >= 3
    bad = cli("bench", "allreduce", "--nproc", "2", "--servers", "2", "--name", name("bench"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--servers 2: need 1 <= K < N = 2" in bad.stderr


def test_two_detached_runs_of_one_name_at_once(tmp_path: Path) -> None:
    """One wins and runs its own command; the other says so in one line (no traceback), every time."""
    for round_ in range(3):
        job = name(f"race{round_}")
        procs = [popen("job", "run", "--name", job, "--nproc", "1", "--detach", *GANG, "--forever",
                       "--step-ms", "20", "--pids", str(tmp_path / f"{round_}-{i}")) for i in (0, 1)]
        outs = [p.communicate(timeout=300) for p in procs]
        rcs = [p.returncode for p in procs]
        assert sorted(rcs) == [0, 1], (rcs, outs)
        winner, loser = rcs.index(0), rcs.index(1)
        err = outs[loser][1]
        assert err.startswith(f"aios-host: error: job {job} is already running") and err.count("\n") == 1, err
        st = status(job)[0]
        assert st["command"][-1] == str(tmp_path / f"{round_}-{winner}")  # the winner's spec, not the loser's
        assert cli("job", "stop", job).returncode == 0
