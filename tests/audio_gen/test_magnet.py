"""MAGNeT and its AR baseline: training masks, banded attention, staged decoding, batch = items,
rescoring, the delay pattern, tiny models learning a tiny conditional task, the ESPnet task,
TextToAudio and the generate CLI, bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_gen.conditioning import CaptionError, CaptionTokenizer, caption_words, pad_ids
from audio_gen.models.ar import DelayAR, delay, undelay
from audio_gen.models.magnet import MAGNeT, GenerationLengthError, band_mask, magnet_config, random_crop
from nar.mask_predict import MaskPredictConfig, mask_predict

ROOT = Path(__file__).resolve().parents[2]
K, V = 2, 8


def tiny(cls, **kw):
    torch.manual_seed(0)
    conf = dict(vocab_size=6, d_model=32, num_layers=2, num_heads=2, text_layers=1, dropout=0.0, max_frames=40)
    conf.update(kw)
    return cls(K, V, **conf).eval()


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


# ---------------------------------------------------------------------------------------------
def test_training_masks_follow_the_cosine_rate_in_spans():
    model = tiny(MAGNeT)
    torch.manual_seed(1)
    lengths = torch.full((4000,), 120)
    stage, masked = model.draw_masks(lengths, 120)
    # E[cos(pi t / 2)] over t ~ U(0, 1) = 2 / pi
    assert abs(masked.double().mean().item() - 2 / math.pi) < 0.02
    assert masked.any(1).all()  # at least one masked frame per item
    assert set(stage.tolist()) == set(range(K))
    # spans: every masked run is >= span_len long unless it touches an edge
    for row in masked[:300].tolist():
        runs, n = [], 0
        for i, m in enumerate(row + [False]):
            if m:
                n += 1
            elif n:
                runs.append((i - n, n))
                n = 0
        for start, n in runs:
            assert n >= 3 or start == 0 or start + n == 120 or len(runs) == 1 and sum(row) < 3


def test_band_mask_and_banded_attention_locality():
    assert torch.equal(band_mask(6, 1), torch.tensor([[abs(i - j) <= 1 for j in range(6)] for i in range(6)]))
    model = tiny(MAGNeT, num_layers=1, band=2)
    codes = torch.randint(0, V, (1, K, 12))
    lengths = torch.tensor([12])
    mem = model.text(torch.tensor([[2, 3]]), torch.tensor([2]))
    far = codes.clone()
    far[0, :, 9] = (far[0, :, 9] + 1) % V  # 9 frames away from frame 0
    for stage, local in ((1, True), (0, False)):
        st = torch.tensor([stage])
        h1 = model.hidden(codes, lengths, st, *mem)[0, 0]
        h2 = model.hidden(far, lengths, st, *mem)[0, 0]
        assert torch.allclose(h1, h2, atol=1e-6) == local
    near = codes.clone()
    near[0, :, 2] = (near[0, :, 2] + 1) % V
    st = torch.tensor([1])
    assert not torch.allclose(model.hidden(codes, lengths, st, *mem)[0, 0], model.hidden(near, lengths, st, *mem)[0, 0])


def test_staged_decoding_keeps_earlier_codebooks_and_the_prompt():
    model = tiny(MAGNeT)
    text, tl = pad_ids([[2, 3], [4]])
    prompt = torch.randint(0, V, (2, K, 5))
    snaps = []
    out = model.generate(text, tl, torch.tensor([20, 16]), magnet_config(V, K, steps=(4, 3)), prompt=prompt,
                         prompt_lengths=torch.tensor([5, 3]), generator=gens([0, 1]),
                         progress=lambda step, toks: snaps.append((step.stage, toks)))
    assert [s for s, _ in snaps] == [0] * 4 + [1] * 3
    assert torch.equal(out[0, :, :5], prompt[0]) and torch.equal(out[1, :, :3], prompt[1, :, :3])
    for stage, toks in snaps:
        assert torch.equal(toks[0, :, :5], prompt[0]) and torch.equal(toks[1, :, :3], prompt[1, :, :3])
        assert torch.equal(toks[:, :stage], out[:, :stage])  # earlier codebooks never change
        assert (toks[0, stage + 1:, 5:20] == V).all()  # later codebooks still masked
    assert (out[0] < V).all() and (out[1, :, :16] < V).all() and (out[1, :, 16:] == V).all()


LOCAL = dict(input_conv=3, tie_embeddings=True, conv_kernel=3, position="sin+rope")  # every local option


@pytest.mark.parametrize("method", ["magnet", "magnet_local", "rescore", "ar"])
def test_a_batch_decodes_as_its_items(method):
    model, ar = tiny(MAGNeT, **(LOCAL if method == "magnet_local" else {})), tiny(DelayAR)
    text, tl = pad_ids([[2, 3, 4], [5], []])
    frames = torch.tensor([18, 11, 14])
    prompt, plen = torch.randint(0, V, (3, K, 4)), torch.tensor([4, 2, 0])

    def run(idx):
        sl = slice(idx, idx + 1) if idx is not None else slice(None)
        t, l = (text[sl], tl[sl]) if idx is None else pad_ids([[2, 3, 4], [5], []][sl])
        g = gens([7, 8, 9][sl])
        if method == "ar":
            return ar.generate(t, l, frames[sl], prompt=prompt[sl], prompt_lengths=plen[sl], generator=g)
        cfg = magnet_config(V, K, steps=(5, 3), rescore_weight=0.7 if method == "rescore" else 0.0)
        rs = ar.rescorer(t, l, frames[sl]) if method == "rescore" else None
        return model.generate(t, l, frames[sl], cfg, prompt=prompt[sl], prompt_lengths=plen[sl], generator=g,
                              rescore=rs)

    both = run(None)
    for i in range(3):
        alone = run(i)
        n = int(frames[i])
        assert torch.equal(both[i, :, :n], alone[0, :, :n]), i


def test_rescoring_orders_the_remasking_by_the_rescorer():
    """With rescore_weight 1 the tokens kept after step 0 are those the rescorer finds most likely."""
    size, vocab = 12, 5
    pref = torch.arange(size) % vocab  # the rescorer likes token pref[t] at t

    def forward(tokens, mask, step):
        return torch.zeros(1, size, vocab)  # MAGNeT itself is indifferent

    def rescore(tokens, step):
        return torch.nn.functional.one_hot(pref, vocab)[None].float() * 5.0

    snaps = []
    cfg = MaskPredictConfig(mask_id=vocab, steps=2, schedule="linear", temperature=1.0, rescore_weight=1.0)
    mask_predict(forward, torch.zeros(1, size, dtype=torch.long), cfg, generator=torch.Generator().manual_seed(0),
                 rescore=rescore, progress=lambda s, t: snaps.append(t.clone()))
    first = snaps[0][0]
    kept = first != vocab
    assert kept.sum() == size // 2
    agree = first == pref
    # every kept token agrees with the rescorer before any disagreeing one is kept
    assert agree[kept].all() or (agree & ~kept).sum() == 0
    with pytest.raises(ValueError, match="rescore_weight"):
        MaskPredictConfig(mask_id=vocab, rescore_weight=1.5)


def test_delay_pattern_round_trip_and_incremental_equals_teacher_forced():
    codes = torch.randint(0, V, (2, K, 7))
    lengths = torch.tensor([7, 5])
    d = delay(codes, lengths, V + 1)
    assert d.shape == (2, K, 7 + K - 1)
    assert torch.equal(d[0, 1, 1:8], codes[0, 1]) and d[0, 1, 0] == V + 1 and (d[1, 0, 5:] == V + 1).all()
    assert torch.equal(undelay(d, 7)[0], codes[0]) and torch.equal(undelay(d, 7)[1, :, :5], codes[1, :, :5])
    ar = tiny(DelayAR)
    text, tl = pad_ids([[2, 3], [4, 5, 2]])
    frames = torch.tensor([15, 12])
    greedy = ar.generate(text, tl, frames, temperature=0, cfg_coef=1.0)
    for stage in range(K):
        tf = ar.score(greedy, frames, text, tl, stage).argmax(-1)  # (B, T)
        assert torch.equal(tf[0], greedy[0, stage]) and torch.equal(tf[1, :12], greedy[1, stage, :12])


def _patterns(label: int, size: int) -> torch.Tensor:
    """Caption 'a' (label 0): codebook 0 is 1 and codebook 1 is 3; caption 'b': 4 and 6."""
    return torch.tensor([[1, 3], [4, 6]])[label][:, None].expand(K, size).clone()


@pytest.mark.parametrize("cls,kw", [(MAGNeT, {}), (MAGNeT, LOCAL), (DelayAR, {})])
def test_a_tiny_model_learns_a_tiny_conditional_pattern(cls, kw):
    model = tiny(cls, cond_dropout=0.2, max_frames=16, **kw).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(80):
        labels = torch.randint(0, 2, (16,))
        codes = torch.stack([_patterns(int(l), 16) for l in labels])
        text = (labels + 2)[:, None]  # token 2 = 'a', 3 = 'b'
        loss, _, _ = model(codes, torch.full((16,), 16), text, torch.ones(16, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    text, tl = torch.tensor([[2], [3], [2], [3]]), torch.ones(4, dtype=torch.long)
    frames = torch.full((4,), 16)
    if cls is MAGNeT:  # the default strategies (temperature 3 annealed, top-p 0.9, guidance 10 -> 1)
        out = model.generate(text, tl, frames, magnet_config(V, K, steps=(6, 3)), generator=gens([0, 1, 2, 3]))
    else:
        out = model.generate(text, tl, frames, generator=gens([0, 1, 2, 3]))
    for i, label in enumerate((0, 1, 0, 1)):
        assert (out[i] == _patterns(label, 16)).float().mean() >= 0.9, (label, out[i])


def test_tied_heads_score_by_the_input_embeddings():
    model = tiny(MAGNeT, tie_embeddings=True)
    assert model.head_w is None
    hidden = torch.randn(2, 5, 32)
    stage = torch.tensor([0, 1])
    want = torch.stack([hidden[b] @ model.embeds[int(stage[b])].weight[:V].T / math.sqrt(32) + model.head_b[stage[b]]
                        for b in range(2)])
    assert torch.allclose(model.logits(hidden, stage), want, atol=1e-5)
    with pytest.raises(ValueError, match="input_conv"):
        tiny(MAGNeT, input_conv=4)


def test_the_loss_is_the_cross_entropy_of_the_masked_frames_of_each_stage():
    model = tiny(MAGNeT, cond_dropout=0.0, input_conv=3, tie_embeddings=True)
    codes, lengths = torch.randint(0, V, (3, K, 10)), torch.tensor([10, 10, 7])
    stage = torch.tensor([0, 1, 1])
    masked = torch.zeros(3, 10, dtype=torch.bool)
    masked[0, :8], masked[1, 2], masked[2, 3:6] = True, True, True  # 8, 1 and 3 masked frames
    model.draw_masks = lambda lens, size: (stage, masked)
    text, tl = pad_ids([[2], [3, 4], []])
    loss, stats, _ = model(codes, lengths, text, tl)
    inputs = codes.clone()
    for b in range(3):
        inputs[b, int(stage[b]) + 1:] = V
        inputs[b, int(stage[b]), masked[b]] = V
    logits = model.logits(model.hidden(inputs, lengths, stage, *model.text(text, tl)), stage)
    ce = [torch.nn.functional.cross_entropy(logits[b, masked[b]], codes[b, int(stage[b]), masked[b]],
                                            reduction="none") for b in range(3)]
    want = torch.cat(ce).mean()  # every masked frame weighs the same
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    hits = torch.cat([logits[b, masked[b]].argmax(-1) == codes[b, int(stage[b]), masked[b]] for b in range(3)])
    assert float(stats["acc"]) == pytest.approx(float(hits.float().mean()))


def test_random_crop_and_length_errors():
    codes = torch.arange(2 * K * 30).view(2, K, 30)
    out, lens = random_crop(codes, torch.tensor([30, 10]), 12)
    assert out.shape == (2, K, 12) and lens.tolist() == [12, 10]
    start = int(out[0, 0, 0])
    assert torch.equal(out[0], codes[0, :, start:start + 12])
    assert torch.equal(out[1, :, :10], codes[1, :, :10])
    model = tiny(MAGNeT)
    text, tl = pad_ids([[2]])
    with pytest.raises(GenerationLengthError, match="trained on at most 40 frames"):
        model.generate(text, tl, torch.tensor([41]))
    with pytest.raises(GenerationLengthError):
        tiny(DelayAR).generate(text, tl, torch.tensor([41]))
    with pytest.raises(ValueError, match="codes hold ids outside"):
        model(torch.full((1, K, 5), V), torch.tensor([5]))
    # an empty caption is unconditional generation (only the null memory)
    empty_text, empty_len = pad_ids([[]])
    assert empty_len.tolist() == [0]
    out = model.generate(empty_text, empty_len, torch.tensor([9]), magnet_config(V, K, steps=2))
    assert (out < V).all()


def test_caption_tokenizer():
    assert caption_words("A slow A minor piece at 72 BPM, piano") == [
        "a", "slow", "a", "minor", "piece", "at", "7", "2", "bpm", ",", "piano"]
    tok = CaptionTokenizer.build(["a slow piece at 72 BPM", "a fast piece"])
    assert tok.tokens[:2] == ["<blank>", "<unk>"] and "7" in tok.ids
    assert tok.encode("a banjo piece at 27") == [tok.ids["a"], 1, tok.ids["piece"], tok.ids["at"], tok.ids["2"], tok.ids["7"]]
    assert tok.encode("") == []
    with pytest.raises(CaptionError, match="must start with"):
        CaptionTokenizer(["a", "b"])


def test_t5_conditioning_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    import sentencepiece as spm

    from audio_gen.conditioning import T5Tokens

    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(["a slow A minor piece at 72 BPM, piano melody over strings, no drums",
                                 "a fast C major piece at 140 BPM, brass melody over organ, with drums"] * 20))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=40,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    t5_dir = tmp_path / "t5"
    transformers.T5Tokenizer(vocab_file=str(tmp_path / "sp.model"), extra_ids=0).save_pretrained(t5_dir)
    cfg = transformers.T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(cfg).save_pretrained(t5_dir)
    ids = T5Tokens(t5_dir).encode("a slow piece")
    assert ids and all(0 <= i < 40 for i in ids) and T5Tokens(t5_dir).encode(" ") == []
    model = tiny(MAGNeT, text_encoder="t5", t5_dir=str(t5_dir))
    assert not any("t5" in n for n, _ in model.named_parameters())  # frozen, not ours to save
    text, tl = pad_ids([ids, []])
    loss, _, _ = model.train()(torch.randint(0, V, (2, K, 10)), torch.tensor([10, 8]), text, tl)
    loss.backward()
    assert model.text.proj.weight.grad is not None
    out = model.eval().generate(text, tl, torch.tensor([10, 6]), magnet_config(V, K, steps=2))
    assert (out[0] < V).all()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        T5Tokens(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
def _tiny_tree(root: Path):
    """Codes of two caption classes, a tiny mel-RVQ codec, caption tokens."""
    from audio_gen.data import TokenArchive
    from audio_gen.tokenizers import MelRVQConfig, MelRVQTokenizer

    cfg = MelRVQConfig(num_codebooks=K, codebook_size=V, n_mels=16, griffin_lim_iters=2)
    torch.manual_seed(0)
    MelRVQTokenizer.fit([torch.randn(8000) * 0.1 for _ in range(2)], cfg, iters=2).save(root / "tok")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("dev", 4)):
        d = root / "data" / split
        d.mkdir(parents=True)
        arch = TokenArchive(root / "dump" / "codes" / split)
        keys = []
        with open(d / "text", "w") as f:
            for i in range(n):
                u = f"{split}{i:03d}"
                keys.append(u)
                f.write(f"{u} a {'loud' if i % 2 else 'quiet'} piece\n")
                arch.write(u, _patterns(i % 2, int(rng.integers(14, 20))).numpy().astype(np.int16))
        arch.finish(keys)


def test_espnet_task_training_text_to_audio_and_generate_cli(tmp_path):
    _tiny_tree(tmp_path)
    env = dict(**__import__("os").environ, PYTHONPATH=str(ROOT))
    py = [sys.executable, "-m"]
    subprocess.run(py + ["audio_gen.bin.caption_tokens", "--train_dir", "data/train", "--token_list",
                         "dump/captions/tokens.txt", "--data_dir", "data/train", "data/dev", "--out_dir",
                         "dump/captions/train", "dump/captions/dev"], cwd=tmp_path, env=env, check=True)
    script = f"""
