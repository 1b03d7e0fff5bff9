"""Token n-gram language models for shallow fusion in CTC prefix beam search.

An :class:`NgramLM` is an ARPA back-off model over the ASR model's own tokens (characters with
``<space>``, or BPE pieces), the n-gram counterpart of ESPnet's ``--use_ngram`` stage (which calls
KenLM's ``lmplz``). :func:`train_ngram` estimates one with **interpolated modified Kneser-Ney**
smoothing (Chen & Goodman 1998, the estimator ``lmplz`` implements), written as ARPA: for a seen
n-gram ``h w`` the file holds the interpolated probability ``p(w | h)``, and ``h``'s back-off
weight is the interpolation weight ``gamma(h)``, so back-off scoring reproduces the interpolated
model exactly. :meth:`NgramLM.load` reads any ARPA file (one written by ``lmplz`` too, if its
words are the token strings).

Estimation, for order n with adjusted counts ``a`` (raw counts for the highest order and for
n-grams that start with ``<s>``; otherwise the number of distinct words seen before the
n-gram, the "continuation count")::

    p(w | h) = max(a(h w) - D(a(h w)), 0) / sum_v a(h v) + gamma(h) * p(w | h')
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3 N3+(h .)) / sum_v a(h v)

with ``h'`` = ``h`` without its first token, ``N_k(h .)`` the number of words with adjusted count
k after ``h``, and per-order discounts from the count-of-counts ``n_k``: ``Y = n1 / (n1 + 2 n2)``,
``D_k = k - (k + 1) Y n_{k+1} / n_k``. The unigram level interpolates with the uniform
distribution over the vocabulary (every token of the token list, ``</s>`` and ``<unk>``; not
``<s>``), so every token has a probability and every context's distribution sums to one.

Shapes: N prefixes, C candidate tokens, V tokens of the ASR token list.
"""

from __future__ import annotations

import gzip
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from nar.base.files import atomic_path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: ASR token-list entries that are not words of the LM
ASR_SPECIAL = ("<blank>", "<sos/eos>")
LN10 = math.log(10.0)
#: log10 probability ARPA files give ``<s>`` (never predicted)
ARPA_NEVER = -99.0


class ArpaError(ValueError):
    """A malformed or unusable ARPA file (the message names the file and line)."""


@dataclass(frozen=True)
class Discounts:
    """Modified Kneser-Ney discounts of one order: for adjusted counts 1, 2 and >= 3."""

    d1: float
    d2: float
    d3: float

    def __call__(self, count: int) -> float:
        return self.d1 if count == 1 else self.d2 if count == 2 else self.d3


def discounts_from_counts(counts: Iterable[int]) -> Discounts:
    """Chen & Goodman's discount estimates from the adjusted counts of one order.

    With too few n-grams for the estimate (a count-of-count is 0, or a discount falls outside
    ``(0, k)``) that discount falls back to ``k / 2`` — small corpora still give a proper model.
    """
    coc = Counter(min(int(c), 4) for c in counts)
    n1, n2, n3, n4 = (coc.get(k, 0) for k in (1, 2, 3, 4))
    fallback = (0.5, 1.0, 1.5)
    if n1 == 0 or n2 == 0:
        return Discounts(*fallback)
    y = n1 / (n1 + 2 * n2)
    est = []
    for k, (nk, nk1) in enumerate(((n1, n2), (n2, n3), (n3, n4)), start=1):
        d = k - (k + 1) * y * nk1 / nk if nk > 0 else fallback[k - 1]
        est.append(d if 0.0 < d < k else fallback[k - 1])
    return Discounts(*est)


def _adjusted_counts(sentences: Iterable[Sequence[str]], order: int) -> list[dict]:
    """``counts[n-1][ngram]`` = adjusted count of every n-gram (n = 1..order), see the module doc."""
    raw: list[Counter] = [Counter() for _ in range(order)]
    for sent in sentences:
        words = [BOS, *sent, EOS]
        for i in range(1, len(words)):  # n-grams ending at word i (never predict <s>)
            for n in range(1, order + 1):
                if i - n + 1 < 0:
                    break
                raw[n - 1][tuple(words[i - n + 1:i + 1])] += 1
    adjusted: list[dict] = [dict() for _ in range(order)]
    adjusted[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):
        left = Counter(g[1:] for g in raw[n])  # distinct left extensions of each n-gram
        adjusted[n - 1] = {g: (c if g[0] == BOS else left.get(g, c)) for g, c in raw[n - 1].items()}
    return adjusted


