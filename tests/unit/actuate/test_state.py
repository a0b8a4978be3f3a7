"""The journal of originals (/run/aios-host/state.json): a permission problem and a corrupt file are
told apart, each in one line, and neither tells the user to remove the only record of the originals."""

import errno
import json
from pathlib import Path

import pytest

from aios_host.actuate import state as state_mod
from aios_host.actuate.state import ApplyRecord, StateStore
from aios_host.cli import main
from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write
from tests.unit.fixtures import fake_v2_host

RECORD = {"id": "r1", "policy": "p.toml", "status": "applied", "started_unix": 1.0,
          "writes": [Write("set", "/sys/fs/cgroup/a/cpu.max", "max 100000", "50000 100000", "", "cpu", True)
                     ._asdict()]}


def _denied(*_a, **_k):
    raise PermissionError(errno.EACCES, "Permission denied")


@pytest.fixture
def store(tmp_path):
    return StateStore(SysRoot(tmp_path))


def test_a_good_journal_loads(store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"version": 1, "applies": [RECORD]}))
    [rec] = store.load()
    assert isinstance(rec, ApplyRecord) and rec.writes[0].new == "50000 100000"


@pytest.mark.parametrize("n", [0, 1, 3])
def test_saved_records_load_back_equal_one_per_line(store, n):
    records = [ApplyRecord.from_dict({**RECORD, "id": f"r{i}", "policy": 'a "quoted"\npolicy'}) for i in range(n)]
    store.save(records)
    assert store.load() == records
    text = store.path.read_text()
    assert json.loads(text)["version"] == 1
    assert sum(line.startswith('{"id"') for line in text.splitlines()) == n


def test_unreadable_journal_is_permission_denied_needs_root(store, monkeypatch):
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"version": 1, "applies": [RECORD]}))
    monkeypatch.setattr(Path, "read_text", _denied)
    with pytest.raises(AiosError) as e:
        store.load()
    assert str(e.value) == f"{store.path}: permission denied (needs root)"


def test_lock_and_directory_denied_need_root(store, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _denied)
    with pytest.raises(AiosError, match=r"aios-host: permission denied \(needs root\)$"), store.locked():
        pass
    monkeypatch.undo()
    real_open = state_mod.os.open
    monkeypatch.setattr(state_mod.os, "open", lambda p, *a, **k: _denied() if str(p).endswith("state.lock")
                        else real_open(p, *a, **k))
    with pytest.raises(AiosError, match=r"state\.lock: permission denied \(needs root\)$"), store.locked():
        pass


def test_save_denied_needs_root_and_leaves_no_temp_file(store, monkeypatch):
    monkeypatch.setattr(state_mod, "open", _denied, raising=False)
    with pytest.raises(AiosError, match=r"state\.json: permission denied \(needs root\)$"):
        store.save([])
    assert list(store.path.parent.iterdir()) == []


@pytest.mark.parametrize(("body", "reason"), [
    (b"{\"version\": 1, \"appl", "not JSON"),
    (b"\xff\xfe garbage", "utf-8"),
    (b"[]", "a JSON list, not an object"),
    (b"{\"version\": 1, \"applies\": 5}", "bad record"),
    (b"{\"version\": 1, \"applies\": [{\"id\": \"x\"}]}", "a record lacks 'policy'"),
    (json.dumps({"version": 1, "applies": [{**RECORD, "writes": [{"op": "set"}]}]}).encode(), "bad record"),
])
def test_corrupt_journal_names_the_file_and_says_keep_it(store, body, reason):
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(body)
    with pytest.raises(AiosError) as e:
        store.load()
    msg = str(e.value)
    assert msg.startswith(f"{store.path}: corrupt journal (") and reason in msg
    assert "inspect" in msg and f"mv {store.path} {store.path}.bad" in msg
    assert "remove" not in msg and "\n" not in msg
    assert store.path.read_bytes() == body  # untouched


def test_rollback_with_a_corrupt_journal_is_one_line_and_keeps_it(tmp_path, capsys):
    root = fake_v2_host(tmp_path)
    path = StateStore(SysRoot(root)).path
    path.parent.mkdir(parents=True)
    path.write_text("{oops")
    assert main(["policy", "rollback", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt journal" in err and "Traceback" not in err
    assert path.read_text() == "{oops"
