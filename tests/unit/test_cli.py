import json

import pytest

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


# Every command that takes --root, with what else its parser requires.
ROOT_COMMANDS = [
    ["doctor"], ["snapshot"], ["policy", "check", "p.toml"], ["policy", "diff", "p.toml"],
    ["policy", "explain", "p.toml"], ["policy", "apply", "p.toml"], ["policy", "rollback"], ["policy", "schema"],
    ["probe", "list"], ["probe", "run"], ["probe", "stats"], ["daemon"], ["status"],
    ["job", "run", "x.toml"], ["job", "ls"], ["job", "status", "x"], ["job", "stop", "x"], ["job", "logs", "x"],
    ["bench", "allreduce"], ["top"],
    ["energy", "status"],
]


def _root_commands():
    """ROOT_COMMANDS, checked against the parser: a command added later without an entry here fails."""
    import argparse

    from aios_host.cli import build_parser

    def leaves(p, prefix):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [prefix] if any("--root" in a.option_strings for a in p._actions) else []
        return [leaf for name, sp in subs[0].choices.items() for leaf in leaves(sp, [*prefix, name])]

    return leaves(build_parser(), [])


def test_root_commands_lists_every_command_with_root():
    listed = {tuple(c[:2]) if c[0] in ("policy", "probe", "job", "bench", "energy") else (c[0],) for c in ROOT_COMMANDS}
    assert set(map(tuple, _root_commands())) == listed


@pytest.mark.parametrize("argv", ROOT_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("bad", ["missing", "file"])
def test_a_root_that_is_not_a_directory_is_one_line_for_every_command(tmp_path, capsys, argv, bad):
    root = tmp_path / "nonexistent"
    if bad == "file":
        root.write_text("")
    assert main([*argv, "--root", str(root)]) == 1
    err = capsys.readouterr().err
    want = "no such directory" if bad == "missing" else "not a directory"
    assert err == f"aios-host: error: --root {root}: {want}\n"


def test_rollback_under_a_missing_root_is_not_nothing_to_roll_back(capsys):
    assert main(["policy", "rollback", "--root", "/nonexistent"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "aios-host: error: --root /nonexistent: no such directory\n"
