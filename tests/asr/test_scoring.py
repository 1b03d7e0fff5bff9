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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(WORDS, st.lists(st.sampled_from(["a", "b", "cat", "dog"]), max_size=7),
                          st.sampled_from(["spk1", "spk2", "spk3"])), min_size=1, max_size=8))
def test_per_group_scores_are_brute_force_and_add_up(items):
    from asr.scoring import score_by_group

    refs = {f"u{i}": " ".join(r) for i, (r, _, _) in enumerate(items)}
    hyps = {f"u{i}": " ".join(h) for i, (_, h, _) in enumerate(items)}
    groups = {f"u{i}": g for i, (_, _, g) in enumerate(items)}
    by_group = score_by_group(refs, hyps, groups)
    assert sorted(by_group) == sorted(set(groups.values()))
    for g, report in by_group.items():
        mine = [(r, h) for r, h, gg in items if gg == g]
        assert report.utterances == len(mine)
        assert report.words.errors == sum(levenshtein(r, h) for r, h in mine)
    total, _ = score(refs, hyps)
    assert sum(r.words.errors for r in by_group.values()) == total.words.errors
    assert sum(r.chars.reference_length for r in by_group.values()) == total.chars.reference_length


def test_score_cli_writes_per_speaker_results(tmp_path):
    import json

    from asr.bin import score as score_cli

    (tmp_path / "text").write_text("a1 the cat\na2 a dog\nb1 it's a cat\n")
    (tmp_path / "hyp").write_text("a1 the cat\na2 a\nb1 its a bat\n")
    (tmp_path / "utt2spk").write_text("a1 alice\na2 alice\nb1 bob\n")
    out = tmp_path / "scoring"
    score_cli.main(["--ref", str(tmp_path / "text"), "--hyp", str(tmp_path / "hyp"),
                    "--output_dir", str(out), "--utt2spk", str(tmp_path / "utt2spk")])
    scores = json.loads((out / "scores.json").read_text())
    assert scores["by_speaker"]["alice"]["words"]["deletions"] == 1
    assert scores["by_speaker"]["alice"]["wer"] == 25.0
    assert scores["by_speaker"]["bob"]["words"]["substitutions"] == 2
    table = (out / "result_by_speaker.txt").read_text().splitlines()
    assert table[1].split() == ["alice", "2", "25.00", "33.33"]  # " dog" deleted: 4 of 12 chars
    with pytest.raises(ValueError, match="no group"):
        from asr.scoring import score_by_group
        score_by_group({"x": "a"}, {}, {})
