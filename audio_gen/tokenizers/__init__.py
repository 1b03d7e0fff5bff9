"""Acoustic tokenizers: one interface (``AcousticTokenizer``), the offline mel-RVQ tokenizer,
and real pretrained codecs loaded from a local path (EnCodec)."""

from audio_gen.tokenizers.base import AcousticTokenizer, load_tokenizer, register
from audio_gen.tokenizers.encodec import EncodecTokenizer
from audio_gen.tokenizers.espnet_codec import EspnetCodecTokenizer
from audio_gen.tokenizers.mel_rvq import MelRVQConfig, MelRVQTokenizer

__all__ = ["AcousticTokenizer", "EncodecTokenizer", "EspnetCodecTokenizer", "load_tokenizer", "register", "MelRVQConfig",
           "MelRVQTokenizer"]