import sys
from audio_gen.task import TextToAudioTask
common = ['--acoustic_tokenizer', 'tok', '--token_list', 'dump/captions/tokens.txt', '--ngpu', '0',
          '--num_workers', '0', '--use_matplotlib', 'false', '--use_tensorboard', 'false',
          '--train_data_path_and_name_and_type', 'dump/codes/train/codes.scp,codes,npy',
          '--train_data_path_and_name_and_type', 'dump/captions/train/text_int,text,text_int',
          '--valid_data_path_and_name_and_type', 'dump/codes/dev/codes.scp,codes,npy',
          '--valid_data_path_and_name_and_type', 'dump/captions/dev/text_int,text,text_int',
          '--train_shape_file', 'dump/codes/train/codes_shape', '--valid_shape_file', 'dump/codes/dev/codes_shape',
          '--model_conf', 'd_model=32', '--model_conf', 'num_layers=1', '--model_conf', 'num_heads=2',
          '--model_conf', 'text_layers=1', '--model_conf', 'max_frames=20', '--model_conf', 'dropout=0.0',
          '--batch_type', 'sorted', '--batch_size', '4', '--max_epoch', '12', '--optim', 'adam',
          '--optim_conf', 'lr=0.01', '--seed', '0']
for m in ('magnet', 'ar'):
    TextToAudioTask.main(cmd=['--model', m, '--output_dir', 'exp/' + m] + common)
