"""nar-speech against the libraries a user would otherwise use, on the same work (issue #35).

Usage:
    python bench/peers.py                        # every row, table + bench/results/peers.{json,md}
    python bench/peers.py --quick                # small sizes, 3 repeats: a smoke test (< 1 min)
    python bench/peers.py --rows beam,char_lm --repeats 7 --out /tmp/peers.json
    python bench/peers.py --exp_dir egs/synth_en/asr1/exp/asr_train_ctc_sp_char   # the demo's model
    pip install -e '.[bench]' && pip install --no-deps pyctcdecode==0.5.0   # the peers (see pyproject.toml)

Rows (``--rows``; each row builds the same inputs for both sides):
    paraformer       a small random FunASR Paraformer (conformer encoder, CifPredictorV2) converted
                     by asr.convert.funasr_paraformer; FunASR's encode -> calc_predictor ->
                     cal_decoder_with_predictor -> argmax vs our converted model's encode_feats ->
                     recognize, at B=1 and B=16, on the same features
    espnet           CTC prefix beam search, beam 10, no LM: nar.ctc.ctc_prefix_beam_search (batched)
                     vs ESPnet's BatchBeamSearch (what espnet2's asr_inference picks for a CTC-only
                     decode) and BeamSearch with CTCPrefixScorer, one utterance at a time
    cif              CIF, B=16, T=500, D=256: nar.cif.cif vs FunASR's cif_v1 and cif
    beam             CTC beam 10 and 20, no LM, B=16: ours (one batched call, and a loop of B=1
                     calls) vs flashlight-text's lexicon-free decoder (torchaudio ctc_decoder,
                     lm=None) and pyctcdecode (no LM)
    char_lm          beam 20 + character 6-gram (shallow fusion), B=16: asr.decoding.CTCSearch
                     (ngram_file) vs torchaudio ctc_decoder (flashlight-text + KenLM, lexicon-free,
                     lm_dict = the token list)
    word_lm_lexicon  beam 10 + word 3-gram through a lexicon, B=16: CTCSearch (ngram_unit word) vs
                     flashlight's lexicon decoder + KenLM (spellings end with <space>, the
                     wav2letter convention, and each item gets a final <space> frame of
                     probability 1, so the last word can end: zero acoustic cost)
    word_lm          beam 20 + word 3-gram, B=16: the same vs flashlight (lexicon) and pyctcdecode
                     (+ KenLM, open vocabulary)
    align            forced alignment B=32, T=500, L=60: nar.align.forced_align vs a loop of
                     torchaudio.functional.forced_align

Inputs: with ``--exp_dir`` (default: the demo's CTC model if it exists) the CTC log-probabilities
are the model's on its ``dump/raw/test`` data, and the LMs are the recipe's ARPA files
(``exp/ngram_char/*.arpa`` of order <= 6, else a 6-gram trained here on the recipe's LM text;
``exp/ngram_word/3gram.arpa``). Otherwise they are synthetic: sentences from a seeded word chain
over pseudo-words, spelled in characters and rendered as noisy CTC posteriors (with confusable
letters, so search and LM matter), and a character 6-gram and word 3-gram trained here by
``asr.lm.train_ngram`` on other sentences of the same chain. Every LM row uses the same ARPA file
on both sides (KenLM reads ARPA; a KenLM binary would load faster but ``build_binary`` is not
part of the pip packages).

Measurement: one process, ``torch.set_num_threads(1)`` (every peer here is single-threaded),
repeats interleaved (one call of each side in turn), median of ``--repeats`` (default 5). LM
rows, per repeat and side: a new decoder is constructed (``construct``) and decodes the test
batch X (cold = construct + this first decode), then X again (``warm, same inputs``: its caches
hold X); a second new decoder decodes another batch Y (untimed), then X (``warm``: its second
use, on inputs it has not seen); ours only, a third decodes Y, then X one utterance at a time
(``B=1``; the peers' decoders loop over utterances anyway, so their B=1
time is their batch time). Every side is asked for the same objective: log P_ctc + w * ln P_LM,
no length or word bonus (flashlight's lm_weight is w * ln 10, KenLM scoring in log10;
pyctcdecode's alpha is already in natural log). Agreement: top-1 equal (as normalised text), and
for the items that differ, which side's hypothesis has the higher objective (CTC
log-likelihood by ``torch.nn.functional.ctc_loss``, LM by ``asr.lm.NgramLM``); with references,
the error rates of both sides.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from asr.decoding import CTCSearch, DecodeConfig  # noqa: E402
from asr.lm import NgramLM, train_ngram  # noqa: E402
from nar.align import forced_align  # noqa: E402
from nar.cif import cif  # noqa: E402
from nar.ctc import ctc_prefix_beam_search  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "peers.json"
DEFAULT_EXP = ROOT / "egs" / "synth_en" / "asr1" / "exp" / "asr_train_ctc_sp_char"
ROWS = ("paraformer", "espnet", "cif", "beam", "char_lm", "word_lm_lexicon", "word_lm", "align")
#: distribution name -> module that must import for the peer to count as installed
PEERS = {"funasr": "funasr", "espnet": "espnet", "flashlight-text": "flashlight.lib.text.decoder",
         "pyctcdecode": "pyctcdecode", "kenlm": "kenlm", "torchaudio": "torchaudio"}
SPACE, BLANK, UNK, SOS_EOS = "<space>", "<blank>", "<unk>", "<sos/eos>"
LETTERS = "abcdefghijklmnopqrstuvwxyz'"
VOWELS, CONSONANTS = "aeiou", "bdgklmnprst"  # the synthetic words' letters (few: many near neighbours)
KENLM_MAX_ORDER = 6  # flashlight-text's and pip kenlm's KenLM are built with KENLM_MAX_ORDER=6


# ============================================================================================
# Peers and timing
# ============================================================================================
def peer_status(dist: str) -> Optional[str]:
    """None if the peer imports, else why not."""
    try:
        importlib.import_module(PEERS[dist])
    except Exception as exc:  # ImportError, or a broken build
        return f"peer not installed: {dist} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def median(values: list) -> float:
    return statistics.median(values)


def timed(fn: Callable):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Median seconds of each zero-argument function, one call of each in turn per repeat;
    and each function's last output."""
    outs = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            outs[name] = fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, outs[name] = timed(fn)
            times[name].append(seconds)
    return {name: median(v) for name, v in times.items()}, outs


def ratio(ours: Optional[float], peer: Optional[float]) -> Optional[float]:
    return None if ours is None or not peer else ours / peer


# ============================================================================================
# Inputs: CTC posteriors and LMs
# ============================================================================================
@dataclass
class Batch:
    log_probs: torch.Tensor  # (B, T, V) float32
    lengths: torch.Tensor  # (B,)
    refs: list  # reference texts (words separated by single spaces)

    def __len__(self) -> int:
        return self.log_probs.shape[0]

    def item(self, b: int) -> torch.Tensor:
        return self.log_probs[b, : int(self.lengths[b])]

    def head(self, n: int) -> "Batch":
        frames = int(self.lengths[:n].max())
        return Batch(self.log_probs[:n, :frames].contiguous(), self.lengths[:n].clone(), self.refs[:n])


