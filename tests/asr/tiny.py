"""Tiny models and a tiny synthetic task shared by the ASR tests.

The task: each token 2..V-2 has a prototype feature vector; an utterance is its token sequence
rendered as 2-4 noisy frames per token, with "silence" frames (prototype of blank) between
and around tokens. A CTC model must recover the sequence from the frames.
"""

from __future__ import annotations

import torch

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]
FEAT_DIM = 8


def tiny_config(**encoder_overrides) -> dict:
    """A CTC model on features (no frontend), 2 conformer blocks, no subsampling."""
    encoder_conf = dict(
        output_size=32,
        attention_heads=2,
        linear_units=64,
        num_blocks=2,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
        attention_dropout_rate=0.0,
        input_layer="linear",
        cnn_module_kernel=5,
        rel_pos_type="latest",  # ESPnet's legacy relative positions depend on the padded length
        interctc_layer_idx=[1],
        interctc_use_conditioning=True,
    )
    encoder_conf.update(encoder_overrides)
    return {
        "model": "ctc",
        "model_conf": {"interctc_weight": 0.3},
        "token_list": list(TOKENS),
        "input_size": FEAT_DIM,
        "frontend": None,
        "specaug": None,
        "normalize": None,
        "encoder": "conformer",
        "encoder_conf": encoder_conf,
        "ctc_conf": {},
    }


def make_batch(n: int, generator: torch.Generator, max_tokens: int = 5):
    """-> feats (B, T, F), feat_lens (B,), text (B, L) padded with -1, text_lens (B,)."""
    protos = torch.eye(FEAT_DIM)[: len(TOKENS)] * 3.0  # token i -> a distinct direction
    seqs, feats = [], []
    for _ in range(n):
        length = int(torch.randint(1, max_tokens + 1, (1,), generator=generator))
        seq = torch.randint(2, len(TOKENS) - 1, (length,), generator=generator)
        frames = [protos[0].expand(2, -1)]
        for tok in seq.tolist():
            dur = int(torch.randint(2, 5, (1,), generator=generator))
            frames += [protos[tok].expand(dur, -1), protos[0].expand(1, -1)]
        x = torch.cat(frames)
        feats.append(x + 0.3 * torch.randn(x.shape, generator=generator))
        seqs.append(seq)
    feat_lens = torch.tensor([f.size(0) for f in feats])
    text_lens = torch.tensor([s.numel() for s in seqs])
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    text = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=-1)
    return feats, feat_lens, text, text_lens
