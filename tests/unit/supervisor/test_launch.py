"""Pure parts of the launchers: systemd-run command lines, unit and slice names."""

from __future__ import annotations

from aios_host.supervisor.launch import LaunchRequest, jobs_slice, systemd_run_argv, unit_escape, unit_name
from aios_host.supervisor.limits import RankLimits


def test_names() -> None:
    assert jobs_slice("training") == "aios-training-jobs.slice"
    assert jobs_slice("low-lat") == "aios-low\\x2dlat-jobs.slice"  # '-' would add a slice level
    assert unit_escape("a.b_c:d") == "a.b_c:d"
    assert unit_name("train", 2, 3) == "aios-job-train-g2-r3.service"


def test_systemd_run_argv() -> None:
    req = LaunchRequest(rank=3, local_rank=1, argv=["/py", "-u", "t.py"],
                        env={"RANK": "3", "PATH": "/bin", "INVOCATION_ID": "x", "BAD": "a\nb"},
                        cwd="/srv", cpus=(2, 3), limits=RankLimits(cpu_weight=200, cpu_quota_percent=50.0,
                                                                  memory_max_bytes=1 << 30),
                        restart=1)
    argv = systemd_run_argv("aios-job-j-g1-r3.service", "aios-training-jobs.slice", req, "j", 10.0)
    assert argv[0] == "systemd-run" and "--service-type=exec" in argv
    assert "--unit=aios-job-j-g1-r3.service" in argv and "--slice=aios-training-jobs.slice" in argv
    for prop in ("LogExtraFields=JOB=j", "LogExtraFields=RANK=3", "LogExtraFields=RESTART=1",
                 "CPUWeight=200", "CPUQuota=50%", f"MemoryMax={1 << 30}", "AllowedCPUs=2,3",
                 "RemainAfterExit=yes", "KillMode=control-group", "TimeoutStopSec=10s"):
        assert f"--property={prop}" in argv, prop
    assert "--setenv=RANK=3" in argv and "--setenv=PATH=/bin" in argv
    assert not [a for a in argv if "INVOCATION_ID" in a or "BAD=" in a]
    assert "--working-directory=/srv" in argv
    assert argv[argv.index("--") + 1:] == ["/py", "-u", "t.py"]
