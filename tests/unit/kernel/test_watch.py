"""ModifyWatch: which watched files changed since the last look (inotify), never blocking."""

from __future__ import annotations

import os

from aios_host.kernel.watch import ModifyWatch


def test_only_modified_files_are_reported_once(tmp_path):
    files = {k: tmp_path / f"{k}.events" for k in ("a", "b", "c")}
    for f in files.values():
        f.write_text("populated 1\n")
    w = ModifyWatch()
    assert all(w.watch(k, str(f)) for k, f in files.items()) and len(w) == 3
    assert w.changed() == set()  # nothing yet, and it does not wait
    with open(files["b"], "r+") as f:  # in place, as the kernel changes cgroup.events
        f.write("populated 0\n")
    assert w.changed() == {"b"}
    assert w.changed() == set()  # told once
    w.close()


def test_a_removed_file_counts_as_changed_and_its_watch_is_dropped(tmp_path):
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\n")
    w = ModifyWatch()
    assert w.watch("cg", str(f))
    os.unlink(f)
    assert w.changed() == {"cg"} and not w.watched("cg") and len(w) == 0
    w.close()


def test_what_cannot_be_watched_says_so(tmp_path):
    w = ModifyWatch()
    assert not w.watch("gone", str(tmp_path / "no-such-file")) and not w.watched("gone")
    assert w.changed() == set()
    w.close()
    assert not w.watch("x", str(tmp_path))  # closed: nothing is watched any more


def test_a_forgotten_file_is_not_reported(tmp_path):
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\n")
    w = ModifyWatch()
    w.watch("cg", str(f))
    w.forget("cg")
    f.write_text("populated 0\n")
    assert w.changed() == set() and not w.watched("cg")
    w.forget("cg")  # twice is harmless
    w.close()
