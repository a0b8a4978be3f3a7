"""Regular expressions from policy files (match.comm, match.exe), in RE2: linear time in the input.

A policy's regex is run against every process's comm and exe on each rescan, and a local user
chooses what those strings are. Python's backtracking `re` let `(a+)+$` against a 30-character
executable name stall planning for seconds, doubling per character; RE2 (google-re2) has no
backtracking, and refuses the constructs that need it (backreferences, lookaround), which are
reported at `policy check` like any other error.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

PATTERN_MAX_CHARS = 1024  # a comm is 15 bytes, an exe path at most PATH_MAX: longer is a mistake
SEEN_MAX = 1024  # texts a Matcher remembers (exe paths up to PATH_MAX: at most ~4 MiB), then it forgets all

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would also print the error on stderr; ours is one line


class RegexError(ValueError):
    pass


def compile_regex(pattern: str) -> Any:
    """A compiled RE2 pattern (with .search like re's); RegexError with RE2's reason."""
    if len(pattern) > PATTERN_MAX_CHARS:
        raise RegexError(f"longer than {PATTERN_MAX_CHARS} characters")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(reason) from None


class Matcher:
    """Whether `pattern` matches a text (RE2 search), remembered per text. Every rescan tests the
    same few hundred comm and exe strings against the same patterns; google-re2's Python wrapper
    costs more per call than the dict lookup by far (in the VM, RE2 searches were 40% of a
    rescan's CPU). Bounded: past SEEN_MAX texts it starts over, so a user spawning processes of
    ever new names costs searches, not memory."""

    def __init__(self, pattern: str) -> None:
        self._re = compile_regex(pattern)
        self._seen: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        hit = self._seen.get(text)
        if hit is None:
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            hit = self._seen[text] = self._re.search(text) is not None
        return hit


@functools.lru_cache(maxsize=256)
def matcher(pattern: str) -> Matcher:
    """The Matcher of `pattern`, one per pattern for the process (a policy reload keeps those of
    the patterns it still has)."""
    return Matcher(pattern)