@dataclass
class Task:
    """What every CTC row decodes: a test batch X, a second batch Y (the cold runs), the token
    list, a model for ``asr.decoding.CTCSearch``, and (made on first use) the LMs."""

    source: str
    token_list: list
    model: object  # a CTC model (make_decoder) or a stand-in with blank_id and token_list
    x: Batch
    y: Batch
    lm_dir: Path
    char_arpa: Optional[Path] = None
    word_arpa: Optional[Path] = None
    lm_text: Optional[Callable] = None  # -> list of sentences (training text for LMs made here)
    notes: dict = field(default_factory=dict)
    _lms: dict = field(default_factory=dict)

    @property
    def blank(self) -> int:
        return self.token_list.index(BLANK)

    def is_char(self) -> bool:
        specials = {BLANK, UNK, SOS_EOS, SPACE}
        return SPACE in self.token_list and all(len(t) == 1 for t in self.token_list if t not in specials)

    def tokens_to_text(self, ids) -> str:
        pieces = []
        for i in ids:
            tok = self.token_list[i]
            pieces.append(" " if tok == SPACE else tok)
        return " ".join("".join(pieces).split())

    def text_to_ids(self, text: str) -> list:
        index = {t: i for i, t in enumerate(self.token_list)}
        unk = index.get(UNK, 0)
        return [index[SPACE] if ch == " " else index.get(ch, unk) for ch in " ".join(text.split())]

    def char_lm(self) -> tuple[Path, NgramLM]:
        if "char" not in self._lms:
            path = self.char_arpa
            if path is None:
                path = self.lm_dir / f"char_{KENLM_MAX_ORDER}gram.arpa"
                vocab = [t for t in self.token_list if t not in (BLANK, SOS_EOS)]
                sents = [[SPACE if ch == " " else ch for ch in s] for s in self.lm_text()]
                train_ngram(sents, KENLM_MAX_ORDER, vocab).write_arpa(str(path))
                self.notes["char_lm"] = (f"{KENLM_MAX_ORDER}-gram trained here by asr.lm.train_ngram "
                                         f"({len(sents)} sentences)")
            self._lms["char"] = (path, NgramLM.load(str(path)))
        return self._lms["char"]

    def word_lm(self) -> tuple[Path, NgramLM]:
        if "word" not in self._lms:
            path = self.word_arpa
            if path is None:
                path = self.lm_dir / "word_3gram.arpa"
                sents = [s.split() for s in self.lm_text()]
                words = sorted({w for s in sents for w in s})
                train_ngram(sents, 3, words).write_arpa(str(path))
                self.notes["word_lm"] = f"3-gram trained here by asr.lm.train_ngram ({len(sents)} sentences)"
            self._lms["word"] = (path, NgramLM.load(str(path)))
        return self._lms["word"]


class TextChain:
    """Seeded synthetic text: pseudo-words from syllables, sentences from a word bigram chain
    (each word has a few likely successors), so an n-gram LM has something to learn."""

    def __init__(self, seed: int, num_words: int):
        rng = random.Random(seed)
        cons, vowels = CONSONANTS, VOWELS
        words: set = set()
        while len(words) < num_words:
            syl = rng.choice((1, 2, 2, 3))
            w = "".join(rng.choice(cons) + rng.choice(vowels) + (rng.choice(cons) if rng.random() < 0.3 else "")
                        for _ in range(syl))
            words.add(w + ("'s" if rng.random() < 0.03 else ""))
        self.words = sorted(words)
        n = len(self.words)
        self.start = [1.0 / (k + 1) for k in range(n)]
        rng.shuffle(self.start)
        self.successors = []
        for _ in range(n):
            succ = rng.sample(range(n), min(60, n))
            self.successors.append((succ, [1.0 / (k + 1) for k in range(len(succ))]))

    def sentence(self, rng: random.Random, lo: int = 5, hi: int = 10) -> str:
        n = len(self.words)
        w = rng.choices(range(n), self.start)[0]
        out = [w]
        for _ in range(rng.randint(lo, hi) - 1):
            w = rng.randrange(n) if rng.random() < 0.3 else rng.choices(*self.successors[w])[0]
            out.append(w)
        return " ".join(self.words[i] for i in out)


def render_ctc(token_ids: list, vocab: int, blank: int, unk: int, eos: int, letters: list,
               gen: torch.Generator, confusable: torch.Tensor, p_confuse: float = 0.3) -> torch.Tensor:
    """Noisy CTC log-probs (T, V) of a token sequence: 0-2 blanks before each token (at least one
    between repeats), 1-3 frames per token; per frame N(0, 1) logits, the true label +6..11 (peaky, like a
    trained model: other labels ~1e-4), and with probability ``p_confuse`` a confusable label (a
    fixed other letter of the same group; any letter on a blank frame, a quarter as often) +4..9.
    ``<unk>`` and ``<sos/eos>`` are rare, as in a trained model."""
    labels, prev = [], None
    for tok in token_ids:
        blanks = int(torch.randint(0, 3, (1,), generator=gen))
        if tok == prev:
            blanks = max(blanks, 1)
        labels += [blank] * blanks + [tok] * int(torch.randint(1, 4, (1,), generator=gen))
        prev = tok
    labels += [blank] * int(torch.randint(1, 4, (1,), generator=gen))
    labels = torch.tensor(labels)
    frames = labels.numel()
    rows = torch.arange(frames)
    logits = torch.randn(frames, vocab, generator=gen)
    logits[rows, labels] += 6 + 5 * torch.rand(frames, generator=gen)
    other = confusable[labels]
    on_blank = labels == blank
    other[on_blank] = torch.tensor(letters)[torch.randint(0, len(letters), (int(on_blank.sum()),), generator=gen)]
    hit = torch.rand(frames, generator=gen) < torch.where(on_blank, p_confuse / 4, p_confuse)
    logits[rows[hit], other[hit]] += 4 + 5 * torch.rand(int(hit.sum()), generator=gen)
    logits[:, unk] -= 8
    logits[:, eos] -= 8
    return logits.log_softmax(-1)


