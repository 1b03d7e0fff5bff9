"""Train the mel vocoder of a mel-RVQ tokenizer and save the tokenizer with it attached.

Usage:
    python -m audio_gen.bin.train_vocoder --data_dir data/train --dev_dir data/dev \
        --tokenizer_dir exp/tokenizer_mel_rvq --out_dir exp/tokenizer_mel_rvq_vocoder \
        [--steps 6000 --batch_size 16 --segment_frames 64 --quantized_prob 0.5]

The output directory is a complete tokenizer (``load_tokenizer(out_dir)``: the same codebooks,
``decode`` through the trained :class:`audio_gen.tokenizers.vocoder.MelVocoder`); the training
state lives in ``<out_dir>/train/`` (``checkpoint.pt`` of :class:`nar.base.training.StepTrainer`,
written atomically every ``--checkpoint_every`` steps; ``log.jsonl``, one line per evaluation). A
killed run resumes from its last checkpoint when started again with the same command; batches
are drawn from a generator seeded by (seed, step) and the random states are restored, so a
resumed run computes what an uninterrupted one would.

A finished run leaves ``<out_dir>/.stamp.json`` (:class:`nar.base.stamps.StageStamp`): the
training data (``wav.scp``, ``segments`` hashed, audio stat'ed), the tokenizer's files (hashed)
and the options that shape the weights (all but ``--num_threads``, ``--checkpoint_every``,
``--dev_dir`` and ``--dev_utts``, which only change the speed and the log). A rerun keeps a
finished vocoder ("already trained") when they are unchanged, and otherwise stops with an error
that lists the differences: delete ``<out_dir>`` or pass ``--force`` (train from scratch,
discarding the finished result and the training state) to train again.

Each step: ``batch_size`` random crops of ``segment_frames`` frames from the training audio;
the vocoder's input is the crop's log-mel, or, with probability ``quantized_prob`` per crop,
the tokenizer's quantised log-mel (what ``decode`` will feed it); the target is the crop.
Loss = L1 of log-mels + multi-resolution STFT loss. ``--adversarial_start N`` (>= 0) adds, from
step N, ESPnet's HiFi-GAN multi-period discriminator (least-squares GAN + feature matching,
reconstruction weighted 45 as in HiFi-GAN) — costly on a CPU, meant for a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from audio_gen.bin.fit_tokenizer import STAMP, check_finished, data_signature
from audio_gen.data import load_item, read_audio_list
from audio_gen.tokenizers import MelRVQTokenizer, load_tokenizer
from audio_gen.tokenizers.base import CONFIG_FILE
from audio_gen.tokenizers.vocoder import (
    MelVocoder,
    VocoderConfig,
    log_mel_statistics,
    mel_l1,
    multi_resolution_stft_loss,
    num_parameters,
)
from nar.base.stamps import StageStamp
from nar.base.training import StepTrainer

logger = logging.getLogger("train_vocoder")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="training data dir (wav.scp [+ segments])")
    p.add_argument("--dev_dir", default="", help="data dir for the evaluation lines of log.jsonl (optional)")
    p.add_argument("--tokenizer_dir", required=True, help="a fitted mel-RVQ tokenizer (audio_gen.bin.fit_tokenizer)")
    p.add_argument("--out_dir", required=True, help="where the tokenizer + vocoder is written")
    d = VocoderConfig()
    for f in ("dim", "intermediate_dim", "num_layers", "kernel_size"):
        p.add_argument(f"--{f}", type=int, default=getattr(d, f), help="network size")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--segment_frames", type=int, default=64, help="crop length in mel frames")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (200 warm-up steps, cosine to 10 %%)")
    p.add_argument("--quantized_prob", type=float, default=0.5,
                   help="share of crops whose input is the tokenizer's quantised log-mel")
    p.add_argument("--adversarial_start", type=int, default=-1, help="step that starts GAN training (-1: never)")
    p.add_argument("--disc_channels", type=int, default=16, help="first-layer channels of the period discriminators")
    p.add_argument("--max_utts", type=int, default=3000, help="at most this many training utterances")
    p.add_argument("--dev_utts", type=int, default=32)
    p.add_argument("--checkpoint_every", type=int, default=250)
    p.add_argument("--num_threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="train from scratch: discard a finished vocoder (or a killed run's state) in --out_dir")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.segment_frames < 2 or args.checkpoint_every < 1:
        p.error("--steps, --batch_size, --checkpoint_every must be >= 1 and --segment_frames >= 2")
    if not 0.0 <= args.quantized_prob <= 1.0:
        p.error(f"--quantized_prob must be in [0, 1], got {args.quantized_prob}")
    return args


#: the options that do not change the trained weights (speed, logging, the dev set of the log)
NOT_SIGNED = ("data_dir", "dev_dir", "tokenizer_dir", "out_dir", "dev_utts", "checkpoint_every", "num_threads", "force")


def training_signature(args: argparse.Namespace) -> dict:
    """What a finished training depended on: the data, the tokenizer's files, the options."""
    tok_dir = Path(args.tokenizer_dir)
    names = sorted(q.name for q in tok_dir.iterdir() if q.is_file() and not q.name.startswith(".")) \
        if tok_dir.is_dir() else []
    options = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SIGNED}
    options["tokenizer_dir"] = str(tok_dir.resolve())
    return data_signature(args.data_dir, options, {f"tokenizer {name}": tok_dir / name for name in names})


