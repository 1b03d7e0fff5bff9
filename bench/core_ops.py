"""Benchmark the nar core against per-item / per-frame baselines, side by side in one run.

Usage:
    python bench/core_ops.py                     # full sizes, table + bench/results/core_ops.json
    python bench/core_ops.py --quick             # small sizes, a few seconds
    python bench/core_ops.py --threads 2 --repeats 7 --out /tmp/core_ops.json
    python bench/core_ops.py --only align --out /tmp/align.json   # some of the rows (align, cif, beam)
    python bench/core_ops.py --device cuda --out bench/results/core_ops_cuda.json  # GPU, if any

Rows (goals from the project's issues 3 and 35):
    align    nar.align.forced_align, backend="auto", at B = 1, 8, 32 (T = 500, 60 tokens, V = 100)
             vs a loop of torchaudio.functional.forced_align (batch size 1): on CPU auto runs
             torchaudio's kernel item by item, so the goal is not to be slower than that loop
             (within 5% timing noise)                                               goal >= 0.95x
    align    the same with backend="batched" (the vectorised Viterbi, auto's path on CUDA), and
             tie_rule="best" (batched on CPU with torchaudio 2.9) at B = 32         (info)
    cif      nar.cif.cif on (32, 500, 256) vs a per-frame loop batched over B
             (FunASR's original ``cif`` structure, written here)                  goal >= 20x
    cif      the same vs a per-item per-frame loop (the tests' reference)        (info)
    beam     nar.ctc.ctc_prefix_beam_search, beam 10, batch of 32 vs a loop over
             utterances                                                          goal >= 3x

Every pair is timed in the same process with the same torch.set_num_threads, after a warm-up,
as the median of repeats (the alignment rows interleave their repeats: one call of each side in
turn); each row also checks that both sides give the same result. With
``--device cuda`` both sides run on the GPU (torchaudio's CUDA forced_align, loops on the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchaudio

from nar.align import forced_align
from nar.cif import cif
from nar.ctc import ctc_prefix_beam_search

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "core_ops.json"
ROW_GROUPS = ("align", "cif", "beam")


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------
# Forced alignment
# --------------------------------------------------------------------------------------------
def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each function, timed one call of each in turn per repeat (so a change
    of machine load hits every side alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_align(batches, frames: int, tokens: int, vocab: int, repeats: int, device) -> list:
    rows = []
    for batch in batches:
        gen = torch.Generator().manual_seed(0)
        log_probs = torch.randn(batch, frames, vocab, generator=gen).log_softmax(-1).to(device)
        targets = torch.randint(1, vocab, (batch, tokens), generator=gen).to(device)
        lengths = torch.full((batch,), frames, device=device)
        target_lengths = torch.full((batch,), tokens, device=device)

        def loop():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [torchaudio.functional.forced_align(log_probs[b:b + 1], targets[b:b + 1].int(), blank=0)[0]
                        for b in range(batch)]

        def run(**kwargs):
            return lambda: forced_align(log_probs, lengths, targets, target_lengths, **kwargs)[0]

        fns = dict(loop=loop, auto=run(), batched=run(backend="batched"))
        if batch == max(batches):
            fns["best"] = run(tie_rule="best")
        seconds = interleaved_medians(fns, repeats)
        reference = torch.cat(loop()).long().to(device)
        shape = f"B={batch} T={frames} L={tokens} V={vocab}"
        common = dict(shape=shape, baseline="loop of torchaudio.functional.forced_align", baseline_s=seconds["loop"])
        rows.append(dict(name="forced_align (auto)", ours_s=seconds["auto"], goal=0.95,
                         identical=torch.equal(fns["auto"](), reference), **common))
        rows.append(dict(name="forced_align backend='batched' (info)", ours_s=seconds["batched"], goal=None,
                         identical=torch.equal(fns["batched"](), reference), **common))
        if "best" in fns:
            def path_score(labels):
                return log_probs.gather(2, labels[..., None]).sum((1, 2))

            rows.append(dict(name="forced_align tie_rule='best' (info)", ours_s=seconds["best"], goal=None,
                             identical="path score equal" if torch.allclose(
                                 path_score(fns["best"]()), path_score(reference), atol=1e-3) else "differs",
                             **common))
    return rows


# --------------------------------------------------------------------------------------------
# CIF
# --------------------------------------------------------------------------------------------
def cif_frame_loop(hidden: torch.Tensor, alphas: torch.Tensor, threshold: float = 1.0):
    """Per-frame loop batched over B (one token fired per frame at most, as FunASR's ``cif``)."""
    batch, frames, dim = hidden.shape
    integral = hidden.new_zeros(batch)
    frame = hidden.new_zeros(batch, dim)
    states, fired = [], []
    for t in range(frames):
        alpha = alphas[:, t]
        to_fill = threshold - integral
        integral = integral + alpha
        fire = integral >= threshold
        used = torch.where(fire, to_fill, alpha)
        frame = frame + used[:, None] * hidden[:, t]
        states.append(frame)
        fired.append(fire)
        integral = torch.where(fire, integral - threshold, integral)
        frame = torch.where(fire[:, None], (alpha - used)[:, None] * hidden[:, t], frame)
    states, fired = torch.stack(states, 1), torch.stack(fired, 1)  # (B, T, D), (B, T)
    counts = fired.sum(1)
    out = hidden.new_zeros(batch, int(counts.max()), dim)
    for b in range(batch):
        out[b, :int(counts[b])] = states[b, fired[b]]
    return out, counts


def cif_item_loop(hidden: torch.Tensor, alphas: torch.Tensor, threshold: float = 1.0):
    """Per-item, per-frame loop (the reference of tests/nar/test_cif.py, without float64)."""
    outs = []
    for b in range(hidden.shape[0]):
        integral, acc, toks = 0.0, hidden.new_zeros(hidden.shape[-1]), []
        for t, w in enumerate(alphas[b].tolist()):
            while integral + w >= threshold:
                need = threshold - integral
                toks.append(acc + need * hidden[b, t])
                acc, integral, w = hidden.new_zeros(hidden.shape[-1]), 0.0, w - need
            integral += w
            acc = acc + w * hidden[b, t]
        outs.append(torch.stack(toks))
    return outs


def bench_cif(batch: int, frames: int, dim: int, repeats: int, item_loop: bool, device) -> list:
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(batch, frames, dim, generator=gen).to(device)
    alphas = (torch.rand(batch, frames, generator=gen) * 0.6).to(device)
    lengths = torch.full((batch,), frames, device=device)

    def ours():
        return cif(hidden, alphas, lengths)

    out, ref = ours(), cif_frame_loop(hidden, alphas)
    same = torch.equal(out.token_lengths, ref[1]) and torch.allclose(out.embeddings, ref[0], atol=1e-4)
    shape = f"B={batch} T={frames} D={dim}"
    ours_s = median_seconds(ours, repeats)
    rows = [dict(name="CIF", shape=shape, baseline="per-frame loop, batched over B (FunASR cif)",
                 ours_s=ours_s, baseline_s=median_seconds(lambda: cif_frame_loop(hidden, alphas), repeats),
                 goal=20.0, identical=same)]
    if item_loop:
        items = cif_item_loop(hidden, alphas)
        same = all(torch.allclose(out.embeddings[b, :len(x)], x, atol=1e-4) for b, x in enumerate(items))
        rows.append(dict(name="CIF", shape=shape, baseline="per-item per-frame loop (test reference)",
                         ours_s=ours_s, baseline_s=median_seconds(lambda: cif_item_loop(hidden, alphas),
                                                                  max(1, repeats // 2)),
                         goal=None, identical=same))
    return rows


# --------------------------------------------------------------------------------------------
# Prefix beam search
# --------------------------------------------------------------------------------------------
def bench_beam(batch: int, frames: int, vocab: int, beam: int, repeats: int, device) -> dict:
    gen = torch.Generator().manual_seed(2)
    log_probs = (torch.randn(batch, frames, vocab, generator=gen) * 3).log_softmax(-1).to(device)
    lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
    lengths[0] = frames
    lengths = lengths.to(device)

    def ours():
        return ctc_prefix_beam_search(log_probs, lengths, beam_size=beam)

    def loop():
        return [ctc_prefix_beam_search(log_probs[b:b + 1, :int(n)], lengths[b:b + 1], beam_size=beam)[0]
                for b, n in enumerate(lengths.tolist())]

    same = [h[0].tokens for h in ours()] == [h[0].tokens for h in loop()]
    return dict(name="CTC prefix beam search", shape=f"B={batch} T<={frames} V={vocab} beam={beam}",
                baseline="loop over utterances (same function, B=1)",
                ours_s=median_seconds(ours, repeats), baseline_s=median_seconds(loop, max(1, repeats // 2)),
                goal=3.0, identical=same)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def table(rows: list) -> str:
    lines = ["| op | shape | baseline | baseline ms | nar ms | speedup | goal | met | same result |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        goal = f"{r['goal']:g}x" if r["goal"] else "-"
        met = "-" if r["goal"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['name']} | {r['shape']} | {r['baseline']} | {r['baseline_s'] * 1e3:.2f} | "
                     f"{r['ours_s'] * 1e3:.2f} | {r['speedup']:.2f}x | {goal} | {met} | {r['identical']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every row")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side (median)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--device", default="cpu", help="torch device for both sides (default cpu)")
    parser.add_argument("--only", nargs="+", choices=ROW_GROUPS, default=list(ROW_GROUPS),
                        help="run only these groups of rows (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 7)
    item_loop = device.type == "cpu"  # the per-item Python loop is meaningless on a GPU
    rows = []
    if "align" in args.only:
        rows += bench_align((1, 8, 32), *((120, 20, 40) if args.quick else (500, 60, 100)),
                            max(repeats, 5), device)
    if "cif" in args.only:
        rows += bench_cif(*((8, 120, 64) if args.quick else (32, 500, 256)), repeats, item_loop, device)
    if "beam" in args.only:
        rows.append(bench_beam(*((8, 80, 40) if args.quick else (32, 500, 100)), 10, repeats, device))
    for r in rows:
        r["speedup"] = r["baseline_s"] / r["ours_s"]
        r["met"] = None if r["goal"] is None else r["speedup"] >= r["goal"]
    print(table(rows))
    meta = dict(command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                torch=torch.__version__, torchaudio=torchaudio.__version__, threads=args.threads,
                device=str(device), load_average=os.getloadavg(),
                device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                             else platform.processor() or platform.machine()),
                repeats=repeats, quick=args.quick, cpu_count=os.cpu_count(), only=args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
