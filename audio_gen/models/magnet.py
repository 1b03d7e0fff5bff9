"""MAGNeT (Ziv et al., 2024): one non-autoregressive transformer over K codebooks of codec tokens,
trained with span masking, decoded stage by stage with :func:`nar.mask_predict.mask_predict`.

Dimension legend: B batch, K codebooks, T frames, V codebook size, D model dim, S caption tokens.

**Input**: the sum of one embedding per codebook (each table has V + 1 rows; row V is the mask
token) plus sinusoidal positions; captions reach every block through cross-attention over the
caption encoder's memory (:mod:`audio_gen.conditioning`, with a learned null vector). One linear
head per codebook.

**Local priors** (options, off by default = audiocraft's model): ``input_conv`` (a convolution of
that many frames over the summed embeddings, padding zeroed first), ``conv_kernel`` (a
Conformer-style convolution sub-layer in every block), ``position`` (``"rope"``
relative positions, see :class:`audio_gen.transformer.BidirectionalTransformer`) and
``tie_embeddings`` (codebook k's output logits are the hidden state's dot products with its
input embeddings, scaled by D^-1/2). With the paper's model a masked frame learns to use its
neighbours only after a long plateau (thousands of steps: attention must first discover
locality, and each of the K x V codes must learn its own output row); a convolution hands it the
neighbours' codes at once and tying makes "copy that code" one shared skill. Measured in
``egs/synth_music/gen1/RESULTS.md``.

**Training** (per utterance, as audiocraft's MAGNeT solver but per item instead of per batch):
a stage k ~ U{0..K-1}; codebooks < k clean, codebooks > k fully masked; in codebook k a mask rate
``cos(pi t / 2)``, t ~ U(0, 1), realised by span masking of ``span_len`` frames
(:func:`nar.masking.span_mask`, at least one span); cross-entropy on the masked frames of k only.
The caption is dropped with probability ``cond_dropout`` (classifier-free guidance). For stages
>= 1 self-attention can be restricted to a band of ``band`` frames each side (the paper's
``subcodes_context``; 0 = full attention everywhere).

**Inference**: codebook by codebook with ``steps`` per stage (default [20, 10, 10, 10]),
non-overlapping span units, cosine schedule, logits guidance annealed from ``cfg_scale`` to
``cfg_scale_end`` with the mask ratio (10 -> 1), temperature annealed linearly from 3.0 (floor
0.01), top-p 0.9, confidence = tempered probability of the sampled token (a span takes its
minimum). An audio prompt fills the first frames of every codebook and is never re-masked. An
optional ``rescore`` callable (an autoregressive model, :mod:`audio_gen.models.ar`) mixes its
probability of each sampled token into the confidence (MAGNeT's rescoring, weight
``rescore_weight``). Every item has its own caption, length, prompt and generator, so a batch
decodes as its items alone.

The number of frames is bounded by ``max_frames`` (the training length): longer requests raise
:class:`GenerationLengthError` (positions beyond the trained length were never seen).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Optional

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from torch import Tensor, nn
from torch.nn import functional as F

from audio_gen.conditioning import build_caption_encoder
from audio_gen.transformer import BidirectionalTransformer, apply_input_conv, make_input_conv
from nar.mask_predict import MaskPredictConfig, mask_predict
from nar.masking import Generators, span_mask
from nar.base.tensors import length_mask


class GenerationLengthError(ValueError):
    """A requested length exceeds what the model was trained for."""


def magnet_config(codebook_size: int, num_codebooks: int, **overrides) -> MaskPredictConfig:
    """MAGNeT's decoding defaults (audiocraft's music settings) as a :class:`MaskPredictConfig`."""
    steps = (20, 10, 10, 10)[:num_codebooks] + (10,) * max(0, num_codebooks - 4)
    base = MaskPredictConfig(mask_id=codebook_size, steps=steps, schedule="cosine", unit="span", span_len=3,
                             confidence="prob", confidence_tempered=True, temperature=3.0,
                             anneal_temperature=True, min_temperature=0.01, top_p=0.9, guidance="logits",
                             cfg_scale=9.0, cfg_scale_end=0.0, greedy_last=False)
    return replace(base, **overrides)


def band_mask(size: int, band: int, device=None) -> Tensor:
    """(T, T) bool, True where |query - key| <= band."""
    pos = torch.arange(size, device=device)
    return (pos[:, None] - pos[None, :]).abs() <= band


def random_crop(codes: Tensor, lengths: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Training crops: a random window of ``size`` frames of every item longer than that
    ((B, K, T) codes, (B,) lengths -> (B, K, min(T, size)), lengths); shorter items are kept."""
    if size <= 0 or codes.shape[2] <= size:
        return codes, lengths
    start = (torch.rand(lengths.shape, device=codes.device) * (lengths - size + 1).clamp(min=1)).long()
    idx = (start[:, None] + torch.arange(size, device=codes.device)).clamp(max=codes.shape[2] - 1)  # (B, size)
    out = codes.gather(2, idx[:, None].expand(-1, codes.shape[1], -1))
    return out, lengths.clamp(max=size)


