#!/usr/bin/env python3
"""How much does a recogniser lose when two utterances run into each other?

Long-audio decoding (``Speech2Text`` windows) sees consecutive utterances of different voices
joined without a pause, which a model trained on single utterances never saw. This benchmark
separates that effect from the window stitching: consecutive utterances of a data dir (in key
order) are joined in pairs and each pair is decoded *whole* (no windows), then the same
utterances are decoded apart; both are scored against the joined references.

    python bench/asr_joined_pairs.py --exp_dir egs/synth_en/asr1/exp \\
        --data_dir egs/synth_en/asr1/dump/raw/test --utts 120 \\
        --systems ctc=asr_train_ctc_char:greedy paraformer=asr_ft_paraformer_ctc05_char:greedy

Prints a markdown table and writes JSON (``--out``, default bench/results/asr_joined_pairs.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_decode import parse_system  # noqa: E402  (the --systems syntax of bench/asr_decode.py)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "asr_joined_pairs.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", type=Path, required=True)
    parser.add_argument("--data_dir", type=Path, required=True, help="a data dir with wav.scp and text")
    parser.add_argument("--systems", nargs="+", required=True, help="name=model_dir:search (model_dir under --exp_dir)")
    parser.add_argument("--utts", type=int, default=120, help="first N utterances (key order), joined in pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from asr.audio import as_waveform
    from nar.base.kaldi import read_kaldi_map
    from asr.inference import Speech2Text
    from asr.scoring import score

    torch.set_num_threads(args.threads)
    for name in ("wav.scp", "text"):
        if not (args.data_dir / name).is_file():
            parser.error(f"{args.data_dir / name} is missing: --data_dir must be a Kaldi-style data dir")
    scp = read_kaldi_map(str(args.data_dir / "wav.scp"))
    refs = read_kaldi_map(str(args.data_dir / "text"))
    keys = sorted(scp)[: args.utts]
    if len(keys) < 2:
        parser.error(f"{args.data_dir}: need at least 2 utterances, got {len(keys)}")
    missing = [k for k in keys if k not in refs]
    if missing:
        parser.error(f"{args.data_dir / 'text'}: no reference for {missing[:3]}")
    pairs = [(keys[i], keys[i + 1]) for i in range(0, len(keys) - 1, 2)]
    ref = {f"{a}+{b}": f"{refs[a]} {refs[b]}" for a, b in pairs}
    try:
        systems = [parse_system(spec, args.exp_dir) for spec in args.systems]
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    rows = []
    for name, path, search in systems:
        s2t = Speech2Text(path, search=search, max_seconds=None, timestamps=False)
        wavs = {k: as_waveform(scp[k], s2t.sample_rate, name=f"{args.data_dir / 'wav.scp'}:{k}")
                for a, b in pairs for k in (a, b)}
        joined = s2t([torch.cat([wavs[a], wavs[b]]) for a, b in pairs])
        apart = dict(zip(wavs, s2t(list(wavs.values()))))
        hyp_joined = {f"{a}+{b}": h.text for (a, b), h in zip(pairs, joined)}
        hyp_apart = {f"{a}+{b}": f"{apart[a].text} {apart[b].text}" for a, b in pairs}
        rj, _ = score(ref, hyp_joined)
        ra, _ = score(ref, hyp_apart)
        rows.append(dict(system=name, model_dir=str(path), search=search, pairs=len(pairs),
                         joined_wer=round(100 * rj.wer, 2), joined_cer=round(100 * rj.cer, 2),
                         apart_wer=round(100 * ra.wer, 2), apart_cer=round(100 * ra.cer, 2)))
        print(f"{name}: joined {rows[-1]['joined_wer']:.1f} / apart {rows[-1]['apart_wer']:.1f} WER %", file=sys.stderr)
    lines = ["| system | pairs | joined WER / CER % | apart WER / CER % | WER cost of the join |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['pairs']} | {r['joined_wer']:.1f} / {r['joined_cer']:.1f} | "
                     f"{r['apart_wer']:.1f} / {r['apart_cer']:.1f} | {r['joined_wer'] - r['apart_wer']:+.1f} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(data_dir=str(args.data_dir), utts=len(keys), threads=args.threads, torch=torch.__version__,
                machine=platform.machine(), cpus=len(os.sched_getaffinity(0)))
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
