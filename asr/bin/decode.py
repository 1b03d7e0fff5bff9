"""Decode a Kaldi-style data dir with a trained model; writes Kaldi-style result files.

Usage:
    python -m asr.bin.decode --model_dir exp/asr_train_ctc_char --data_dir dump/raw/test \
        --output_dir exp/asr_train_ctc_char/decode_greedy/test --config conf/decode_greedy.yaml
    python -m asr.bin.decode --model_dir exp/asr_train_ctc_char --data_dir dump/raw/dev dump/raw/test \
        --output_dir exp/x/decode_greedy/dev exp/x/decode_greedy/test --config conf/decode_greedy.yaml
        # several sets, one process (the model is loaded once)
    python -m asr.bin.decode --model_dir exp/x --data_dir dump/raw/test dump/raw/test \
        --output_dir exp/x/decode_greedy/test exp/x/decode_beam/test \
        --config conf/decode_greedy.yaml conf/decode_beam.yaml    # a config per data dir

Outputs in each --output_dir: ``text`` (hypotheses), ``token``, ``score``, ``timestamps``
(``utt start-end start-end ...`` in seconds, one pair per token) and ``rtf.json``.
Utterances are sorted by length and packed into batches of at most --batch_size utterances and
``batch_seconds`` padded seconds; recordings longer than ``max_seconds`` are decoded in
overlapping windows (``asr.Speech2Text``). The output keeps the data dir's order.
An utterance too short for one encoder frame is not decoded: its hypothesis is empty (scored as
deletions), and stderr and ``rtf.json`` (``skipped_too_short``) list it. Each --output_dir is
locked while it is written (``nar.base.lock``): a second decode into it stops, naming the first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from asr.audio import as_waveform
from asr.decoding import DecodeConfig
from nar.base.files import write_text
from nar.base.kaldi import read_kaldi_map
from nar.base.lock import DirectoryLock
from asr.longform import DEFAULT_BATCH_SECONDS
from asr.speaker_warp import check_warps

#: keys a decode config may set, and their defaults: every option of asr.decoding.DecodeConfig
#: (its docstring says which family reads which), and the front end's options
DECODE_DEFAULTS = {
    **asdict(DecodeConfig()),
    "timestamps": True,
    "speaker_warps": None,  # test-time VTLN: per speaker (utt2spk) the formant-warp factor of this list
    # whose decoding scores best (asr.speaker_warp; e.g. [0.85, 0.9, ..., 1.25]); chosen factors in spk2warp
    "batch_seconds": DEFAULT_BATCH_SECONDS,  # padded seconds per batch (duration batching)
    "max_seconds": "auto",  # longer inputs are cut into overlapping windows and stitched
    # ("auto": the longest training utterance; null: never cut; see asr.longform.resolve_window)
    "overlap_seconds": "auto",  # overlap of those windows ("auto": a quarter, at most 4 s)
}


def load_decode_config(path: str | None) -> dict:
    config = dict(DECODE_DEFAULTS)
    if path:
        with open(path, encoding="utf-8") as f:
            given = yaml.safe_load(f) or {}
        unknown = sorted(set(given) - set(DECODE_DEFAULTS))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(DECODE_DEFAULTS)}")
        config.update(given)
    return config


def apply_ngram_file(config: dict, ngram_file: str | None, name: str, word_ngram_file: str | None = None) -> dict:
    """Give ``ngram_file`` (``word_ngram_file`` if the config says ``ngram_unit: word``) to a
    decode config that sets ``ngram_weight`` but names no LM (the recipe's ``--use_ngram``); a
    config that sets a weight and still has no LM is an error."""
    word = config.get("ngram_unit") == "word"
    given, option = (word_ngram_file, "--word_ngram_file") if word else (ngram_file, "--ngram_file")
    if given and config["ngram_weight"] is not None and config["ngram_file"] is None:
        config["ngram_file"] = given
    if config["ngram_weight"] is not None and config["ngram_file"] is None:
        raise ValueError(f"{name} sets ngram_weight but no ngram_file is given (in the config or by {option})")
    return config


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default=None, help="the model (required unless --merge)")
    p.add_argument("--model_file", default=None, help="checkpoint (default: see asr.inference)")
    p.add_argument("--data_dir", required=True, nargs="+", help="one or more dirs with wav.scp")
    p.add_argument("--output_dir", required=True, nargs="+", help="one output dir per data dir")
    p.add_argument("--config", default=None, nargs="+",
                   help="decode YAML, one for every data dir or one per data dir; keys: " + ", ".join(DECODE_DEFAULTS))
    p.add_argument("--ngram_file", default=None,
                   help="ARPA n-gram LM for every decode config that sets ngram_weight (the recipe's --use_ngram)")
    p.add_argument("--word_ngram_file", default=None,
                   help="ARPA word LM for decode configs with ngram_unit: word that set ngram_weight")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=2)
    p.add_argument("--split", default=None, metavar="J/N",
                   help="decode only the J-th of N parts of each data dir (speakers kept whole; a job of a "
                        "job-split decode: recipes/asr.sh --inference_nj N)")
    p.add_argument("--merge", type=int, default=None, metavar="N",
                   help="no decoding: gather the N parts --output_dir/split<N>/<J> of each output dir into it")
    return p


def parse_split(value: str) -> tuple[int, int]:
    """``"J/N"`` -> (J, N) with 1 <= J <= N."""
    try:
        j, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise ValueError(f"--split must be J/N (e.g. 2/4), got {value!r}") from None
    if not 1 <= j <= n:
        raise ValueError(f"--split {value}: need 1 <= J <= N")
    return j, n


def split_keys(keys: list[str], utt2spk: dict[str, str] | None, parts: int) -> list[list[str]]:
    """``keys`` (data-dir order) in ``parts`` contiguous parts of near-equal size; with ``utt2spk``,
    a speaker's utterances stay in one part (per-speaker choices such as test-time VTLN see them
    all), as Kaldi's ``split_data.sh``. Parts may be empty when there are fewer speakers than parts."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(utt2spk.get(k, k) if utt2spk else k, []).append(k)
    out: list[list[str]] = [[] for _ in range(parts)]
    done, part = 0, 0
    for members in groups.values():
        # move on once this part holds its share of the keys (boundaries at i * len / parts)
        while part < parts - 1 and done >= round((part + 1) * len(keys) / parts):
            part += 1
        out[part].extend(members)
        done += len(members)
    return out


