import json

from aios_host.cli import main
from tests.unit.fixtures import HYBRID, VM, fake_cgroup, fake_host, put


def test_doctor_json_on_a_fake_hybrid_host(tmp_path, capsys):
    fake_host(tmp_path, HYBRID, pid1="process_api")
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified", HYBRID)
    assert main(["doctor", "--json", "--root", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["minimum_met"] and out["cgroup2_mount"] == "/sys/fs/cgroup/unified"
    assert out["inventory"]["cpus"] == 2
    assert {f["name"]: f["status"] for f in out["features"]}["systemd"] == "missing"


def test_doctor_table_and_exit_1_without_cgroup2(tmp_path, capsys):
    put(tmp_path, "/proc/self/mountinfo", "22 1 0:5 / /proc rw - proc proc rw\n")
    put(tmp_path, "/proc/sys/kernel/osrelease", "6.1.0\n")
    put(tmp_path, "/proc/meminfo", "MemTotal: 1024 kB\n")
    put(tmp_path, "/sys/devices/system/cpu/online", "0\n")
    assert main(["doctor", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "cgroup2" in out and "MISSING - aios-host cannot run here" in out


def test_snapshot_tree(tmp_path, capsys):
    fake_host(tmp_path, VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup", VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/aios.slice", VM)
    assert main(["snapshot", "--json", "--root", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["path"] for c in out["cgroups"]] == ["/", "/aios.slice"]
    assert out["cgroups"][1]["memory_current_bytes"] is not None


def test_snapshot_unknown_cgroup_is_one_line(tmp_path, capsys):
    fake_host(tmp_path, VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup", VM)
    assert main(["snapshot", "--cgroup", "nope.slice", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.slice: no such cgroup" in err
    assert "Traceback" not in err
