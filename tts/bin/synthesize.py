"""Zero-shot synthesis of a data set's sentences, each in the voice of another utterance of
the same speaker (the prompt), with MaskGCT; or (``--resynth``) the codec resynthesis of the
ground truth, the reference row of the evaluation.

    python -m tts.bin.synthesize --t2s_dir exp/t2s --s2a_dir exp/s2a --data_dir dump/raw/test \
        --out_dir exp/synth/test --batch_size 16 [--duration model --duration_model exp/duration/duration.json]
    python -m tts.bin.synthesize --resynth --acoustic_tokenizer ../codec1/exp/tokenizer_mel_rvq \
        --data_dir dump/raw/test --out_dir exp/resynth/test

The data dir needs ``wav.scp``, ``text`` and ``utt2spk``. The prompt of utterance u is the next
utterance of u's speaker in sorted order (:func:`tts.duration.same_speaker_pairs`); speakers
with a single utterance are skipped (logged). Writes ``<out_dir>/wav/<utt>.wav``, ``wav.scp``,
``text`` (the target sentences), ``prompt.scp`` (prompt wav paths) and ``prompt_text``.

Resumable, and a wave is reused only while what it was made from is unchanged: the stamp
``<out_dir>/.stamp.json`` (:class:`nar.base.stamps.ItemStamp`) records the setup (the T2S and
S2A directories' ``config.yaml`` and the checkpoint each loads; the semantic tokenizer's files
and its feature source's; the acoustic tokenizer's files; the duration model file; the duration
rule, both decoding configurations, the oracle options and ``--seed``; for ``--resynth`` the
acoustic tokenizer) and, per utterance, the sentence, the prompt's id, transcript and audio
file (path, size, mtime, segment), the seed, and with an oracle option the reference audio
(``--resynth``: the utterance's audio). A rerun whose setup changed says why and synthesises
everything again (the old waves are deleted first); one whose sentences or prompts changed
redoes those utterances; utterances no longer listed lose their waves; an unchanged rerun
synthesises nothing. ``--batch_size`` and ``--device`` are not part of the setup. One process
at a time writes an output directory (:class:`nar.base.lock.DirectoryLock`,
``<out_dir>/.nar_lock``); a second one stops at once with an error that names the first.

Bad input (a data-dir file that is not UTF-8, an option out of range, an unusable sentence or
prompt) ends the run with one line ``tts.bin.synthesize: error: <message>`` naming the file and
line, option or utterance, and exit status 1 (the traceback is logged at DEBUG level).
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

from audio_gen.bin.generate import trained_dir_signature
from audio_gen.data import AudioListError, audio_signature, load_item, read_audio_list
from nar.base.checks import check_int
from nar.base.experiment import resolve_path
from nar.base.kaldi import read_kaldi_map, write_kaldi_map
from nar.base.files import atomic_path
from nar.base.evalcli import run_reporting_input_errors
from nar.base.lock import DirectoryLock
from nar.base.stamps import ItemStamp, directory_signature, file_signature
from tts.bin.semantic_tokens import semantic_tokenizer_signature
from tts.duration import same_speaker_pairs
from tts.text import check_utf8_file

PROG = "tts.bin.synthesize"
logger = logging.getLogger(PROG)

#: the stamp of an output directory (module docs)
STAMP = ".stamp.json"
#: the listing files written when a run has finished
LISTINGS = ("wav.scp", "text", "prompt.scp", "prompt_text")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """The MaskGCT decoding options (None: the API's default), read by :func:`decoding_configs`."""
    p.add_argument("--t2s_steps", type=int, default=None, help="T2S mask-predict steps (default 25)")
    p.add_argument("--t2s_temperature", type=float, default=None, help="T2S sampling temperature (default 0.9)")
    p.add_argument("--t2s_cfg_scale", type=float, default=None, help="T2S guidance scale (default 2.5; 0: off)")
    p.add_argument("--s2a_steps", default=None,
                   help="S2A steps per codebook, comma-separated, one per codebook (default 25,10,1,...)")
    p.add_argument("--s2a_temperature", type=float, default=None, help="S2A sampling temperature (default 1.5)")
    p.add_argument("--s2a_cfg_scale", type=float, default=None, help="S2A guidance scale (default 2.5; 0: off)")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="data dir with wav.scp, text, utt2spk")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--t2s_dir", help="MaskGCT T2S training directory")
    p.add_argument("--s2a_dir", help="MaskGCT S2A training directory")
    p.add_argument("--duration", default="rule", choices=("rule", "model"))
    p.add_argument("--duration_model", help="duration.json of tts.bin.fit_duration (--duration model)")
    p.add_argument("--resynth", action="store_true", help="write the codec resynthesis of the ground truth instead")
    p.add_argument("--acoustic_tokenizer", help="acoustic tokenizer dir (--resynth; overrides the S2A config's)")
    p.add_argument("--semantic_tokenizer", help="semantic tokenizer dir (overrides the T2S config's)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_utts", type=int, default=0, help="first N utterances with a prompt (0: all)")
    add_decoding_args(p)
    p.add_argument("--oracle_semantic", action="store_true",
                   help="diagnostic: skip T2S, use the semantic tokens of the reference recording of each sentence")
    p.add_argument("--oracle_duration", action="store_true",
                   help="diagnostic: the target length is the reference recording's (not --duration's estimate)")
    p.add_argument("--seed", type=int, default=0, help="item i uses seed + its index")
    p.add_argument("--device", default="cpu")
    return p


