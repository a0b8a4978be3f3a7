"""Policy/job files that are not regular files are refused with one line, never read."""

from __future__ import annotations

import os
import threading

import pytest

from aios_host.policy.schema import PolicyError, load_policy


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(_error_of(fifo)), daemon=True)
    t.start()
    t.join(5)
    assert result == [f"{fifo}: not a regular file"]


def test_a_symlink_loop_is_one_line(tmp_path):
    loop = tmp_path / "p.toml"
    loop.symlink_to(loop)
    assert "cannot read" in _error_of(loop)


def _error_of(path) -> str:
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    return str(exc.value)
