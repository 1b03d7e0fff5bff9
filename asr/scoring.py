"""WER and CER after one documented normalisation (``asr.data.text.normalize_text``).

Normalisation (applied to references and hypotheses alike): lower-case; keep the letters
a–z and apostrophes inside words; everything else becomes a space; whitespace collapsed.
CER counts characters of the normalised text with single spaces between words (spaces count
as characters, as in ESPnet's CER with ``<space>`` tokens).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jiwer

from asr.data.text import normalize_text


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations summed over a test set."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return self.errors / max(self.reference_length, 1)


@dataclass(frozen=True)
class ScoreReport:
    utterances: int
    words: ErrorCounts
    chars: ErrorCounts
    missing_hypotheses: tuple[str, ...]

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    def to_dict(self) -> dict:
        return {
            "utterances": self.utterances,
            "wer": round(100 * self.wer, 2),
            "cer": round(100 * self.cer, 2),
            "words": asdict(self.words),
            "chars": asdict(self.chars),
            "missing_hypotheses": list(self.missing_hypotheses),
        }


def _counts(out) -> ErrorCounts:
    ref_len = out.hits + out.substitutions + out.deletions
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, ref_len)


def score(refs: dict[str, str], hyps: dict[str, str]) -> tuple[ScoreReport, str]:
    """Score hypotheses against references (both ``utt -> text``).

    A reference without a hypothesis is scored against an empty hypothesis (all deletions)
    and listed in ``missing_hypotheses``; hypotheses without a reference are an error.
    Returns the report and jiwer's per-utterance word alignment as text.
    """
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"{len(extra)} hypotheses have no reference, e.g. {extra[0]!r}")
    if not refs:
        raise ValueError("no references to score")
    keys = sorted(refs)
    missing = tuple(k for k in keys if k not in hyps)
    ref_text = [normalize_text(refs[k]) for k in keys]
    hyp_text = [normalize_text(hyps.get(k, "")) for k in keys]
    empty = [k for k, r in zip(keys, ref_text) if not r]
    if empty:
        raise ValueError(f"references are empty after normalisation, e.g. {empty[0]!r}")
    words = jiwer.process_words(ref_text, hyp_text)
    chars = jiwer.process_characters(ref_text, hyp_text)
    report = ScoreReport(len(keys), _counts(words), _counts(chars), missing)
    alignment = jiwer.visualize_alignment(words, show_measures=False, skip_correct=False)
    # put the utterance ids in place of jiwer's sentence numbers
    lines = []
    for line in alignment.splitlines():
        if line.startswith("=== SENTENCE "):
            idx = int(line.split()[2]) - 1  # jiwer counts sentences from 1
            line = f"=== {keys[idx]} ==="
        lines.append(line)
    return report, "\n".join(lines) + "\n"


def score_by_group(refs: dict[str, str], hyps: dict[str, str],
                   groups: dict[str, str]) -> dict[str, ScoreReport]:
    """Score each group of utterances on its own (``groups``: utt -> group, e.g. utt2spk).

    Every reference must have a group; the groups' error counts add up to :func:`score`'s.
    Returns ``group -> report`` in sorted group order.
    """
    ungrouped = sorted(set(refs) - set(groups))
    if ungrouped:
        raise ValueError(f"{len(ungrouped)} references have no group, e.g. {ungrouped[0]!r}")
    members: dict[str, list[str]] = {}
    for utt in refs:
        members.setdefault(groups[utt], []).append(utt)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"{len(extra)} hypotheses have no reference, e.g. {extra[0]!r}")
    return {g: score({u: refs[u] for u in utts}, {u: hyps[u] for u in utts if u in hyps})[0]
            for g, utts in sorted(members.items())}


def format_group_table(reports: dict[str, ScoreReport], title: str = "group") -> str:
    """A plain-text table of utterances, WER and CER (%) per group."""
    width = max([len(title)] + [len(g) for g in reports])
    lines = [f"{title:<{width}}  utts    WER %   CER %"]
    for g, r in reports.items():
        lines.append(f"{g:<{width}}  {r.utterances:4d}  {100 * r.wer:6.2f}  {100 * r.cer:6.2f}")
    return "\n".join(lines) + "\n"
