import os

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.probes.cgroup_ids import UNKNOWN_PATH, CgroupIndex, walk_ids
from tests.unit.fixtures import HYBRID, fake_cgroup
from tests.unit.probes.fakes import fake_probe_host

MOUNT = "/sys/fs/cgroup/unified"


def _tree(tmp_path):
    fake_probe_host(tmp_path)
    for rel in ("a", "a/b", "c"):
        fake_cgroup(tmp_path, f"{MOUNT}/{rel}", HYBRID)
    return CgroupFs(SysRoot(tmp_path))


def test_ids_are_directory_inodes(tmp_path):
    fs = _tree(tmp_path)
    ids = walk_ids(fs)
    expect = {os.stat(tmp_path / MOUNT.lstrip("/") / rel).st_ino: "/" + rel for rel in ("a", "a/b", "c")}
    expect[os.stat(tmp_path / MOUNT.lstrip("/")).st_ino] = "/"
    assert ids == expect


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_index_refreshes_on_a_miss_at_most_once_per_interval(tmp_path):
    fs = _tree(tmp_path)
    clock = Clock()
    idx = CgroupIndex(fs, min_refresh_s=1.0, clock=clock)
    idx.refresh()
    a = fs.cgroup("a").id
    assert idx.path(a) == "/a"
    assert idx.path(0) == UNKNOWN_PATH

    fake_cgroup(tmp_path, f"{MOUNT}/new", HYBRID)  # created after the walk
    new = fs.cgroup("new").id
    clock.t = 0.5
    assert idx.path(new) is None  # too soon to walk again
    clock.t = 1.5
    assert idx.path(new) == "/new"
    assert idx.resolve([a, new, 0, 999999999]) == {a: "/a", new: "/new", 0: UNKNOWN_PATH}


def test_covering_walks_for_a_new_cgroup_only_and_once_for_a_removed_one(tmp_path, monkeypatch):
    fs = _tree(tmp_path)
    clock = Clock()
    idx = CgroupIndex(fs, min_refresh_s=1.0, clock=clock)
    walks = []
    real = idx.refresh
    monkeypatch.setattr(idx, "refresh", lambda: walks.append(clock.t) or real())
    a = fs.cgroup("a").id
    assert idx.covering([a, 0])[a] == "/a" and walks == [0.0]  # the first sample: one walk
    for t in range(1, 6):  # a steady host: the same cgroups every sample, no walk
        clock.t = float(t)
        assert idx.covering([a, 0])[a] == "/a"
    assert walks == [0.0]
    fake_cgroup(tmp_path, f"{MOUNT}/new", HYBRID)
    new = fs.cgroup("new").id
    clock.t = 6.0
    assert idx.covering([a, new])[new] == "/new" and walks == [0.0, 6.0]
    removed = 987654321  # counted by the probes, its cgroup gone before the walk
    for t in range(7, 12):
        clock.t = float(t)
        assert removed not in idx.covering([a, new, removed])
    assert walks == [0.0, 6.0, 7.0]  # one walk to learn it is gone, then none
    clock.t = 12.0
    idx.covering([a, new])  # the probes forgot it (pruned): so does the index
    assert removed not in idx._gone