def _embed_codes(embeds: nn.ModuleList, codes: Tensor) -> Tensor:
    """(B, K, T) ids (mask id allowed) -> (B, T, D) summed codebook embeddings."""
    return sum(emb(codes[:, k]) for k, emb in enumerate(embeds))


def _check_codes(codes: Tensor, lengths: Tensor, num_codebooks: int, limit: int, name: str = "codes"):
    if codes.dim() != 3 or codes.shape[1] != num_codebooks:
        raise ValueError(f"{name} must have shape (B, {num_codebooks}, T), got {tuple(codes.shape)}")
    if lengths.shape != (codes.shape[0],) or int(lengths.max()) > codes.shape[2] or int(lengths.min()) < 1:
        raise ValueError(f"{name}_lengths {lengths.tolist()} do not fit {name} of shape {tuple(codes.shape)}")
    valid = length_mask(lengths, codes.shape[2])
    bad = (codes < 0) | (codes >= limit)
    if bool((bad & valid[:, None]).any()):
        raise ValueError(f"{name} hold ids outside [0, {limit})")


class MAGNeT(AbsESPnetModel):
    """Masked generative multi-stream transformer (see the module docstring).

    Args:
        num_codebooks: K; codebook_size: V; vocab_size: caption vocabulary (transformer encoder);
        d_model, num_layers, num_heads, ff_mult, dropout: the transformer;
        text_encoder: "transformer" (trained) or "t5" (frozen, from ``t5_dir``); text_layers;
        span_len: span of the training masks and of the decoding units; cond_dropout: probability
        of dropping the caption in training; band: self-attention band for stages >= 1 (0: off);
        max_frames: the longest generation allowed (the training length); train_frames: random
        training crops of this many frames (0: whole items; then max_frames should be at least
        the longest item); frame_rate, sample_rate: of the codec (stored for the inference API).
    """

    def __init__(self, num_codebooks: int, codebook_size: int, vocab_size: int = 0, d_model: int = 256,
                 num_layers: int = 6, num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1,
                 text_encoder: str = "transformer", text_layers: int = 2, t5_dir: Optional[str] = None,
                 span_len: int = 3, cond_dropout: float = 0.2, band: int = 5, max_frames: int = 500,
                 train_frames: int = 0, frame_rate: float = 50.0, sample_rate: int = 16000,
                 position: str = "sin", conv_kernel: int = 0, input_conv: int = 0, tie_embeddings: bool = False):
        super().__init__()
        if num_codebooks < 1 or codebook_size < 2:
            raise ValueError(f"need num_codebooks >= 1 and codebook_size >= 2, got {num_codebooks}, {codebook_size}")
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.mask_id = codebook_size
        self.span_len, self.cond_dropout, self.band = span_len, cond_dropout, band
        self.max_frames, self.frame_rate, self.sample_rate = max_frames, frame_rate, sample_rate
        self.train_frames = train_frames
        self.embeds = nn.ModuleList(nn.Embedding(codebook_size + 1, d_model) for _ in range(num_codebooks))
        self.input_conv = make_input_conv(d_model, input_conv)
        self.text = build_caption_encoder(text_encoder, d_model, vocab_size, text_layers, num_heads, dropout, t5_dir)
        self.encoder = BidirectionalTransformer(d_model, num_layers, num_heads, ff_mult, dropout, cross=True,
                                               position=position, conv_kernel=conv_kernel)
        self.tie_embeddings = tie_embeddings
        self.head_w = None if tie_embeddings else nn.Parameter(
            torch.randn(num_codebooks, codebook_size, d_model) * d_model ** -0.5)
        self.head_b = nn.Parameter(torch.zeros(num_codebooks, codebook_size))

    # ----------------------------------------------------------------------------------------
    def _attn_mask(self, stage: Tensor, size: int) -> Optional[Tensor]:
        """None (full) or (B, T, T): banded for items whose stage is >= 1."""
        if self.band <= 0 or not bool((stage > 0).any()):
            return None
        band = band_mask(size, self.band, stage.device)
        return band[None] | (stage == 0)[:, None, None]

    def hidden(self, codes: Tensor, lengths: Tensor, stage: Tensor, memory, memory_valid: Tensor) -> Tensor:
        """(B, K, T) codes (mask id where unknown) -> (B, T, D) hidden states for ``stage`` (B,)."""
        valid = length_mask(lengths, codes.shape[2])
        x = apply_input_conv(self.input_conv, _embed_codes(self.embeds, codes), valid)
        return self.encoder(x, valid, attn_mask=self._attn_mask(stage, codes.shape[2]), memory=memory,
                            memory_valid=memory_valid)

    def logits(self, hidden: Tensor, stage: Tensor) -> Tensor:
        """(B, T, D) hidden states -> (B, T, V) logits of each item's codebook ``stage`` (B,)."""
        if self.tie_embeddings:  # the output rows of codebook k are its input embeddings (no mask row)
            weight = torch.stack([emb.weight[:self.codebook_size] for emb in self.embeds])  # (K, V, D)
            weight = weight * weight.shape[-1] ** -0.5  # unit-variance logits at initialisation
        else:
            weight = self.head_w
        return torch.einsum("btd,bvd->btv", hidden, weight[stage]) + self.head_b[stage][:, None]

    # ----------------------------------------------------------------------------------------
    def forward(self, codes: Tensor, codes_lengths: Tensor, text: Optional[Tensor] = None,
                text_lengths: Optional[Tensor] = None, **kwargs):
        """Masked-token loss of one random stage per item (see the module docstring)."""
        _check_codes(codes, codes_lengths, self.num_codebooks, self.codebook_size)
        if self.training:
            codes, codes_lengths = random_crop(codes, codes_lengths, self.train_frames)
        b, k, t = codes.shape
        if text is None:
            text = torch.zeros(b, 1, dtype=torch.long, device=codes.device)
            text_lengths = torch.zeros(b, dtype=torch.long, device=codes.device)
        dev = codes.device
        stage, masked = self.draw_masks(codes_lengths, t)
        cb = torch.arange(k, device=dev)[None, :, None]  # (1, K, 1)
        hide = (cb > stage[:, None, None]) | ((cb == stage[:, None, None]) & masked[:, None])
        inputs = codes.masked_fill(hide, self.mask_id)
        keep = torch.rand(b, device=dev) >= self.cond_dropout
        memory, memory_valid = self.text(text, text_lengths, keep)
        logits = self.logits(self.hidden(inputs, codes_lengths, stage, memory, memory_valid), stage)
        target = codes.gather(1, stage[:, None, None].expand(b, 1, t))[:, 0]  # (B, T)
        loss_all = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T)
        w = masked.to(loss_all.dtype)
        loss = (loss_all * w).sum() / w.sum()
        acc = ((logits.argmax(-1) == target).to(w.dtype) * w).sum() / w.sum()
        stats = dict(loss=loss.detach(), acc=acc.detach())
        for s in range(k):  # per-stage accuracy (NaN-free: only stages drawn in this batch)
            sel = (stage == s)[:, None] & masked
            if bool(sel.any()):
                stats[f"acc_cb{s}"] = ((logits.argmax(-1) == target) & sel).sum().float() / sel.sum()
        loss, stats, weight = force_gatherable((loss, stats, torch.tensor(b, device=dev)), dev)
        return loss, stats, weight

    def collect_feats(self, codes: Tensor, codes_lengths: Tensor, **kwargs) -> dict[str, Tensor]:
        return {}

    def draw_masks(self, lengths: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Training draws: a stage (B,) ~ U{0..K-1} and the masked frames (B, T) of that stage:
        span masking at rate cos(pi t / 2), t ~ U(0, 1), at least one frame per item."""
        b, dev = lengths.shape[0], lengths.device
        stage = torch.randint(0, self.num_codebooks, (b,), device=dev)
        rate = torch.cos(math.pi / 2 * torch.rand(b, device=dev, dtype=torch.float64))
        masked = span_mask(lengths, rate, self.span_len, max_len=size)  # (B, T)
        if not bool(masked.any(1).all()):  # at least one masked frame per item
            first = torch.randint(0, 1 << 30, (b,), device=dev) % lengths
            masked = masked | ((torch.arange(size, device=dev) == first[:, None]) & ~masked.any(1, keepdim=True))
        return stage, masked

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, text: Tensor, text_lengths: Tensor, num_frames: Tensor,
                 config: Optional[MaskPredictConfig] = None, prompt: Optional[Tensor] = None,
                 prompt_lengths: Optional[Tensor] = None, generator: Generators = None,
                 rescore: Optional[Callable] = None, progress: Optional[Callable] = None) -> Tensor:
        """Generate (B, K, T) codes for captions ``text`` (B, S) / ``text_lengths`` (B,; 0 =
        unconditional) of ``num_frames`` (B,) frames each (T = max; padding holds the mask id).

        ``prompt`` (B, K, P) codes with ``prompt_lengths`` (B,) fill the first frames of every
        codebook (continuation). ``rescore(codes, step) -> (B, T, V)`` logits of the current
        stage under a rescoring model (used with ``config.rescore_weight``)."""
        config = config or magnet_config(self.codebook_size, self.num_codebooks)
        if config.mask_id != self.mask_id:
            raise ValueError(f"config.mask_id must be {self.mask_id} (the codebook size)")
        num_frames = torch.as_tensor(num_frames, dtype=torch.long, device=text.device)
        b = text.shape[0]
        if num_frames.shape != (b,) or int(num_frames.min()) < 1:
            raise ValueError(f"num_frames must be (B,) = ({b},) positive ints, got {num_frames.tolist()}")
        if int(num_frames.max()) > self.max_frames:
            raise GenerationLengthError(
                f"{int(num_frames.max())} frames ({int(num_frames.max()) / self.frame_rate:.1f} s) requested; the "
                f"model was trained on at most {self.max_frames} frames ({self.max_frames / self.frame_rate:.1f} s)")
        size = int(num_frames.max())
        init = torch.full((b, self.num_codebooks, size), self.mask_id, dtype=torch.long, device=text.device)
        pinned = torch.zeros_like(init, dtype=torch.bool)
        if prompt is not None:
            prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.long, device=text.device)
            _check_codes(prompt, prompt_lengths.clamp(min=1), self.num_codebooks, self.codebook_size, "prompt")
            if bool((prompt_lengths >= num_frames).any()):
                raise ValueError("every prompt must be shorter than its num_frames")
            p = min(prompt.shape[2], size)
            keep = length_mask(prompt_lengths, p)[:, None].expand(-1, self.num_codebooks, -1)
            init[:, :, :p] = torch.where(keep, prompt[:, :, :p], init[:, :, :p])
            pinned[:, :, :p] = keep
        cond_mem, cond_valid = self.text(text, text_lengths)
        null_mem, null_valid = self.text(text, torch.zeros_like(text_lengths))
        guided = config.guidance == "logits"
        if guided:
            mem = torch.cat([cond_mem, null_mem])
            mem_kv, mem_valid = self.encoder.memory_kv(mem), torch.cat([cond_valid, null_valid])
            lens2 = torch.cat([num_frames, num_frames])
        else:
            mem_kv, mem_valid, lens2 = self.encoder.memory_kv(cond_mem), cond_valid, num_frames

        def forward(tokens: Tensor, mask: Tensor, step):
            stage = torch.full((tokens.shape[0],), step.stage, dtype=torch.long, device=tokens.device)
            x = torch.cat([tokens, tokens]) if guided else tokens
            s2 = torch.cat([stage, stage]) if guided else stage
            logits = self.logits(self.hidden(x, lens2, s2, mem_kv, mem_valid), s2)
            return (logits[:b], logits[b:]) if guided else logits

        return mask_predict(forward, init, config, lengths=num_frames, pinned=pinned, generator=generator,
                            rescore=rescore, progress=progress)