def synthetic_task(batch: int, lm_sentences: int, num_words: int, lm_dir: Path, seed: int = 0) -> Task:
    token_list = [BLANK, UNK, SPACE, *LETTERS, SOS_EOS]
    index = {t: i for i, t in enumerate(token_list)}
    letters = [index[c] for c in LETTERS]
    chain = TextChain(seed, num_words)
    gen = torch.Generator().manual_seed(seed)
    confusable = torch.arange(len(token_list))
    for group in (VOWELS, CONSONANTS, "".join(c for c in LETTERS if c not in VOWELS + CONSONANTS)):
        # each letter has one confusable other letter of its group (a vowel for a vowel, ...), so
        # a confusion often spells another word of the vocabulary
        ids = [index[c] for c in group]
        perm = torch.randperm(len(ids), generator=gen).tolist()
        for k, a in enumerate(ids):
            b = ids[perm[k]]
            confusable[a] = b if b != a else ids[(perm[k] + 1) % len(ids)]
    confusable[index[SPACE]] = index[BLANK]

    def make(rng_seed: int) -> Batch:
        rng = random.Random(rng_seed)
        refs = [chain.sentence(rng) for _ in range(batch)]
        items = []
        for text in refs:
            ids = [index[SPACE] if ch == " " else index[ch] for ch in text]
            items.append(render_ctc(ids, len(token_list), index[BLANK], index[UNK], index[SOS_EOS], letters,
                                    gen, confusable))
        lengths = torch.tensor([x.shape[0] for x in items])
        return Batch(torch.nn.utils.rnn.pad_sequence(items, batch_first=True).contiguous(), lengths, refs)

    def lm_text() -> list:
        rng = random.Random(seed + 1000)
        return [chain.sentence(rng) for _ in range(lm_sentences)]

    model = SimpleNamespace(blank_id=index[BLANK], token_list=token_list)
    source = (f"synthetic (seed {seed}): {num_words} pseudo-words, word-chain sentences of 5-10 words, "
              f"noisy CTC posteriors, V={len(token_list)}; LMs trained here on {lm_sentences} other sentences")
    return Task(source, token_list, model, make(seed + 1), make(seed + 2), lm_dir, lm_text=lm_text)


def arpa_order(path: Path) -> int:
    opener = __import__("gzip").open if str(path).endswith(".gz") else open
    order = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram ") and "=" in line:
                order = max(order, int(line[6:].split("=")[0]))
            elif line.startswith("\\1-grams"):
                break
    return order


def exp_task(exp_dir: Path, data_dir: Optional[Path], batch: int, lm_dir: Path) -> Task:
    """The demo's CTC model on its test data (first 2 * batch utterances, sorted by id)."""
    from asr.audio import as_waveform
    from asr.inference import Speech2Text
    from nar.base.kaldi import read_kaldi_map

    recipe = exp_dir.parent.parent
    data = data_dir or recipe / "dump" / "raw" / "test"
    s2t = Speech2Text(exp_dir, search="beam", timestamps=False)
    if s2t.family != "ctc":
        raise SystemExit(f"{exp_dir}: a {s2t.family} model; the CTC rows need a CTC model")
    utts = read_kaldi_map(str(data / "wav.scp"))
    refs = read_kaldi_map(str(data / "text"), allow_empty_value=True)
    keys = sorted(utts)[: 2 * batch]
    if len(keys) < 2:
        raise SystemExit(f"{data}: too few utterances")

    def make(names) -> Batch:
        with torch.no_grad():
            lp, lens = s2t.ctc_log_probs([as_waveform(utts[k], s2t.sample_rate, name=k) for k in names])
        return Batch(lp.float().cpu().contiguous(), lens.cpu(), [" ".join(refs.get(k, "").split()) for k in names])

    half = len(keys) // 2
    x, y = make(keys[:half]), make(keys[half:2 * half])
    chars = sorted((recipe / "exp" / "ngram_char").glob("*.arpa"))
    fitting = [p for p in chars if arpa_order(p) <= KENLM_MAX_ORDER]
    char_arpa = max(fitting, key=arpa_order) if fitting else None
    word = recipe / "exp" / "ngram_word" / "3gram.arpa"
    lm_texts = [recipe / "data" / "lm_train.txt", recipe / "dump" / "raw" / "train" / "text"]

    def lm_text() -> list:
        for path in lm_texts:
            if path.is_file():
                if path.name == "text":
                    return [v for v in read_kaldi_map(str(path), allow_empty_value=True).values() if v]
                return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        raise FileNotFoundError(f"no LM text among {[str(p) for p in lm_texts]}")

    task = Task(f"{exp_dir} on {data} (X: {len(x)} utterances, Y: the next {len(y)})", list(s2t.token_list),
                s2t.model, x, y, lm_dir, char_arpa=char_arpa, word_arpa=word if word.is_file() else None,
                lm_text=lm_text)
    if chars and not fitting:
        task.notes["char_lm"] = (f"the recipe's char LMs {[p.name for p in chars]} exceed KenLM's order "
                                 f"{KENLM_MAX_ORDER}; a {KENLM_MAX_ORDER}-gram is trained here")
    return task


# ============================================================================================
# Agreement
# ============================================================================================
def ctc_loglik(task: Task, batch: Batch, b: int, ids) -> float:
    """log P_ctc(ids | item b) (all alignments), float64; -inf if the sequence cannot fit."""
    ids = list(ids)
    lp = batch.item(b).double()[:, None]  # (T, 1, V)
    if not ids:
        return float(lp[:, 0, task.blank].sum())
    loss = torch.nn.functional.ctc_loss(lp, torch.tensor([ids]), torch.tensor([lp.shape[0]]), torch.tensor([len(ids)]),
                                        blank=task.blank, reduction="none", zero_infinity=False)
    return -float(loss[0])


def canonical_ids(task: Task, hyp: tuple) -> list:
    """Token ids of a hypothesis (text, ids): for a character model the text's own tokens (one
    ``<space>`` between words; a decoder's token path may hold extra spaces, e.g. flashlight's
    silence at the start), else (BPE) the decoder's ids."""
    return task.text_to_ids(hyp[0]) if task.is_char() else list(hyp[1])


def cer_wer(refs: list, hyps: list) -> tuple[float, float]:
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return float("nan"), float("nan")
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    return 100 * jiwer.cer(r, h), 100 * jiwer.wer(r, h)


def agreement(task: Task, batch: Batch, ours: list, peer: list, objective: Optional[Callable] = None) -> dict:
    """ours / peer: per item (normalised text, token ids). Where the texts differ, each side's
    hypothesis is scored by ``objective(b, hyp)`` (default: the CTC log-likelihood of its
    :func:`canonical_ids`)."""
    objective = objective or (lambda b, hyp: ctc_loglik(task, batch, b, canonical_ids(task, hyp)))
    differ = [b for b in range(len(batch)) if ours[b][0] != peer[b][0]]
    higher = dict(ours=0, peer=0, tie=0)
    for b in differ:
        so, sp = objective(b, ours[b]), objective(b, peer[b])
        key = "tie" if abs(so - sp) <= 1e-4 * max(1.0, abs(so)) else ("ours" if so > sp else "peer")
        higher[key] += 1
    out = dict(top1_equal=len(batch) - len(differ), items=len(batch), differing_higher_objective=higher)
    if any(batch.refs):
        out["cer_wer_ours"] = [round(v, 2) for v in cer_wer(batch.refs, [t for t, _ in ours])]
        out["cer_wer_peer"] = [round(v, 2) for v in cer_wer(batch.refs, [t for t, _ in peer])]
    return out