def lr_factor(step: int, total: int, warmup: int = 200, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def draw_batch(wavs: list[torch.Tensor], batch_size: int, samples: int, seed: int, step: int) -> torch.Tensor:
    """(batch_size, samples) random crops; the same (seed, step) always gives the same batch."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(len(wavs), (batch_size,), generator=gen).tolist()
    crops = []
    for i in idx:
        start = int(torch.randint(wavs[i].numel() - samples + 1, (1,), generator=gen))
        crops.append(wavs[i][start:start + samples])
    return torch.stack(crops)


class Discriminator:
    """ESPnet's HiFi-GAN multi-period discriminator with its LSGAN and feature-matching losses."""

    def __init__(self, channels: int, lr: float):
        from espnet2.gan_tts.hifigan.hifigan import HiFiGANMultiPeriodDiscriminator
        from espnet2.gan_tts.hifigan.loss import (
            DiscriminatorAdversarialLoss,
            FeatureMatchLoss,
            GeneratorAdversarialLoss,
        )

        params = {"in_channels": 1, "out_channels": 1, "kernel_sizes": [5, 3], "channels": channels,
                  "downsample_scales": [3, 3, 3, 3, 1], "max_downsample_channels": 16 * channels, "bias": True,
                  "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.1},
                  "use_weight_norm": True, "use_spectral_norm": False}
        self.model = HiFiGANMultiPeriodDiscriminator(discriminator_params=params)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=(0.8, 0.99))
        self.gen_adv, self.disc_adv, self.fm = GeneratorAdversarialLoss(), DiscriminatorAdversarialLoss(), FeatureMatchLoss()

    def generator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs_fake = self.model(fake[:, None])
        with torch.no_grad():
            outs_real = self.model(real[:, None])
        return self.gen_adv(outs_fake), self.fm(outs_fake, outs_real)

    def step(self, fake: torch.Tensor, real: torch.Tensor) -> float:
        real_loss, fake_loss = self.disc_adv(self.model(fake.detach()[:, None]), self.model(real[:, None]))
        loss = real_loss + fake_loss
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


