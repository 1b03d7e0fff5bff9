"""Score Kaldi-style hypotheses against references: WER and CER.

Usage:
    python -m asr.bin.score --ref dump/raw/test/text --hyp exp/x/decode_greedy/test/text \
        --output_dir exp/x/decode_greedy/test/score

Writes ``result.txt`` (summary), ``alignment.txt`` (per-utterance word alignment) and
``scores.json``; the normalisation is documented in ``asr.scoring``. With ``--utt2spk`` (a
Kaldi ``utt2spk``) it also writes ``result_by_speaker.txt`` and a ``by_speaker`` entry in
``scores.json``: WER and CER per speaker, whose error counts add up to the totals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nar.base.kaldi import read_kaldi_map
from asr.scoring import format_group_table, score, score_by_group


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True)
    p.add_argument("--hyp", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--utt2spk", default=None, help="Kaldi utt2spk: also score per speaker")
    args = p.parse_args(argv)
    refs = read_kaldi_map(args.ref)
    hyps = read_kaldi_map(args.hyp, allow_empty_value=True)
    report, alignment = score(refs, hyps)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.txt").write_text(alignment)
    scores = report.to_dict()
    if args.utt2spk:
        by_speaker = score_by_group(refs, hyps, read_kaldi_map(args.utt2spk))
        scores["by_speaker"] = {spk: r.to_dict() for spk, r in by_speaker.items()}
        (out / "result_by_speaker.txt").write_text(format_group_table(by_speaker, "speaker"))
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    w, c = report.words, report.chars
    summary = (
        f"ref={args.ref} hyp={args.hyp} utterances={report.utterances}\n"
        f"WER {100 * report.wer:.2f}% [ {w.errors} / {w.reference_length}, "
        f"{w.substitutions} sub, {w.deletions} del, {w.insertions} ins ]\n"
        f"CER {100 * report.cer:.2f}% [ {c.errors} / {c.reference_length}, "
        f"{c.substitutions} sub, {c.deletions} del, {c.insertions} ins ]\n"
    )
    if report.missing_hypotheses:
        summary += f"missing hypotheses (scored as empty): {len(report.missing_hypotheses)}\n"
    (out / "result.txt").write_text(summary)
    print(summary, end="")


if __name__ == "__main__":
    main()