def agreement_text(a: dict) -> str:
    if not a:
        return "-"
    s = f"top-1 equal {a['top1_equal']}/{a['items']}"
    h = a.get("differing_higher_objective")
    if h and a["top1_equal"] < a["items"]:
        s += f"; differing: higher objective ours {h['ours']}, peer {h['peer']}"
        s += f", tie {h['tie']}" if h["tie"] else ""
    if "cer_wer_ours" in a:
        s += (f"; CER/WER % ours {a['cer_wer_ours'][0]:.1f}/{a['cer_wer_ours'][1]:.1f}, "
              f"peer {a['cer_wer_peer'][0]:.1f}/{a['cer_wer_peer'][1]:.1f}")
    for key in ("note",):
        if key in a:
            s += f"; {a[key]}"
    return s


# ============================================================================================
# Decoders (ours and the peers), each returning per item (normalised text, token ids)
# ============================================================================================
def ours_beam(task: Task, beam: int) -> Callable:
    def run(batch: Batch) -> list:
        hyps = ctc_prefix_beam_search(batch.log_probs, batch.lengths, beam_size=beam, blank=task.blank)
        return [(task.tokens_to_text(h[0].tokens), tuple(h[0].tokens)) if h else ("", ()) for h in hyps]
    return run


def ours_search(task: Task, config: DecodeConfig) -> Callable:
    """Construct our CTC decoder (loads the ARPA file): a function of a batch."""
    make = getattr(task.model, "make_decoder", None)
    search = make(config) if make is not None else CTCSearch(task.model, config)

    def run(batch: Batch) -> list:
        hyps = search.decode_log_probs(batch.log_probs, batch.lengths, spans=False)
        return [(task.tokens_to_text(h[0].token_ids), tuple(h[0].token_ids)) if h else ("", ()) for h in hyps]
    return run


def b1_loop(run: Callable) -> Callable:
    def loop(batch: Batch) -> list:
        out = []
        for b in range(len(batch)):
            n = int(batch.lengths[b])
            out += run(Batch(batch.log_probs[b:b + 1, :n], batch.lengths[b:b + 1], batch.refs[b:b + 1]))
        return out
    return loop


def flashlight_decoder(task: Task, beam: int, lm: Optional[str] = None, lm_dict: Optional[str] = None,
                       lexicon: Optional[str] = None, lm_weight: float = 0.0) -> Callable:
    """torchaudio's ctc_decoder (flashlight-text); the KenLM weight in log10 units."""
    from torchaudio.models.decoder import ctc_decoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dec = ctc_decoder(lexicon=lexicon, tokens=list(task.token_list), lm=lm, lm_dict=lm_dict, nbest=1,
                          beam_size=beam, lm_weight=lm_weight * math.log(10), word_score=0.0, sil_score=0.0,
                          unk_score=float("-inf"), log_add=True, blank_token=BLANK, sil_token=SPACE,
                          unk_word=UNK)

    space = task.token_list.index(SPACE)

    def run(batch: Batch) -> list:
        emissions, lengths = batch.log_probs, batch.lengths
        if lexicon:  # a <space> frame of probability 1 after each item: the last word's spelling ends
            frames, vocab = emissions.shape[1:]  # with <space> too (wav2letter's convention)
            emissions = torch.full((len(batch), frames + 1, vocab), -1e4)
            emissions[:, :, task.blank] = 0.0
            emissions[:, :frames] = batch.log_probs
            end = torch.full((vocab,), -1e4)
            end[space] = 0.0
            emissions[torch.arange(len(batch)), lengths] = end
            lengths = lengths + 1
        out = []
        for hyps in dec(emissions, lengths):
            if not hyps:
                out.append(("", ()))
                continue
            ids = tuple(int(i) for i in hyps[0].tokens)
            text = " ".join(hyps[0].words) if lexicon else task.tokens_to_text(ids)
            out.append((" ".join(text.split()), ids))
        return out
    return run


def pyctcdecode_labels(task: Task) -> list:
    special = {BLANK: "", SPACE: " ", UNK: "\u2047", SOS_EOS: "\u00a7"}
    return [special.get(t, t) for t in task.token_list]


def pyctcdecode_decoder(task: Task, beam: int, kenlm_path: Optional[str] = None, unigrams=None,
                        alpha: float = 0.0) -> Callable:
    from pyctcdecode import build_ctcdecoder

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    dec = build_ctcdecoder(pyctcdecode_labels(task), kenlm_model_path=kenlm_path, unigrams=unigrams,
                           alpha=alpha, beta=0.0)

    def run(batch: Batch) -> list:
        out = []
        for b in range(len(batch)):
            text = " ".join(dec.decode(batch.item(b).numpy(), beam_width=beam).split())
            out.append((text, tuple(task.text_to_ids(text))))
        return out
    return run


# ============================================================================================
# Rows
# ============================================================================================
def skipped(name: str, work: str, status: str, **extra) -> dict:
    return dict(row=name, work=work, status=status, measurements=[], **extra)


def row_beam(task: Task, repeats: int, beams=(10, 20)) -> list:
    rows = []
    for beam in beams:
        x = task.x
        work = f"CTC prefix beam {beam}, no LM"
        shape = f"B={len(x)} T<={x.log_probs.shape[1]} V={x.log_probs.shape[2]}"
        fns = {"ours": lambda: ours_beam(task, beam)(x), "ours B=1": lambda: b1_loop(ours_beam(task, beam))(x)}
        peers, status = {}, []
        for peer, dist, make in (("flashlight", "flashlight-text", lambda: flashlight_decoder(task, beam)),
                                 ("pyctcdecode", "pyctcdecode", lambda: pyctcdecode_decoder(task, beam))):
            why = peer_status(dist) or (peer_status("torchaudio") if peer == "flashlight" else None)
            if not why and peer == "pyctcdecode" and not task.is_char():
                why = "skipped: pyctcdecode is set up here for character token lists"
            if why:
                status.append(f"{peer}: {why}")
                continue
            dec = make()
            peers[peer] = dec
            fns[peer] = (lambda d: lambda: d(x))(dec)
        if not peers:
            rows.append(skipped("beam", work, "; ".join(status), shape=shape))
            continue
        seconds, outs = interleaved(fns, repeats)
        meas, agree = [], {}
        for peer in peers:
            meas.append(dict(peer=peer, mode="batch", ours_s=seconds["ours"], peer_s=seconds[peer]))
            meas.append(dict(peer=peer, mode="ours B=1 loop", ours_s=seconds["ours B=1"], peer_s=seconds[peer]))
            agree[peer] = agreement(task, x, outs["ours"], outs[peer])
        same_b1 = sum(a == b for a, b in zip(outs["ours"], outs["ours B=1"]))
        rows.append(dict(row="beam", work=work, shape=shape, status="ok" if not status else "; ".join(status),
                         measurements=meas, agreement=agree,
                         notes=f"ours B=1 loop equals ours batched on {same_b1}/{len(x)}; flashlight: "
                               f"beam_size_token all, beam_threshold 50, log_add; pyctcdecode defaults "
                               f"(beam_prune_logp -10, token_min_logp -5)"))
    return rows