@torch.no_grad()
def evaluate(vocoder: MelVocoder, tok: MelRVQTokenizer, dev: list[torch.Tensor]) -> dict:
    """Mean log-mel L1 on whole dev utterances, from clean and from quantised input."""
    vocoder.eval()
    lens = torch.tensor([w.numel() for w in dev])
    wav = torch.nn.utils.rnn.pad_sequence(dev, batch_first=True)
    lm, n = vocoder.log_mel(wav, lens)
    codes, _ = tok.encode(wav, lens)
    out = {}
    for name, feats in (("clean", lm), ("quantised", tok.codes_to_log_mel(codes))):
        y, ylens = vocoder(feats, n)
        ref = torch.nn.functional.pad(wav, (0, y.shape[1] - wav.shape[1]))
        out[f"dev_mel_l1_{name}"] = round(float(mel_l1(vocoder, y, ref, ylens)), 4)
    vocoder.train()
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    out = Path(args.out_dir)
    sig = training_signature(args)  # before reading: a change while it trains is seen next time
    if (out / CONFIG_FILE).is_file() and not args.force:
        done = load_tokenizer(out)
        if getattr(done, "vocoder", None) is not None:
            check_finished(out, sig, "train")
            print(f"{out}: already trained ({done.describe()}); delete it to retrain")
            return 0
    if args.force:
        logger.info(f"{out}: training from scratch (--force)")
        for name in (CONFIG_FILE, "train/checkpoint.pt", "train/log.jsonl"):
            (out / name).unlink(missing_ok=True)
    (out / STAMP).unlink(missing_ok=True)  # a stamp stands for a finished training only
    tok = load_tokenizer(args.tokenizer_dir)
    if not isinstance(tok, MelRVQTokenizer):
        raise SystemExit(f"{args.tokenizer_dir}: a vocoder is trained for a mel-RVQ tokenizer, this is {tok.kind!r}")
    tok.vocoder = None  # quantised inputs come from the codebooks only
    cfg = VocoderConfig(**tok.config.features(),
                        **{k: getattr(args, k) for k in ("dim", "intermediate_dim", "num_layers", "kernel_size")})
    train_dir = out / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = train_dir / "checkpoint.pt"

    samples = args.segment_frames * cfg.hop_length
    items = read_audio_list(args.data_dir)
    if len(items) > args.max_utts:
        items = random.Random(args.seed).sample(items, args.max_utts)
    wavs = [load_item(it, cfg.sample_rate) for it in tqdm(items, desc=f"reading {args.data_dir}", file=sys.stderr)]
    short = sum(w.numel() < samples for w in wavs)
    wavs = [w for w in wavs if w.numel() >= samples]
    if not wavs:
        raise SystemExit(f"{args.data_dir}: no utterance is as long as one crop ({samples} samples = "
                         f"{samples / cfg.sample_rate:.2f} s); lower --segment_frames")
    if short:
        logger.info(f"{short} utterances shorter than a crop ({samples / cfg.sample_rate:.2f} s) are not used")
    dev = []
    if args.dev_dir:
        dev_items = read_audio_list(args.dev_dir)[: args.dev_utts]
        dev = [load_item(it, cfg.sample_rate) for it in dev_items]
        dev = [w for w in dev if w.numel() >= tok.min_samples]

    torch.manual_seed(args.seed)  # the same command builds the same initial networks
    vocoder = MelVocoder(cfg)
    opt = torch.optim.AdamW(vocoder.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=0.0)
    disc = Discriminator(args.disc_channels, args.lr) if args.adversarial_start >= 0 else None
    parts = {"vocoder": vocoder, "opt": opt}
    if disc is not None:
        parts.update(disc=disc.model, disc_opt=disc.opt)

    def mismatch(stored):
        return SystemExit(f"{ckpt_path}: was trained with {stored}, this run asks for {cfg.__dict__}; "
                          "use another --out_dir or delete the old one")

    # a run that turns the GAN on later resumes a checkpoint without a discriminator
    trainer = StepTrainer(ckpt_path, parts, cfg.__dict__, args.steps, every=args.checkpoint_every,
                          mismatch=mismatch, optional=("disc", "disc_opt"), desc="vocoder")
    if trainer.resume():
        logger.info(f"resuming {ckpt_path} at step {trainer.step}")
    else:
        stat_gen = random.Random(args.seed)
        sample = stat_gen.sample(wavs, min(len(wavs), 300))
        mels = [vocoder.log_mel(w[None], torch.tensor([w.numel()]))[0][0] for w in sample]
        vocoder.set_normalisation(*log_mel_statistics(mels))
    logger.info(f"vocoder: {num_parameters(vocoder) / 1e6:.2f} M parameters, {len(wavs)} training utterances, "
                f"crops of {args.segment_frames} frames x {args.batch_size}")

    vocoder.train()
    gen_q = torch.Generator()
    t0, seen = time.time(), 0

    def train_step(step: int) -> dict[str, float]:
        nonlocal seen
        wav = draw_batch(wavs, args.batch_size, samples, args.seed, step)
        lens = torch.full((wav.shape[0],), samples)
        with torch.no_grad():
            feats, n_frames = vocoder.log_mel(wav, lens)
            gen_q.manual_seed(args.seed * 7919 + step)
            use_q = torch.rand(wav.shape[0], generator=gen_q) < args.quantized_prob
            if bool(use_q.any()):
                codes, _ = tok.encode(wav[use_q], lens[use_q])
                feats[use_q] = tok.codes_to_log_mel(codes)
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps)
        y, _ = vocoder(feats, n_frames)
        y = y[:, :samples]
        recon = mel_l1(vocoder, y, wav, lens) + multi_resolution_stft_loss(y, wav)
        loss, stats = recon, {"recon": float(recon.detach())}
        adversarial = disc is not None and step >= args.adversarial_start
        if adversarial:
            adv, fm = disc.generator_loss(y, wav)
            loss = 45.0 * recon + adv + 2.0 * fm
            stats.update(adv=float(adv.detach()), fm=float(fm.detach()))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 10.0)
        opt.step()
        if adversarial:
            stats["disc"] = disc.step(y, wav)
        if not math.isfinite(float(loss.detach())):
            raise SystemExit(f"step {step}: the loss is {float(loss.detach())}; lower --lr (last good checkpoint: {ckpt_path})")
        seen += 1
        return stats

    with open(train_dir / "log.jsonl", "a") as log_file:
        def log(step: int, stats: dict[str, float]) -> None:
            line = {"step": step, **{k: round(v, 4) for k, v in stats.items()},
                    "sec_per_step": round((time.time() - t0) / max(seen, 1), 3)}
            if dev:
                line.update(evaluate(vocoder, tok, dev))
            log_file.write(json.dumps(line) + "\n")
            log_file.flush()

        step = trainer.run(train_step, after_save=log)
    tok.attach_vocoder(vocoder.eval())
    tok.save(out)
    StageStamp(out / STAMP).write(sig, tool="audio_gen.bin.train_vocoder")
    print(f"{out}: {tok.describe()} ({num_parameters(vocoder) / 1e6:.2f} M vocoder parameters, {step} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
