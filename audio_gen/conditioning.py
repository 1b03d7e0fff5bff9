"""Text conditioning for the audio generators: caption tokens and caption encoders.

Dimension legend: B batch, S caption tokens, D model dim.

Two encoders give the memory the generators cross-attend:

* :class:`CaptionEncoder`: a small bidirectional transformer over word tokens of the caption,
  trained with the generator (captions of a synthetic corpus have a small closed vocabulary).
  :class:`CaptionTokenizer` makes the tokens: lower-cased words and punctuation, digits one per
  token ("72" -> "7 2", so unseen numbers are still spelled with known tokens), ids from a token
  list built on the training captions (``<blank>`` = 0 padding, ``<unk>`` = 1).
* :class:`T5CaptionEncoder`: a frozen pretrained T5 encoder loaded from a local Hugging Face
  directory (``transformers``; no download), projected to D. Its token ids come from that
  directory's tokenizer (:class:`T5Tokens`).

Both prepend one learned *null* vector to the memory and keep it attendable always: dropping the
condition (classifier-free guidance's unconditional branch, and an empty caption at inference)
leaves the null vector alone, so cross-attention never sees an empty key set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from audio_gen.transformer import BidirectionalTransformer
from nar.base.tensors import length_mask

BLANK, UNK = "<blank>", "<unk>"
_WORD = re.compile(r"[a-z']+|[0-9]|[^\sa-z0-9']")


class CaptionError(ValueError):
    """A caption or token list cannot be used (the message says which)."""


def caption_words(caption: str) -> list[str]:
    """Lower-cased words, single digits and punctuation marks of a caption."""
    return _WORD.findall(caption.lower())


class CaptionTokenizer:
    """Word-level caption tokens with a fixed token list (``<blank>``, ``<unk>``, words...)."""

    def __init__(self, token_list: Sequence[str]):
        token_list = list(token_list)
        if token_list[:2] != [BLANK, UNK]:
            raise CaptionError(f"a caption token list must start with {BLANK}, {UNK}; got {token_list[:2]}")
        if len(set(token_list)) != len(token_list):
            raise CaptionError("the caption token list has duplicate entries")
        self.tokens = token_list
        self.ids = {t: i for i, t in enumerate(token_list)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "CaptionTokenizer":
        counts: dict[str, int] = {}
        for c in captions:
            for w in caption_words(c):
                counts[w] = counts.get(w, 0) + 1
        words = sorted(w for w, n in counts.items() if n >= min_count)
        return cls([BLANK, UNK] + words)

    @classmethod
    def load(cls, path) -> "CaptionTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"caption token list {path} does not exist")
        return cls([line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()])

    def save(self, path) -> None:
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, caption: str) -> list[int]:
        """Token ids of a caption (unknown words -> ``<unk>``); an empty caption gives []."""
        return [self.ids.get(w, 1) for w in caption_words(caption)]


class T5Tokens:
    """Token ids of captions for :class:`T5CaptionEncoder`, from the T5 directory's tokenizer."""

    def __init__(self, t5_dir):
        from transformers import AutoTokenizer
        t5_dir = _check_t5_dir(t5_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(t5_dir))

    def encode(self, caption: str) -> list[int]:
        if not caption.strip():
            return []
        return list(self.tokenizer(caption)["input_ids"])


def _check_t5_dir(t5_dir) -> Path:
    path = Path(t5_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"T5 directory {path}: no config.json (a local Hugging Face T5 save_pretrained "
                                "directory is needed; nothing is downloaded)")
    return path


def pad_ids(ids: Sequence[Sequence[int]], device=None) -> tuple[Tensor, Tensor]:
    """Lists of token ids -> (B, S) padded with 0 and (B,) lengths (S >= 1)."""
    lens = torch.tensor([len(x) for x in ids], dtype=torch.long)
    out = torch.zeros(len(ids), max(1, int(lens.max()) if len(ids) else 1), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.as_tensor(list(x), dtype=torch.long)
    return out.to(device), lens.to(device)


class _NullMemory(nn.Module):
    """Prepends the learned null vector; ``keep`` (B,) False drops the caption."""

    def __init__(self, d_model: int):
        super().__init__()
        self.null = nn.Parameter(torch.randn(d_model) * 0.02)

    def wrap(self, enc: Tensor, valid: Tensor, keep: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        b = enc.shape[0]
        memory = torch.cat([self.null.to(enc.dtype).expand(b, 1, -1), enc], 1)
        valid = valid if keep is None else valid & keep[:, None]
        return memory, torch.cat([torch.ones(b, 1, dtype=torch.bool, device=enc.device), valid], 1)


class CaptionEncoder(_NullMemory):
    """Word embeddings + a small bidirectional transformer, trained with the generator."""

    def __init__(self, vocab_size: int, d_model: int, num_layers: int = 2, num_heads: int = 4,
                 dropout: float = 0.1):
        super().__init__(d_model)
        if vocab_size < 3:
            raise CaptionError(f"caption vocabulary of {vocab_size} tokens is too small")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.encoder = BidirectionalTransformer(d_model, num_layers, num_heads, 4, dropout) if num_layers else None

    def forward(self, text: Tensor, text_lengths: Tensor, keep: Optional[Tensor] = None):
        """text (B, S) ids, text_lengths (B,), keep (B,) bool (False: condition dropped) ->
        memory (B, 1 + S, D), memory_valid (B, 1 + S)."""
        if text.numel() and (int(text.max()) >= self.vocab_size or int(text.min()) < 0):
            raise CaptionError(f"caption token id out of range [0, {self.vocab_size})")
        valid = length_mask(text_lengths, text.shape[1])
        x = self.embed(text)
        if self.encoder is not None:
            x = self.encoder(x, valid)
        return self.wrap(x, valid, keep)


class T5CaptionEncoder(_NullMemory):
    """A frozen local T5 encoder (``transformers.T5EncoderModel``) + a trained projection to D."""

    def __init__(self, t5_dir, d_model: int):
        super().__init__(d_model)
        from transformers import T5EncoderModel
        self.t5_dir = str(_check_t5_dir(t5_dir))
        t5 = T5EncoderModel.from_pretrained(self.t5_dir)
        t5.eval().requires_grad_(False)
        self.__dict__["t5"] = t5  # not a submodule: frozen, not saved in our checkpoints
        self.proj = nn.Linear(t5.config.d_model, d_model)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__["t5"]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, text: Tensor, text_lengths: Tensor, keep: Optional[Tensor] = None):
        valid = length_mask(text_lengths, text.shape[1])
        with torch.no_grad():
            hidden = self.t5(input_ids=text, attention_mask=valid.long()).last_hidden_state
        x = self.proj(hidden) * valid[..., None].to(hidden.dtype)
        return self.wrap(x, valid, keep)


def build_caption_encoder(kind: str, d_model: int, vocab_size: int = 0, num_layers: int = 2,
                          num_heads: int = 4, dropout: float = 0.1, t5_dir: Optional[str] = None) -> nn.Module:
    if kind == "transformer":
        return CaptionEncoder(vocab_size, d_model, num_layers, num_heads, dropout)
    if kind == "t5":
        if not t5_dir:
            raise CaptionError("text_encoder 't5' needs t5_dir (a local Hugging Face T5 directory)")
        return T5CaptionEncoder(t5_dir, d_model)
    raise CaptionError(f"text_encoder must be 'transformer' or 't5', got {kind!r}")