def write_wav(path: Path, wav: torch.Tensor, sample_rate: int) -> None:
    """Write a mono waveform clipped to [-1, 1], atomically (a killed run leaves no partial file)."""
    with atomic_path(path) as tmp:
        sf.write(tmp, wav.clamp(-1, 1).numpy(), sample_rate, format="WAV")


def plan(data_dir: Path, max_utts: int) -> list[tuple[str, str]]:
    """(target utt, prompt utt) pairs of the data dir."""
    for name in ("wav.scp", "text", "utt2spk"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir}: {name} is missing (synthesis needs wav.scp, text and utt2spk)")
    for name in ("wav.scp", "text", "utt2spk", "segments"):
        check_utf8_file(data_dir / name)  # a file:line error instead of a bare UnicodeDecodeError later
    utt2spk = read_kaldi_map(data_dir / "utt2spk")
    pairs = same_speaker_pairs(sorted(utt2spk), utt2spk)
    skipped = len(utt2spk) - len(pairs)
    if skipped:
        logger.info(f"{data_dir}: {skipped} utterances have no other utterance of their speaker; skipped")
    if not pairs:
        raise ValueError(f"{data_dir}: no speaker has two utterances, so there is no prompt for any sentence")
    return pairs[:max_utts] if max_utts > 0 else pairs


def decoding_configs(args: argparse.Namespace, t2s, s2a) -> tuple:
    """The T2S and S2A :class:`~nar.mask_predict.MaskPredictConfig` with the command line's
    overrides (options left at None keep the API's defaults)."""
    from dataclasses import replace

    from audio_gen.inference import MAX_CFG_SCALE, MAX_STEPS, MAX_TEMPERATURE
    from nar.base.checks import check_range

    for opt, high, note in (("t2s_temperature", MAX_TEMPERATURE, " (0: argmax)"),
                            ("s2a_temperature", MAX_TEMPERATURE, " (0: argmax)"),
                            ("t2s_cfg_scale", MAX_CFG_SCALE, " (0: off)"),
                            ("s2a_cfg_scale", MAX_CFG_SCALE, " (0: off)")):
        if getattr(args, opt) is not None:
            try:
                check_range(getattr(args, opt), f"--{opt}", 0.0, high, note=note)
            except ValueError as e:
                raise SystemExit(str(e)) from None
    if args.t2s_steps is not None and not 1 <= args.t2s_steps <= MAX_STEPS:
        raise SystemExit(f"--t2s_steps must be in [1, {MAX_STEPS}], got {args.t2s_steps}")
    t2s_over = dict(steps=args.t2s_steps, temperature=args.t2s_temperature, cfg_scale=args.t2s_cfg_scale)
    s2a_over = dict(temperature=args.s2a_temperature, cfg_scale=args.s2a_cfg_scale)
    if args.s2a_steps:
        try:
            steps = tuple(int(x) for x in args.s2a_steps.split(","))
        except ValueError:
            raise SystemExit(f"--s2a_steps must be comma-separated integers, got {args.s2a_steps!r}")
        n = len(s2a.steps) if isinstance(s2a.steps, tuple) else None
        if n is not None and len(steps) != n:
            raise SystemExit(f"--s2a_steps needs one value per codebook ({n}), got {len(steps)}")
        if any(not 1 <= x <= MAX_STEPS for x in steps):
            raise SystemExit(f"--s2a_steps must be integers in [1, {MAX_STEPS}], got {args.s2a_steps!r}")
        s2a_over["steps"] = steps
    t2s = replace(t2s, **{k: v for k, v in t2s_over.items() if v is not None})
    s2a = replace(s2a, **{k: v for k, v in s2a_over.items() if v is not None})
    return t2s, s2a


