"""Generate audio for the captions of a data dir with MAGNeT (or its AR baseline, rescoring,
Hybrid-MAGNeT); or (``--resynth``) the codec round trip of the real audio, the reference row of
the evaluation.

    python -m audio_gen.bin.generate --model_dir exp/magnet --ar_dir exp/ar --method hybrid \
        --data_dir data/test --out_dir exp/generate/hybrid/test --seconds 10 --batch_size 16
    python -m audio_gen.bin.generate --resynth --acoustic_tokenizer exp/tokenizer_mel_rvq \
        --data_dir data/test --out_dir exp/generate/resynth/test

The data dir needs ``text`` (``<utt> <caption>``; an empty caption is unconditional) and, for
``--resynth``, ``wav.scp``. Writes ``<out_dir>/wav/<utt>.wav``, ``wav.scp`` and ``text``.
Item i uses seed ``--seed + i`` (its index in the sorted caption list), so results do not
depend on the batch size.

Resumable, and a wave is reused only while what it was made from is unchanged: the stamp
``<out_dir>/.stamp.json`` (:class:`nar.base.stamps.ItemStamp`) records the setup (the MAGNeT
and AR directories' ``config.yaml`` and the checkpoint each loads, the codec's files, the
caption vocabulary's file if the config names one; the method, the duration, the decoding
configuration, ``--rescore_weight``, ``--hybrid_seconds``, ``--seed``; for ``--resynth`` the
codec) and, per utterance, its caption and seed (``--resynth``: its audio file and segment). A
rerun whose setup changed says why and generates everything again (the old waves are deleted
first); one whose captions changed regenerates those utterances; utterances no longer listed
lose their waves; an unchanged rerun generates nothing. Each wave is written to a temporary name
and renamed, so a kill never leaves a truncated file, and a killed run resumes with the waves it
wrote. ``--batch_size`` and ``--device`` are not part of the setup. One process at a time writes
an output directory (:class:`nar.base.lock.DirectoryLock`, ``<out_dir>/.nar_lock``); a second
one stops at once with an error that names the first.

Bad input (a data-dir file that is not UTF-8, an option out of range such as ``--seconds inf``)
ends the run with one line ``audio_gen.bin.generate: error: <message>`` naming the file and
line or the option, and exit status 1 (the traceback is logged at DEBUG level).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from dataclasses import asdict

from audio_gen.bin.caption_tokens import read_text
from audio_gen.data import audio_signature, load_item, read_audio_list
from nar.base.checks import check_int
from nar.base.experiment import find_checkpoint, read_config, resolve_path
from nar.base.files import atomic_path, write_text
from nar.base.files import check_utf8
from nar.base.evalcli import run_reporting_input_errors
from nar.base.lock import DirectoryLock
from nar.base.stamps import ItemStamp, directory_signature, file_signature, model_file_signature

PROG = "audio_gen.bin.generate"
logger = logging.getLogger(PROG)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="data dir with text (and wav.scp for --resynth)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--model_dir", help="MAGNeT training directory")
    p.add_argument("--ar_dir", help="AR baseline training directory (methods ar, hybrid, magnet_rescore)")
    p.add_argument("--method", default="magnet", choices=("magnet", "magnet_rescore", "hybrid", "ar"))
    p.add_argument("--resynth", action="store_true", help="write the codec round trip of the real audio instead")
    p.add_argument("--acoustic_tokenizer", help="codec dir (--resynth; overrides the model config's)")
    p.add_argument("--seconds", type=float, default=None, help="duration (default: the model's training length)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_utts", type=int, default=0, help="first N captions (0: all)")
    p.add_argument("--steps", default=None, help="MAGNeT steps per codebook, e.g. 20,10,10,10")
    p.add_argument("--rescore_weight", type=float, default=0.7)
    p.add_argument("--hybrid_seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def _write_wav(path: Path, wav: torch.Tensor, sample_rate: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav.clamp(-1, 1).numpy(), sample_rate, subtype="PCM_16", format="WAV")


def _write_map(path: Path, mapping: dict) -> None:
    write_text(path, "".join(f"{k} {v}\n" for k, v in sorted(mapping.items())))


#: the stamp of an output directory (module docs)
STAMP = ".stamp.json"
#: the listing files written when a run has finished
LISTINGS = ("wav.scp", "text")


def trained_dir_signature(model_dir) -> tuple[dict, dict]:
    """(signature, config) of a training directory as :func:`audio_gen.experiment.load_trained`
    reads it: ``config.yaml`` (hashed) and the checkpoint it loads."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    return {"config.yaml": file_signature(model_dir / "config.yaml"),
            "checkpoint": model_file_signature(find_checkpoint(model_dir))}, config