def main(argv=None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    if len(args.data_dir) != len(args.output_dir):
        parser.error(f"{len(args.data_dir)} --data_dir but {len(args.output_dir)} --output_dir")
    if args.merge is not None:
        if args.merge < 1:
            parser.error("--merge N needs N >= 1")
        for data_dir, output_dir in zip(args.data_dir, args.output_dir):
            merge_splits(Path(data_dir), Path(output_dir), args.merge)
        return
    if args.model_dir is None:
        parser.error("--model_dir is required (unless --merge)")
    try:
        args.split = parse_split(args.split) if args.split else None
    except ValueError as err:
        parser.error(str(err))
    configs = args.config or [None]
    if len(configs) == 1:
        configs = configs * len(args.data_dir)
    if len(configs) != len(args.data_dir):
        parser.error(f"{len(args.data_dir)} --data_dir but {len(configs)} --config (give one, or one per data dir)")
    decode_configs = {path: load_decode_config(path) for path in configs}  # every config checked first
    for path, config in decode_configs.items():
        try:
            apply_ngram_file(config, args.ngram_file, path, args.word_ngram_file)
            if config["speaker_warps"] is not None:
                config["speaker_warps"] = list(check_warps(config["speaker_warps"]))
        except ValueError as err:
            parser.error(f"{path}: {err}" if path and path not in str(err) else str(err))
    from asr.inference import Speech2Text

    torch.set_num_threads(args.num_threads)
    jobs = zip(configs, args.data_dir, args.output_dir)
    for path, group in itertools.groupby(jobs, key=lambda job: job[0]):  # consecutive sets share a model
        config = decode_configs[path]
        s2t = Speech2Text(args.model_dir, model_file=args.model_file, device=args.device,
                          batch_size=args.batch_size, progress=True,
                          **{k: v for k, v in config.items() if k != "speaker_warps"})
        print(s2t.window_summary(), file=sys.stderr)
        for _, data_dir, output_dir in group:
            with DirectoryLock(output_dir, f"decoding {data_dir}"):  # one writer per output dir
                decode_set(s2t, Path(data_dir), Path(output_dir), config, args)


def decode_set(s2t, data_dir: Path, out: Path, config: dict, args: argparse.Namespace) -> None:
    """Decode ``data_dir/wav.scp`` with ``s2t``; write the result files and rtf.json into ``out``."""
    s2t.progress_desc = f"decode {data_dir}"
    wav_scp = data_dir / "wav.scp"
    utts = read_kaldi_map(str(wav_scp))
    keys = list(utts)
    if args.split is not None:
        j, n = args.split
        utt2spk_file = data_dir / "utt2spk"
        utt2spk = read_kaldi_map(str(utt2spk_file)) if utt2spk_file.is_file() else None
        keys = split_keys(keys, utt2spk, n)[j - 1]
        print(f"{data_dir}: part {j} of {n}: {len(keys)} utterances", file=sys.stderr)
    wavs = {k: as_waveform(utts[k], s2t.sample_rate, name=f"{wav_scp}:{k}") for k in keys}
    from asr.inference import Hypothesis

    skipped = [k for k in keys if s2t.too_short(wavs[k])]
    if skipped:
        # one unusable utterance must not cost the set: it gets an empty hypothesis (scored as
        # deletions), and the log and rtf.json say which and why
        print(f"{wav_scp}: skipped {len(skipped)} of {len(keys)} utterances shorter than the "
              f"{s2t.min_samples} samples ({1000 * s2t.min_samples / s2t.sample_rate:.0f} ms) the model needs for "
              f"one encoder frame; their hypotheses are empty: {' '.join(skipped[:20])}"
              f"{' ...' if len(skipped) > 20 else ''}", file=sys.stderr)
    too_short = set(skipped)
    decoded = [k for k in keys if k not in too_short]
    start = time.perf_counter()
    results = {k: Hypothesis(text="", tokens=(), token_ids=(), score=float("-inf"), timestamps=()) for k in skipped}
    if decoded and config.get("speaker_warps"):
        results.update(decode_speaker_warped(s2t, data_dir, out, decoded, wavs, config["speaker_warps"]))
    elif decoded:
        hyps = s2t.recognize_nbest([wavs[k] for k in decoded])
        results.update({k: h[0] for k, h in zip(decoded, hyps)})
    elapsed = time.perf_counter() - start
    audio_seconds = sum(w.numel() for w in wavs.values()) / s2t.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    with (out / "text").open("w") as ft, (out / "token").open("w") as fk, (
        out / "score"
    ).open("w") as fs, (out / "timestamps").open("w") as fts:
        for k in keys:
            h = results[k]
            ft.write(f"{k} {h.text}\n")
            fk.write(f"{k} {' '.join(h.tokens)}\n")
            fs.write(f"{k} {h.score:.4f}\n")
            fts.write(f"{k} {' '.join(f'{s:.3f}-{e:.3f}' for s, e in h.timestamps)}\n")
    rtf = {
        "utterances": len(keys),
        "skipped_too_short": skipped,
        "audio_seconds": round(audio_seconds, 3),
        "decode_seconds": round(elapsed, 3),
        "rtf": round(elapsed / max(audio_seconds, 1e-9), 5),
        "device": args.device,
        "batch_size": args.batch_size,
        "num_threads": args.num_threads,
        "model_file": str(s2t.model_file),
        "config": config,
    }
    (out / "rtf.json").write_text(json.dumps(rtf, indent=2))
    print(f"{data_dir}: decoded {len(decoded)} utterances ({audio_seconds:.1f} s of audio) in {elapsed:.1f} s, "
          f"RTF {rtf['rtf']:.4f}" + (f"; {len(skipped)} skipped (too short)" if skipped else ""))


RESULT_FILES = ("text", "token", "score", "timestamps")


def merge_splits(data_dir: Path, out: Path, parts: int) -> None:
    """Gather ``out/split<parts>/<j>`` (j = 1..parts, from ``--split j/parts`` jobs) into ``out``:
    the result files in the data dir's order (every utterance exactly once, else an error naming
    the part), ``rtf.json`` summed over the jobs, and ``spk2warp``/``speaker_warps.json`` of
    test-time VTLN."""
    keys = list(read_kaldi_map(str(data_dir / "wav.scp")))
    split_dirs = [out / f"split{parts}" / str(j) for j in range(1, parts + 1)]
    results: dict[str, dict[str, str]] = {name: {} for name in RESULT_FILES}
    for d in split_dirs:
        for name in RESULT_FILES:
            path = d / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing: part {d.name} of {parts} has not been decoded (rerun it)")
            for key, value in read_kaldi_map(str(path), allow_empty_value=True).items():
                if key in results[name]:
                    raise ValueError(f"{path}: {key} is in two parts")
                results[name][key] = value
    missing = [k for k in keys if k not in results["text"]]
    if missing:
        raise ValueError(f"{out}/split{parts}: no hypothesis for {len(missing)} utterances of {data_dir}, e.g. {missing[:3]}")
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        write_text(out / name, "".join(f"{k} {results[name][k]}\n" for k in keys))  # as decode_set writes
    rtfs = [json.loads((d / "rtf.json").read_text()) for d in split_dirs]
    merged = dict(rtfs[0])
    for field in ("utterances", "audio_seconds", "decode_seconds"):
        merged[field] = round(sum(r[field] for r in rtfs), 3)
    merged["rtf"] = round(merged["decode_seconds"] / max(merged["audio_seconds"], 1e-9), 5)
    merged["skipped_too_short"] = [k for r in rtfs for k in r.get("skipped_too_short", [])]
    merged["jobs"] = parts
    merged["slowest_job_seconds"] = max(r["decode_seconds"] for r in rtfs)
    write_text(out / "rtf.json", json.dumps(merged, indent=2))
    warps = [d / "spk2warp" for d in split_dirs if (d / "spk2warp").is_file()]
    if warps:
        write_text(out / "spk2warp", "".join(sorted(line for w in warps for line in w.read_text().splitlines(True))))
        chosen = [json.loads((d / "speaker_warps.json").read_text()) for d in split_dirs
                  if (d / "speaker_warps.json").is_file()]
        write_text(out / "speaker_warps.json", json.dumps(
            dict(factors=chosen[0]["factors"], speakers={k: v for c in chosen for k, v in c["speakers"].items()}),
            indent=2) + "\n")
    print(f"{out}: merged {parts} parts ({len(keys)} utterances)", file=sys.stderr)


def decode_speaker_warped(s2t, data_dir: Path, out: Path, keys: list, wavs: dict, factors: list) -> dict:
    """Test-time VTLN (:mod:`asr.speaker_warp`): per speaker of ``utt2spk`` the warp factor whose
    decoding scores best; its hypotheses are the result. Writes ``spk2warp`` and
    ``speaker_warps.json`` (the criterion of every factor) into ``out``. Without ``utt2spk``
    every utterance is its own speaker (said on stderr)."""
    from tqdm import tqdm

    from asr.speaker_warp import choose_warps

    utt2spk_file = data_dir / "utt2spk"
    if utt2spk_file.is_file():
        utt2spk = read_kaldi_map(str(utt2spk_file))
        missing = [k for k in keys if k not in utt2spk]
        if missing:
            raise ValueError(f"{utt2spk_file}: no speaker for utterances {missing[:5]} of {data_dir / 'wav.scp'}")
    else:
        print(f"{data_dir}: no utt2spk; speaker_warps chooses a factor per utterance", file=sys.stderr)
        utt2spk = {k: k for k in keys}
    bar = tqdm(total=len(factors), desc=f"speaker warps {data_dir}", unit="factor")
    try:  # one decoding pass per factor over the whole set (batched across speakers)
        choices = choose_warps(s2t.recognize_nbest, [wavs[k] for k in keys], [utt2spk[k] for k in keys],
                               s2t.sample_rate, factors, progress=lambda alpha: bar.update(1))
    finally:
        bar.close()
    results, chosen = {}, {}
    for spk, choice in choices.items():
        results.update({keys[i]: h[0] for i, h in zip(choice.indices, choice.hyps)})
        chosen[spk] = dict(alpha=choice.alpha, utterances=len(choice.indices),
                           criterion={str(a): round(v, 5) for a, v in choice.criterion.items()})
    out.mkdir(parents=True, exist_ok=True)
    (out / "spk2warp").write_text("".join(f"{spk} {c['alpha']:g}\n" for spk, c in sorted(chosen.items())))
    (out / "speaker_warps.json").write_text(json.dumps(dict(factors=factors, speakers=chosen), indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
