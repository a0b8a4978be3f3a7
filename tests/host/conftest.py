import os

import pytest


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root (cgroup writes on the real host)")
    for item in items:
        if "tests/host/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(skip)
