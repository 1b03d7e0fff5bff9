"""MaskGCT (Wang et al., 2024): text-to-semantic (T2S) and semantic-to-acoustic (S2A) masked
generative transformers, trained with a masked-token objective and decoded by
:func:`nar.mask_predict.mask_predict`.

Dimension legend: B batch, L phones, T semantic or acoustic frames, K acoustic codebooks,
V vocabulary, D model dim, P prompt frames.

**T2S** reads ``[phones | semantic tokens]`` (each segment with its own positions, a segment
embedding, padding excluded by a key mask) and predicts the masked semantic tokens. Training, per
utterance: a time ``t ~ U(0, 1]`` gives the mask ratio ``max(sin(pi t / 2), min_mask_ratio)`` of
the non-prompt frames; with probability ``prompt_prob`` a prefix of ``U[min(T // 4, 5), 0.4 T)``
frames is kept unmasked as the prompt (no loss there); with probability ``uncond_prob`` both the
prompt and the phones are dropped (the unconditional branch used by classifier-free guidance);
otherwise the phones are kept with no prompt. The loss is cross-entropy over masked frames only.

**S2A** predicts acoustic codebook k given the semantic tokens (added frame-wise after aligning
them to the acoustic frame rate: acoustic frame j reads semantic frame
``floor(j * semantic_rate / acoustic_rate)``), codebooks < k, and a prompt prefix carrying all K
codebooks. One model serves every codebook: the input at a frame is the sum of its semantic
embedding, a stage embedding of k, and one embedding per codebook (a per-codebook mask embedding
where the codebook is not known yet); each codebook has its own output head. Training draws k
with weights ``K - k`` (low, coarse codebooks more often, as Amphion's "linear" weighting) and a
prompt of ``U[min(T // 4, 5), T // 2)`` frames with probability ``prompt_prob``.

**Local priors** (options of both models, off by default = the description above): ``input_conv``
(an odd convolution over the embedded token frames, padding zeroed first), ``conv_kernel`` (a
Conformer-style convolution sub-layer in every block), ``position`` (``"rope"`` relative
positions as Amphion's Llama blocks; T2S then numbers ``[phones | semantic]`` as one sequence per
item, ``"sin"`` keeps each segment's own positions) and ``tie_embeddings`` (the output logits of a
codebook are the hidden state's dot products with that codebook's input embeddings, scaled by
D^-1/2, instead of separate output rows). They are the fixes measured for MAGNeT's training
plateau (``egs/synth_music/gen1/RESULTS.md``); for MaskGCT see ``egs/synth_en/tts1/RESULTS.md``.

**Inference** decodes in true batches: every item has its own prompt length, target length and
(optionally) random generator, and the unconditional pass of guidance is a separate forward over
each item's target frames alone (no prompt; T2S also without phones), so an item decodes the same
in any batch. Amphion's MaskGCT, by contrast, takes mask counts and the guidance rescale from
batch item 0.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from torch import Tensor, nn
from torch.nn import functional as F

from audio_gen.transformer import BidirectionalTransformer, apply_input_conv, make_input_conv
from nar.mask_predict import MaskPredictConfig, mask_predict
from nar.masking import Generators
from nar.base.tensors import length_mask


def _arange(n: int, like: Tensor) -> Tensor:
    return torch.arange(n, device=like.device)


def _rand(shape, device) -> Tensor:
    return torch.rand(shape, device=device)


def _mask_ratio(batch: int, device, min_ratio: float) -> Tensor:
    t = _rand((batch,), device).clamp(min=1e-5)
    return torch.sin(math.pi * t / 2).clamp(min=min_ratio)  # (B,)


def _prompt_lengths(lengths: Tensor, with_prompt: Tensor, hi_ratio: float) -> Tensor:
    """(B,) prompt frames ~ U[min(T // 4, 5), max(lo + 1, floor(hi_ratio T))), 0 where no prompt,
    and always at least one frame left to predict."""
    lo = torch.minimum(lengths // 4, torch.full_like(lengths, 5))
    hi = torch.maximum(torch.floor(lengths.double() * hi_ratio).long(), lo + 1)
    p = lo + torch.floor(_rand(lengths.shape, lengths.device).double() * (hi - lo)).long()
    p = torch.minimum(p, lengths - 1).clamp(min=0)
    return torch.where(with_prompt, p, torch.zeros_like(p))


def _choose_masked(prompt: Tensor, lengths: Tensor, ratio: Tensor, size: int) -> Tensor:
    """(B, T) bool: ceil(ratio * (T_b - P_b)) random frames (at least one) of [P_b, T_b)."""
    pos = torch.arange(size, device=lengths.device)
    region = (pos >= prompt[:, None]) & (pos < lengths[:, None])  # (B, T)
    count = torch.ceil(ratio.double() * (lengths - prompt)).long().clamp(min=1)
    count = torch.minimum(count, lengths - prompt)
    noise = _rand(region.shape, lengths.device).masked_fill(~region, 2.0)
    ranks = noise.argsort(1).argsort(1)
    return (ranks < count[:, None]) & region


def _target_view(x: Tensor, prompt: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Gather each item's target frames [P_b, P_b + L_b) of x (B, T, ...) to the front:
    returns (B, max L, ...) and the gather index (B, max L) (clamped inside T)."""
    size = int(target.max())
    idx = (prompt[:, None] + torch.arange(size, device=x.device)).clamp(max=x.shape[1] - 1)  # (B, L)
    view_idx = idx.view(idx.shape + (1,) * (x.dim() - 2)).expand(idx.shape + x.shape[2:])
    return x.gather(1, view_idx), idx


def _scatter_target(full: Tensor, part: Tensor, prompt: Tensor, target: Tensor) -> Tensor:
    """Write part (B, max L, D) back at [P_b, P_b + L_b) of a copy of full (B, T, D)."""
    out = full.clone()
    b, j = torch.nonzero(length_mask(target, part.shape[1]), as_tuple=True)
    out[b, prompt[b] + j] = part[b, j]
    return out


def _masked_loss(logits: Tensor, tokens: Tensor, masked: Tensor, batch: int):
    """Cross-entropy and accuracy of (B, T, V) logits against (B, T) tokens over the ``masked``
    (B, T) positions, as ESPnet's ``(loss, stats, weight)``."""
    target = tokens[masked]
    loss = F.cross_entropy(logits[masked], target)
    acc = (logits[masked].argmax(-1) == target).float().mean()
    return force_gatherable((loss, dict(loss=loss.detach(), acc=acc.detach()), batch), loss.device)


def align_frames(semantic: Tensor, sem_lens: Tensor, frames: Tensor, semantic_rate: float,
                 acoustic_rate: float) -> Tensor:
    """Semantic tokens (B, Ts) at ``semantic_rate`` -> (B, max frames) at ``acoustic_rate``:
    acoustic frame j takes semantic frame ``min(floor(j * semantic_rate / acoustic_rate),
    Ts_b - 1)``; positions past ``frames[b]`` are padding (hold token 0)."""
    size = int(frames.max()) if frames.numel() else 0
    j = torch.arange(size, device=semantic.device, dtype=torch.float64)
    idx = torch.floor(j * (semantic_rate / acoustic_rate) + 1e-9).long()[None, :]  # (1, T)
    idx = torch.minimum(idx, (sem_lens[:, None] - 1).clamp(min=0))  # (B, T)
    out = semantic.gather(1, idx.clamp(max=max(semantic.shape[1] - 1, 0)))
    return out.masked_fill(~length_mask(frames, size), 0)


class T2SModel(AbsESPnetModel):
    """Text-to-semantic masked generative transformer (see the module docstring).

    Args:
        num_phones: phone vocabulary size (padding id 0); num_semantic: semantic codebook size
            (the mask id is ``num_semantic``); d_model, num_layers, num_heads, ff_mult, dropout:
            the transformer; prompt_prob, uncond_prob, min_mask_ratio, prompt_max_ratio: training
            (see the module docstring); position, conv_kernel, input_conv, tie_embeddings: local
            priors (module docstring).
    """

    def __init__(self, num_phones: int, num_semantic: int, d_model: int = 256, num_layers: int = 6,
                 num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1, prompt_prob: float = 0.8,
                 uncond_prob: float = 0.1, min_mask_ratio: float = 0.2, prompt_max_ratio: float = 0.4,
                 position: str = "sin", conv_kernel: int = 0, input_conv: int = 0, tie_embeddings: bool = False):
        super().__init__()
        if not 0 <= prompt_prob + uncond_prob <= 1:
            raise ValueError(f"prompt_prob + uncond_prob must be in [0, 1], got {prompt_prob} + {uncond_prob}")
        self.num_phones, self.num_semantic, self.mask_id = num_phones, num_semantic, num_semantic
        self.prompt_prob, self.uncond_prob = prompt_prob, uncond_prob
        self.min_mask_ratio, self.prompt_max_ratio = min_mask_ratio, prompt_max_ratio
        self.phone_emb = nn.Embedding(num_phones, d_model)
        self.sem_emb = nn.Embedding(num_semantic + 1, d_model)
        self.segment_emb = nn.Embedding(2, d_model)
        self.input_conv = make_input_conv(d_model, input_conv)
        self.encoder = BidirectionalTransformer(d_model, num_layers, num_heads, ff_mult, dropout,
                                               position=position, conv_kernel=conv_kernel)
        self.tie_embeddings = tie_embeddings
        self.out = None if tie_embeddings else nn.Linear(d_model, num_semantic)
        self.out_bias = nn.Parameter(torch.zeros(num_semantic)) if tie_embeddings else None

    def head(self, h: Tensor) -> Tensor:
        """(B, T, D) hidden states -> (B, T, V) semantic logits."""
        if self.tie_embeddings:  # output rows = input embeddings of the real tokens (no mask row)
            weight = self.sem_emb.weight[:self.num_semantic] * self.sem_emb.weight.shape[1] ** -0.5
            return F.linear(h, weight, self.out_bias)
        return self.out(h)

    def hidden(self, phones: Tensor, phone_lens: Tensor, semantic: Tensor, sem_lens: Tensor) -> Tensor:
        """(B, T, D) hidden states of the semantic positions of ``[phones | semantic]``."""
        b, n_ph = phones.shape
        size = semantic.shape[1]
        sem_valid = length_mask(sem_lens, size)
        sem_x = apply_input_conv(self.input_conv, self.sem_emb(semantic), sem_valid)
        x = torch.cat([self.phone_emb(phones.clamp(min=0)) + self.segment_emb.weight[0],
                       sem_x + self.segment_emb.weight[1]], dim=1)
        valid = torch.cat([length_mask(phone_lens, n_ph), sem_valid], dim=1)
        sem_pos = _arange(size, semantic).expand(b, size)
        if "rope" in self.encoder.position:  # one sequence per item: semantic frame j is at L_b + j
            sem_pos = sem_pos + phone_lens[:, None]
        pos = torch.cat([_arange(n_ph, phones).expand(b, n_ph), sem_pos], dim=1)
        return self.encoder(x, valid, pos)[:, n_ph:]

    def forward(self, phones: Tensor, phones_lengths: Tensor, semantic: Tensor, semantic_lengths: Tensor,
                **kwargs):
        """Masked-token loss. phones (B, L) ids; semantic (B, T) tokens; *_lengths (B,)."""
        b, size = semantic.shape
        dev = semantic.device
        u = _rand((b,), dev)
        with_prompt = u < self.prompt_prob
        uncond = (u >= self.prompt_prob) & (u < self.prompt_prob + self.uncond_prob)
        prompt = _prompt_lengths(semantic_lengths, with_prompt, self.prompt_max_ratio)
        ratio = _mask_ratio(b, dev, self.min_mask_ratio)
        masked = _choose_masked(prompt, semantic_lengths, ratio, size)  # (B, T)
        inputs = semantic.masked_fill(masked, self.mask_id)
        ph_lens = torch.where(uncond, torch.zeros_like(phones_lengths), phones_lengths)
        logits = self.head(self.hidden(phones, ph_lens, inputs, semantic_lengths))
        return _masked_loss(logits, semantic, masked, b)

    def collect_feats(self, **kwargs) -> dict:
        return {}

    @torch.no_grad()
    def generate(self, phones: Tensor, phone_lens: Tensor, prompt: Tensor, prompt_lens: Tensor,
                 target_lens: Tensor, config: MaskPredictConfig, generator: Generators = None,
                 progress: Optional[Callable] = None) -> tuple[Tensor, Tensor]:
        """Semantic tokens of each item's target.

        Args:
            phones (B, L), phone_lens (B,): prompt phones followed by target phones.
            prompt (B, P) semantic tokens, prompt_lens (B,) (0 allowed: no prompt).
            target_lens (B,): frames to generate (>= 1).
            config: mask-predict strategies (``mask_id`` must be ``self.mask_id``); guidance
                "hidden" or "logits" runs the unconditional pass without prompt and phones.
        Returns:
            (B, max target) tokens and target_lens.
        """
        if config.mask_id != self.mask_id:
            raise ValueError(f"config.mask_id must be {self.mask_id} (num_semantic), got {config.mask_id}")
        b = phones.shape[0]
        lengths = prompt_lens + target_lens
        size = int(lengths.max())
        tokens = torch.full((b, size), self.mask_id, dtype=torch.long, device=phones.device)
        p = min(prompt.shape[1], size)
        pinned = length_mask(prompt_lens, size)
        tokens[:, :p] = torch.where(pinned[:, :p], prompt[:, :p].long(), tokens[:, :p])
        no_phones = phones[:, :0]

        def forward(tok, mask, step):
            cond = self.hidden(phones, phone_lens, tok, lengths)
            if config.guidance == "none":
                return self.head(cond)
            tgt, _ = _target_view(tok, prompt_lens, target_lens)
            unc = self.hidden(no_phones, torch.zeros_like(phone_lens), tgt, target_lens)
            unc = _scatter_target(cond, unc, prompt_lens, target_lens)
            if config.guidance == "logits":
                return self.head(cond), self.head(unc)
            return cond, unc

        out = mask_predict(forward, tokens, config, lengths=lengths, pinned=pinned, head=self.head,
                           generator=generator, progress=progress)
        target, _ = _target_view(out, prompt_lens, target_lens)
        return target.masked_fill(~length_mask(target_lens, target.shape[1]), 0), target_lens


class S2AModel(AbsESPnetModel):
    """Semantic-to-acoustic masked generative transformer over K residual codebooks.

    Args:
        num_semantic: semantic vocabulary; num_codebooks (K), codebook_size (V; the mask id of
            every codebook is V); semantic_rate, acoustic_rate: frame rates (Hz) of the two token
            streams; d_model, num_layers, num_heads, ff_mult, dropout: the transformer;
            prompt_prob, min_mask_ratio, prompt_max_ratio: training (module docstring);
            position, conv_kernel, input_conv, tie_embeddings: local priors (module docstring).
    """

    def __init__(self, num_semantic: int, num_codebooks: int, codebook_size: int, semantic_rate: float,
                 acoustic_rate: float, d_model: int = 256, num_layers: int = 6, num_heads: int = 4,
                 ff_mult: int = 4, dropout: float = 0.1, prompt_prob: float = 0.85,
                 min_mask_ratio: float = 0.2, prompt_max_ratio: float = 0.5, position: str = "sin",
                 conv_kernel: int = 0, input_conv: int = 0, tie_embeddings: bool = False):
        super().__init__()
        self.num_semantic, self.num_codebooks, self.codebook_size = num_semantic, num_codebooks, codebook_size
        self.mask_id = codebook_size
        self.semantic_rate, self.acoustic_rate = float(semantic_rate), float(acoustic_rate)
        self.prompt_prob, self.min_mask_ratio, self.prompt_max_ratio = prompt_prob, min_mask_ratio, prompt_max_ratio
        self.sem_emb = nn.Embedding(num_semantic, d_model)
        self.code_emb = nn.Embedding(num_codebooks * (codebook_size + 1), d_model)
        self.stage_emb = nn.Embedding(num_codebooks, d_model)
        self.input_conv = make_input_conv(d_model, input_conv)
        self.encoder = BidirectionalTransformer(d_model, num_layers, num_heads, ff_mult, dropout,
                                               position=position, conv_kernel=conv_kernel)
        self.tie_embeddings = tie_embeddings
        self.head_weight = None if tie_embeddings else nn.Parameter(
            torch.randn(num_codebooks, codebook_size, d_model) * d_model ** -0.5)
        self.head_bias = nn.Parameter(torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("code_offset", torch.arange(num_codebooks) * (codebook_size + 1), persistent=False)

    def hidden(self, sem_frames: Tensor, tokens: Tensor, lengths: Tensor, stage: Tensor) -> Tensor:
        """sem_frames (B, T) aligned semantic tokens, tokens (B, K, T) codes (mask id where
        unknown), lengths (B,), stage (B,) codebook being predicted -> (B, T, D)."""
        valid = length_mask(lengths, tokens.shape[-1])
        x = self.sem_emb(sem_frames) + self.code_emb(tokens + self.code_offset[None, :, None]).sum(1)
        x = apply_input_conv(self.input_conv, x, valid) + self.stage_emb(stage)[:, None]
        return self.encoder(x, valid)

    def head(self, h: Tensor, stage: Tensor) -> Tensor:
        """(B, T, D) hidden states -> (B, T, V) logits of codebook ``stage`` (B,)."""
        if self.tie_embeddings:  # codebook k's output rows are its input embeddings (no mask row)
            d = self.code_emb.weight.shape[1]
            weight = self.code_emb.weight.view(self.num_codebooks, self.codebook_size + 1, d)[:, :self.codebook_size]
            weight = weight * d ** -0.5
        else:
            weight = self.head_weight
        return torch.einsum("btd,bvd->btv", h, weight[stage]) + self.head_bias[stage][:, None]

    def forward(self, semantic: Tensor, semantic_lengths: Tensor, codes: Tensor, codes_lengths: Tensor, **kwargs):
        """Masked-token loss of one random codebook per item. semantic (B, Ts); codes (B, K, T)."""
        b, k_all, size = codes.shape
        if k_all != self.num_codebooks:
            raise ValueError(f"codes have {k_all} codebooks but the model was built for {self.num_codebooks}")
        dev = codes.device
        codes = codes.long()
        sem = align_frames(semantic.long(), semantic_lengths, codes_lengths, self.semantic_rate, self.acoustic_rate)
        weights = torch.arange(k_all, 0, -1, device=dev, dtype=torch.float)
        stage = torch.multinomial(weights, b, replacement=True)  # (B,)
        prompt = _prompt_lengths(codes_lengths, _rand((b,), dev) < self.prompt_prob, self.prompt_max_ratio)
        masked = _choose_masked(prompt, codes_lengths, _mask_ratio(b, dev, self.min_mask_ratio), size)  # (B, T)
        after_prompt = ~length_mask(prompt, size)  # (B, T)
        cb = torch.arange(k_all, device=dev)[None, :, None]  # (1, K, 1)
        hide = ((cb > stage[:, None, None]) & after_prompt[:, None]) | ((cb == stage[:, None, None]) & masked[:, None])
        inputs = codes.masked_fill(hide, self.mask_id)
        logits = self.head(self.hidden(sem, inputs, codes_lengths, stage), stage)  # (B, T, V)
        return _masked_loss(logits, codes[torch.arange(b, device=dev), stage], masked, b)

    def collect_feats(self, **kwargs) -> dict:
        return {}

    @torch.no_grad()
    def generate(self, prompt_semantic: Tensor, prompt_sem_lens: Tensor, target_semantic: Tensor,
                 target_sem_lens: Tensor, prompt_codes: Tensor, prompt_code_lens: Tensor,
                 config: MaskPredictConfig, target_frames: Optional[Tensor] = None,
                 generator: Generators = None, progress: Optional[Callable] = None) -> tuple[Tensor, Tensor]:
        """Acoustic codes of each item's target.

        Args:
            prompt_semantic (B, Ps), prompt_sem_lens (B,): the prompt's semantic tokens.
            target_semantic (B, Ts), target_sem_lens (B,): the target's (from T2S).
            prompt_codes (B, K, P), prompt_code_lens (B,): the prompt's acoustic codes.
            config: strategies; ``steps`` per codebook (K entries) or one int.
            target_frames (B,): acoustic frames to generate (default: the target's semantic
                frames converted to the acoustic rate, rounded).
        Returns:
            (B, K, max frames) codes and the frames (B,).
        """
        if config.mask_id != self.mask_id:
            raise ValueError(f"config.mask_id must be {self.mask_id} (codebook_size), got {config.mask_id}")
        if prompt_codes.shape[1] != self.num_codebooks:
            raise ValueError(f"prompt codes have {prompt_codes.shape[1]} codebooks, the model {self.num_codebooks}")
        if target_frames is None:
            target_frames = torch.round(target_sem_lens.double() * self.acoustic_rate / self.semantic_rate).long()
        target_frames = target_frames.clamp(min=1)
        b, k_all = prompt_codes.shape[:2]
        dev = prompt_codes.device
        lengths = prompt_code_lens + target_frames
        size = int(lengths.max())
        sem_p = align_frames(prompt_semantic.long(), prompt_sem_lens, prompt_code_lens, self.semantic_rate, self.acoustic_rate)
        sem_t = align_frames(target_semantic.long(), target_sem_lens, target_frames, self.semantic_rate, self.acoustic_rate)
        sem = torch.zeros((b, size), dtype=torch.long, device=dev)
        sem[:, :sem_p.shape[1]] = sem_p
        sem = _scatter_target(sem[..., None], sem_t[..., None], prompt_code_lens, target_frames)[..., 0]
        tokens = torch.full((b, k_all, size), self.mask_id, dtype=torch.long, device=dev)
        p = min(prompt_codes.shape[2], size)
        pin_t = length_mask(prompt_code_lens, size)  # (B, T)
        tokens[..., :p] = torch.where(pin_t[:, None, :p], prompt_codes[..., :p].long(), tokens[..., :p])
        pinned = pin_t[:, None].expand(b, k_all, size).clone()
        current = {"stage": torch.zeros(b, dtype=torch.long, device=dev)}

        def head(h):
            return self.head(h, current["stage"])

        def forward(tok, mask, step):
            stage = torch.full((b,), step.stage, dtype=torch.long, device=dev)
            current["stage"] = stage
            cond = self.hidden(sem, tok, lengths, stage)
            if config.guidance == "none":
                return head(cond)
            tok_t, _ = _target_view(tok.transpose(1, 2), prompt_code_lens, target_frames)  # (B, L, K)
            sem_v, _ = _target_view(sem, prompt_code_lens, target_frames)
            unc = self.hidden(sem_v, tok_t.transpose(1, 2), target_frames, stage)
            unc = _scatter_target(cond, unc, prompt_code_lens, target_frames)
            if config.guidance == "logits":
                return head(cond), head(unc)
            return cond, unc

        out = mask_predict(forward, tokens, config, lengths=lengths, pinned=pinned, head=head,
                           generator=generator, progress=progress)
        tgt, _ = _target_view(out.transpose(1, 2), prompt_code_lens, target_frames)  # (B, L, K)
        tgt = tgt.transpose(1, 2).masked_fill(~length_mask(target_frames, tgt.shape[1])[:, None], 0)
        return tgt, target_frames
