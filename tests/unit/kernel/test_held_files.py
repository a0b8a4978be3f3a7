"""HeldFiles: the held-open pread reader the daemon's tick and `top`'s refresh share."""

from __future__ import annotations

import errno
import os

import pytest

from aios_host.errors import KernelError
from aios_host.kernel import root as root_mod
from aios_host.kernel.root import PREAD_SIZE, HeldFiles, SysRoot


@pytest.fixture
def held(tmp_path):
    h = HeldFiles(SysRoot(str(tmp_path)))
    yield h
    h.close()


def test_a_file_is_held_and_re_read_from_the_start(tmp_path, held):
    f = tmp_path / "cg" / "memory.current"
    f.parent.mkdir()
    f.write_text("100\n")
    assert held.read("/cg/memory.current") == "100\n" and len(held) == 1
    with open(f, "r+") as w:  # the same inode, new content (as a kernfs file changes under its fd)
        w.write("200\n")
    assert held.read("/cg/memory.current") == "200\n" and len(held) == 1


def test_a_missing_file_stays_missing_until_forgotten(tmp_path, held):
    assert held.read("/cg/io.pressure") is None
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "io.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert held.read("/cg/io.pressure") is None  # remembered: no open() per tick for what is not there
    held.forget_under("/cg")
    assert held.read("/cg/io.pressure").startswith("some")


def test_a_file_longer_than_one_pread_is_read_whole(tmp_path, held):
    text = "".join(f"{pid}\n" for pid in range(1, PREAD_SIZE // 3))  # a big cgroup.procs
    assert len(text) > PREAD_SIZE
    (tmp_path / "cgroup.procs").write_text(text)
    assert held.read("/cgroup.procs") == text


def test_past_the_fd_budget_files_are_read_one_shot(tmp_path):
    for i in range(6):
        (tmp_path / f"f{i}").write_text(f"{i}\n")
    h = HeldFiles(SysRoot(str(tmp_path)), fd_budget=2)
    assert [h.read(f"/f{i}") for i in range(6)] == [f"{i}\n" for i in range(6)]
    assert len(h) == 2
    h.close()
    assert len(h) == 0


def test_pressure_with_psi_off_reads_as_none_and_other_errors_name_the_file(tmp_path, held, monkeypatch):
    (tmp_path / "cpu.pressure").write_text("")
    (tmp_path / "cpu.stat").write_text("usage_usec 1\n")
    real = os.pread

    def pread(fd, n, off):  # the kernel's answers for a cgroup with cgroup.pressure = 0, and a gone one
        name = os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[1]
        if name == "cpu.pressure":
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        if name == "cpu.stat":
            raise OSError(errno.ENODEV, "No such device")
        return real(fd, n, off)

    monkeypatch.setattr(root_mod.os, "pread", pread)
    assert held.read("/cpu.pressure") is None
    with pytest.raises(KernelError, match="cpu.stat"):
        held.read("/cpu.stat")
    assert len(held) == 1  # the failed file's fd was let go; the PSI one is still held
