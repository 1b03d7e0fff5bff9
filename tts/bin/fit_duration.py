"""Fit the per-phone total-duration model (tts.duration.PhoneDurationModel) and compare it
with the prompt-rate rule on a dev set.

Usage:
    python -m tts.bin.fit_duration --phones dump/phones/train/phones \
        --shape dump/semantic/train/semantic_shape --utt2spk data/train/utt2spk \
        --out exp/duration/duration.json \
        [--dev_phones dump/phones/dev/phones --dev_shape dump/semantic/dev/semantic_shape \
         --dev_utt2spk data/dev/utt2spk]

Inputs: ``phones`` as written by ``tts.bin.phonemize`` (``utt p1 p2 | p3 ...``); a shape file
whose first number per line is the utterance length in frames (``utt T`` or ``utt T,K``; the
model works in that unit); ``utt2spk``. Utterances missing from one of the files are left out
(with a warning).

With dev data, each dev utterance is prompted by the next utterance of the same speaker
(sorted ids, wrapping around; speakers with one utterance are left out), and the mean absolute
relative error of the rule (``prompt_frames * n_target / n_prompt``) and of the model is logged
and written to ``duration_eval.json`` beside ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from nar.base.kaldi import read_kaldi_map
from tts.duration import PhoneDurationModel, same_speaker_pairs
from tts.text import BOUNDARY

logger = logging.getLogger("tts.bin.fit_duration")

EVAL_FILE = "duration_eval.json"


def read_shape_frames(path: str) -> dict[str, float]:
    """utt → frames: the first number of each shape-file line (``utt T`` or ``utt T,K``)."""
    frames = {}
    for utt, value in read_kaldi_map(path).items():
        first = value.split(",")[0].strip()
        try:
            t = float(first)
        except ValueError:
            raise ValueError(f"{path}: utterance {utt!r}: shape {value!r} does not begin with a number") from None
        if not t > 0:
            raise ValueError(f"{path}: utterance {utt!r}: length {first} is not positive")
        frames[utt] = t
    return frames


def read_set(phones_path: str, shape_path: str, utt2spk_path: str) -> tuple[dict[str, list[str]], dict[str, float],
                                                                               dict[str, str]]:
    """The utterances present in all three files: (utt → phones, utt → frames, utt → speaker)."""
    phones = {u: v.split() for u, v in read_kaldi_map(phones_path).items()}
    frames = read_shape_frames(shape_path)
    utt2spk = read_kaldi_map(utt2spk_path)
    common = sorted(set(phones) & set(frames) & set(utt2spk))
    for name, d in ((phones_path, phones), (shape_path, frames), (utt2spk_path, utt2spk)):
        if len(d) > len(common):
            logger.warning("%s: %d utterances not in the other files are left out", name, len(d) - len(common))
    no_phone = [u for u in common if all(p == BOUNDARY for p in phones[u])]
    if no_phone:
        logger.warning("%s: %d utterances without phones are left out (e.g. %s)", phones_path, len(no_phone),
                       no_phone[0])
        dropped = set(no_phone)
        common = [u for u in common if u not in dropped]
    if not common:
        raise ValueError(f"no utterance is in all of {phones_path}, {shape_path} and {utt2spk_path}")
    return ({u: phones[u] for u in common}, {u: frames[u] for u in common}, {u: utt2spk[u] for u in common})


def evaluate_dev(model: PhoneDurationModel, phones: dict[str, list[str]], frames: dict[str, float],
                 utt2spk: dict[str, str]) -> dict[str, float | int]:
    """Rule and model errors with same-speaker prompts; see the module docstring."""
    pairs = same_speaker_pairs(list(phones), utt2spk)
    if not pairs:
        raise ValueError("dev set: no speaker has two utterances, so no utterance has a prompt")
    ev = model.evaluate((phones[p], frames[p], phones[t], frames[t])
                        for t, p in tqdm(pairs, desc="dev pairs", file=sys.stderr))
    return {"pairs": ev.n, "rule_mare": ev.rule_mare, "model_mare": ev.model_mare,
            "utterances_without_prompt": len(phones) - len(pairs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phones", required=True, help="training phones (utt p1 p2 | p3 ...)")
    p.add_argument("--shape", required=True, help="training shape file (utt T or utt T,K), T in frames")
    p.add_argument("--utt2spk", required=True)
    p.add_argument("--out", required=True, help="model JSON to write")
    p.add_argument("--dev_phones", default=None)
    p.add_argument("--dev_shape", default=None)
    p.add_argument("--dev_utt2spk", default=None)
    p.add_argument("--rounds", type=int, default=10, help="alternating least-squares rounds")
    p.add_argument("--floor", type=float, default=0.05, help="smallest weight (before rescaling to mean 1)")
    p.add_argument("--ridge", type=float, default=1.0, help="pull of each weight towards 1")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dev = (args.dev_phones, args.dev_shape, args.dev_utt2spk)
    if any(dev) and not all(dev):
        p.error("give all of --dev_phones, --dev_shape and --dev_utt2spk, or none")

    try:
        phones, frames, utt2spk = read_set(args.phones, args.shape, args.utt2spk)
        logger.info("fitting on %d utterances of %d speakers", len(phones), len(set(utt2spk.values())))
        model = PhoneDurationModel.fit(list(phones.values()), list(frames.values()), list(utt2spk.values()),
                                       rounds=args.rounds, floor=args.floor, ridge=args.ridge)
        model.save(args.out)
        ranked = sorted(model.weights.items(), key=lambda kv: kv[1])
        logger.info("weight of %r: %.3f; lightest %s; heaviest %s; fit error %.3f", BOUNDARY,
                    model.weights.get(BOUNDARY, 1.0), ranked[:3], ranked[-3:], model.info["fit_mare"])
        print(f"{args.out}: {len(model.weights)} phone weights from {len(phones)} utterances")
        if all(dev):
            result = evaluate_dev(model, *read_set(*dev))
            eval_path = Path(args.out).parent / EVAL_FILE
            eval_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
            msg = (f"dev: {result['pairs']} same-speaker pairs; mean abs relative error of the total "
                   f"duration: rule {result['rule_mare']:.4f}, model {result['model_mare']:.4f}")
            logger.info(msg)
            print(f"{eval_path}: {msg}")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
