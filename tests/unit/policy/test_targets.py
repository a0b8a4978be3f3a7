"""resolve_targets: which processes and cgroups each class covers, and what it reads to know."""

from __future__ import annotations

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.policy.schema import load_policy
from aios_host.policy.targets import resolve_targets
from tests.unit.fixtures import VM, fake_cgroup, fake_v2_host, put

COMM_CLASSES = """
[[class]]
name = "prot"
match.comm = "^iso-prot$"
[[class]]
name = "batch"
match.comm = "^stress-ng"
[[class]]
name = "tools"
match.exe = "/usr/bin/rsync$"
"""


class CountingRoot(SysRoot):
    def __init__(self, root):
        super().__init__(root)
        self.reads: dict[str, int] = {}

    def read_optional(self, kernel_path, *args, **kwargs):
        self.reads[str(kernel_path)] = self.reads.get(str(kernel_path), 0) + 1
        return super().read_optional(kernel_path, *args, **kwargs)


def parse_policy(text, tmp_path):
    (tmp_path / "p.toml").write_text(text)
    return load_policy(tmp_path / "p.toml")


def _host(tmp_path):
    fake_v2_host(tmp_path / 'root')
    fake_cgroup(tmp_path / 'root', '/sys/fs/cgroup/system.slice', VM)
    procs = {10: "iso-prot", 11: "iso-prot", 20: "stress-ng", 21: "stress-ng-cpu", 30: "bash", 31: "rsync"}
    for pid, comm in procs.items():
        put(tmp_path / "root", f"/proc/{pid}/comm", comm + "\n")
    (tmp_path / "root/proc/31/exe").symlink_to("/usr/bin/rsync")
    return CountingRoot(tmp_path / 'root')


def test_classes_by_comm_and_exe_get_their_processes(tmp_path):
    root = _host(tmp_path)
    t = resolve_targets(CgroupFs(root), parse_policy(COMM_CLASSES, tmp_path))
    assert t["prot"].move_pids == (10, 11)
    assert t["batch"].move_pids == (20, 21)
    assert t["tools"].move_pids == (31,)
    assert all(x.owned for x in t.values())


def test_each_process_is_read_once_however_many_classes_match_by_comm(tmp_path):
    root = _host(tmp_path)
    resolve_targets(CgroupFs(root), parse_policy(COMM_CLASSES, tmp_path))
    comm_reads = {p: n for p, n in root.reads.items() if p.endswith("/comm")}
    assert comm_reads and set(comm_reads.values()) == {1}


def test_the_cgroup_tree_is_walked_only_for_classes_matching_existing_cgroups(tmp_path, monkeypatch):
    root = _host(tmp_path)
    fs = CgroupFs(root)
    walks = []
    real_walk = fs.walk
    monkeypatch.setattr(fs, "walk", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    resolve_targets(fs, parse_policy(COMM_CLASSES, tmp_path))
    assert walks == []
    t = resolve_targets(fs, parse_policy(COMM_CLASSES + '[[class]]\nname = "sys"\nmatch.slice = "system.slice"\n',
                                          tmp_path))
    assert walks == [1]
    assert t["sys"].cgroups == ("system.slice",) and not t["sys"].owned