"""
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True)
    for m in ("magnet", "ar"):
        assert (tmp_path / "exp" / m / "valid.acc.ave.pth").is_file()
    from audio_gen.inference import TextToAudio

    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)  # config.yaml records recipe-relative paths
    try:
        t2a = TextToAudio(tmp_path / "exp" / "magnet", ar_dir=tmp_path / "exp" / "ar")
        assert t2a.max_seconds == pytest.approx(20 / t2a.frame_rate)
        for method in ("magnet", "magnet_rescore", "hybrid", "ar"):
            codes, frames = t2a.generate_codes(["a quiet piece", "a loud piece"], 16 / t2a.frame_rate, method,
                                               seeds=[0, 1], hybrid_seconds=4 / t2a.frame_rate)
            assert frames.tolist() == [16, 16]
            # each caption's constants (12 epochs of 6 steps on 24 items; the AR part samples at
            # temperature 1, so a few frames may be off): mostly its own caption's, not the other's
            for i in (0, 1):
                own = (codes[i] == _patterns(i, 16)).float().mean()
                other = (codes[i] == _patterns(1 - i, 16)).float().mean()
                assert own >= 0.75 and own - other >= 0.6, (method, codes)
        wavs = t2a.batch(["a quiet piece", ""], 0.2, seeds=[0, 1])
        assert len(wavs) == 2 and wavs[0].shape == (int(0.2 * t2a.sample_rate),)
        with pytest.raises(GenerationLengthError):
            t2a("a loud piece", seconds=10.0)
        with pytest.raises(ValueError, match="needs the AR model"):
            TextToAudio(tmp_path / "exp" / "magnet").batch(["a"], 0.1, method="hybrid")
        with pytest.raises(ValueError, match="not a MAGNeT model"):
            TextToAudio(tmp_path / "exp" / "ar")
    finally:
        os.chdir(cwd)
    out = tmp_path / "gen"
    cmd = py + ["audio_gen.bin.generate", "--model_dir", "exp/magnet", "--data_dir", "data/dev", "--out_dir", str(out),
                "--seconds", "0.2", "--batch_size", "3", "--max_utts", "3"]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    scp = (out / "wav.scp").read_text().split("\n")
    assert len([x for x in scp if x]) == 3 and (out / "timing.json").is_file()
    first = (out / "wav" / "dev000.wav").read_bytes()
    (out / "wav" / "dev001.wav").unlink()
    res = subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    assert "1 generated" in res.stdout  # resumed: only the missing one
    assert (out / "wav" / "dev000.wav").read_bytes() == first


@pytest.mark.parametrize("name,cls", [("train_magnet", MAGNeT), ("train_ar", DelayAR)])
def test_the_recipe_configs_build_their_models(name, cls):
    import yaml
    conf = yaml.safe_load((ROOT / "egs/synth_music/gen1/conf" / f"{name}.yaml").read_text())
    assert conf["model"] == name.split("_")[1]
    model = cls(4, 512, vocab_size=50, **conf["model_conf"])
    codes = torch.randint(0, 512, (2, 4, 30))
    loss, stats, _ = model(codes, torch.tensor([30, 20]), *pad_ids([[3, 4], [5]]))
    assert torch.isfinite(loss)
