"""Fixtures of the `aios-host top` tests: UTC clock times, and async tests (Textual's Pilot) run
without a pytest asyncio plugin: each one in its own event loop."""

import asyncio
import inspect
import time

import pytest


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Clock times on screen are local times: the tests and snapshots are taken in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None