def _caption_source(config: dict, model_dir: Path) -> dict:
    """The file(s) of the caption vocabulary a config names (an inline token list is in config.yaml)."""
    conf = config.get("model_conf") or {}
    if conf.get("text_encoder", "transformer") == "t5":
        return {"t5": directory_signature(resolve_path(conf["t5_dir"], model_dir))}
    if isinstance(config.get("token_list"), str):
        return {"token_list": file_signature(resolve_path(config["token_list"], model_dir))}
    return {}


def generation_setup(args: argparse.Namespace, t2a, seconds: float) -> dict:
    """What every generated wave depends on (module docs)."""
    magnet, config = trained_dir_signature(args.model_dir)
    setup = {"magnet": {**magnet, **_caption_source(config, Path(args.model_dir))}}
    if args.method != "magnet":  # the AR model is loaded for the other methods only
        ar, ar_config = trained_dir_signature(args.ar_dir)
        setup["ar"] = {**ar, **_caption_source(ar_config, Path(args.ar_dir))}
    codec = args.acoustic_tokenizer or resolve_path(config["acoustic_tokenizer"], Path(args.model_dir))
    setup["codec"] = directory_signature(codec)
    setup["options"] = {"method": args.method, "seconds": seconds, "decoding": asdict(t2a.config),
                        "rescore_weight": args.rescore_weight, "hybrid_seconds": args.hybrid_seconds,
                        "seed": args.seed}
    return setup


def _parse_steps(value: str) -> tuple:
    """``--steps`` as a tuple of positive ints."""
    try:
        steps = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers (one per codebook), got {value!r}") from None
    if any(x < 1 for x in steps):
        raise ValueError(f"--steps must be positive integers, got {value!r}")
    return steps


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_reporting_input_errors(PROG, run, args, logger)


def run(args: argparse.Namespace) -> int:
    """The generation of :func:`main` (errors propagate)."""
    check_int(args.batch_size, "--batch_size", 1)
    check_int(args.max_utts, "--max_utts", 0)
    steps = _parse_steps(args.steps) if args.steps else None
    for name in ("text", "wav.scp", "segments"):
        check_utf8(Path(args.data_dir) / name)  # a file:line error instead of a bare UnicodeDecodeError
    out_dir = Path(args.out_dir)
    rows = read_text(args.data_dir)
    if args.max_utts:
        rows = rows[: args.max_utts]
    with DirectoryLock(out_dir, "generation"):
        return _generate(args, out_dir, rows, steps)


