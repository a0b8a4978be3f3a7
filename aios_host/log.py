"""Structured logging with structlog: events with fields, never f-string messages.

Where the log goes is decided once, at configure():
- journald (python3-systemd) when its socket exists and stderr is not a terminal: the event is
  MESSAGE, every bound field becomes an upper-case journal field (JOB=, RANK=, CGROUP=), so
  `journalctl JOB=train -o json` finds them; the event name is AIOS_EVENT=;
- a readable console renderer when stderr is a TTY;
- JSON lines on stderr otherwise (CI, pipes, containers).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from types import FrameType
from typing import Any

import structlog

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog(3) priorities, as journald wants them in PRIORITY=.
_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
_FIELD_OK = re.compile(r"[^A-Z0-9_]")
_STRUCTLOG_DIR = os.path.dirname(structlog.__file__) + os.sep


def journal_field(key: str) -> str:
    """journald field names are upper-case letters, digits and '_', and may not start with '_'."""
    name = _FIELD_OK.sub("_", key.upper()).lstrip("_")
    return name or "FIELD"


def _caller() -> tuple[str, int, str]:
    """File, line and function of the code that logged: the first frame outside structlog and here."""
    f: FrameType | None = sys._getframe(2)
    while f is not None and (f.f_code.co_filename == _THIS_FILE
                             or f.f_code.co_filename.startswith(_STRUCTLOG_DIR)):
        f = f.f_back
    if f is None:
        return "?", 0, "?"
    return f.f_code.co_filename, f.f_lineno, f.f_code.co_name


_THIS_FILE = _caller.__code__.co_filename  # as frames name it (not __file__: a .pyc install)


class JournaldRenderer:
    """Final structlog processor: sends the event to journald and returns nothing to print."""

    def __init__(self, send: Any, identifier: str = "aios-host") -> None:
        self._send = send
        self._identifier = identifier

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        event = str(event_dict.pop("event", ""))
        level = str(event_dict.pop("level", method))
        event_dict.pop("timestamp", None)
        fields = {journal_field(k): str(v) for k, v in event_dict.items()}
        text = " ".join([event, *(f"{k}={v}" for k, v in event_dict.items())])
        code_file, code_line, code_func = _caller()
        self._send(
            text,
            # Given, so that python-systemd does not take them from the stack itself: that is this
            # renderer (useless) and costs a traceback.extract_stack, which stats every source
            # file on the stack (milliseconds per event under emulation).
            CODE_FILE=code_file, CODE_LINE=code_line, CODE_FUNC=code_func,
            PRIORITY=str(_PRIORITY.get(level, 6)),
            SYSLOG_IDENTIFIER=self._identifier,
            AIOS_EVENT=event,  # `journalctl AIOS_EVENT=cgroup_write` finds every write
            **fields,
        )
        raise structlog.DropEvent


def _journal_send() -> Any | None:
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal.send


def configure(level: str = "info", sink: str = "auto") -> str:
    """Configure structlog once for the process. Returns the sink chosen: journal|console|json."""
    if sink == "auto":
        if sys.stderr.isatty():
            sink = "console"
        elif _journal_send() is not None:
            sink = "journal"
        else:
            sink = "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if sink == "journal":
        send = _journal_send()
        if send is None:
            sink = "json"
        else:
            renderer = JournaldRenderer(send)
    if sink == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    if sink == "json":
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Look sys.stderr up when a logger is made, not now: it may be replaced after configure()
        # (test capture, a daemon reopening its stdio), and a closed stream must not break logging.
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    return sink


def get_logger(name: str | None = None, **bound: Any) -> structlog.typing.FilteringBoundLogger:
    log = structlog.get_logger(name)
    return log.bind(**bound) if bound else log
