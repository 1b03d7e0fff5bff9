"""Audio tokenizers on a held-out data dir: reconstruction quality, intelligibility, speed, and
how much content semantic tokens carry.

Usage:
    python bench/tokenizers.py --data_dir egs/synth_en/asr1/data/test \
        --tokenizers mel_rvq=egs/synth_en/codec1/exp/tokenizer_mel_rvq \
        --asr_model_dir egs/synth_en/asr1/exp/asr_train_ctc_char \
        [--semantic_train_dir egs/synth_en/asr1/data/train --semantic_layers 0 2 4 6]

Acoustic rows (each reconstruction compared with the original, both at 16 kHz):

    original            the data as it is (WER/MOS of the source)
    <name> mel+GL       mel-RVQ only: the unquantised log-mel through the vocoder (the vocoder's
                        own loss; quantisation adds the rest); "mel+voc" when the tokenizer has
                        a trained vocoder (audio_gen.bin.train_vocoder), "mel+GL" for Griffin-Lim
    <name>              encode -> decode with all K codebooks
    <name> K=k          decode from the first k codebooks only (coarse)

Columns: PESQ (wide-band, ITU P.862.2), STOI, mel distance (mean |Δ| of natural-log 80-band mel
magnitudes, n_fft 1024, hop 256, floor 1e-5, over the original's frames), WER by our ASR model
(``--asr_model_dir``, greedy), WER by pocketsphinx (an independent English recogniser), mean
DistillMOS, and encode/decode real-time factors (seconds of compute per second of audio, batches of
``--batch_seconds`` padded seconds, ``--threads`` threads). ``WER ratio`` is our ASR's WER on the
row over its WER on the originals (issue 9's goal for the default tokenizer: <= 1.3, with
STOI >= 0.85).

Semantic section (``--semantic_train_dir``): for each encoder layer, k-means with
``--semantic_codebook_size`` clusters is fitted on ``--semantic_train_utts`` training utterances;
on the test set every encoder frame gets the character of the CTC forced alignment (our CTC
head, the reference transcript; a blank frame takes the nearest aligned character), and the
purity of the tokens against those labels is reported next to the purity of the same tokens
shuffled across frames (the chance level for these cluster sizes).

JSON to ``--out`` (default ``bench/results/tokenizers.json``), markdown beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio_gen.data import load_item, read_audio_list  # noqa: E402
from audio_gen.tokenizers import load_tokenizer  # noqa: E402
from audio_gen.tokenizers.mel_rvq import MelRVQTokenizer  # noqa: E402

EVAL_RATE = 16000
DEFAULT_OUT = ROOT / "bench" / "results" / "tokenizers.json"


# --------------------------------------------------------------------------- metrics

class MelDistance:
    def __init__(self):
        self.mel = torchaudio.transforms.MelSpectrogram(EVAL_RATE, n_fft=1024, hop_length=256, n_mels=80, power=1.0)

    def __call__(self, ref: torch.Tensor, hyp: torch.Tensor) -> float:
        a = torch.log(self.mel(ref).clamp(min=1e-5))
        b = torch.log(self.mel(hyp).clamp(min=1e-5))
        return float((a - b).abs().mean())


def pocketsphinx_recognizer():
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")

    def recognize(wav: torch.Tensor) -> str:
        pcm = (wav.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    return recognize


def distillmos_model():
    import distillmos

    model = distillmos.ConvTransformerSQAModel().eval()

    @torch.no_grad()
    def score(wav: torch.Tensor) -> float:
        return float(model(wav[None]).reshape(-1)[0])

    return score


def fit_len(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[:n] if x.numel() >= n else torch.nn.functional.pad(x, (0, n - x.numel()))


# --------------------------------------------------------------------------- acoustic

def reconstruct(tok, wavs: list[torch.Tensor], batch_seconds: float, mode: str, k: int | None):
    """-> reconstructions at tok.sample_rate (list), encode seconds, decode seconds."""
    order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
    out: list = [None] * len(wavs)
    t_enc = t_dec = 0.0
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and (j - i + 1) * wavs[order[j]].numel() <= batch_seconds * tok.sample_rate:
            j += 1
        j = max(j, i + 1)
        idx = order[i:j]
        batch = torch.nn.utils.rnn.pad_sequence([wavs[n] for n in idx], batch_first=True)
        lens = torch.tensor([wavs[n].numel() for n in idx])
        t0 = time.perf_counter()
        if mode == "mel":
            lm, nf = tok.log_mel(batch, lens)
            t1 = time.perf_counter()
            y, ylens = tok.decode_mel(lm, nf)
        else:
            codes, code_lens = tok.encode(batch, lens)
            t1 = time.perf_counter()
            y, ylens = tok.decode(codes[:, :k] if k else codes, code_lens)
        t2 = time.perf_counter()
        t_enc += t1 - t0
        t_dec += t2 - t1
        for b, n in enumerate(idx):
            out[n] = y[b, : int(lens[b])].cpu()
        i = j
    return out, t_enc, t_dec


def evaluate_audio(name, recs, refs_audio, keys, texts, judges, seconds, t_enc=None, t_dec=None, original=False):
    from pesq import pesq
    from pystoi import stoi

    from asr.scoring import score

    row = {"system": name}
    if not original:
        p, s, m = [], [], []
        for ref, rec in zip(refs_audio, recs):
            rec = fit_len(rec, ref.numel())
            try:
                p.append(pesq(EVAL_RATE, ref.numpy(), rec.numpy(), "wb"))
            except Exception as e:  # noqa: BLE001 - PESQ refuses some inputs (e.g. no speech found)
                logging.warning(f"{name}: PESQ failed on one item ({e})")
            s.append(stoi(ref.numpy(), rec.numpy(), EVAL_RATE, extended=False))
            m.append(judges["mel"](ref, rec))
        row.update(pesq=float(np.mean(p)), stoi=float(np.mean(s)), mel_distance=float(np.mean(m)))
        row.update(encode_rtf=t_enc / seconds if t_enc is not None else None,
                   decode_rtf=t_dec / seconds if t_dec is not None else None)
    hyps = judges["asr"](recs)
    rep, _ = score({k: texts[k] for k in keys}, dict(zip(keys, hyps)))
    row.update(wer_asr=100 * rep.wer, cer_asr=100 * rep.cer)
    ps = [judges["sphinx"](r) for r in tqdm(recs, desc=f"{name}: pocketsphinx", file=sys.stderr, leave=False)]
    rep2, _ = score({k: texts[k] for k in keys}, dict(zip(keys, ps)))
    row["wer_pocketsphinx"] = 100 * rep2.wer
    row["distillmos"] = float(np.mean([judges["mos"](r) for r in recs]))
    return row


# --------------------------------------------------------------------------- semantic

def char_labels(s2t, log_probs, lengths, texts):
    """Per encoder frame: the CTC-aligned character id (blank frames: the nearest aligned one)."""
    from nar.align import forced_align

    ids = {t: i for i, t in enumerate(s2t.token_list)}
    unk = ids.get("<unk>", 1)
    targets = [[ids.get("<space>" if c == " " else c, unk) for c in t] for t in texts]
    tl = torch.tensor([len(t) for t in targets])
    tgt = torch.zeros(len(targets), int(tl.max()), dtype=torch.long)
    for i, t in enumerate(targets):
        tgt[i, : len(t)] = torch.tensor(t)
    labels, _ = forced_align(log_probs.float().cpu(), lengths.cpu(), tgt, tl)
    out = []
    for b in range(labels.shape[0]):
        lab = labels[b, : int(lengths[b])].clone()
        pos = torch.nonzero(lab != 0).flatten()
        if pos.numel() == 0:
            out.append(None)
            continue
        frames = torch.arange(lab.numel())
        nearest = (frames[:, None] - pos[None, :]).abs().argmin(1)
        out.append(lab[pos[nearest]])
    return out


def semantic_section(args, test_items, test_texts):
    from asr.data.text import normalize_text
    from asr.inference import Speech2Text
    from tts.semantic import SemanticTokenizer, encoder_layer_outputs, label_purity, purity

    s2t = Speech2Text(args.asr_model_dir, max_seconds=None, progress=False)
    n_blocks = len(s2t.model.encoder.encoders)
    layers = [n_blocks if ly < 0 else ly for ly in args.semantic_layers]
    train_items = read_audio_list(args.semantic_train_dir)
    train_items = random.Random(0).sample(train_items, min(args.semantic_train_utts, len(train_items)))

    def collect(items, want_labels):
        feats = {ly: [] for ly in layers}
        labels = []
        for i in tqdm(range(0, len(items), 16), desc="semantic features", file=sys.stderr, leave=False):
            chunk = items[i:i + 16]
            wavs = [load_item(it, s2t.sample_rate) for it in chunk]
            hs, enc = encoder_layer_outputs(s2t, wavs, layers)
            for ly in layers:
                for b in range(len(chunk)):
                    feats[ly].append(hs[ly][b, : int(enc.lengths[b])].float())
            if want_labels:
                lp = s2t.model.ctc_log_probs(enc)
                texts = [normalize_text(test_texts[it.key]) for it in chunk]
                labels.extend(char_labels(s2t, lp, enc.lengths, texts))
        return feats, labels

    train_feats, _ = collect(train_items, False)
    test_feats, labels = collect(test_items, True)
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    y = torch.cat([labels[i] for i in keep])
    v = len(s2t.token_list)
    rows = []
    for ly in layers:
        tok = SemanticTokenizer.from_frames(None, torch.cat(train_feats[ly]), args.semantic_codebook_size,
                                            iters=20, seed=0)
        codes = tok.quantize(torch.cat([test_feats[ly][i] for i in keep]))
        shuffled = codes[torch.randperm(codes.numel(), generator=torch.Generator().manual_seed(0))]
        used = int(torch.unique(codes).numel())
        rows.append({
            "layer": ly, "codebook_size": args.semantic_codebook_size, "codes_used": used,
            "purity": purity(codes, y, args.semantic_codebook_size, v),
            "purity_shuffled": purity(shuffled, y, args.semantic_codebook_size, v),
            "label_purity": label_purity(codes, y, args.semantic_codebook_size, v),
            "label_purity_shuffled": label_purity(shuffled, y, args.semantic_codebook_size, v),
            "frames": int(y.numel()),
        })
        logging.info(f"layer {ly}: purity {rows[-1]['purity']:.3f} (shuffled {rows[-1]['purity_shuffled']:.3f})")
    return {"asr_model_dir": str(args.asr_model_dir), "frame_rate": 1.0 / s2t.frame_shift,
            "train_utts": len(train_items), "test_utts": len(keep), "rows": rows}


# --------------------------------------------------------------------------- report

def table(rows) -> str:
    head = ("| system | PESQ | STOI | mel dist | WER ours % | WER ratio | WER sphinx % | DistillMOS "
            "| enc RTF | dec RTF |\n|---|---|---|---|---|---|---|---|---|---|\n")
    base = rows[0]["wer_asr"]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    lines = []
    for r in rows:
        ratio = r["wer_asr"] / base if base else None
        lines.append(
            f"| {r['system']} | {f(r.get('pesq'), '.2f')} | {f(r.get('stoi'), '.3f')} | "
            f"{f(r.get('mel_distance'), '.3f')} | {r['wer_asr']:.1f} | {f(ratio, '.2f')} | "
            f"{r['wer_pocketsphinx']:.1f} | {r['distillmos']:.2f} | {f(r.get('encode_rtf'), '.4f')} | "
            f"{f(r.get('decode_rtf'), '.4f')} |"
        )
    return head + "\n".join(lines) + "\n"


def semantic_table(sem) -> str:
    out = ("| layer | codes used | purity | shuffled | label purity | shuffled |\n"
           "|---|---|---|---|---|---|\n")
    for r in sem["rows"]:
        out += (f"| {r['layer']} | {r['codes_used']}/{r['codebook_size']} | {r['purity']:.3f} | "
                f"{r['purity_shuffled']:.3f} | {r['label_purity']:.3f} | {r['label_purity_shuffled']:.3f} |\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir with wav.scp and text")
    p.add_argument("--tokenizers", nargs="*", default=[], help="name=saved_tokenizer_dir")
    p.add_argument("--coarse", type=int, nargs="*", default=[4], help="also decode from the first k codebooks")
    p.add_argument("--asr_model_dir", type=Path, required=True)
    p.add_argument("--max_utts", type=int, default=0, help="first N utterances of the data dir (0: all)")
    p.add_argument("--batch_seconds", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--semantic_train_dir", type=Path, default=None)
    p.add_argument("--semantic_layers", type=int, nargs="+", default=[-1])
    p.add_argument("--semantic_codebook_size", type=int, default=512)
    p.add_argument("--semantic_train_utts", type=int, default=500)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from nar.base.kaldi import read_kaldi_map
    from asr.inference import Speech2Text

    items = read_audio_list(args.data_dir)
    if args.max_utts:
        items = items[: args.max_utts]
    texts = read_kaldi_map(str(args.data_dir / "text"))
    keys = [it.key for it in items]
    audio = [load_item(it, EVAL_RATE) for it in tqdm(items, desc="reading", file=sys.stderr, leave=False)]
    seconds = sum(a.numel() for a in audio) / EVAL_RATE
    s2t = Speech2Text(args.asr_model_dir, max_seconds=None, progress=False)
    judges = {"mel": MelDistance(), "sphinx": pocketsphinx_recognizer(), "mos": distillmos_model(),
              "asr": lambda wavs: [h.text for h in s2t(wavs)]}
    result = {"data_dir": str(args.data_dir), "utterances": len(items), "audio_seconds": seconds,
              "threads": args.threads, "asr_model_dir": str(args.asr_model_dir), "rows": []}
    rows = result["rows"]
    rows.append(evaluate_audio("original", audio, audio, keys, texts, judges, seconds, original=True))
    print(table(rows), flush=True)
    for spec in args.tokenizers:
        name, _, path = spec.partition("=")
        tok = load_tokenizer(path)
        logging.info(f"{name}: {tok.describe()}")
        wavs = [torchaudio.functional.resample(a, EVAL_RATE, tok.sample_rate) if tok.sample_rate != EVAL_RATE else a
                for a in audio]
        variants = [(f"{name}", "codes", None)]
        if isinstance(tok, MelRVQTokenizer):
            vocoder = "voc" if tok.vocoder is not None else "GL"
            variants.insert(0, (f"{name} mel+{vocoder}", "mel", None))
        variants += [(f"{name} K={k}", "codes", k) for k in args.coarse if k < tok.num_codebooks]
        for label, mode, k in variants:
            recs, t_enc, t_dec = reconstruct(tok, wavs, args.batch_seconds, mode, k)
            if tok.sample_rate != EVAL_RATE:
                recs = [torchaudio.functional.resample(r, tok.sample_rate, EVAL_RATE) for r in recs]
            row = evaluate_audio(label, recs, audio, keys, texts, judges, seconds, t_enc, t_dec)
            row.update(tokenizer=path, description=tok.describe(), codebooks_used=k or tok.num_codebooks)
            if mode == "mel":
                row["encode_rtf"] = None  # no quantisation: not an encode
            rows.append(row)
            print(table(rows), flush=True)
    md = f"# Tokenizers on {args.data_dir} ({len(items)} utterances, {seconds / 60:.1f} min)\n\n" + table(rows)
    if args.semantic_train_dir:
        sem = semantic_section(args, items, texts)
        result["semantic"] = sem
        md += (f"\n## Semantic tokens: purity against CTC-aligned characters ({sem['test_utts']} utterances, "
               f"k-means on {sem['train_utts']} training utterances, {sem['frame_rate']:g} frames/s)\n\n"
               + semantic_table(sem))
        print(semantic_table(sem))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(md)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