def train_ngram(sentences: Iterable[Sequence[str]], order: int, vocab: Sequence[str]) -> "NgramLM":
    """Estimate an interpolated modified Kneser-Ney model of ``order`` from token sequences.

    Args:
        sentences: each a sequence of tokens (strings, without ``<s>``/``</s>``). Tokens not in
            ``vocab`` become ``<unk>``.
        order: n-gram order (>= 1).
        vocab: every token the model must score (the ASR token list minus ``<blank>`` and
            ``<sos/eos>``); ``</s>`` and ``<unk>`` are added.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    words = [w for w in dict.fromkeys([*vocab, EOS, UNK]) if w not in (BOS, *ASR_SPECIAL)]
    known = set(words)
    sents = [[t if t in known else UNK for t in s] for s in sentences]
    if not any(sents):
        raise ValueError("no training text: every sentence is empty")
    counts = _adjusted_counts(sents, order)
    # successors of every context, per order: context -> {word: adjusted count}
    probs: list[dict] = [dict() for _ in range(order)]
    backoff: dict[tuple, float] = {}
    uniform = 1.0 / len(words)
    for n in range(1, order + 1):
        disc = discounts_from_counts(counts[n - 1].values())
        by_context: dict[tuple, dict] = defaultdict(dict)
        for g, c in counts[n - 1].items():
            by_context[g[:-1]][g[-1]] = c
        for h, succ in by_context.items():
            total = sum(succ.values())
            kinds = Counter(min(c, 3) for c in succ.values())
            gamma = (disc.d1 * kinds[1] + disc.d2 * kinds[2] + disc.d3 * kinds[3]) / total
            for w, c in succ.items():
                p_lower = uniform if n == 1 else _interpolated(probs, backoff, h[1:], w, uniform)
                probs[n - 1][h + (w,)] = max(c - disc(c), 0.0) / total + gamma * p_lower
            backoff[h] = gamma
    for w in words:  # tokens never seen in the text: the uniform share only
        if (w,) not in probs[0]:
            probs[0][(w,)] = backoff[()] * uniform
    logp = {g: math.log(p) for level in probs for g, p in level.items()}
    logp[(BOS,)] = ARPA_NEVER * LN10
    bo = {h: math.log(g) for h, g in backoff.items() if h and g > 0}
    return NgramLM(order, logp, bo)


def _interpolated(probs: list, backoff: dict, h: tuple, w: str, uniform: float) -> float:
    """p(w | h) of the model estimated so far (orders < len(h) + 2), by back-off."""
    weight = 1.0
    while True:
        p = probs[len(h)].get(h + (w,))
        if p is not None:
            return weight * p
        if not h:
            return weight * backoff.get((), 1.0) * uniform
        weight *= backoff.get(h, 1.0)
        h = h[1:]


class NgramLM:
    """A back-off n-gram model (ARPA semantics) over token strings.

    ``logp[g]`` is the natural-log probability of n-gram ``g`` (a tuple of words) and
    ``backoff[h]`` the natural-log back-off weight of context ``h``.
    """

    def __init__(self, order: int, logp: dict, backoff: dict, source: str = "<memory>"):
        self.order, self.logp, self.backoff, self.source = order, logp, backoff, source
        self.vocab = sorted({g[0] for g in logp if len(g) == 1})
        if EOS not in self.vocab:
            raise ArpaError(f"{source}: no unigram {EOS!r}")
        self.index = {w: i for i, w in enumerate(self.vocab)}
        # successors of each context as plain lists (tensors are made per context on first use)
        self._successors: dict[tuple, tuple[list, list]] = {}
        for g, lp in logp.items():
            succ = self._successors.get(g[:-1])
            if succ is None:
                succ = self._successors[g[:-1]] = ([], [])
            succ[0].append(self.index[g[-1]])
            succ[1].append(lp)
        self._cache: dict[tuple, Tensor] = {}

    # ------------------------------------------------------------------ scoring
    def logprob(self, context: Sequence[str], word: str) -> float:
        """Natural-log ``p(word | context)``; ``context`` starts with ``<s>`` at a sentence start.
        Unknown words score as ``<unk>``."""
        index = self.index.get(word, self.index.get(UNK))
        if index is None:
            raise KeyError(f"{self.source}: {word!r} is not a word of this LM, which has no {UNK!r}")
        return float(self.next_logprobs(context)[index])

    def next_logprobs(self, context: Sequence[str]) -> Tensor:
        """Natural-log ``p(. | context)`` over :attr:`vocab` (float64, (V_lm,)); cached."""
        h = tuple(context)[max(0, len(context) - self.order + 1):] if self.order > 1 else ()
        vec = self._cache.get(h)
        if vec is None:
            if h:
                vec = self.next_logprobs(h[1:]) + self.backoff.get(h, 0.0)
            else:
                vec = torch.full((len(self.vocab),), ARPA_NEVER * LN10, dtype=torch.float64)
            succ = self._successors.get(h)
            if succ is not None:
                vec = vec.clone()
                vec[torch.tensor(succ[0])] = torch.tensor(succ[1], dtype=torch.float64)
            self._cache[h] = vec
        return vec

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """Natural-log probability of a whole sentence, ``</s>`` included."""
        ctx, total = [BOS], 0.0
        for w in [*words, EOS]:
            total += self.logprob(ctx, w)
            ctx.append(w)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> tuple[float, int]:
        """Per-token perplexity (``</s>`` counted, as KenLM and SRILM do) and the token count."""
        total, n = 0.0, 0
        for s in sentences:
            total += self.sentence_logprob(s)
            n += len(s) + 1
        return (math.exp(-total / n) if n else float("nan")), n

    # ------------------------------------------------------------------ ARPA I/O
    def write_arpa(self, path: str) -> None:
        """Write the model as an ARPA file (log10 values, ``.gz`` compressed if the name says so)."""
        by_order: list[list] = [[] for _ in range(self.order)]
        for g in self.logp:
            by_order[len(g) - 1].append(g)
        opener = gzip.open if str(path).endswith(".gz") else open
        with atomic_path(path) as tmp, opener(tmp, "wt", encoding="utf-8") as f:
            f.write("\n\\data\\\n")
            for n, grams in enumerate(by_order, start=1):
                f.write(f"ngram {n}={len(grams)}\n")
            for n, grams in enumerate(by_order, start=1):
                f.write(f"\n\\{n}-grams:\n")
                for g in sorted(grams):
                    line = f"{self.logp[g] / LN10:.7f}\t{' '.join(g)}"
                    if n < self.order and g in self.backoff:
                        line += f"\t{self.backoff[g] / LN10:.7f}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")

    @classmethod
    def load(cls, path: str) -> "NgramLM":
        """Read an ARPA file (plain or ``.gz``). Raises :class:`ArpaError` naming the file and line."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"n-gram LM {path} does not exist")
        opener = gzip.open if path.endswith(".gz") else open
        logp: dict[tuple, float] = {}
        backoff: dict[tuple, float] = {}
        declared: dict[int, int] = {}
        section: Optional[int] = None
        seen_data = ended = False
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                where = f"{path}:{lineno}"
                if line == "\\data\\":
                    seen_data = True
                    continue
                if line == "\\end\\":
                    ended = True
                    break
                if line.startswith("ngram ") and section is None:
                    try:
                        n, count = line[6:].split("=")
                        declared[int(n)] = int(count)
                    except ValueError:
                        raise ArpaError(f"{where}: bad count line {line!r}") from None
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    try:
                        section = int(line[1:-7])
                    except ValueError:
                        raise ArpaError(f"{where}: bad section header {line!r}") from None
                    continue
                if not seen_data or section is None:
                    raise ArpaError(f"{where}: expected \\data\\ and a section header, got {line!r}")
                fields = line.split()
                if len(fields) not in (section + 1, section + 2):
                    raise ArpaError(f"{where}: a {section}-gram line needs {section + 1} or {section + 2} "
                                    f"fields, got {len(fields)}: {line!r}")
                try:
                    lp = float(fields[0])
                    bo = float(fields[section + 1]) if len(fields) == section + 2 else None
                except ValueError:
                    raise ArpaError(f"{where}: not a number in {line!r}") from None
                gram = tuple(fields[1:section + 1])
                logp[gram] = lp * LN10
                if bo is not None:
                    backoff[gram] = bo * LN10
        if not seen_data or not ended:
            raise ArpaError(f"{path}: not an ARPA file (no \\data\\ ... \\end\\)")
        order = max(declared) if declared else 0
        got = Counter(len(g) for g in logp)
        for n, count in declared.items():
            if got.get(n, 0) != count:
                raise ArpaError(f"{path}: header says {count} {n}-grams, the file has {got.get(n, 0)}")
        if order < 1:
            raise ArpaError(f"{path}: no n-grams")
        return cls(order, logp, backoff, source=path)

    # ------------------------------------------------------------------ fusion
    def scorer(self, token_list: Sequence[str], length_bonus: float = 0.0) -> "TokenLMScorer":
        """The prefix-beam-search hook for an ASR model with ``token_list`` (see
        :class:`TokenLMScorer`)."""
        return TokenLMScorer(self, token_list, length_bonus)


