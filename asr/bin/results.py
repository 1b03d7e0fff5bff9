"""Collect the scores of a recipe's experiments into RESULTS.md (table + exact commands).

Usage:
    python -m asr.bin.results --exp_dir exp --output RESULTS.md --command "./run.sh ..."

Scans ``<exp_dir>/<exps>/decode_*/<set>/score/scores.json``; one row per experiment and
decode config, WER/CER per evaluation set, plus RTF and the training time from train.log.
RESULTS.md holds one section per ``--title``: a rerun replaces its own section and keeps the
others (so the demo and the larger configuration live side by side).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from pathlib import Path

import torch


def _train_info(exp: Path) -> str:
    """Epochs and wall time of training, read from ESPnet's log lines in train.log."""
    log = exp / "train.log"
    if not log.exists():
        return ""
    stamp = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
    text = log.read_text(errors="replace")
    started = re.findall(stamp + r",\d+ \(trainer:\d+\) INFO: \d+/\d+epoch started", text)
    results = re.findall(stamp + r",\d+ \(trainer:\d+\) INFO: (\d+)epoch results", text)
    if not results:
        return ""
    parts = [f"{results[-1][1]} epochs"]
    if started:
        fmt = "%Y-%m-%d %H:%M:%S"
        span = datetime.datetime.strptime(results[-1][0], fmt) - datetime.datetime.strptime(started[0], fmt)
        parts.append(f"{span.total_seconds() / 60:.1f} min from the first epoch to the last")
    return ", ".join(parts)


def _params(exp: Path) -> str:
    for ckpt in ("valid.loss.ave.pth", "latest.pth"):
        if (exp / ckpt).exists():
            state = torch.load(exp / ckpt, map_location="cpu")
            if isinstance(state, dict) and "model" in state:
                state = state["model"]
            return f"{sum(v.numel() for v in state.values() if hasattr(v, 'numel')) / 1e6:.2f} M"
    return "?"


def collect(exp_dir: Path, pattern: str = "asr_*") -> list[dict]:
    rows = []
    for exp in sorted(exp_dir.glob(pattern)):
        for dec in sorted(exp.glob("decode_*")):
            sets = {}
            for scores in sorted(dec.glob("*/scoring/scores.json")):
                dset = scores.parent.parent.name
                s = json.loads(scores.read_text())
                rtf = dec / dset / "rtf.json"
                s["rtf"] = json.loads(rtf.read_text())["rtf"] if rtf.exists() else None
                sets[dset] = s
            if sets:
                rows.append({"exp": exp.name, "decode": dec.name, "sets": sets,
                             "train": _train_info(exp), "params": _params(exp)})
    return rows


def render(rows: list[dict], title: str, command: str) -> str:
    sets = sorted({d for r in rows for d in r["sets"]}, key=lambda d: (d != "dev", d))
    rtf_set = "test" if "test" in sets else sets[-1]
    head = "| experiment | decode | params | " + " | ".join(f"{d} WER / CER" for d in sets) + f" | RTF ({rtf_set}) |"
    sep = "|" + "---|" * (4 + len(sets))
    lines = [head, sep]
    for r in rows:
        cells = []
        for d in sets:
            s = r["sets"].get(d)
            cells.append(f"{s['wer']:.1f} / {s['cer']:.1f}" if s else "–")
        rtf = r["sets"].get(rtf_set, {}).get("rtf")
        lines.append(f"| {r['exp']} | {r['decode']} | {r['params']} | " + " | ".join(cells) + f" | {rtf if rtf is not None else '–'} |")
    info = "; ".join(sorted({f"{r['exp']}: {r['train']}" for r in rows if r["train"]})) or "–"
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"## {title}\n\n"
        f"Written by `python -m asr.bin.results` on {now}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}.\n\n"
        f"WER and CER in %, after the normalisation of `asr.scoring`. RTF: decoding time / audio "
        f"duration on that machine.\n\nCommand:\n\n```sh\n{command}\n```\n\n"
        + "\n".join(lines)
        + f"\n\nTraining: {info}\n"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", default="exp")
    p.add_argument("--output", default="RESULTS.md")
    p.add_argument("--exps", default="asr_*", help="glob of experiment dirs under --exp_dir")
    p.add_argument("--title", default="")
    p.add_argument("--command", default="")
    args = p.parse_args(argv)
    rows = collect(Path(args.exp_dir), args.exps)
    if not rows:
        raise SystemExit(f"no scores found under {args.exp_dir}/asr_*/decode_*/*/scoring/scores.json")
    title = args.title or Path.cwd().name
    section = f"<!-- section: {title} -->\n" + render(rows, title, args.command) + "<!-- end section -->\n"
    out = Path(args.output)
    old = out.read_text() if out.exists() else "# RESULTS\n\n"
    pattern = re.compile(rf"<!-- section: {re.escape(title)} -->\n.*?<!-- end section -->\n", re.S)
    new = pattern.sub(lambda _: section, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + section
    out.write_text(new)


if __name__ == "__main__":
    main()
