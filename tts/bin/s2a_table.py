"""A counted semantic-to-acoustic table: how much of the acoustic codes the semantic tokens decide.

No model and no prompt: on the training pairs (semantic tokens, acoustic codes) count, per
acoustic frame (its semantic token by ``tts.models.maskgct.align_frames``, as the S2A sees it),

    codebook 0:      the most frequent code given the frame's semantic token
    codebook k > 0:  the most frequent code given (semantic token, code of codebook k - 1)

(an unseen pair falls back to the most frequent code given codebook k - 1 alone, then to the
codebook's most frequent code). Applied to another set's semantic tokens, decoded by the
acoustic tokenizer, and written as a synthesis directory (``wav/``, ``wav.scp``, ``text``) that
``python -m tts.evaluate score`` judges. A semantic tokenizer whose table output is unintelligible
cannot give an intelligible S2A without context; comparing tokenizers this way needs no training.

Usage:
    python -m tts.bin.s2a_table --train_semantic dump/semantic/train/semantic.scp \
        --train_codes dump/codes/train/codes.scp --semantic_rate 25 --acoustic_rate 50 \
        --semantic dump/semantic/test/semantic.scp --text dump/raw/test/text \
        --acoustic_tokenizer ../codec1/exp/tokenizer_mel_rvq --out_dir exp/synth/table/test \
        [--utt_list exp/synth/resynth/test/wav.scp]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from nar.base.kaldi import read_kaldi_map, write_kaldi_map
from tts.bin.synthesize import write_wav

logger = logging.getLogger(__name__)


def frame_index(num_semantic: int, num_frames: int, semantic_rate: float, acoustic_rate: float) -> np.ndarray:
    """Semantic frame of each acoustic frame (the rule of ``tts.models.maskgct.align_frames``)."""
    from tts.models.maskgct import align_frames

    sem = torch.arange(num_semantic)[None]
    idx = align_frames(sem, torch.tensor([num_semantic]), torch.tensor([num_frames]), semantic_rate, acoustic_rate)
    return idx[0].numpy()


def _mode_by_key(keys: np.ndarray, values: np.ndarray, num_values: int) -> dict[int, int]:
    """{key: most frequent value} (ties: the smallest value)."""
    joint, counts = np.unique(keys.astype(np.int64) * num_values + values, return_counts=True)
    k, v = np.divmod(joint, num_values)
    order = np.lexsort((v, -counts, k))  # by key, then count descending, then value ascending
    k, v = k[order], v[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    return dict(zip(k[first].tolist(), v[first].tolist()))


class S2ATable:
    """The counted table (module docstring). ``codebook_size`` V, ``num_codebooks`` K."""

    def __init__(self, num_codebooks: int, codebook_size: int, first: dict, given_prev: list, prev_only: list,
                 overall: list):
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.first, self.given_prev, self.prev_only, self.overall = first, given_prev, prev_only, overall

    @classmethod
    def count(cls, pairs: Sequence[tuple[np.ndarray, np.ndarray]], semantic_rate: float,
              acoustic_rate: float) -> "S2ATable":
        """pairs: (semantic (Ts,), codes (K, T)) per utterance."""
        if not pairs:
            raise ValueError("S2ATable.count: no training pairs")
        sems, codes = [], []
        for sem, c in pairs:
            c = np.asarray(c)
            if c.ndim != 2 or len(sem) == 0 or c.shape[1] == 0:
                raise ValueError(f"S2ATable.count: expected semantic (Ts,) and codes (K, T), got {np.shape(sem)} "
                                 f"and {c.shape}")
            sems.append(np.asarray(sem, dtype=np.int64)[frame_index(len(sem), c.shape[1], semantic_rate,
                                                                    acoustic_rate)])
            codes.append(c.astype(np.int64))
        k_all = {c.shape[0] for c in codes}
        if len(k_all) != 1:
            raise ValueError(f"S2ATable.count: codes with different numbers of codebooks {sorted(k_all)}")
        sem, code = np.concatenate(sems), np.concatenate(codes, axis=1)
        k_all, v = code.shape[0], int(code.max()) + 1
        first = _mode_by_key(sem, code[0], v)
        given_prev, prev_only = [None], [None]
        for k in range(1, k_all):
            given_prev.append(_mode_by_key(sem * v + code[k - 1], code[k], v))
            prev_only.append(_mode_by_key(code[k - 1], code[k], v))
        overall = [int(np.bincount(code[k]).argmax()) for k in range(k_all)]
        return cls(k_all, v, first, given_prev, prev_only, overall)

    def apply(self, semantic: np.ndarray, num_frames: int, semantic_rate: float, acoustic_rate: float) -> np.ndarray:
        """semantic (Ts,) -> codes (K, num_frames)."""
        sem = np.asarray(semantic, dtype=np.int64)[frame_index(len(semantic), num_frames, semantic_rate,
                                                               acoustic_rate)]
        out = np.empty((self.num_codebooks, num_frames), dtype=np.int64)
        out[0] = [self.first.get(s, self.overall[0]) for s in sem.tolist()]
        for k in range(1, self.num_codebooks):
            prev = out[k - 1].tolist()
            out[k] = [self.given_prev[k].get(s * self.codebook_size + p, self.prev_only[k].get(p, self.overall[k]))
                      for s, p in zip(sem.tolist(), prev)]
        return out


def _read_pairs(semantic_scp: Path, codes_scp: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sem, codes = read_kaldi_map(str(semantic_scp)), read_kaldi_map(str(codes_scp))
    keys = [k for k in sem if k in codes]
    if not keys:
        raise ValueError(f"{semantic_scp} and {codes_scp} share no utterance")
    return [(k, np.load(sem[k]), np.load(codes[k])) for k in tqdm(keys, desc="reading training tokens",
                                                                     file=sys.stderr)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_semantic", type=Path, required=True, help="semantic.scp of the training set")
    p.add_argument("--train_codes", type=Path, required=True, help="codes.scp of the training set")
    p.add_argument("--semantic_rate", type=float, required=True)
    p.add_argument("--acoustic_rate", type=float, required=True)
    p.add_argument("--semantic", type=Path, required=True, help="semantic.scp of the set to synthesise")
    p.add_argument("--text", type=Path, required=True, help="its text (copied for the judges)")
    p.add_argument("--acoustic_tokenizer", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--utt_list", type=Path, default=None, help="synthesise only the keys of this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from audio_gen.tokenizers import load_tokenizer

    pairs = _read_pairs(args.train_semantic, args.train_codes)
    table = S2ATable.count([(s, c) for _, s, c in pairs], args.semantic_rate, args.acoustic_rate)
    logger.info(f"counted {len(pairs)} utterances: {len(table.first)} semantic tokens seen")
    sem = read_kaldi_map(str(args.semantic))
    texts = read_kaldi_map(str(args.text))
    keys = list(sem)
    if args.utt_list:
        wanted = read_kaldi_map(str(args.utt_list))
        missing = [k for k in wanted if k not in sem]
        if missing:
            raise SystemExit(f"{args.semantic}: {len(missing)} utterances of {args.utt_list} missing (e.g. {missing[0]})")
        keys = list(wanted)
    missing = [k for k in keys if k not in texts]
    if missing:
        raise SystemExit(f"{args.text}: no text for {len(missing)} utterances (e.g. {missing[0]})")
    tok = load_tokenizer(args.acoustic_tokenizer)
    wav_dir = args.out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for k in tqdm(keys, desc="table synthesis", file=sys.stderr):
        final = wav_dir / f"{k}.wav"
        if final.is_file():
            continue
        s = np.load(sem[k])
        frames = int(round(len(s) * args.acoustic_rate / args.semantic_rate))
        codes = torch.from_numpy(table.apply(s, frames, args.semantic_rate, args.acoustic_rate))[None]
        with torch.no_grad():
            wav, lens = tok.decode(codes, torch.tensor([frames]))
        write_wav(final, wav[0, : int(lens[0])], int(tok.sample_rate))
    write_kaldi_map(str(args.out_dir / "wav.scp"), {k: str((wav_dir / f"{k}.wav").resolve()) for k in keys})
    write_kaldi_map(str(args.out_dir / "text"), {k: texts[k] for k in keys})
    (args.out_dir / "table.json").write_text(json.dumps({
        "train_utterances": len(pairs), "semantic_tokens_seen": len(table.first),
        "pairs_seen": [len(t) if t else 0 for t in table.given_prev], "semantic": str(args.semantic)}, indent=2) + "\n")
    print(f"{args.out_dir}: {len(keys)} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
