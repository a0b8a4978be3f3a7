"""Generated requests against the daemon's API: raw bytes through parse_request, and well-formed
JSON with hostile fields through the daemon's own handler (every command, read and write).
Each one gets a reply {"ok": bool, ...} that JSON can carry; a refused change leaves the daemon's
policy, mode and the kernel tree as they were; nothing raises."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_host import api
from aios_host.daemon.service import make_handler
from aios_host.errors import AiosError
from tests.unit.daemon.test_loop import Clock, make, snapshot_tree
from tests.unit.fixtures import FakeCgroupRoot, fake_v2_host
from tests.unit.fuzz.test_fuzz_policy import EXAMPLES, HOSTILE

FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
ROOT_PEER = api.Peer(pid=1, uid=0, gid=0)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                       max_leaves=8)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), JSONISH.map(lambda v: json.dumps(v).encode()),
                      st.sampled_from([b"", b"{", b'{"cmd": 1}', b'{"cmd": "x"' + b" " * 70000 + b"}",
                                       b"\xff\xfe", b'{"cmd": "\\ud800"}', b"[" * 5000 + b"]" * 5000])))
def test_any_bytes_parse_to_a_request_or_one_error_line(data):
    try:
        req = api.parse_request(data)
    except AiosError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(req, dict) and isinstance(req["cmd"], str)


@FUZZ
@given(cmd=st.sampled_from(sorted(api.READ_CMDS | api.WRITE_CMDS) + ["", "nope", "policy.apply "]),
       fields=st.dictionaries(st.sampled_from(["path", "policy", "mode", "x"]),
                              st.one_of(HOSTILE, JSONISH), max_size=2))
def test_hostile_requests_get_a_reply_and_change_nothing_when_refused(tmp_path_factory, cmd, fields):
    tmp = tmp_path_factory.mktemp("api")
    fake_v2_host(tmp / "root", cpus=4)
    (tmp / "p.toml").write_text('[[class]]\nname = "web"\n')
    root = FakeCgroupRoot.make(tmp / "root")
    d = make((root, tmp), Clock())
    d.tick()
    before = (d.policy, d.policy_path, d.mode, snapshot_tree(root))
    handler = make_handler(d, root)
    req = {"cmd": cmd, **fields}
    # write commands are served by the loop: answer them here as the loop would
    reply = d.answer(req) if cmd in api.WRITE_CMDS else handler(req, ROOT_PEER)
    json.dumps(reply, default=str)
    assert isinstance(reply.get("ok"), bool)
    if not reply["ok"]:
        assert isinstance(reply.get("error"), str) and "\n" not in reply["error"]
        assert (d.policy, d.policy_path, d.mode, snapshot_tree(root)) == before