def lm_trials(sides: dict, task: Task, repeats: int, b1: tuple = ("ours",)) -> tuple[dict, dict]:
    """sides: name -> constructor returning a decode function. Per repeat and side (interleaved):
    decoder 1: construct, decode X (cold = construct + this first use), X again (warm, same
    inputs: caches hold X); decoder 2: construct and decode Y (untimed), then X (warm: second use,
    inputs it has not seen); ours: decoder 3 likewise, then X one utterance at a time (B=1)."""
    keys = ("construct", "first", "warm_same", "warm", "b1")
    times = {name: {k: [] for k in keys} for name in sides}
    outs = {}
    for _ in range(repeats):
        for name, construct in sides.items():
            t, run = timed(construct)
            times[name]["construct"].append(t)
            t, outs[name] = timed(lambda: run(task.x))
            times[name]["first"].append(t)
            times[name]["warm_same"].append(timed(lambda: run(task.x))[0])
            run = construct()
            run(task.y)
            times[name]["warm"].append(timed(lambda: run(task.x))[0])
            if name in b1:
                run = construct()
                run(task.y)
                times[name]["b1"].append(timed(lambda: b1_loop(run)(task.x))[0])
    med = {name: {k: median(v) for k, v in d.items() if v} for name, d in times.items()}
    for d in med.values():
        d["cold"] = d["construct"] + d["first"]
    return med, outs


def lm_measurements(med: dict, peer: str) -> list:
    o, p = med["ours"], med[peer]
    return [dict(peer=peer, mode="warm (2nd use, new inputs)", ours_s=o["warm"], peer_s=p["warm"]),
            dict(peer=peer, mode="warm, same inputs again", ours_s=o["warm_same"], peer_s=p["warm_same"]),
            dict(peer=peer, mode="cold (construct + 1st decode)", ours_s=o["cold"], peer_s=p["cold"],
                 ours_construct_s=o["construct"], peer_construct_s=p["construct"]),
            dict(peer=peer, mode="ours B=1 loop (warm) vs peer", ours_s=o["b1"], peer_s=p["warm"])]


def row_char_lm(task: Task, repeats: int, beam: int, weight: float) -> list:
    work = f"CTC beam {beam} + character {KENLM_MAX_ORDER}-gram (weight {weight})"
    shape = f"B={len(task.x)} T<={task.x.log_probs.shape[1]} V={task.x.log_probs.shape[2]}"
    why = peer_status("flashlight-text") or peer_status("torchaudio")
    try:  # the KenLM inside flashlight-text's wheel (the kenlm package is pyctcdecode's)
        importlib.import_module("flashlight.lib.text.decoder.kenlm").KenLM
    except Exception as exc:
        why = why or f"peer not installed: flashlight-text without KenLM ({exc})"
    if why:
        return [skipped("char_lm", work, why, shape=shape)]
    path, lm = task.char_lm()
    order = arpa_order(path)
    if order > KENLM_MAX_ORDER:
        return [skipped("char_lm", work, f"skipped: {path} is a {order}-gram; KenLM loads orders <= {KENLM_MAX_ORDER}")]
    lm_dict = task.lm_dir / "lm_dict_tokens.txt"  # LM index i = token i (without it the lexicon-free
    lm_dict.write_text("\n".join(task.token_list) + "\n", encoding="utf-8")  # decoder scores other tokens)
    config = DecodeConfig(search="beam", beam_size=beam, ngram_file=str(path), ngram_weight=weight, penalty=0.0)
    sides = {"ours": lambda: ours_search(task, config),
             "flashlight": lambda: flashlight_decoder(task, beam, lm=str(path), lm_dict=str(lm_dict), lm_weight=weight)}
    med, outs = lm_trials(sides, task, repeats)
    token_strings = task.token_list

    def objective(b, hyp):
        ids = canonical_ids(task, hyp)
        return ctc_loglik(task, task.x, b, ids) + weight * lm.sentence_logprob([token_strings[i] for i in ids])

    return [dict(row="char_lm", work=work, shape=shape, status="ok", lm=str(path), lm_order=order,
                 measurements=lm_measurements(med, "flashlight"), timings=med,
                 agreement={"flashlight": agreement(task, task.x, outs["ours"], outs["flashlight"], objective)},
                 notes="same ARPA file both sides; objective log P_ctc + w ln P_LM(tokens + </s>), no bonus; "
                       "flashlight lexicon-free, lm_weight = w ln 10, log_add, lm_dict = the token list")]