def synthesis_setup(args: argparse.Namespace, tts) -> dict:
    """What every synthesised wave depends on (module docs)."""
    t2s, t2s_cfg = trained_dir_signature(args.t2s_dir)
    s2a, s2a_cfg = trained_dir_signature(args.s2a_dir)
    sem_dir = args.semantic_tokenizer or resolve_path(t2s_cfg["semantic_tokenizer"], Path(args.t2s_dir))
    ac_dir = args.acoustic_tokenizer or resolve_path(s2a_cfg["acoustic_tokenizer"], Path(args.s2a_dir))
    setup = {"t2s": t2s, "s2a": s2a, "semantic_tokenizer": semantic_tokenizer_signature(sem_dir),
             "acoustic_tokenizer": directory_signature(ac_dir)}
    if args.duration == "model":
        setup["duration_model"] = file_signature(args.duration_model)
    setup["options"] = {"duration": args.duration, "t2s_decoding": asdict(tts.t2s_config),
                        "s2a_decoding": asdict(tts.s2a_config), "oracle_semantic": args.oracle_semantic,
                        "oracle_duration": args.oracle_duration, "seed": args.seed}
    return setup


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_reporting_input_errors(PROG, run, args, logger)


def run(args: argparse.Namespace) -> int:
    """The synthesis of :func:`main` (errors propagate)."""
    check_int(args.batch_size, "--batch_size", 1)
    check_int(args.max_utts, "--max_utts", 0)
    data_dir, out_dir = Path(args.data_dir), Path(args.out_dir)
    pairs = plan(data_dir, args.max_utts)
    texts = read_kaldi_map(data_dir / "text")
    items = {it.key: it for it in read_audio_list(data_dir)}
    for utt, prompt in pairs:
        for key in (utt, prompt):
            if key not in items or key not in texts:
                raise AudioListError(f"{data_dir}: utterance {key} is missing from wav.scp or text")
    with DirectoryLock(out_dir, "synthesis"):
        return _synthesize(args, data_dir, out_dir, pairs, texts, items)


