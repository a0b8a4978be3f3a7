import errno
import os

import pytest

from aios_host.errors import KernelError
from aios_host.kernel.root import SysRoot
from tests.unit.fixtures import put


def test_path_is_built_from_root(tmp_path):
    r = SysRoot(tmp_path)
    assert r.path("/sys/fs/cgroup/cpu.max") == tmp_path / "sys/fs/cgroup/cpu.max"
    assert r.path("/") == tmp_path


def test_write_never_creates_a_file(tmp_path):
    r = SysRoot(tmp_path)
    put(tmp_path, "/sys/fs/cgroup/x/cpu.max", "max 100000\n")
    with pytest.raises(KernelError) as exc:
        r.write_text("/sys/fs/cgroup/x/cpu.maks", "50000 100000")
    assert exc.value.errno == errno.ENOENT
    assert "cpu.maks" in str(exc.value) and "ENOENT" in str(exc.value)
    assert not (tmp_path / "sys/fs/cgroup/x/cpu.maks").exists()


def test_write_is_one_write_of_the_whole_value(tmp_path, monkeypatch):
    r = SysRoot(tmp_path)
    put(tmp_path, "/f", "old\n")
    calls = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append(data) or real_write(fd, data))
    r.write_text("/f", "50000 100000")
    assert calls == [b"50000 100000"]


def test_short_write_is_an_error(tmp_path, monkeypatch):
    r = SysRoot(tmp_path)
    put(tmp_path, "/f", "")
    monkeypatch.setattr(os, "write", lambda fd, data: 1)
    with pytest.raises(KernelError, match="short write 1/3"):
        r.write_text("/f", "abc")


def test_write_to_directory_carries_path_and_errno(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(KernelError) as exc:
        SysRoot(tmp_path).write_text("/d", "1")
    assert exc.value.errno == errno.EISDIR
    assert exc.value.path == str(tmp_path / "d")


def test_read_errors_and_optional(tmp_path):
    r = SysRoot(tmp_path)
    with pytest.raises(KernelError, match="read failed: ENOENT"):
        r.read_text("/proc/nope")
    assert r.read_optional("/proc/nope") is None
    put(tmp_path, "/proc/yes", "1\n")
    assert r.read_optional("/proc/yes") == "1\n"


def test_mkdir_needs_parent_and_rmdir(tmp_path):
    r = SysRoot(tmp_path)
    with pytest.raises(KernelError) as exc:
        r.mkdir("/a/b")
    assert exc.value.errno == errno.ENOENT
    r.mkdir("/a")
    assert r.is_dir("/a")
    r.rmdir("/a")
    assert not r.exists("/a")


def test_read_attrs_reads_each_file_absent_is_none_and_big_ones_whole(tmp_path):
    r = SysRoot(tmp_path)
    put(tmp_path, "/sys/fs/cgroup/a/cpu.weight", "100\n")
    big = "".join(f"{i:08d}\n" for i in range(10_000))  # 90 KB: more than one 64 KiB read
    put(tmp_path, "/sys/fs/cgroup/a/memory.stat", big)
    got = r.read_attrs("/sys/fs/cgroup/a", ["cpu.weight", "memory.max", "memory.stat"])
    assert got == {"cpu.weight": "100\n", "memory.max": None, "memory.stat": big}


def test_open_dir_reads_below_it_by_relative_paths_like_read_attrs(tmp_path):
    r = SysRoot(tmp_path)
    put(tmp_path, "/sys/fs/cgroup/aios.slice/a/cpu.weight", "100\n")
    put(tmp_path, "/sys/fs/cgroup/aios.slice/b/cpu.weight", "50\n")
    put(tmp_path, "/sys/fs/cgroup/aios.slice/cgroup.procs", "")
    with r.open_dir("/sys/fs/cgroup/aios.slice") as d:
        assert d.subdirs() == {"a", "b"}  # directories only: the cgroup's children
        assert d.read_attrs("a", ["cpu.weight", "memory.max"]) == r.read_attrs(
            "/sys/fs/cgroup/aios.slice/a", ["cpu.weight", "memory.max"]) == {"cpu.weight": "100\n", "memory.max": None}
        assert d.read_attrs("gone", ["cpu.weight"]) == {"cpu.weight": None}
        (tmp_path / "sys/fs/cgroup/aios.slice/b/io.weight").mkdir()  # EISDIR on read
        with pytest.raises(KernelError) as exc:
            d.read_attrs("b", ["io.weight"])
        assert exc.value.path == str(tmp_path / "sys/fs/cgroup/aios.slice/b/io.weight")  # the whole path
        fd = d.fd
    assert d.fd is None
    try:  # closed on leaving the block (the number may have been reused, not for this directory)
        assert os.readlink(f"/proc/self/fd/{fd}") != str(tmp_path / "sys/fs/cgroup/aios.slice")
    except FileNotFoundError:
        pass


def test_open_dir_of_a_missing_directory_is_a_kernel_error(tmp_path):
    with pytest.raises(KernelError) as exc:
        SysRoot(tmp_path).open_dir("/sys/fs/cgroup/nope")
    assert exc.value.errno == errno.ENOENT and exc.value.path.endswith("/sys/fs/cgroup/nope")


def test_read_attrs_error_names_the_file(tmp_path):
    r = SysRoot(tmp_path)
    (tmp_path / "sys/fs/cgroup/a/cpu.weight").mkdir(parents=True)  # EISDIR on read
    with pytest.raises(KernelError) as exc:
        r.read_attrs("/sys/fs/cgroup/a", ["cpu.weight"])
    assert exc.value.path == str(tmp_path / "sys/fs/cgroup/a/cpu.weight")
