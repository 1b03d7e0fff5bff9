"""MAGNeT vs Hybrid-MAGNeT vs the AR baseline: latency at batch 1 and throughput at batch B for
a fixed duration of audio, measured side by side in one run.

Usage:
    python bench/audio_gen.py --seconds 10 [--batch_size 16] [--repeats 2] [--threads 2] [--device cpu]
    python bench/audio_gen.py --magnet_dir egs/synth_music/gen1/exp/magnet_train_magnet \
        --ar_dir egs/synth_music/gen1/exp/ar_train_ar --seconds 5

Models: by default MAGNeT and the AR baseline are built at the sizes of the synth_music recipe
configs (``egs/synth_music/gen1/conf/train_{magnet,ar}.yaml``, 4 codebooks x 512, 50 Hz) with
random weights and ``max_frames`` raised to the requested duration: the work per clip (steps,
sequence length, guidance batch) does not depend on the weights, so the timing is that of the
trained models at that length. ``--magnet_dir``/``--ar_dir`` time trained models instead (their
trained length bounds ``--seconds``). Decoding uses the inference defaults: MAGNeT steps
[20, 10, 10, 10] with guidance (a 2B batch), the AR model T + K - 1 incremental steps with
guidance, Hybrid-MAGNeT ``--hybrid_seconds`` by AR then MAGNeT. Codes only: the codec decoder
is the same for all and is excluded.

Each repeat times every method at batch 1 and at batch B back to back (after a warm-up), so all
see the same machine load; the table reports the median over repeats: latency (s per clip at
batch 1), throughput (clips per second at batch B), the speed-up of MAGNeT over AR at each.
Writes ``bench/results/audio_gen.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio_gen.conditioning import pad_ids  # noqa: E402
from audio_gen.models.ar import DelayAR  # noqa: E402
from audio_gen.models.magnet import MAGNeT, magnet_config  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "audio_gen.json"
CONF = ROOT / "egs" / "synth_music" / "gen1" / "conf"
METHODS = ("magnet", "hybrid", "ar")


def build(cls, conf_file: Path, frames: int, num_codebooks: int, codebook_size: int, vocab: int):
    conf = dict(yaml.safe_load(conf_file.read_text())["model_conf"])
    conf.update(max_frames=frames, train_frames=0)
    torch.manual_seed(0)
    return cls(num_codebooks, codebook_size, vocab_size=vocab, **conf).eval()


def load(model_dir: str, device: str):
    from audio_gen.inference import load_generator
    return load_generator(model_dir, device)[0]


def run(method: str, magnet, ar, batch: int, frames: int, hybrid_frames: int, device: str) -> float:
    text, text_lens = pad_ids([[2, 3, 4, 5, 6, 7, 8, 9]] * batch, device)
    n = torch.full((batch,), frames, device=device)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "ar":
            ar.generate(text, text_lens, n, generator=gens)
        elif method == "magnet":
            magnet.generate(text, text_lens, n, magnet_config(magnet.codebook_size, magnet.num_codebooks),
                            generator=gens)
        else:
            h = torch.full((batch,), hybrid_frames, device=device)
            prompt = ar.generate(text, text_lens, h, generator=gens)
            magnet.generate(text, text_lens, n, magnet_config(magnet.codebook_size, magnet.num_codebooks),
                            prompt=prompt, prompt_lengths=h, generator=gens)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hybrid_seconds", type=float, default=2.0)
    p.add_argument("--magnet_dir")
    p.add_argument("--ar_dir")
    p.add_argument("--frame_rate", type=float, default=50.0)
    p.add_argument("--num_codebooks", type=int, default=4)
    p.add_argument("--codebook_size", type=int, default=512)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = round(args.seconds * args.frame_rate)
    hybrid = min(round(args.hybrid_seconds * args.frame_rate), frames - 1)
    if args.magnet_dir:
        magnet = load(args.magnet_dir, args.device)
        ar = load(args.ar_dir, args.device) if args.ar_dir else None
        source = f"trained: {args.magnet_dir}, {args.ar_dir}"
    else:
        magnet = build(MAGNeT, CONF / "train_magnet.yaml", frames, args.num_codebooks, args.codebook_size, 64)
        ar = build(DelayAR, CONF / "train_ar.yaml", frames, args.num_codebooks, args.codebook_size, 64)
        source = "recipe config sizes, random weights"
    magnet.to(args.device)
    params = {"magnet": sum(q.numel() for q in magnet.parameters()) / 1e6}
    if ar is not None:
        ar.to(args.device)
        params["ar"] = sum(q.numel() for q in ar.parameters()) / 1e6
    methods = [m for m in args.methods.split(",") if m == "magnet" or ar is not None]
    times = {(m, b): [] for m in methods for b in (1, args.batch_size)}
    for m in methods:  # warm-up
        run(m, magnet, ar, 1, min(frames, 50), min(hybrid, 10), args.device)
    for r in range(args.repeats):
        for b in (1, args.batch_size):
            for m in methods:
                dt = run(m, magnet, ar, b, frames, hybrid, args.device)
                times[(m, b)].append(dt)
                print(f"repeat {r} batch {b} {m}: {dt:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for m in methods:
        rows.append(dict(method=m, latency_s=round(med[(m, 1)], 3), rtf_b1=round(med[(m, 1)] / args.seconds, 4),
                         throughput_clips_per_s=round(args.batch_size / med[(m, args.batch_size)], 4),
                         batch_s=round(med[(m, args.batch_size)], 3)))
    ref = {r["method"]: r for r in rows}
    for r in rows:
        if "ar" in ref:
            r["latency_speedup_vs_ar"] = round(ref["ar"]["latency_s"] / r["latency_s"], 3)
            r["throughput_vs_ar"] = round(r["throughput_clips_per_s"] / ref["ar"]["throughput_clips_per_s"], 3)
    result = dict(seconds=args.seconds, frames=frames, batch_size=args.batch_size, threads=args.threads,
                  device=args.device, repeats=args.repeats, hybrid_seconds=args.hybrid_seconds, models=source,
                  params_m=params, machine=platform.processor() or platform.machine(), times=
                  {f"{m}@{b}": v for (m, b), v in times.items()}, rows=rows,
                  command="python bench/audio_gen.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lines = [f"# Text-to-audio generation speed ({args.seconds:g} s of audio, {args.device}, {args.threads} threads)", "",
             f"Models: {source}; parameters (M): " + ", ".join(f"{k} {v:.2f}" for k, v in params.items()) + ".",
             f"Median of {args.repeats} repeats. Command: `{result['command']}`", "",
             f"| method | latency, batch 1 (s) | RTF, batch 1 | batch {args.batch_size} (s) | throughput (clips/s) "
             "| latency speed-up vs AR | throughput vs AR |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['latency_s']:.2f} | {r['rtf_b1']:.3f} | {r['batch_s']:.2f} | "
                     f"{r['throughput_clips_per_s']:.3f} | {r.get('latency_speedup_vs_ar', float('nan')):.2f} | "
                     f"{r.get('throughput_vs_ar', float('nan')):.2f} |")
    md = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