class TokenLMScorer:
    """Adapter from an :class:`NgramLM` to :func:`nar.ctc.ctc_prefix_beam_search`'s ``lm_score_fn``.

    ASR token ids map to LM words by their strings (``<sos/eos>`` to ``</s>``, tokens the LM
    does not know to ``<unk>``). ``__call__(prefixes, next_tokens)`` returns ``log p_LM(next |
    prefix) + length_bonus`` (N, C); :meth:`end_logprob` is ``log p_LM(</s> | prefix)``.
    """

    def __init__(self, lm: NgramLM, token_list: Sequence[str], length_bonus: float = 0.0):
        unk = lm.index.get(UNK)
        missing = [t for t in token_list if t not in lm.index and t not in ASR_SPECIAL]
        if missing and unk is None:
            raise ArpaError(f"{lm.source}: the LM knows neither tokens {missing[:5]} of the ASR token list "
                            f"nor {UNK!r}; train it on this token list")
        known = len(token_list) - len(missing) - sum(t in ASR_SPECIAL for t in token_list)
        if known == 0:
            raise ArpaError(f"{lm.source}: no token of the ASR token list is a word of this LM "
                            f"(LM words: {lm.vocab[:8]}...); was it trained on another token type?")
        ids = []
        for t in token_list:
            if t == "<sos/eos>":
                ids.append(lm.index[EOS])
            else:
                ids.append(lm.index.get(t, unk if unk is not None else 0))
        self.lm, self.length_bonus = lm, float(length_bonus)
        self.to_lm = torch.tensor(ids)
        self._to_lm = [lm.vocab[i] for i in ids]
        self.eos = lm.index[EOS]

    def _context(self, prefix: Sequence[int]) -> tuple:
        """The LM context of an ASR prefix: its last order-1 tokens, after ``<s>`` if shorter."""
        keep = self.lm.order - 1
        if keep == 0:
            return ()
        tail = tuple(self._to_lm[t] for t in prefix[max(0, len(prefix) - keep):])
        return (BOS, *tail) if len(prefix) < keep else tail

    def __call__(self, prefixes: list, next_tokens: Tensor) -> Tensor:
        table = torch.stack([self.lm.next_logprobs(self._context(p)) for p in prefixes])  # (N, V_lm)
        scores = table.gather(1, self.to_lm[next_tokens.cpu()])
        return (scores + self.length_bonus).to(torch.float32)

    def end_logprob(self, prefix: Sequence[int]) -> float:
        return float(self.lm.next_logprobs(self._context(prefix))[self.eos])


__all__ = ["NgramLM", "TokenLMScorer", "train_ngram", "discounts_from_counts", "Discounts", "ArpaError"]
