"""aios-host: the host layer for bare-metal AI/GPU servers."""

__version__ = "0.1.0"
