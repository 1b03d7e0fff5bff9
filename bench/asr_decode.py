"""Paraformer decoding cost vs the encoder forward alone, side by side in one run.

Usage:
    python bench/asr_decode.py --model_dir egs/synth_en/asr1/exp/asr_train_paraformer_char \
        --data_dir egs/synth_en/asr1/dump/raw/test
    python bench/asr_decode.py ... --batch_sizes 1 16 --repeats 5 --threads 2 --out /tmp/x.json
    python bench/asr_decode.py --model_dir ... --data_dir ... --device cuda    # GPU, if any

For every batch of the data dir (utterances sorted by length, as ``asr.bin.decode`` batches
them) and every batch size, each stage is timed on the same batch, back to back, as the median
of ``--repeats`` runs after a warm-up:

    features   per-item frontend (STFT + mel), as Speech2Text computes it
    encoder    normalisation + encoder on the padded features
    pred+dec   CIF predictor + integrate-and-fire + one decoder pass + argmax/result
               (``ParaformerModel.recognize`` on the encoder output)

The table reports the summed seconds per stage, the overhead ``pred+dec / encoder`` (goal of
issue 4: <= 25 % at batch 16) and the real-time factor of the whole path. JSON goes to
``bench/results/asr_decode.json``. Absolute times are only meaningful on a quiet machine or a
GPU; the ratio is measured within one run, batch by batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "asr_decode.json"
GOAL_OVERHEAD = 0.25


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, device: torch.device):
    """(median seconds, last result) of ``fn()`` after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


@torch.no_grad()
def bench_batch_size(s2t, wavs: list, batch_size: int, repeats: int) -> dict:
    model, device = s2t.model, s2t.device
    total = {"features": 0.0, "encoder": 0.0, "pred_dec": 0.0}
    tokens = frames = 0
    for i in range(0, len(wavs), batch_size):
        batch = [w.to(device) for w in wavs[i : i + batch_size]]

        def features():
            feats, lens = [], []
            for w in batch:
                f, n = model.extract_feats(w[None], torch.tensor([w.numel()], device=device))
                feats.append(f[0, : int(n[0])])
                lens.append(int(n[0]))
            return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), torch.tensor(lens, device=device)

        t_feat, (padded, lens) = median_seconds(features, repeats, device)
        t_enc, enc = median_seconds(lambda: model.encode_feats(padded, lens), repeats, device)
        t_dec, res = median_seconds(lambda: model.recognize(enc), repeats, device)
        total["features"] += t_feat
        total["encoder"] += t_enc
        total["pred_dec"] += t_dec
        tokens += int(res.token_counts.sum())
        frames += int(enc.lengths.sum())
    audio = sum(w.numel() for w in wavs) / s2t.sample_rate
    whole = sum(total.values())
    return dict(
        batch_size=batch_size,
        utterances=len(wavs),
        audio_seconds=round(audio, 3),
        encoder_frames=frames,
        tokens_fired=tokens,
        features_s=total["features"],
        encoder_s=total["encoder"],
        pred_dec_s=total["pred_dec"],
        overhead=total["pred_dec"] / total["encoder"],
        rtf=whole / audio,
        goal=GOAL_OVERHEAD,
        met=total["pred_dec"] / total["encoder"] <= GOAL_OVERHEAD,
    )


def table(rows: list[dict]) -> str:
    head = f"{'batch':>5} {'utts':>5} {'features s':>10} {'encoder s':>10} {'pred+dec s':>10} {'overhead':>9} {'RTF':>7}  goal <= 25%"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['batch_size']:>5} {r['utterances']:>5} {r['features_s']:>10.3f} {r['encoder_s']:>10.3f} "
            f"{r['pred_dec_s']:>10.3f} {100 * r['overhead']:>8.1f}% {r['rtf']:>7.4f}  {'met' if r['met'] else 'missed'}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, type=Path, help="a Paraformer training output dir")
    parser.add_argument("--model_file", default=None, help="checkpoint (default: see asr.inference)")
    parser.add_argument("--data_dir", required=True, type=Path, help="Kaldi-style dir with wav.scp")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per stage (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--max_utts", type=int, default=0, help="use only the first N utterances (0: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from asr.audio import as_waveform
    from asr.data.kaldi import read_kaldi_map
    from asr.inference import Speech2Text

    s2t = Speech2Text(args.model_dir, model_file=args.model_file, device=args.device)
    if not s2t.is_paraformer:
        parser.error(f"{args.model_dir} is not a Paraformer model ({type(s2t.model).__name__})")
    wav_scp = args.data_dir / "wav.scp"
    if not wav_scp.is_file():
        parser.error(f"{wav_scp} does not exist")
    utts = read_kaldi_map(str(wav_scp))
    wavs = [as_waveform(path, s2t.sample_rate, name=f"{wav_scp}:{key}") for key, path in utts.items()]
    wavs.sort(key=lambda w: w.numel(), reverse=True)
    if args.max_utts:
        wavs = wavs[: args.max_utts]
    rows = [bench_batch_size(s2t, wavs, b, args.repeats) for b in args.batch_sizes]
    print(table(rows))
    meta = dict(
        command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        torch=torch.__version__, threads=args.threads, device=str(s2t.device),
        device_name=(torch.cuda.get_device_name(s2t.device) if s2t.device.type == "cuda"
                     else platform.processor() or platform.machine()),
        load_average=os.getloadavg(), cpu_count=os.cpu_count(), repeats=args.repeats,
        model_file=str(s2t.model_file),
        parameters=sum(p.numel() for p in s2t.model.parameters()),
        decoder_parameters=sum(p.numel() for p in s2t.model.decoder.parameters()),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
