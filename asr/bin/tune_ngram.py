"""Tune n-gram shallow fusion on a development set: a grid of LM weight x length bonus x beam.

The CTC posteriors of the data dir are computed once; every grid point then only re-runs the
prefix beam search (``asr.decoding.CTCSearch.decode_log_probs``), so a grid of dozens of points costs
about one decoding pass each. Tune on ``dev``, never on a test set.

Usage:
    python -m asr.bin.tune_ngram --model_dir exp/asr_train_ctc_char --data_dir dump/raw/dev \
        --ngram_file exp/ngram_char/8gram.arpa --weights 0.5 0.8 1.0 --penalties 0 1 2 \
        --beam_sizes 10 20 --output exp/asr_train_ctc_char/tune_ngram_dev.json

Prints a table (WER, CER, search seconds per point, best first) and writes it as JSON. The
grid point with ``--weights 0`` is the plain prefix beam search (no LM) for reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--model_file", default=None, help="checkpoint (default: see asr.inference)")
    p.add_argument("--data_dir", required=True, help="Kaldi-style dir with wav.scp and text (a dev set)")
    p.add_argument("--ngram_file", required=True, nargs="+", help="one or more ARPA LMs (e.g. orders)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.8, 1.0])
    p.add_argument("--penalties", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--beam_sizes", type=int, nargs="+", default=[10])
    p.add_argument("--ngram_unit", default="token", choices=["token", "word"],
                   help="token: LMs over the model's tokens; word: word LMs through a lexicon (asr.wordlm)")
    p.add_argument("--oov_penalties", type=float, nargs="+", default=None,
                   help="ngram_unit word: also sweep these OOV penalties (default: closed vocabulary only)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_threads", type=int, default=2)
    p.add_argument("--output", default=None, help="JSON file for the table")
    return p


def main(argv=None) -> list[dict]:
    args = get_parser().parse_args(argv)
    from asr.audio import as_waveform
    from nar.base.kaldi import read_kaldi_map
    from asr.decoding import DecodeConfig
    from asr.inference import Speech2Text
    from asr.lm import NgramLM
    from asr.scoring import score

    torch.set_num_threads(args.num_threads)
    data = Path(args.data_dir)
    for name in ("wav.scp", "text"):
        if not (data / name).is_file():
            raise FileNotFoundError(f"{data / name} does not exist")
    s2t = Speech2Text(args.model_dir, model_file=args.model_file, search="beam", timestamps=False)
    if s2t.family != "ctc":
        raise ValueError(f"{args.model_dir}: n-gram fusion is for CTC models, this is a {s2t.family} model")
    utts = read_kaldi_map(str(data / "wav.scp"))
    refs = read_kaldi_map(str(data / "text"))
    keys = sorted(utts, key=lambda k: k)
    posteriors = []
    for i in tqdm(range(0, len(keys), args.batch_size), desc="CTC posteriors", leave=False):
        batch = keys[i:i + args.batch_size]
        posteriors.append((batch, *s2t.ctc_log_probs(
            [as_waveform(utts[k], s2t.sample_rate, name=f"{data}/wav.scp:{k}") for k in batch])))
    lms = {path: NgramLM.load(path) for path in args.ngram_file}
    rows = []
    if args.oov_penalties and args.ngram_unit != "word":
        raise SystemExit("--oov_penalties needs --ngram_unit word")
    oovs = [None] + list(args.oov_penalties or [])
    grid = list(itertools.product(args.ngram_file, args.weights, args.penalties, args.beam_sizes, oovs))
    for path, weight, penalty, beam, oov in tqdm(grid, desc="grid", leave=False):
        if weight == 0 and (penalty != 0 or path != args.ngram_file[0] or oov is not None):
            continue  # no LM: one row per beam (a length bonus without an LM is not a CTC beam option)
        search = s2t.model.make_decoder(DecodeConfig(search="beam", beam_size=beam))
        search.use_ngram(lms[path] if weight else None, weight, penalty, args.ngram_unit, oov)
        start, hyps = time.perf_counter(), {}
        for batch, log_probs, lengths in posteriors:
            for k, nbest in zip(batch, s2t.to_hypotheses(search.decode_log_probs(log_probs, lengths, spans=False))):
                hyps[k] = nbest[0].text
        seconds = time.perf_counter() - start
        report, _ = score({k: refs[k] for k in keys}, hyps)
        rows.append(dict(ngram_file=path if weight else None, order=lms[path].order if weight else None,
                         ngram_unit=args.ngram_unit, ngram_weight=weight, penalty=penalty, oov_penalty=oov,
                         beam_size=beam, wer=round(100 * report.wer, 2),
                         cer=round(100 * report.cer, 2), search_seconds=round(seconds, 2)))
    rows.sort(key=lambda r: (r["wer"], r["cer"]))
    lines = ["| LM | weight | penalty | OOV penalty | beam | WER % | CER % | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lm = f"{r['ngram_file']} ({r['order']}-gram)" if r["ngram_file"] else "none"
        oov = "closed" if r["oov_penalty"] is None else r["oov_penalty"]
        lines.append(f"| {lm} | {r['ngram_weight']} | {r['penalty']} | {oov} | {r['beam_size']} | {r['wer']:.1f} | "
                     f"{r['cer']:.1f} | {r['search_seconds']:.1f} |")
    print("\n".join(lines))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(dict(model_dir=args.model_dir, model_file=str(s2t.model_file), data_dir=args.data_dir,
                                                     utterances=len(keys), rows=rows), indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
