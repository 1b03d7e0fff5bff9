"""MaskGCT synthesis speed: real-time factor at batch 1 and batch B, and the speed-up of one
batch of B over B single calls, measured side by side in one run.

Usage:
    python bench/tts.py --t2s_dir egs/synth_en/tts1/exp/t2s_train_t2s --s2a_dir egs/synth_en/tts1/exp/s2a_train_s2a \
        --data_dir egs/synth_en/tts1/dump/raw/test [--batch_size 16] [--repeats 2] [--threads 2] [--device cpu] \
        [--s2a_temperature 0 --s2a_cfg_scale 0 ...: the decoding options of python -m tts.bin.synthesize]

The B items are the first B (sentence, prompt) pairs of the data dir (prompt: another utterance
of the same speaker, as the recipe's synthesis stage). Each repeat times the B single calls and
the one batched call back to back (after one warm-up of each), so both see the same machine
load; the table reports the median over repeats. RTF = compute seconds / seconds of audio made.
Per stage: prompt tokenisation, T2S, S2A and the acoustic decoder, timed inside the batched call
by wrapping the stages. Writes ``bench/results/tts.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nar.base.kaldi import read_kaldi_map  # noqa: E402
from audio_gen.data import load_item, read_audio_list  # noqa: E402
from tts.bin.synthesize import add_decoding_args, decoding_configs, plan  # noqa: E402
from tts.inference import Text2Speech  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "tts.json"


class StageTimer:
    """Wraps callables of the pipeline and accumulates their wall time under a name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, name, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return timed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--t2s_dir", required=True)
    p.add_argument("--s2a_dir", required=True)
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    add_decoding_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)

    tts = Text2Speech(args.t2s_dir, args.s2a_dir, device=args.device)
    tts.t2s_config, tts.s2a_config = decoding_configs(args, tts.t2s_config, tts.s2a_config)
    pairs = plan(args.data_dir, args.batch_size)
    if len(pairs) < args.batch_size:
        raise SystemExit(f"{args.data_dir}: only {len(pairs)} sentences with a prompt; lower --batch_size")
    texts = read_kaldi_map(args.data_dir / "text")
    items = {it.key: it for it in read_audio_list(args.data_dir)}
    sr = tts.sample_rate
    tgt = [texts[u] for u, _ in pairs]
    pw = [load_item(items[pr], sr) for _, pr in pairs]
    pt = [texts[pr] for _, pr in pairs]
    seeds = list(range(len(pairs)))

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def singles():
        sync()
        t0 = time.perf_counter()
        out = [tts(tgt[i], pw[i], pt[i], prompt_sr=sr, seed=seeds[i]) for i in range(len(pairs))]
        sync()
        return time.perf_counter() - t0, out

    def batched():
        sync()
        t0 = time.perf_counter()
        out = tts.batch(tgt, pw, pt, prompt_sr=sr, seeds=seeds)
        sync()
        return time.perf_counter() - t0, out

    singles()  # warm-up (espeak cache, allocator)
    batched()
    t_single, t_batch, stage_runs = [], [], []
    for r in range(args.repeats):
        ts, out_s = singles()
        timer = StageTimer()
        orig = (tts.semantic.encode, tts.acoustic.encode, tts.t2s.generate, tts.s2a.generate, tts.acoustic.decode)
        tts.semantic.encode = timer.wrap("prompt semantic", orig[0])
        tts.acoustic.encode = timer.wrap("prompt codes", orig[1])
        tts.t2s.generate = timer.wrap("T2S", orig[2])
        tts.s2a.generate = timer.wrap("S2A", orig[3])
        tts.acoustic.decode = timer.wrap("decoder", orig[4])
        try:
            tb, out_b = batched()
        finally:
            (tts.semantic.encode, tts.acoustic.encode, tts.t2s.generate, tts.s2a.generate,
             tts.acoustic.decode) = orig
        t_single.append(ts)
        t_batch.append(tb)
        stage_runs.append(timer.seconds)
        logging.info(f"repeat {r}: {len(pairs)} single calls {ts:.2f} s, one batch {tb:.2f} s")
    audio = sum(w.numel() for w in out_b) / sr
    same = all(a.shape == b.shape for a, b in zip(out_s, out_b))
    ts, tb = statistics.median(t_single), statistics.median(t_batch)
    stages = {k: statistics.median(run[k] for run in stage_runs) for k in stage_runs[0]}
    result = {
        "device": args.device, "threads": args.threads, "batch_size": len(pairs), "repeats": args.repeats,
        "audio_seconds": audio, "single_calls_seconds": ts, "batch_seconds": tb,
        "rtf_batch1": ts / audio, f"rtf_batch{len(pairs)}": tb / audio, "speedup": ts / tb,
        "batch_stage_seconds": stages, "same_lengths_single_vs_batch": same,
        "t2s_steps": tts.t2s_config.steps, "s2a_steps": tts.s2a_config.steps,
        "t2s_temperature": tts.t2s_config.temperature, "t2s_cfg_scale": tts.t2s_config.cfg_scale,
        "s2a_temperature": tts.s2a_config.temperature, "s2a_cfg_scale": tts.s2a_config.cfg_scale,
        "t2s_dir": str(args.t2s_dir), "s2a_dir": str(args.s2a_dir), "data_dir": str(args.data_dir),
        "cpu_threads_torch": torch.get_num_threads(),
    }
    md = (f"# MaskGCT synthesis speed ({args.device}, {args.threads} threads)\n\n"
          f"{len(pairs)} sentences, {audio:.1f} s of audio; median of {args.repeats} repeats.\n\n"
          "| mode | seconds | RTF |\n|---|---|---|\n"
          f"| {len(pairs)} single calls (batch 1) | {ts:.2f} | {ts / audio:.3f} |\n"
          f"| one batch of {len(pairs)} | {tb:.2f} | {tb / audio:.3f} |\n\n"
          f"Speed-up of the batch: **{ts / tb:.2f}x**.\n\n"
          "Batched call by stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + "\n")
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
