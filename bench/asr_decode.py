"""Decoding speed and accuracy of several ASR systems side by side, in one run.

Usage:
    python bench/asr_decode.py --exp_dir egs/synth_en/asr1/exp --data_dir egs/synth_en/asr1/dump/raw/test
    python bench/asr_decode.py --exp_dir ... --data_dir ... \
        --systems ar=asr_train_aed_char:beam cassnat=asr_train_cassnat_char:greedy \
                  cassnat_esa=asr_train_cassnat_char:esa --batch_sizes 1 --baseline ar
    python bench/asr_decode.py ... --device cuda          # on a GPU, if any

A system is ``name=model_dir:search`` (model_dir relative to ``--exp_dir``; search as in
``asr.Speech2Text``: greedy, beam, esa) or ``name=model_dir:decode.yaml`` (a decode config of
``asr.bin.decode``, e.g. CTC beam + n-gram LM with ``--ngram_file``). Without ``--systems``
every trained model under ``--exp_dir`` is benchmarked with each search its family has (AED beam 10; CTC greedy and prefix
beam 10; Paraformer; CASS-NAT greedy and ESA 16).

For every batch of the data dir (utterances sorted by length, as ``asr.bin.decode`` batches
them) the systems run back to back on the same batch, so the ratios compare like with like on
a noisy machine. Per batch and system two things are timed (median of ``--repeats``; one
warm-up batch per system first):

    encoder   per-item features + padded encoder pass (``Speech2Text.encode``)
    total     the whole ``Speech2Text.decode_batch`` call (features to text, one padded batch)

``decode = total - encoder`` is what each decoder adds; ``overhead = decode / encoder``
(issue 4's Paraformer goal: <= 25 % at batch 16). ``speed-up`` is the baseline system's total
time over this system's (issue 5: CASS-NAT greedy >= 15x and CASS-NAT + ESA >= 8x over AR beam
10 at batch 1). WER/CER are scored with ``asr.scoring`` against the data dir's ``text``.
JSON goes to ``bench/results/asr_decode.json`` (``--out``) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from asr.bin.infer import seconds_arg

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "asr_decode.json"
#: searches benchmarked per model family when --systems is not given
FAMILY_DEFAULT_SEARCHES = {"aed": ("beam",), "ctc": ("greedy", "beam"), "paraformer": ("greedy",),
                           "cassnat": ("greedy", "esa")}
#: Speech2Text options per search (beam 10 and ESA 16, the documented defaults)
SEARCH_OPTIONS = {"greedy": {}, "beam": {"beam_size": 10}, "esa": {"num_samples": 16}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, device: torch.device):
    """(median seconds, last result) of ``repeats`` calls of ``fn()``."""
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def search_options(search: str, ngram_file: str | None = None) -> dict:
    """Speech2Text options of a search name, or of a decode config (``*.yaml``)."""
    if not search.endswith(".yaml"):
        return dict(search=search, **SEARCH_OPTIONS[search])
    from asr.bin.decode import apply_ngram_file, load_decode_config

    config = apply_ngram_file(load_decode_config(search), ngram_file, search)
    if config.pop("speaker_warps") is not None:
        raise ValueError(f"{search}: speaker_warps (per-speaker VTLN, asr.bin.decode) is not a system this "
                         f"benchmark times; use the config without it")
    for key in ("batch_seconds", "max_seconds", "overlap_seconds", "timestamps"):
        config.pop(key)
    return config


def parse_system(spec: str, exp_dir: Path) -> tuple[str, Path, str]:
    if "=" not in spec or ":" not in spec.split("=", 1)[1]:
        raise ValueError(f"--systems entry {spec!r}: expected name=model_dir:search")
    name, rest = spec.split("=", 1)
    model_dir, search = rest.rsplit(":", 1)
    path = Path(model_dir) if Path(model_dir).is_absolute() else exp_dir / model_dir
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"--systems {name}: {path}/config.yaml not found (not a trained model dir)")
    return name, path, search


def discover_systems(exp_dir: Path, device: str) -> list[tuple[str, Path, str]]:
    from asr.inference import Speech2Text

    systems = []
    for config in sorted(exp_dir.glob("asr_train_*/config.yaml")):
        try:
            family = Speech2Text(config.parent, device=device, timestamps=False).family
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"skipping {config.parent}: {e}", file=sys.stderr)
            continue
        tag = config.parent.name.removeprefix("asr_train_")
        for search in FAMILY_DEFAULT_SEARCHES[family]:
            systems.append((f"{tag}:{search}", config.parent, search))
    return systems


def run(systems, wavs, keys, refs, batch_size: int, repeats: int, device: str) -> list[dict]:
    """Benchmark every system on every batch, systems interleaved batch by batch."""
    from asr.scoring import score

    dev = torch.device(device)
    totals = {name: {"encoder": 0.0, "total": 0.0} for name, _, _ in systems}
    hyps = {name: {} for name, _, _ in systems}
    batches = [list(range(i, min(i + batch_size, len(wavs)))) for i in range(0, len(wavs), batch_size)]
    for name, s2t, _ in systems:  # warm-up on the first batch
        s2t.decode_batch([wavs[i] for i in batches[0]])
    with torch.no_grad():
        for n, idx in enumerate(batches):
            batch = [wavs[i] for i in idx]
            for name, s2t, _ in systems:
                t_enc, _ = median_seconds(lambda: s2t.encode(batch), repeats, dev)
                t_all, res = median_seconds(lambda: s2t.decode_batch(batch), repeats, dev)
                totals[name]["encoder"] += t_enc
                totals[name]["total"] += t_all
                hyps[name].update({keys[i]: r[0].text for i, r in zip(idx, res)})
            print(f"\rbatch size {batch_size}: {n + 1}/{len(batches)} batches", end="", file=sys.stderr)
    print(file=sys.stderr)
    audio = sum(w.numel() for w in wavs) / systems[0][1].sample_rate
    if audio <= 0:
        raise ValueError("the data dir's audio is empty")
    rows = []
    for name, s2t, search in systems:
        report, _ = score(refs, hyps[name])
        t = totals[name]
        decode = max(t["total"] - t["encoder"], 0.0)
        rows.append(dict(
            system=name, model_dir=str(s2t.model_dir), family=s2t.family, search=search,
            batch_size=batch_size, utterances=len(wavs), audio_seconds=round(audio, 3),
            wer=round(100 * report.wer, 2), cer=round(100 * report.cer, 2),
            total_s=t["total"], encoder_s=t["encoder"], decode_s=decode,
            overhead=decode / t["encoder"] if t["encoder"] > 0 else float("nan"),
            rtf=t["total"] / audio,
            parameters=sum(p.numel() for p in s2t.model.parameters()),
            training=training_summary(s2t.config),
        ))
    return rows


def training_summary(config: dict) -> str:
    """How a model was trained, from its config.yaml: epochs, and the init source if any."""
    text = f"{config.get('max_epoch', '?')} ep"
    inits = config.get("init_param") or []
    if inits:
        sources = sorted({Path(str(p).split(":")[0]).parent.name for p in inits})
        keys = sorted({str(p).split(":")[1] for p in inits if str(p).count(":") >= 1})
        text += f" from {', '.join(sources)} ({'+'.join(keys)})"
    frozen = config.get("freeze_param") or []
    if frozen:
        text += f", {'+'.join(frozen)} frozen"
    return text


def add_speedups(rows: list[dict], baseline: str | None) -> None:
    for r in rows:
        base = [b for b in rows if b["system"] == baseline and b["batch_size"] == r["batch_size"]]
        r["speedup"] = base[0]["total_s"] / r["total_s"] if base else None


def table(rows: list[dict], baseline: str | None) -> str:
    head = ("| system | training | batch | WER % | CER % | total s | encoder s | decode s | NAR overhead | "
            f"RTF | speed-up vs {baseline or '-'} |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        sp = f"{r['speedup']:.1f}x" if r.get("speedup") else "-"
        lines.append(
            f"| {r['system']} | {r.get('training', '-')} | {r['batch_size']} | {r['wer']:.1f} | {r['cer']:.1f} | {r['total_s']:.2f} | "
            f"{r['encoder_s']:.2f} | {r['decode_s']:.2f} | {100 * r['overhead']:.1f}% | {r['rtf']:.4f} | {sp} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], baseline: str | None, out: Path) -> list[Path]:
    """Two PNGs beside ``out``: WER vs speed-up over the baseline (one point per system and
    batch size), and the time per system split into encoder and decoder (one panel per batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    batch_sizes = sorted({r["batch_size"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for b, marker in zip(batch_sizes, "osD^v<>"):
        sel = [r for r in rows if r["batch_size"] == b]
        xs = [r["speedup"] if r.get("speedup") else r["audio_seconds"] / r["total_s"] for r in sel]
        ax.scatter(xs, [r["wer"] for r in sel], marker=marker, label=f"batch {b}")
        for x, r in zip(xs, sel):
            ax.annotate(r["system"], (x, r["wer"]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"speed-up over {baseline}" if baseline else "audio seconds per decode second")
    ax.set_ylabel("WER %")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out.with_name(out.stem + "_wer_speedup.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(5 * len(batch_sizes), 4), squeeze=False)
    for ax, b in zip(axes[0], batch_sizes):
        sel = [r for r in rows if r["batch_size"] == b]
        names = [r["system"] for r in sel]
        enc = [r["encoder_s"] for r in sel]
        dec = [r["decode_s"] for r in sel]
        ax.barh(names, enc, label="encoder (features + encoder)")
        ax.barh(names, dec, left=enc, label="decoder / search")
        ax.set_xlabel("seconds (all utterances)")
        ax.set_title(f"batch {b}")
        ax.invert_yaxis()
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out.with_name(out.stem + "_time.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def long_worker(model_dir: str, search: str, wav_path: str, device: str, max_seconds, overlap_seconds,
                ngram_file: str | None = None) -> dict:
    """Decode one long file in this (fresh) process; report time and peak RSS (MB)."""
    from asr.audio import as_waveform
    from asr.inference import Speech2Text

    s2t = Speech2Text(model_dir, device=device, max_seconds=max_seconds,
                      overlap_seconds=overlap_seconds, **search_options(search, ngram_file))
    wav = as_waveform(wav_path, s2t.sample_rate, name=wav_path)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dev = torch.device(device)
    seconds, hyp = median_seconds(lambda: s2t(wav), 1, dev)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    starts = [s for s, _ in hyp.timestamps]
    # the same audio decoded utterance by utterance (after the RSS reading): the stitching's cost
    lengths = json.loads(Path(wav_path).with_suffix(".parts.json").read_text())
    bounds = [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    parts = s2t([wav[a:b] for a, b in zip(bounds, bounds[1:])])
    return dict(
        max_seconds=s2t.max_seconds, overlap_seconds=s2t.overlap_seconds, window_source=s2t.window_source,
        text=hyp.text, parts_text=" ".join(h.text for h in parts), seconds=seconds, tokens=len(hyp.token_ids),
        loaded_rss_mb=round(loaded, 1), peak_rss_mb=round(peak, 1),
        monotonic=starts == sorted(starts) and all(s <= e for s, e in hyp.timestamps),
        last_token_end=hyp.timestamps[-1][1] if hyp.timestamps else None,
    )


def long_audio(specs, keys, wavs, refs, minutes: float, rate: int, out: Path, args) -> list[dict]:
    """A synthetic long recording (the utterances concatenated in key order until ``minutes``)
    decoded by each system in a fresh process (``Speech2Text`` windowing), with peak RSS."""
    import soundfile

    from asr.scoring import score

    order = sorted(range(len(keys)), key=lambda i: keys[i])
    chosen, total = [], 0
    for i in order:
        if total >= minutes * 60 * rate:
            break
        chosen.append(i)
        total += wavs[i].numel()
    if total < minutes * 60 * rate:
        print(f"warning: the data dir has only {total / rate / 60:.1f} min of audio; the long file is that long",
              file=sys.stderr)
    path = out.with_name(f"long_{minutes:g}min.wav")
    soundfile.write(path, torch.cat([wavs[i] for i in chosen]).numpy(), rate)
    path.with_suffix(".parts.json").write_text(json.dumps([wavs[i].numel() for i in chosen]))
    ref = " ".join(refs[keys[i]] for i in chosen)
    audio = total / rate
    rows = []
    for name, model_dir, search in specs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--long_worker", str(model_dir), search, str(path),
               "--device", args.device, "--threads", str(args.threads), "--long_max_seconds", str(args.long_max_seconds),
               "--long_overlap_seconds", str(args.long_overlap_seconds),
               "--data_dir", str(args.data_dir)] + (["--ngram_file", args.ngram_file] if args.ngram_file else [])
        print(f"long audio ({audio / 60:.1f} min): {name} ...", file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"long-audio decoding with {name} failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        report, _ = score({"long": ref}, {"long": res["text"]})
        parts_report, _ = score({"long": ref}, {"long": res["parts_text"]})
        rows.append(dict(
            system=name, audio_seconds=round(audio, 1), utterances=len(chosen),
            max_seconds=res["max_seconds"], overlap_seconds=res["overlap_seconds"],
            window_source=res["window_source"], wer=round(100 * report.wer, 2), cer=round(100 * report.cer, 2),
            utterance_wer=round(100 * parts_report.wer, 2), utterance_cer=round(100 * parts_report.cer, 2),
            seconds=res["seconds"], rtf=res["seconds"] / audio, tokens=res["tokens"],
            loaded_rss_mb=res["loaded_rss_mb"], peak_rss_mb=res["peak_rss_mb"],
            monotonic_timestamps=res["monotonic"], last_token_end=res["last_token_end"],
            text=res["text"], utterance_text=res["parts_text"],
        ))
    return rows


def _window(row: dict) -> str:
    if row["max_seconds"] is None:
        return "never cut"
    return f"{row['max_seconds']:g} s / {row.get('overlap_seconds', 4.0):g} s"


def long_table(rows: list[dict]) -> str:
    lines = ["| system | audio min | window / overlap | WER % | CER % | same audio per utterance: WER / CER % | "
             "decode s | RTF | RSS after load MB | peak RSS MB | timestamps monotonic |", "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['audio_seconds'] / 60:.1f} | {_window(r)} | {r['wer']:.1f} | "
            f"{r['cer']:.1f} | {r['utterance_wer']:.1f} / {r['utterance_cer']:.1f} | {r['seconds']:.1f} | {r['rtf']:.4f} | {r['loaded_rss_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['monotonic_timestamps']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp_dir", type=Path, default=Path("egs/synth_en/asr1/exp"))
    parser.add_argument("--data_dir", required=True, type=Path, help="Kaldi-style dir with wav.scp and text")
    parser.add_argument("--systems", nargs="+", default=None, help="name=model_dir:search (default: all)")
    parser.add_argument("--baseline", default=None, help="system the speed-ups are relative to")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per batch and stage (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--max_utts", type=int, default=0, help="use only the N longest utterances (0: all)")
    parser.add_argument("--maxlenratio", type=float, default=0.0,
                        help="AED beam search: maximum output length / encoder frames (0: frames)")
    parser.add_argument("--ngram_file", default=None, help="ARPA LM for decode configs that set ngram_weight")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path (.md beside it)")
    parser.add_argument("--plots", action="store_true", help="also write PNG plots beside --out (matplotlib)")
    parser.add_argument("--long_minutes", type=float, default=0.0,
                        help="also decode a synthetic recording of this many minutes (the data dir's utterances "
                             "concatenated) with each system in a fresh process: WER, time, peak RSS (0: skip)")
    parser.add_argument("--long_systems", nargs="+", default=None, help="systems for --long_minutes (default: all)")
    parser.add_argument("--long_max_seconds", type=seconds_arg, default="auto",
                        help="Speech2Text max_seconds (window length; 'auto': the longest training utterance)")
    parser.add_argument("--long_overlap_seconds", type=seconds_arg, default="auto", help="Speech2Text overlap_seconds")
    parser.add_argument("--skip_short", action="store_true", help="only the long-audio measurement")
    parser.add_argument("--long_worker", nargs=3, metavar=("MODEL_DIR", "SEARCH", "WAV"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.long_worker:
        print(json.dumps(long_worker(*args.long_worker, args.device, args.long_max_seconds,
                                     args.long_overlap_seconds, args.ngram_file)))
        return 0

    from asr.audio import as_waveform
    from nar.base.kaldi import read_kaldi_map
    from asr.inference import Speech2Text
    from asr.model_dir import load_model_config

    for name in ("wav.scp", "text"):
        if not (args.data_dir / name).is_file():
            parser.error(f"{args.data_dir / name} does not exist")
    if args.systems:
        specs = [parse_system(s, args.exp_dir) for s in args.systems]
    else:
        specs = discover_systems(args.exp_dir, args.device)
    if not specs:
        parser.error(f"no trained model found under {args.exp_dir}")
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        parser.error(f"system names must be unique, got {names}")
    if args.baseline and args.baseline not in names:
        parser.error(f"--baseline {args.baseline!r} is not one of the systems {names}")
    systems = [
        (name, Speech2Text(path, device=args.device, timestamps=False, **{  # maxlenratio: AED systems only
            **({"maxlenratio": args.maxlenratio} if load_model_config(path).get("model") == "espnet" else {}),
            **search_options(search, args.ngram_file)}), search)
        for name, path, search in specs
    ]
    rates = {s2t.sample_rate for _, s2t, _ in systems}
    if len(rates) != 1:
        parser.error(f"the systems expect different sample rates {sorted(rates)}")
    rate = rates.pop()
    utts = read_kaldi_map(str(args.data_dir / "wav.scp"))
    refs_all = read_kaldi_map(str(args.data_dir / "text"))
    wav_list = [(k, as_waveform(p, rate, name=f"{args.data_dir}/wav.scp:{k}")) for k, p in utts.items()]
    wav_list.sort(key=lambda kw: kw[1].numel(), reverse=True)
    if args.max_utts:
        wav_list = wav_list[: args.max_utts]
    keys = [k for k, _ in wav_list]
    wavs = [w for _, w in wav_list]
    refs = {k: refs_all[k] for k in keys}
    rows = []
    if not args.skip_short:
        for b in args.batch_sizes:
            rows += run(systems, wavs, keys, refs, b, args.repeats, args.device)
        add_speedups(rows, args.baseline)
    text = table(rows, args.baseline) if rows else ""
    long_rows = []
    if args.long_minutes > 0:
        unknown = set(args.long_systems or []) - set(names)
        if unknown:
            parser.error(f"--long_systems {sorted(unknown)} are not among the systems {names}")
        long_specs = [s for s in specs if args.long_systems is None or s[0] in args.long_systems]
        long_rows = long_audio(long_specs, keys, wavs, refs, args.long_minutes, rate, args.out, args)
        text += ("\n\n" if text else "") + long_table(long_rows)
    print(text)
    meta = dict(
        command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        torch=torch.__version__, threads=args.threads, device=args.device,
        device_name=(torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                     else platform.processor() or platform.machine()),
        load_average=os.getloadavg(), cpu_count=os.cpu_count(), repeats=args.repeats,
        data_dir=str(args.data_dir), baseline=args.baseline,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows, long_audio=long_rows), indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    written = [args.out, args.out.with_suffix(".md")]
    if args.plots and rows:
        written += plot(rows, args.baseline, args.out)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