def _generate(args: argparse.Namespace, out_dir: Path, rows: list, steps) -> int:
    """The generation of :func:`run`, holding the output directory's lock."""
    wav_dir = out_dir / "wav"
    seeds = {u: args.seed + i for i, (u, _) in enumerate(rows)}
    if args.resynth:
        from audio_gen.tokenizers import load_tokenizer
        if not args.acoustic_tokenizer:
            raise SystemExit("--resynth needs --acoustic_tokenizer")
        setup = {"codec": directory_signature(args.acoustic_tokenizer), "options": {"resynth": True}}
        codec = load_tokenizer(args.acoustic_tokenizer).to(args.device).eval()
        items = {it.key: it for it in read_audio_list(args.data_dir)}
        inputs = {u: audio_signature(items[u]) if u in items else None for u, _ in rows}
        sample_rate = codec.sample_rate
    else:
        from audio_gen.inference import TextToAudio
        from audio_gen.models.magnet import magnet_config
        if not args.model_dir:
            raise SystemExit("--model_dir (MAGNeT) is required unless --resynth")
        t2a = TextToAudio(args.model_dir, ar_dir=args.ar_dir, device=args.device,
                          acoustic_tokenizer=args.acoustic_tokenizer)
        if steps is not None:
            try:
                t2a.config = magnet_config(t2a.model.codebook_size, t2a.model.num_codebooks, steps=steps)
            except ValueError as e:
                raise ValueError(f"--steps {args.steps}: {e}") from None
        seconds = t2a.max_seconds if args.seconds is None else args.seconds
        setup = generation_setup(args, t2a, seconds)
        inputs = {u: {"caption": c, "seed": seeds[u]} for u, c in rows}
        sample_rate = t2a.sample_rate

    stamp = ItemStamp(out_dir / STAMP)
    present = sorted(p.name[:-4] for p in wav_dir.glob("*.wav") if not p.name.startswith(".")) if wav_dir.is_dir() else []
    listings = {name: out_dir / name for name in LISTINGS}
    plan = stamp.plan(setup, inputs, present, outputs=listings)
    done = set(present)
    if plan.complete and all(u in done for u, _ in rows):
        logger.info(f"{out_dir}: inputs unchanged since {plan.written}, skipped ({len(rows)} utterances)")
        print(f"{out_dir}: 0 generated (all {len(rows)} up to date)")
        return 0
    plan.log(logger, str(out_dir), "the model or the options", total=len(rows))
    for path in listings.values():  # until the run has finished they would list missing or old waves
        path.unlink(missing_ok=True)
    for u in plan.stale(present):
        (wav_dir / f"{u}.wav").unlink(missing_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    # recorded before any wave is written: every wave present from now on was made from these inputs
    stamp.write(setup, inputs, complete=False, tool=PROG)
    todo = [(u, c) for u, c in rows if not (wav_dir / f"{u}.wav").is_file()]
    logger.info(f"{len(rows) - len(todo)} of {len(rows)} already done in {wav_dir}")
    t0, audio_s = time.time(), 0.0
    if args.resynth:
        missing = [u for u, _ in todo if u not in items]
        if missing:
            raise SystemExit(f"{args.data_dir}/wav.scp lacks {len(missing)} captioned utterances, e.g. {missing[0]}")
        for u, _ in tqdm(todo, desc="resynth", file=sys.stderr):
            wav = load_item(items[u], codec.sample_rate)[None]
            with torch.no_grad():
                codes, lens = codec.encode(wav.to(args.device), names=[u])
                out, out_lens = codec.decode(codes, lens)
            _write_wav(wav_dir / f"{u}.wav", out[0, : int(out_lens[0])].cpu(), codec.sample_rate)
            audio_s += int(out_lens[0]) / codec.sample_rate
    else:
        for start in tqdm(range(0, len(todo), args.batch_size), desc=f"{args.method} batches", file=sys.stderr):
            chunk = todo[start: start + args.batch_size]
            wavs = t2a.batch([c for _, c in chunk], seconds, args.method, seeds=[seeds[u] for u, _ in chunk],
                             batch_size=args.batch_size, rescore_weight=args.rescore_weight,
                             hybrid_seconds=args.hybrid_seconds)
            for (u, _), wav in zip(chunk, wavs):
                _write_wav(wav_dir / f"{u}.wav", wav, t2a.sample_rate)
                audio_s += len(wav) / t2a.sample_rate
    elapsed = time.time() - t0
    _write_map(out_dir / "wav.scp", {u: str((wav_dir / f"{u}.wav").resolve()) for u, _ in rows})
    _write_map(out_dir / "text", dict(rows))
    if todo:
        (out_dir / "timing.json").write_text(json.dumps(dict(
            method="resynth" if args.resynth else args.method, items=len(todo), seconds=round(elapsed, 2),
            audio_seconds=round(audio_s, 2), rtf=round(elapsed / max(audio_s, 1e-9), 4),
            batch_size=args.batch_size, sample_rate=sample_rate), indent=1))
    stamp.write(setup, inputs, complete=True, outputs=listings, tool=PROG)
    print(f"{out_dir}: {len(todo)} generated in {elapsed:.0f} s ({audio_s:.0f} s of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
