"""The autoregressive baseline of MAGNeT: a causal transformer over the *delay* codebook pattern
(MusicGen style), with the same blocks, caption conditioning and sizes as :mod:`audio_gen.models.magnet`.
It is the speed/quality baseline, MAGNeT's rescorer, and the first part of Hybrid-MAGNeT.

Dimension legend: B batch, K codebooks, T frames, S = T + K - 1 delayed steps, V codebook size.

**Delay pattern.** Codebook k is shifted right by k steps: step s holds frame ``s - k`` of
codebook k (a special id where that frame does not exist). At step s the model reads the K
entries of step s - 1 (summed embeddings; step -1 is all special) and predicts the K entries of
step s with one head per codebook, so frame f of codebook k is predicted from frames <= f of the
lower codebooks and frames < f of itself and the higher ones. Generating T frames takes T + K - 1
steps, each one incremental pass with a key/value cache; guidance runs the conditional and
unconditional captions as one 2B batch (MusicGen's ``uncond + coef * (cond - uncond)``, coef 3),
with top-k 250 and temperature 1.

**Unknown higher codebooks.** With probability ``unknown_prob`` a training item hides the input
of every codebook above a random level u < K - 1 (the mask id V), so the model can also score
codebook k *without* the codebooks above it. That is what rescoring a MAGNeT stage needs:
:meth:`DelayAR.score` teacher-forces the tokens decoded so far (higher codebooks unknown) and
returns the probabilities of codebook k at every frame.

Ids: 0..V-1 codes, V unknown (MAGNeT's mask id), V + 1 special (start / no frame at this step).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from torch import Tensor, nn
from torch.nn import functional as F

from audio_gen.conditioning import build_caption_encoder
from audio_gen.models.magnet import GenerationLengthError, _check_codes, random_crop
from audio_gen.transformer import BidirectionalTransformer
from nar.mask_predict import filter_logits, gumbel
from nar.masking import Generators, uniform_noise
from nar.base.tensors import length_mask


def delay(codes: Tensor, lengths: Tensor, special: int) -> Tensor:
    """(B, K, T) codes -> (B, K, T + K - 1) delayed: out[b, k, s] = codes[b, k, s - k] when
    0 <= s - k < lengths[b], else ``special``."""
    b, k, t = codes.shape
    s = torch.arange(t + k - 1, device=codes.device)
    frame = s[None, :] - torch.arange(k, device=codes.device)[:, None]  # (K, S)
    ok = (frame[None] >= 0) & (frame[None] < lengths[:, None, None])  # (B, K, S)
    got = codes.gather(2, frame.clamp(0, t - 1)[None].expand(b, -1, -1))
    return torch.where(ok, got, torch.full_like(got, special))


def undelay(seq: Tensor, num_frames: int) -> Tensor:
    """(B, K, S, ...) delayed steps -> (B, K, T, ...) frames: out[b, k, f] = seq[b, k, f + k]."""
    k = seq.shape[1]
    idx = torch.arange(num_frames, device=seq.device)[None, :] + torch.arange(k, device=seq.device)[:, None]  # (K, T)
    idx = idx.view(1, k, num_frames, *([1] * (seq.dim() - 3))).expand(seq.shape[0], k, num_frames, *seq.shape[3:])
    return seq.gather(2, idx)


class DelayAR(AbsESPnetModel):
    """Causal transformer on the delay pattern (see the module docstring). Arguments as
    :class:`audio_gen.models.magnet.MAGNeT`, plus ``unknown_prob``."""

    def __init__(self, num_codebooks: int, codebook_size: int, vocab_size: int = 0, d_model: int = 256,
                 num_layers: int = 6, num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1,
                 text_encoder: str = "transformer", text_layers: int = 2, t5_dir: Optional[str] = None,
                 cond_dropout: float = 0.2, unknown_prob: float = 0.3, max_frames: int = 500,
                 train_frames: int = 0, frame_rate: float = 50.0, sample_rate: int = 16000):
        super().__init__()
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.unknown_id, self.special_id = codebook_size, codebook_size + 1
        self.cond_dropout, self.unknown_prob = cond_dropout, unknown_prob
        self.max_frames, self.frame_rate, self.sample_rate = max_frames, frame_rate, sample_rate
        self.train_frames = train_frames
        self.embeds = nn.ModuleList(nn.Embedding(codebook_size + 2, d_model) for _ in range(num_codebooks))
        self.text = build_caption_encoder(text_encoder, d_model, vocab_size, text_layers, num_heads, dropout, t5_dir)
        self.decoder = BidirectionalTransformer(d_model, num_layers, num_heads, ff_mult, dropout, cross=True)
        self.head_w = nn.Parameter(torch.randn(num_codebooks, codebook_size, d_model) * d_model ** -0.5)
        self.head_b = nn.Parameter(torch.zeros(num_codebooks, codebook_size))

    def _inputs(self, codes: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Delayed targets (B, K, S) and the inputs (B, K, S): targets shifted right by one step."""
        seq = delay(codes, lengths, self.special_id)
        start = torch.full_like(seq[:, :, :1], self.special_id)
        return seq, torch.cat([start, seq[:, :, :-1]], 2)

    def _logits(self, inputs: Tensor, steps_valid: Tensor, memory, memory_valid, cache=None,
                positions=None) -> Tensor:
        """(B, K, S') input ids -> (B, K, S', V) logits (causal; incremental with ``cache``)."""
        x = sum(emb(inputs[:, k]) for k, emb in enumerate(self.embeds))
        size, keys = inputs.shape[2], steps_valid.shape[1]
        causal = torch.ones(size, keys, dtype=torch.bool, device=inputs.device).tril(keys - size)
        h = self.decoder(x, steps_valid, positions=positions, attn_mask=causal, memory=memory,
                         memory_valid=memory_valid, cache=cache)
        return torch.einsum("bsd,kvd->bksv", h, self.head_w) + self.head_b[None, :, None]

    # ----------------------------------------------------------------------------------------
    def forward(self, codes: Tensor, codes_lengths: Tensor, text: Optional[Tensor] = None,
                text_lengths: Optional[Tensor] = None, **kwargs):
        _check_codes(codes, codes_lengths, self.num_codebooks, self.codebook_size)
        if self.training:
            codes, codes_lengths = random_crop(codes, codes_lengths, self.train_frames)
        b, k, t = codes.shape
        dev = codes.device
        if text is None:
            text = torch.zeros(b, 1, dtype=torch.long, device=dev)
            text_lengths = torch.zeros(b, dtype=torch.long, device=dev)
        target, inputs = self._inputs(codes, codes_lengths)
        if self.unknown_prob > 0 and k > 1:
            level = torch.randint(0, k - 1, (b,), device=dev)
            hide = (torch.rand(b, device=dev) < self.unknown_prob)[:, None, None] & (
                torch.arange(k, device=dev)[None, :, None] > level[:, None, None]) & (inputs != self.special_id)
            inputs = inputs.masked_fill(hide, self.unknown_id)
        steps_valid = length_mask(codes_lengths + k - 1, t + k - 1)
        keep = torch.rand(b, device=dev) >= self.cond_dropout
        memory, memory_valid = self.text(text, text_lengths, keep)
        logits = self._logits(inputs, steps_valid, memory, memory_valid)  # (B, K, S, V)
        scored = target != self.special_id
        loss_all = F.cross_entropy(logits.permute(0, 3, 1, 2), target.masked_fill(~scored, 0), reduction="none")
        w = scored.to(loss_all.dtype)
        loss = (loss_all * w).sum() / w.sum()
        hit = (logits.argmax(-1) == target) & scored
        stats = dict(loss=loss.detach(), acc=hit.sum().float() / w.sum())
        for c in range(k):
            stats[f"acc_cb{c}"] = hit[:, c].sum().float() / scored[:, c].sum().clamp(min=1)
        loss, stats, weight = force_gatherable((loss, stats, torch.tensor(b, device=dev)), dev)
        return loss, stats, weight

    def collect_feats(self, codes: Tensor, codes_lengths: Tensor, **kwargs) -> dict[str, Tensor]:
        return {}

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, codes: Tensor, lengths: Tensor, text: Tensor, text_lengths: Tensor, stage: int,
              memory=None) -> Tensor:
        """Teacher-forced (B, T, V) logits of codebook ``stage`` at every frame, given (B, K, T)
        codes where unknown entries hold the mask id V (MAGNeT's rescoring)."""
        codes = codes.clamp(max=self.unknown_id)
        _, inputs = self._inputs(codes, lengths)
        k, t = codes.shape[1], codes.shape[2]
        steps_valid = length_mask(lengths + k - 1, t + k - 1)
        if memory is None:
            memory = self.text(text, text_lengths)
        logits = self._logits(inputs, steps_valid, *memory)  # (B, K, S, V)
        return undelay(logits, t)[:, stage]

    def rescorer(self, text: Tensor, text_lengths: Tensor, num_frames: Tensor) -> Callable:
        """A ``rescore(tokens, step)`` callable for :func:`nar.mask_predict.mask_predict`."""
        memory = self.text(text, text_lengths)
        lengths = torch.as_tensor(num_frames, dtype=torch.long, device=text.device)

        def rescore(tokens: Tensor, step) -> Tensor:
            return self.score(tokens, lengths, text, text_lengths, step.stage, memory)

        return rescore

    @torch.no_grad()
    def generate(self, text: Tensor, text_lengths: Tensor, num_frames: Tensor, prompt: Optional[Tensor] = None,
                 prompt_lengths: Optional[Tensor] = None, temperature: float = 1.0, top_k: int = 250,
                 top_p: float = 1.0, cfg_coef: float = 3.0, generator: Generators = None,
                 progress: Optional[Callable] = None) -> Tensor:
        """Sample (B, K, T) codes step by step (T = max ``num_frames``; frames beyond an item's
        length hold the mask id). ``prompt`` (B, K, P) / ``prompt_lengths`` (B,) are forced."""
        num_frames = torch.as_tensor(num_frames, dtype=torch.long, device=text.device)
        b, k = text.shape[0], self.num_codebooks
        if num_frames.shape != (b,) or int(num_frames.min()) < 1:
            raise ValueError(f"num_frames must be (B,) = ({b},) positive ints, got {num_frames.tolist()}")
        if int(num_frames.max()) > self.max_frames:
            raise GenerationLengthError(
                f"{int(num_frames.max())} frames requested; the model was trained on at most {self.max_frames}")
        t = int(num_frames.max())
        forced = torch.zeros(b, k, t, dtype=torch.bool, device=text.device)
        out = torch.full((b, k, t), self.unknown_id, dtype=torch.long, device=text.device)
        if prompt is not None:
            prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.long, device=text.device)
            p = min(prompt.shape[2], t)
            keep = length_mask(prompt_lengths, p)[:, None].expand(-1, k, -1)
            out[:, :, :p] = torch.where(keep, prompt[:, :, :p], out[:, :, :p])
            forced[:, :, :p] = keep
        guided = cfg_coef != 1.0
        cond = self.text(text, text_lengths)
        if guided:
            null = self.text(text, torch.zeros_like(text_lengths))
            memory = (torch.cat([cond[0], null[0]]), torch.cat([cond[1], null[1]]))
        else:
            memory = cond
        mem_kv, mem_valid = self.decoder.memory_kv(memory[0]), memory[1]
        rows = mem_kv[0][0].shape[0]
        cache = [dict() for _ in self.decoder.blocks]
        steps = t + k - 1
        valid = torch.ones(rows, steps, dtype=torch.bool, device=text.device)
        prev = torch.full((b, k), self.special_id, dtype=torch.long, device=text.device)
        cb = torch.arange(k, device=text.device)
        for s in range(steps):
            x = prev[:, :, None]
            if guided:
                x = torch.cat([x, x])
            logits = self._logits(x, valid[:, : s + 1], mem_kv, mem_valid, cache,
                                  positions=torch.full((rows, 1), s, device=text.device))[:, :, 0]  # (R, K, V)
            if guided:
                logits = logits[b:] + cfg_coef * (logits[:b] - logits[b:])
            logits = filter_logits(logits, top_k, top_p)
            if temperature > 0:
                noise = gumbel(uniform_noise((b, k, self.codebook_size), None, generator, device=logits.device))
                sampled = (logits / temperature + noise).argmax(-1)  # (B, K)
            else:
                sampled = logits.argmax(-1)
            frame = s - cb  # (K,) frame produced for each codebook at this step
            exists = (frame >= 0) & (frame < t)
            fr = frame.clamp(0, t - 1)
            old = out[:, cb, fr]  # (B, K)
            is_forced = forced[:, cb, fr] & exists
            new = torch.where(is_forced, old, sampled)
            live = exists[None] & (frame[None] < num_frames[:, None])
            out[:, cb, fr] = torch.where(live, new, old)
            prev = torch.where(live, new, torch.full_like(new, self.special_id))
            if progress is not None:
                progress(s, steps)
        return out
