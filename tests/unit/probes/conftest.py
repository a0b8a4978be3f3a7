import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog():
    """aios_host.cli.probe.main() configures structlog to print to the sys.stderr of its test, which pytest
    closes afterwards; put structlog back so later log calls do not write to a closed file."""
    yield
    structlog.reset_defaults()