def write_lexicon(task: Task, words: list) -> Path:
    """flashlight's lexicon: each word spelled in characters and ``<space>`` (its silence token).
    The separator must end the spelling: at the root of the trie flashlight absorbs repeated
    frames of the silence token only, so a spelling without it cannot end on a letter that lasts
    more than one frame (its outputs then glue words together; measured: 13/16 items)."""
    path = task.lm_dir / "lexicon.txt"
    index = {t for t in task.token_list}
    lines = [f"{UNK} {UNK}"]  # flashlight's word dictionary needs <unk>
    for w in words:
        if w in ("<s>", "</s>", UNK) or not all(c in index for c in w):
            continue
        lines.append(f"{w} {' '.join(w)} {SPACE}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row_word_lm(task: Task, repeats: int, beam: int, weight: float, peers: tuple, name: str) -> list:
    work = f"CTC beam {beam} + word 3-gram through a lexicon (weight {weight})"
    shape = f"B={len(task.x)} T<={task.x.log_probs.shape[1]} V={task.x.log_probs.shape[2]}"
    if not task.is_char():
        return [skipped(name, work, "skipped: a word LM needs a character token list", shape=shape)]
    status, wanted = [], []
    for peer in peers:
        dist = "flashlight-text" if peer == "flashlight" else "pyctcdecode"
        why = peer_status(dist) or peer_status("torchaudio" if peer == "flashlight" else "kenlm")
        if why:
            status.append(f"{peer}: {why}")
        else:
            wanted.append(peer)
    if not wanted:
        return [skipped(name, work, "; ".join(status), shape=shape)]
    path, lm = task.word_lm()
    words = [w for w in lm.vocab if w not in ("<s>", "</s>", UNK)]
    lexicon = write_lexicon(task, words)
    config = DecodeConfig(search="beam", beam_size=beam, ngram_file=str(path), ngram_weight=weight, penalty=0.0,
                          ngram_unit="word")
    sides = {"ours": lambda: ours_search(task, config)}
    if "flashlight" in wanted:
        sides["flashlight"] = lambda: flashlight_decoder(task, beam, lm=str(path), lexicon=str(lexicon),
                                                         lm_weight=weight)
    if "pyctcdecode" in wanted:
        sides["pyctcdecode"] = lambda: pyctcdecode_decoder(task, beam, kenlm_path=str(path), unigrams=words,
                                                           alpha=weight)
    med, outs = lm_trials(sides, task, repeats)

    def objective(b, hyp):
        return ctc_loglik(task, task.x, b, canonical_ids(task, hyp)) + weight * lm.sentence_logprob(hyp[0].split())

    meas, agree = [], {}
    for peer in wanted:
        meas += lm_measurements(med, peer)
        agree[peer] = agreement(task, task.x, outs["ours"], outs[peer], objective)
    return [dict(row=name, work=work, shape=shape, status="ok" if not status else "; ".join(status), lm=str(path),
                 lexicon_words=len(words), measurements=meas, timings=med, agreement=agree,
                 notes="same ARPA file; objective log P_ctc + w ln P_LM(words + </s>), no word bonus; ours and "
                       "flashlight closed vocabulary (flashlight: unk_score -inf, lm_weight = w ln 10, log_add, "
                       "lexicon spellings end with <space> and each item gets one more frame, <space> with "
                       "probability 1, so its last word ends too; look-ahead by unigram scores after <s>); "
                       "pyctcdecode open vocabulary (alpha = w, beta 0, unk offset -10 log10, no look-ahead)")]


def row_espnet(task: Task, repeats: int, batch: int, beam: int = 10) -> list:
    x = task.x.head(batch)
    work = f"CTC prefix beam {beam}, no LM"
    shape = f"B={len(x)} T<={x.log_probs.shape[1]} V={x.log_probs.shape[2]}"
    why = peer_status("espnet")
    if why:
        return [skipped("espnet", work, why, shape=shape)]
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.beam_search import BeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer

    logging.getLogger("espnet").setLevel(logging.WARNING)
    logging.disable(logging.INFO)

    class LogProbs(torch.nn.Module):  # the "CTC module" of the scorer: its inputs are log-probs already
        def log_softmax(self, h):
            return torch.log_softmax(h, dim=-1)

    vocab = len(task.token_list)
    eos = task.token_list.index(SOS_EOS) if SOS_EOS in task.token_list else vocab - 1

    def espnet_run(cls):
        search = cls(scorers={"ctc": CTCPrefixScorer(LogProbs(), eos)}, weights={"ctc": 1.0}, beam_size=beam,
                     vocab_size=vocab, sos=eos, eos=eos, token_list=list(task.token_list), pre_beam_score_key=None)

        def run():
            out = []
            for b in range(len(x)):
                with torch.no_grad():
                    nbest = search(x.item(b), maxlenratio=0.0, minlenratio=0.0)
                ids = tuple(int(i) for i in nbest[0].yseq[1:-1]) if nbest else ()
                out.append((task.tokens_to_text(ids), ids))
            return out
        return run

    fns = {"ours": lambda: ours_beam(task, beam)(x), "espnet BatchBeamSearch": espnet_run(BatchBeamSearch),
           "espnet BeamSearch": espnet_run(BeamSearch)}
    seconds, outs = interleaved(fns, repeats)
    meas = [dict(peer=p, mode="batch (ESPnet per utterance)", ours_s=seconds["ours"], peer_s=seconds[p])
            for p in fns if p != "ours"]
    agree = {p: agreement(task, x, outs["ours"], outs[p]) for p in fns if p != "ours"}
    return [dict(row="espnet", work=work, shape=shape, status="ok", measurements=meas, agreement=agree,
                 notes="ESPnet: CTCPrefixScorer weight 1, pre_beam_score_key None, maxlenratio 0 (end detection), "
                       "label-synchronous; agreement objective: CTC log-likelihood")]


def row_cif(repeats: int, batch: int, frames: int, dim: int) -> list:
    work = "CIF (integrate-and-fire), threshold 1"
    shape = f"B={batch} T={frames} D={dim}"
    why = peer_status("funasr")
    if why:
        return [skipped("cif", work, why, shape=shape)]
    from funasr.models.paraformer.cif_predictor import cif as funasr_cif, cif_v1 as funasr_cif_v1

    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(batch, frames, dim, generator=gen)
    alphas = torch.rand(batch, frames, generator=gen) * 0.6
    lengths = torch.full((batch,), frames)
    fns = {"ours": lambda: cif(hidden, alphas, lengths), "funasr cif_v1": lambda: funasr_cif_v1(hidden, alphas, 1.0),
           "funasr cif": lambda: funasr_cif(hidden, alphas, 1.0)}
    seconds, outs = interleaved(fns, repeats)
    ours = outs["ours"]
    meas, agree = [], {}
    for p in ("funasr cif_v1", "funasr cif"):
        emb, fires = outs[p]
        counts = (fires >= 1.0).sum(1)
        n = int(counts.max())
        same_counts = torch.equal(counts.long(), ours.token_lengths)
        close = same_counts and torch.allclose(ours.embeddings[:, :n], emb[:, :n], atol=1e-3)
        meas.append(dict(peer=p, mode="batch", ours_s=seconds["ours"], peer_s=seconds[p]))
        agree[p] = dict(counts_equal=same_counts, embeddings_close=bool(close),
                        max_abs_diff=float((ours.embeddings[:, :n] - emb[:, :n]).abs().max()) if same_counts else None)
    return [dict(row="cif", work=work, shape=shape, status="ok", measurements=meas, agreement=agree,
                 notes="alphas U(0, 0.6); ours integrates in float64; FunASR cif_v1 cumsum float64 -> float32")]


def row_align(repeats: int, batches=(32,), frames: int = 500, tokens: int = 60, vocab: int = 100) -> list:
    rows = []
    for batch in batches:
        work = "CTC forced alignment (Viterbi)"
        shape = f"B={batch} T={frames} L={tokens} V={vocab}"
        why = peer_status("torchaudio")
        if why:
            rows.append(skipped("align", work, why, shape=shape))
            continue
        import torchaudio

        gen = torch.Generator().manual_seed(0)
        log_probs = torch.randn(batch, frames, vocab, generator=gen).log_softmax(-1)
        targets = torch.randint(1, vocab, (batch, tokens), generator=gen)
        lengths = torch.full((batch,), frames)
        target_lengths = torch.full((batch,), tokens)

        def loop():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.cat([torchaudio.functional.forced_align(log_probs[b:b + 1], targets[b:b + 1].int(),
                                                                     blank=0)[0] for b in range(batch)]).long()

        fns = {"ours": lambda: forced_align(log_probs, lengths, targets, target_lengths)[0],
               "torchaudio loop": loop}
        seconds, outs = interleaved(fns, repeats)
        rows.append(dict(row="align", work=work, shape=shape, status="ok",
                         measurements=[dict(peer="torchaudio loop", mode="batch", ours_s=seconds["ours"],
                                            peer_s=seconds["torchaudio loop"])],
                         agreement={"torchaudio loop": dict(identical=torch.equal(outs["ours"],
                                                                                  outs["torchaudio loop"]))},
                         notes="nar.align.forced_align backend auto (torchaudio's kernel per item on CPU)"))
    return rows


def write_am_mvn(path: Path, shift, rescale) -> None:
    """A Kaldi nnet1 text CMVN file (FunASR's am.mvn)."""
    dim = len(shift)
    fmt = lambda v: " ".join(f"{float(x):.6f}" for x in v)  # noqa: E731
    path.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
                    f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(rescale)} ]\n</Nnet>\n", encoding="utf-8")


