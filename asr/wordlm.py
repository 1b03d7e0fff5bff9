"""Word n-gram LMs with a lexicon for character CTC prefix beam search.

A character CTC model spells words; a word n-gram LM scores words. :class:`WordLMScorer` joins
the two the way lexicon decoders (Kaldi's and flashlight's look-ahead trees, WeNet's TLG)
do, as the ``lm_score_fn`` of :func:`nar.ctc.ctc_prefix_beam_search`:

* the **lexicon** is a prefix tree (trie) of the LM's words spelled in the model's character
  tokens; a prefix whose last, unfinished word leaves the tree is impossible (closed vocabulary)
  or, with ``oov_penalty`` set, becomes an out-of-vocabulary word scored as ``<unk>`` plus that
  penalty;
* **look-ahead**: a partial word ``u`` after the word history ``h`` carries
  ``LA(h, u) = max_{w starts with u} log p(w | h)`` (``LA(h, "") = 0``), so every character is
  charged ``LA(h, u c) - LA(h, u)`` as it is emitted, and ``<space>`` after a complete word ``w``
  is charged ``log p(w | h) - LA(h, w)``. Summed over a finished hypothesis this telescopes to
  the exact word LM log-probability of its words: the look-ahead only moves the LM score
  earlier, so the beam does not keep words the LM rules out until their last letter;
* :meth:`WordLMScorer.end_logprob` finishes the last word and adds ``log p(</s> | h)``.

Only character token lists are supported (a BPE piece can span word boundaries in ways this
tree does not model); the error says so.

Shapes: N prefixes, C candidate tokens, V tokens of the ASR token list.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Optional, Sequence

import torch
from torch import Tensor

from asr.lm import ASR_SPECIAL, BOS, EOS, UNK, ArpaError, NgramLM

SPACE = "<space>"
NEG_INF = -math.inf


class Lexicon:
    """A prefix tree over words spelled in character tokens.

    Node 0 is the root (the empty partial word). Words are kept in sorted order, so the words
    under a node are the contiguous range ``[lo[node], hi[node])`` of :attr:`words`.
    """

    def __init__(self, words: Sequence[str], token_list: Sequence[str]):
        char_ids = {t: i for i, t in enumerate(token_list) if len(t) == 1}
        self.words: list[str] = sorted({w for w in words if w and all(c in char_ids for c in w)})
        self.unspellable = sorted({w for w in words if w and not all(c in char_ids for c in w)})
        if not self.words:
            raise ValueError("no word of the LM can be spelled with the model's character tokens "
                             f"(e.g. {list(words)[:5]}); is the LM over words and the model over characters?")
        self.children: list[dict] = [{}]
        self.word_at: list[Optional[int]] = [None]  # index into self.words of the word ending here
        self.lo, self.hi = [0], [len(self.words)]
        for index, word in enumerate(self.words):
            node = 0
            for depth, ch in enumerate(word):
                tok = char_ids[ch]
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][tok] = nxt
                    self.children.append({})
                    self.word_at.append(None)
                    prefix = word[: depth + 1]
                    # sorted words: the range of words starting with prefix
                    self.lo.append(bisect_left(self.words, prefix))
                    self.hi.append(bisect_left(self.words, prefix + "\U0010ffff"))
                node = nxt
            self.word_at[node] = index

    def __len__(self) -> int:
        return len(self.words)

    def node_of(self, partial: str, token_list: Sequence[str]) -> Optional[int]:
        """Node of a partial word (None if no word starts with it); for tests and debugging."""
        ids = {t: i for i, t in enumerate(token_list)}
        node = 0
        for ch in partial:
            node = self.children[node].get(ids.get(ch, -1))
            if node is None:
                return None
        return node


class WordLMScorer:
    """A word :class:`asr.lm.NgramLM` with a :class:`Lexicon`, as the ``lm_score_fn`` of
    :func:`nar.ctc.ctc_prefix_beam_search` for a character CTC model.

    Args:
        lm: the word n-gram LM (``python -m asr.bin.train_ngram --token_type word``).
        token_list: the ASR model's tokens (single characters, ``<space>``, specials).
        length_bonus: added per emitted character token (in LM units, like
            :class:`asr.lm.TokenLMScorer`).
        oov_penalty: None: closed vocabulary (a spelling outside the lexicon scores -inf);
            a number: such a word is allowed and scores ``log p(<unk> | h) + oov_penalty``.
        lexicon: words the decoder may spell (default: the LM's words).

    ``__call__(prefixes, next_tokens)`` returns the (N, C) LM increments described in the module
    docs; :meth:`end_logprob` finishes a prefix; :meth:`prefix_logprob` is their sum over a
    finished hypothesis (the exact word LM log-probability plus OOV penalties, for tests).
    """

    def __init__(self, lm: NgramLM, token_list: Sequence[str], length_bonus: float = 0.0,
                 oov_penalty: Optional[float] = None, lexicon: Optional[Sequence[str]] = None):
        specials = set(ASR_SPECIAL) | {BOS, EOS, UNK}
        if SPACE not in token_list:
            raise ArpaError(f"{lm.source}: a word LM needs a character model with a {SPACE!r} token; "
                            f"this token list has none (a BPE model? use a token n-gram LM instead)")
        multi = [t for t in token_list if len(t) > 1 and t not in specials and t != SPACE]
        if multi:
            raise ArpaError(f"{lm.source}: a word LM works with character token lists only; this one has "
                            f"multi-character tokens {multi[:5]} (BPE?); use a token n-gram LM instead")
        words = [w for w in (lm.vocab if lexicon is None else lexicon) if w not in specials]
        if SPACE in lm.index or (words and max(len(w) for w in words) <= 1):
            raise ArpaError(f"{lm.source}: its words are single characters or {SPACE!r} ({lm.vocab[:8]}): this is "
                            f"a token LM; ngram_unit 'word' needs an LM over words (train_ngram --token_type word)")
        self.lexicon = Lexicon(words, token_list)
        missing = [w for w in self.lexicon.words if w not in lm.index]
        if missing and UNK not in lm.index:
            raise ArpaError(f"{lm.source}: lexicon words {missing[:5]} are not in the LM, which has no {UNK!r}")
        self.lm, self.token_list = lm, list(token_list)
        self.length_bonus = float(length_bonus)
        self.oov_penalty = None if oov_penalty is None else float(oov_penalty)
        self.space = self.token_list.index(SPACE)
        self.vocab_size = len(token_list)
        unk = lm.index.get(UNK)
        # LM index of each lexicon word (sorted lexicon order), <unk> for words the LM lacks
        self._lm_index = torch.tensor([lm.index.get(w, unk) for w in self.lexicon.words])
        self.unk_index = unk
        self._sorted: dict[tuple, Tensor] = {}  # history -> log p(lexicon word | history), sorted order
        self._la: dict[tuple, float] = {}  # (history, node) -> look-ahead
        self._rows: dict[tuple, Tensor] = {}  # state -> (V,) increments
        self._states: dict[tuple, tuple] = {(): ((BOS,)[-self._keep:] if self._keep else (), 0)}

    @property
    def _keep(self) -> int:
        return self.lm.order - 1

    # ------------------------------------------------------------------ LM pieces
    def _history(self, hist: tuple, word: str) -> tuple:
        if self._keep == 0:
            return ()
        return (*hist, word)[-self._keep:]

    def _word_logprobs(self, hist: tuple) -> Tensor:
        vec = self._sorted.get(hist)
        if vec is None:
            vec = self._sorted[hist] = self.lm.next_logprobs(hist)[self._lm_index]
        return vec

    def _lookahead(self, hist: tuple, node: int) -> float:
        if node == 0:
            return 0.0
        key = (hist, node)
        la = self._la.get(key)
        if la is None:
            lex = self.lexicon
            la = self._la[key] = float(self._word_logprobs(hist)[lex.lo[node]:lex.hi[node]].max())
        return la

    def _unk(self, hist: tuple) -> float:
        if self.unk_index is None:
            return NEG_INF
        return float(self.lm.next_logprobs(hist)[self.unk_index]) + self.oov_penalty

    def _finish_word(self, hist: tuple, node: int) -> tuple[float, tuple]:
        """LM increment for ending the partial word at ``node`` (-1: OOV) and the new history."""
        if node == -1:
            return 0.0, self._history(hist, UNK)  # the <unk> score was charged when it left the tree
        index = self.lexicon.word_at[node]
        if index is not None:
            word = self.lexicon.words[index]
            return float(self._word_logprobs(hist)[index]) - self._lookahead(hist, node), self._history(hist, word)
        if self.oov_penalty is not None:
            return self._unk(hist) - self._lookahead(hist, node), self._history(hist, UNK)
        return NEG_INF, hist

    def _row(self, state: tuple) -> Tensor:
        """(V,) increments of every token after a prefix in ``state`` = (history, node)."""
        row = self._rows.get(state)
        if row is not None:
            return row
        hist, node = state
        row = torch.full((self.vocab_size,), NEG_INF, dtype=torch.float64)
        if node == -1:  # inside an OOV word: further letters are free (charged once as <unk>)
            for tok in range(self.vocab_size):
                if len(self.token_list[tok]) == 1:
                    row[tok] = 0.0
        else:
            here = self._lookahead(hist, node)
            children = self.lexicon.children[node]
            leave = NEG_INF if self.oov_penalty is None else self._unk(hist) - here
            for tok in range(self.vocab_size):
                if len(self.token_list[tok]) != 1:
                    continue
                child = children.get(tok)
                row[tok] = self._lookahead(hist, child) - here if child is not None else leave
        if node != 0:  # a space ends a word (a space after a space, or first, is not allowed)
            row[self.space] = self._finish_word(hist, node)[0]
        row += self.length_bonus
        self._rows[state] = row
        return row

    def _state(self, prefix: tuple) -> tuple:
        state = self._states.get(prefix)
        if state is not None:
            return state
        hist, node = self._state(prefix[:-1])
        tok = prefix[-1]
        if tok == self.space:
            state = (self._finish_word(hist, node)[1], 0)
        elif node == -1:
            state = (hist, -1)
        else:
            child = self.lexicon.children[node].get(tok)
            state = (hist, -1 if child is None else child)
        if len(self._states) > 500_000:  # bound the caches over long decoding runs
            self._states = {(): self._states[()]}
            self._sorted.clear(), self._la.clear(), self._rows.clear()
        self._states[prefix] = state
        return state

    # ------------------------------------------------------------------ the lm_score_fn hook
    def __call__(self, prefixes: list, next_tokens: Tensor) -> Tensor:
        table = torch.stack([self._row(self._state(tuple(p))) for p in prefixes])  # (N, V)
        return table.gather(1, next_tokens.cpu()).to(torch.float32)

    def end_logprob(self, prefix: Sequence[int]) -> float:
        """Finish the last word of ``prefix`` and add ``log p(</s> | history)``."""
        hist, node = self._state(tuple(prefix))
        inc = 0.0
        if node != 0:
            inc, hist = self._finish_word(hist, node)
            if inc == NEG_INF:
                return NEG_INF
        return inc + float(self.lm.next_logprobs(hist)[self.lm.index[EOS]])

    def prefix_logprob(self, prefix: Sequence[int]) -> float:
        """Sum of the increments along ``prefix`` plus :meth:`end_logprob` (no length bonus)."""
        total = 0.0
        for i, tok in enumerate(prefix):
            total += float(self._row(self._state(tuple(prefix[:i])))[tok]) - self.length_bonus
        return total + self.end_logprob(prefix)


__all__ = ["Lexicon", "WordLMScorer"]