def _synthesize(args: argparse.Namespace, data_dir: Path, out_dir: Path, pairs: list, texts: dict, items: dict) -> int:
    """The synthesis of :func:`run`, holding the output directory's lock."""
    index = {utt: i for i, (utt, _) in enumerate(pairs)}
    if args.resynth:
        from audio_gen.tokenizers import load_tokenizer

        if not args.acoustic_tokenizer:
            raise SystemExit("--resynth needs --acoustic_tokenizer")
        setup = {"acoustic_tokenizer": directory_signature(args.acoustic_tokenizer), "options": {"resynth": True}}
        tok = load_tokenizer(args.acoustic_tokenizer)
        sample_rate = int(tok.sample_rate)
        inputs = {u: audio_signature(items[u]) for u, _ in pairs}
    else:
        if not args.t2s_dir or not args.s2a_dir:
            raise SystemExit("give --t2s_dir and --s2a_dir (or --resynth)")
        from tts.inference import Text2Speech

        tts = Text2Speech(args.t2s_dir, args.s2a_dir, duration=args.duration, duration_model=args.duration_model,
                          device=args.device, semantic_tokenizer=args.semantic_tokenizer,
                          acoustic_tokenizer=args.acoustic_tokenizer)
        tts.t2s_config, tts.s2a_config = decoding_configs(args, tts.t2s_config, tts.s2a_config)
        sample_rate = tts.sample_rate
        setup = synthesis_setup(args, tts)
        inputs = {}
        for u, p in pairs:
            inputs[u] = {"text": texts[u], "prompt": p, "prompt_text": texts[p], "prompt_audio": audio_signature(items[p]),
                         "seed": args.seed + index[u]}
            if args.oracle_semantic or args.oracle_duration:
                inputs[u]["reference_audio"] = audio_signature(items[u])
    wav_dir = out_dir / "wav"
    stamp = ItemStamp(out_dir / STAMP)
    present = sorted(q.name[:-4] for q in wav_dir.glob("*.wav") if not q.name.startswith(".")) if wav_dir.is_dir() else []
    listings = {name: out_dir / name for name in LISTINGS}
    plan = stamp.plan(setup, inputs, present, outputs=listings)
    if plan.complete and all(u in set(present) for u, _ in pairs):
        logger.info(f"{out_dir}: inputs unchanged since {plan.written}, skipped ({len(pairs)} utterances)")
        return 0
    plan.log(logger, str(out_dir), "the models or the options", total=len(pairs))
    for path in listings.values():  # until the run has finished they would list missing or old waves
        path.unlink(missing_ok=True)
    for u in plan.stale(present):
        (wav_dir / f"{u}.wav").unlink(missing_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    # recorded before any wave is written: every wave present from now on was made from these inputs
    stamp.write(setup, inputs, complete=False, tool=PROG)
    todo = [(u, p) for u, p in pairs if not (wav_dir / f"{u}.wav").is_file()]
    logger.info(f"{len(pairs)} utterances, {len(pairs) - len(todo)} already done, {len(todo)} to synthesise")
    audio_seconds, busy = 0.0, 0.0
    with tqdm(total=len(todo), desc=f"synthesising {data_dir.name}", unit="utt") as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            t0 = time.perf_counter()
            if args.resynth:
                wavs = [load_item(items[u], sample_rate) for u, _ in chunk]
                lens = torch.tensor([w.numel() for w in wavs])
                pad = torch.zeros(len(wavs), int(lens.max()))
                for i, w in enumerate(wavs):
                    pad[i, : w.numel()] = w
                codes, code_lens = tok.encode(pad, lens)
                rec, rec_lens = tok.decode(codes, code_lens)
                outs = [rec[i, : min(int(rec_lens[i]), int(lens[i]))] for i in range(len(wavs))]
            else:
                prompts = [load_item(items[p], sample_rate) for _, p in chunk]
                oracle = None
                if args.oracle_semantic:
                    refs = [load_item(items[u], tts.semantic.sample_rate) for u, _ in chunk]
                    codes, code_lens = tts.semantic.encode_list(refs)
                    oracle = [codes[i, : int(code_lens[i])] for i in range(len(refs))]
                seconds = None
                if args.oracle_duration:
                    seconds = [load_item(items[u], sample_rate).numel() / sample_rate for u, _ in chunk]
                outs = tts.batch([texts[u] for u, _ in chunk], prompts, [texts[p] for _, p in chunk],
                                 prompt_sr=sample_rate, seconds=seconds, seeds=[args.seed + index[u] for u, _ in chunk],
                                 names=[u for u, _ in chunk], target_semantic=oracle)
            busy += time.perf_counter() - t0
            for (u, _), w in zip(chunk, outs):
                write_wav(wav_dir / f"{u}.wav", w, sample_rate)
                audio_seconds += w.numel() / sample_rate
            bar.update(len(chunk))
    write_kaldi_map(out_dir / "wav.scp", {u: str((wav_dir / f"{u}.wav").resolve()) for u, _ in pairs})
    write_kaldi_map(out_dir / "text", {u: texts[u] for u, _ in pairs})
    write_kaldi_map(out_dir / "prompt.scp", {u: str(Path(items[p].path).resolve()) for u, p in pairs})
    write_kaldi_map(out_dir / "prompt_text", {u: texts[p] for u, p in pairs})
    if todo:
        stats = {"utterances": len(todo), "audio_seconds": audio_seconds, "seconds": busy,
                 "rtf": busy / max(audio_seconds, 1e-9), "batch_size": args.batch_size}
        (out_dir / "synth_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        logger.info(f"{len(todo)} utterances, {audio_seconds:.1f} s of audio in {busy:.1f} s (RTF {stats['rtf']:.3f})")
    stamp.write(setup, inputs, complete=True, outputs=listings, tool=PROG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
