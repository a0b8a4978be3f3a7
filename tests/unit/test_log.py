import json

import pytest
import structlog

from aios_host import log


def test_journal_field_names():
    assert log.journal_field("job") == "JOB"
    assert log.journal_field("cgroup-path") == "CGROUP_PATH"
    assert log.journal_field("_private") == "PRIVATE"


def test_journald_renderer_sends_upper_case_fields():
    sent = []
    r = log.JournaldRenderer(lambda msg, **kw: sent.append((msg, kw)))
    with pytest.raises(structlog.DropEvent):
        r(None, "info", {"event": "cgroup_write", "level": "warning", "path": "/x", "rank": 3})
    msg, fields = sent[0]
    assert msg == "cgroup_write path=/x rank=3"
    assert fields["AIOS_EVENT"] == "cgroup_write" and fields["PATH"] == "/x" and fields["RANK"] == "3"
    assert fields["PRIORITY"] == "4"


def test_json_sink_writes_one_json_object_per_event(capsys):
    assert log.configure("info", sink="json") == "json"
    log.get_logger(job="train").info("rank_started", rank=1)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    rec = json.loads(line)
    assert rec["event"] == "rank_started" and rec["job"] == "train" and rec["rank"] == 1


def test_journald_events_name_the_code_that_logged_not_the_renderer():
    sent = []
    log.configure("info", sink="json")
    renderer = log.JournaldRenderer(lambda msg, **kw: sent.append(kw))
    structlog.configure(processors=[structlog.processors.add_log_level, renderer])
    try:
        def some_caller() -> None:
            log.get_logger().info("an_event", x=1)
        some_caller()
    finally:
        log.configure("info", sink="json")
    fields = sent[0]
    assert fields["CODE_FUNC"] == "some_caller" and fields["CODE_FILE"] == __file__
    assert isinstance(fields["CODE_LINE"], int) and fields["CODE_LINE"] > 0
