"""Policy regexes: RE2 semantics, and the per-text memory of Matcher (targets.py's rescans)."""

from __future__ import annotations

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_host.policy import regex
from aios_host.policy.regex import Matcher, RegexError, matcher

PATTERNS = ("^iso-prot$", "^stress-ng", "python3?", "^/usr/(s?bin|lib)/", "k(worker|softirqd)/[0-9]+")
TEXTS = st.text(alphabet="abcdeiknoprstuvwxy-/_.0123456789", max_size=24)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATTERNS), st.lists(TEXTS, max_size=30))
def test_matcher_answers_as_re2_search_first_time_and_from_memory(pattern, texts):
    m = Matcher(pattern)
    want = [re2.search(pattern, t) is not None for t in texts]
    assert [m(t) for t in texts] == want
    assert [m(t) for t in texts] == want  # the same, remembered


def test_matcher_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(regex, "SEEN_MAX", 8)
    m = Matcher("^a")
    for i in range(50):
        assert m(f"a{i}") and not m(f"b{i}")
        assert len(m._seen) <= 8


def test_one_matcher_per_pattern_and_bad_patterns_still_refused():
    assert matcher("^iso-prot$") is matcher("^iso-prot$")
    with pytest.raises(RegexError):
        Matcher("(a)\\1")  # a backreference: RE2 has none
