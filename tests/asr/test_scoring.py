"""WER/CER against a brute-force edit distance; the normalisation is applied to both sides."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.scoring import score

WORDS = st.lists(st.sampled_from(["a", "b", "cat", "dog", "it's"]), min_size=1, max_size=7)


def levenshtein(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(WORDS, st.lists(st.sampled_from(["a", "b", "cat", "dog"]), max_size=7)), min_size=1, max_size=5))
def test_wer_and_cer_equal_brute_force(pairs):
    refs = {f"u{i}": " ".join(r) for i, (r, _) in enumerate(pairs)}
    hyps = {f"u{i}": " ".join(h) for i, (_, h) in enumerate(pairs)}
    report, _ = score(refs, hyps)
    word_errors = sum(levenshtein(r, h) for r, h in pairs)
    assert report.words.errors == word_errors
    assert report.words.reference_length == sum(len(r) for r, _ in pairs)
    char_errors = sum(levenshtein(" ".join(r), " ".join(h)) for r, h in pairs)
    assert report.chars.errors == char_errors


def test_normalisation_and_missing_hypotheses():
    refs = {"a": "Hello, World!", "b": "it's fine"}
    report, alignment = score(refs, {"a": "hello world"})
    assert report.words.errors == 2  # "b" scored as empty: two deletions
    assert report.missing_hypotheses == ("b",)
    assert "=== a ===" in alignment


def test_errors():
    with pytest.raises(ValueError, match="no reference"):
        score({"a": "x y"}, {"zz": "x"})
    with pytest.raises(ValueError, match="empty after normalisation"):
        score({"a": "123 !!"}, {"a": "x"})