def row_paraformer(repeats: int, quick: bool, work_dir: Path) -> list:
    work = "Paraformer greedy (encoder + CIF predictor + decoder), same converted weights"
    why = peer_status("funasr")
    if why:
        return [skipped("paraformer", work, why)]
    import yaml
    from funasr.frontends.wav_frontend import apply_cmvn, load_cmvn
    from funasr.models.paraformer.model import Paraformer

    from asr.convert.funasr_paraformer import convert
    from asr.inference import Speech2Text

    size = dict(output_size=64, heads=2, units=128, blocks=2, dec_blocks=1, vocab=100, n_mels=40, frames=200) if quick \
        else dict(output_size=256, heads=4, units=1024, blocks=6, dec_blocks=3, vocab=400, n_mels=80, frames=600)
    torch.manual_seed(0)
    toks = ["<blank>", "<s>", "</s>", *[f"t{i}" for i in range(size["vocab"] - 4)], "<unk>"]
    config = {
        "model": "Paraformer",
        "model_conf": dict(ctc_weight=0.3, lsm_weight=0.1, length_normalized_loss=False, predictor_weight=1.0,
                           sampling_ratio=0.4),
        "encoder": "ConformerEncoder",
        "encoder_conf": dict(output_size=size["output_size"], attention_heads=size["heads"],
                             linear_units=size["units"], num_blocks=size["blocks"], input_layer="conv2d",
                             macaron_style=True, cnn_module_kernel=15, pos_enc_layer_type="rel_pos",
                             selfattention_layer_type="rel_selfattn"),
        "decoder": "ParaformerSANDecoder",
        "decoder_conf": dict(attention_heads=size["heads"], linear_units=size["units"],
                             num_blocks=size["dec_blocks"], dropout_rate=0.1, positional_dropout_rate=0.1,
                             self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0),
        "predictor": "CifPredictorV2",
        "predictor_conf": dict(idim=size["output_size"], threshold=1.0, l_order=1, r_order=1, tail_threshold=0.45),
        "frontend": "WavFrontend",
        "frontend_conf": dict(fs=16000, window="hamming", n_mels=size["n_mels"], frame_length=25, frame_shift=10,
                              lfr_m=1, lfr_n=1),
        "specaug": None,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": dict(unk_symbol="<unk>", split_with_space=True),
        "ctc_conf": dict(dropout_rate=0.0, ctc_type="builtin", reduce=True, ignore_nan_grad=True),
        "normalize": None,
    }
    parts = {k: config[k] for k in ("encoder", "encoder_conf", "decoder", "decoder_conf", "predictor",
                                    "predictor_conf", "ctc_conf")}
    model = Paraformer(**config["model_conf"], **parts, input_size=size["n_mels"], vocab_size=len(toks))
    with torch.no_grad():  # predictor weights around 0.3 per encoder frame: a token every ~3 frames
        model.predictor.cif_output.weight.mul_(0.3)
        model.predictor.cif_output.bias.fill_(math.log(0.3 / 0.7))
    model.eval()
    src, dst = work_dir / "funasr_paraformer", work_dir / "converted"
    src.mkdir(parents=True, exist_ok=True)
    (src / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    torch.save(model.state_dict(), src / "model.pt")
    (src / "tokens.json").write_text(json.dumps(toks), encoding="utf-8")
    g = torch.Generator().manual_seed(0)
    write_am_mvn(src / "am.mvn", (-(5 + 7 * torch.rand(size["n_mels"], generator=g))).tolist(),
                 (0.2 + 0.6 * torch.rand(size["n_mels"], generator=g)).tolist())
    convert(src, dst)
    ours_model = Speech2Text(dst).model.eval()
    cmvn = load_cmvn(str(src / "am.mvn"))
    special = {model.blank_id, model.sos, model.eos}

    def funasr_run(feats, lengths):
        with torch.no_grad():
            normed = torch.stack([apply_cmvn(f.clone(), cmvn) for f in feats])
            enc, enc_lens = model.encode(normed, lengths)
            embeds, token_num, _, _ = model.calc_predictor(enc, enc_lens)
            counts = token_num.round().long()
            log_probs, _ = model.cal_decoder_with_predictor(enc, enc_lens, embeds, counts)
            ids = log_probs.argmax(-1)
        return [[t for t in ids[b, :int(counts[b])].tolist() if t not in special] for b in range(len(feats))]

    def ours_run(feats, lengths):
        with torch.no_grad():
            return [list(t) for t in ours_model.recognize(ours_model.encode_feats(feats.clone(), lengths)).token_ids]

    def alone(run, feats, lengths):
        return [run(feats[b:b + 1, :int(n)], lengths[b:b + 1])[0] for b, n in enumerate(lengths.tolist())]

    rows = []
    arch = f"conformer {size['blocks']}x{size['output_size']}, decoder {size['dec_blocks']}, V={len(toks)}"
    for batch, padded in ((1, False), (16, False), (16, True)):
        gen = torch.Generator().manual_seed(batch)
        frames = size["frames"]
        lengths = torch.full((batch,), frames)
        if padded:
            lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
            lengths[0] = frames
        feats = torch.randn(batch, frames, size["n_mels"], generator=gen) * 2.0 + 8.0
        feats = feats * (torch.arange(frames)[None, :, None] < lengths[:, None, None])
        fns = {"ours": lambda: ours_run(feats, lengths), "funasr": lambda: funasr_run(feats, lengths)}
        seconds, outs = interleaved(fns, repeats)
        same = sum(a == b for a, b in zip(outs["ours"], outs["funasr"]))
        agree = dict(identical_items=same, items=batch, tokens=sum(len(t) for t in outs["funasr"]))
        note = ""
        if padded:  # is each side's batch result its items' results alone?
            for side, run in (("funasr", funasr_run), ("ours", ours_run)):
                items = alone(run, feats, lengths)
                agree[f"{side}_batch_equals_alone"] = sum(a == b for a, b in zip(outs[side], items))
            note = ("; padded batch: FunASR's conv2d subsampling derives a padded item's encoder length from the "
                    "subsampled padded mask, so some items get more encoder frames (and tokens) in a batch than alone")
        rows.append(dict(row="paraformer", work=work,
                         shape=f"B={batch} T{'<=' if padded else '='}{frames} fbank {size['n_mels']} ({arch})",
                         status="ok",
                         measurements=[dict(peer="funasr", mode="batch, padded lengths" if padded else "batch",
                                            ours_s=seconds["ours"], peer_s=seconds["funasr"])],
                         agreement={"funasr": agree},
                         notes="random-init FunASR Paraformer (no weights shipped here), converted by "
                               "asr.convert.funasr_paraformer; FunASR side: apply_cmvn, encode, calc_predictor, "
                               "cal_decoder_with_predictor, argmax (its inference() steps, batched)" + note))
    return rows


# ============================================================================================
# Report
# ============================================================================================
def fmt_ms(s: Optional[float]) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def table(rows: list) -> str:
    lines = ["| row | work | shape | peer | mode | ours ms | peer ms | ours/peer | agreement |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if not r["measurements"]:
            lines.append(f"| {r['row']} | {r['work']} | {r.get('shape', '-')} | - | - | - | - | - | {r['status']} |")
            continue
        shown = set()
        for m in r["measurements"]:
            a = r.get("agreement", {}).get(m["peer"], {})
            if m["peer"] in shown:
                agree = "(as above)"
            elif "top1_equal" in a:
                agree = agreement_text(a)
            elif "identical_items" in a:
                agree = f"{a['identical_items']}/{a['items']} identical ({a['tokens']} tokens)"
                if "funasr_batch_equals_alone" in a:
                    agree += (f"; batch = alone: FunASR {a['funasr_batch_equals_alone']}/{a['items']}, "
                              f"ours {a['ours_batch_equals_alone']}/{a['items']}")
            elif "counts_equal" in a:
                agree = f"counts equal: {a['counts_equal']}; embeddings close: {a['embeddings_close']}"
            elif "identical" in a:
                agree = f"identical: {a['identical']}"
            else:
                agree = "-"
            shown.add(m["peer"])
            rat = ratio(m["ours_s"], m["peer_s"])
            lines.append(f"| {r['row']} | {r['work']} | {r['shape']} | {m['peer']} | {m['mode']} | "
                         f"{fmt_ms(m['ours_s'])} | {fmt_ms(m['peer_s'])} | "
                         f"{'-' if rat is None else f'{rat:.3g}'} | {agree} |")
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | {r['work']} | {r['shape']} | - | - | - | - | - | {r['status']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 repeats (a smoke test)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side (median; default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (a .md table is written beside it)")
    parser.add_argument("--exp_dir", type=Path, default=None,
                        help=f"a CTC model dir of a recipe (default: {DEFAULT_EXP.relative_to(ROOT)} if it exists)")
    parser.add_argument("--data_dir", type=Path, default=None, help="with --exp_dir: data dir (default dump/raw/test)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic inputs even if the demo model exists")
    parser.add_argument("--char_lm_weight", type=float, default=0.5)
    parser.add_argument("--word_lm_weight", type=float, default=0.5)
    args = parser.parse_args(argv)
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows_wanted if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    torch.set_num_threads(1)
    repeats = args.repeats or (3 if args.quick else 5)
    batch = 4 if args.quick else 16
    load_before = os.getloadavg()
    started = time.time()
    work_dir = Path(tempfile.mkdtemp(prefix="nar_peers_"))
    default_exp = DEFAULT_EXP if (DEFAULT_EXP / "config.yaml").is_file() else None
    exp_dir = None if args.synthetic else (args.exp_dir or default_exp)

    task = None
    if any(r in rows_wanted for r in ("espnet", "beam", "char_lm", "word_lm_lexicon", "word_lm")):
        if exp_dir is not None:
            task = exp_task(exp_dir, args.data_dir, batch, work_dir)
        else:
            task = synthetic_task(batch, 400 if args.quick else 3000, 120 if args.quick else 400, work_dir)
        print(f"inputs: {task.source}", file=sys.stderr)

    rows = []
    for name in ROWS:
        if name not in rows_wanted:
            continue
        print(f"[{time.time() - started:6.0f} s] row {name}", file=sys.stderr)
        try:
            if name == "paraformer":
                rows += row_paraformer(repeats, args.quick, work_dir)
            elif name == "espnet":
                rows += row_espnet(task, repeats, batch=2 if args.quick else 4)
            elif name == "cif":
                rows += row_cif(repeats, *((4, 120, 64) if args.quick else (16, 500, 256)))
            elif name == "beam":
                rows += row_beam(task, repeats)
            elif name == "char_lm":
                rows += row_char_lm(task, repeats, beam=20, weight=args.char_lm_weight)
            elif name == "word_lm_lexicon":
                rows += row_word_lm(task, repeats, 10, args.word_lm_weight, ("flashlight",), "word_lm_lexicon")
            elif name == "word_lm":
                rows += row_word_lm(task, repeats, 20, args.word_lm_weight, ("flashlight", "pyctcdecode"), "word_lm")
            elif name == "align":
                rows += row_align(repeats, batches=(8,) if args.quick else (32,),
                                  **(dict(frames=120, tokens=20, vocab=40) if args.quick else {}))
        except Exception as exc:  # a failing row is reported, the others still run
            rows.append(skipped(name, name, f"error: {type(exc).__name__}: {exc}",
                                traceback=traceback.format_exc(limit=6)))
    shutil.rmtree(work_dir, ignore_errors=True)  # ARPA files, lexicon, the Paraformer dirs
    for r in rows:
        for m in r["measurements"]:
            m["ratio"] = ratio(m["ours_s"], m["peer_s"])
    text = table(rows)
    print(text)
    command = " ".join(["python bench/peers.py"] + (list(argv) if argv is not None else sys.argv[1:]))
    meta = dict(command=command, threads=1, repeats=repeats, quick=args.quick,
                machine=dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                             cpu_count=os.cpu_count(), python=platform.python_version()),
                load_average_before=load_before, load_average_after=os.getloadavg(),
                seconds=round(time.time() - started, 1), date=time.strftime("%Y-%m-%d"),
                versions={d: version(d) for d in ("torch", "torchaudio", "numpy", "funasr", "espnet", "flashlight-text",
                                                  "pyctcdecode", "kenlm")},
                peers_missing={d: why for d in PEERS if (why := peer_status(d))},
                inputs=task.source if task else "each row's own (see its notes)", lm_notes=task.notes if task else {},
                lm_weights=dict(char=args.char_lm_weight, word=args.word_lm_weight))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2, default=str) + "\n")
    md = args.out.with_suffix(".md")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    seen, notes = set(), []
    for r in rows:
        if r.get("notes") and (r["row"], r["notes"]) not in seen:
            seen.add((r["row"], r["notes"]))
            notes.append(f"- {r['row']}: {r['notes']}")
    notes = "\n".join(notes)
    lm_notes = "".join(f" {k}: {v}." for k, v in meta["lm_notes"].items())
    md.write_text(f"# nar-speech vs peers\n\n`{command}` — 1 thread each side, interleaved repeats, median of "
                  f"{repeats}; {meta['machine']['processor']}, {os.cpu_count()} CPUs, {meta['date']}; "
                  f"{versions}.\n\nInputs: {meta['inputs']}.{lm_notes} Ratio < 1: nar-speech is faster. "
                  f"Modes and agreement: see the docstring of bench/peers.py.\n\n{text}\n\nNotes:\n\n{notes}\n",
                  encoding="utf-8")
    print(f"\nwrote {args.out} and {md} ({meta['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
