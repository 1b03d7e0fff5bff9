"""MaskGCT: T2S / S2A models, batched decoding, training loss plumbing, the Text2Speech API."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import yaml

from nar.mask_predict import MaskPredictConfig
from tests.conftest import ROOT
from tts.models.maskgct import S2AModel, T2SModel, align_frames
from tts.task import collate

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def sampling(mask_id, steps, guidance="hidden"):
    return MaskPredictConfig(mask_id=mask_id, steps=steps, temperature=1.0, top_k=5, guidance=guidance,
                             cfg_scale=2.5, cfg_rescale=0.75, confidence_noise=1.0)


#: the paper's model and every local prior at once (module docstring of tts.models.maskgct)
LOCAL = dict(input_conv=3, tie_embeddings=True, position="sin+rope", conv_kernel=3)


@pytest.fixture(scope="module", params=["paper", "local"])
def t2s(request):
    torch.manual_seed(0)
    opts = LOCAL if request.param == "local" else {}
    return T2SModel(20, 16, d_model=32, num_layers=2, num_heads=4, **opts).eval()


@pytest.fixture(scope="module", params=["paper", "local"])
def s2a(request):
    torch.manual_seed(1)
    opts = LOCAL if request.param == "local" else {}
    return S2AModel(16, 3, 12, semantic_rate=25, acoustic_rate=50, d_model=32, num_layers=2, num_heads=4,
                    **opts).eval()


# --------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("guidance", ["hidden", "logits", "none"])
def test_t2s_batch_decodes_as_its_items_and_keeps_the_prompt(t2s, guidance):
    g = torch.Generator().manual_seed(3)
    phones = torch.randint(1, 20, (3, 9), generator=g)
    ph_lens = torch.tensor([9, 6, 4])
    prompt = torch.randint(0, 16, (3, 5), generator=g)
    p_lens = torch.tensor([5, 2, 0])
    t_lens = torch.tensor([7, 11, 3])
    cfg = sampling(16, 6, guidance)
    seen = []
    out, lens = t2s.generate(phones, ph_lens, prompt, p_lens, t_lens, cfg, generator=gens([5, 6, 7]),
                             progress=lambda step, tok: seen.append(tok))
    assert torch.equal(lens, t_lens) and out.shape == (3, 11)
    assert int(out.max()) < 16 and int(out.min()) >= 0
    for tok in seen:  # the prompt is never masked nor rewritten, at any step
        for b in range(3):
            assert torch.equal(tok[b, : p_lens[b]], prompt[b, : p_lens[b]])
    for b, seed in enumerate([5, 6, 7]):
        one, _ = t2s.generate(phones[b:b + 1, : ph_lens[b]], ph_lens[b:b + 1], prompt[b:b + 1, : p_lens[b]],
                              p_lens[b:b + 1], t_lens[b:b + 1], cfg, generator=gens([seed]))
        assert torch.equal(one[0], out[b, : t_lens[b]])


def test_s2a_batch_decodes_as_its_items_and_keeps_the_prompt(s2a):
    g = torch.Generator().manual_seed(4)
    sem_p = torch.randint(0, 16, (2, 6), generator=g)
    sem_t = torch.randint(0, 16, (2, 8), generator=g)
    codes_p = torch.randint(0, 12, (2, 3, 12), generator=g)
    sp_lens, st_lens, cp_lens = torch.tensor([6, 3]), torch.tensor([5, 8]), torch.tensor([12, 6])
    cfg = sampling(12, (4, 2, 1))
    seen = []
    out, frames = s2a.generate(sem_p, sp_lens, sem_t, st_lens, codes_p, cp_lens, cfg, generator=gens([1, 2]),
                               progress=lambda step, tok: seen.append(tok))
    assert frames.tolist() == [10, 16]  # semantic frames x 50 / 25
    assert len(seen) == 4 + 2 + 1
    for tok in seen:
        for b in range(2):
            assert torch.equal(tok[b, :, : cp_lens[b]], codes_p[b, :, : cp_lens[b]])
    for b, seed in enumerate([1, 2]):
        one, _ = s2a.generate(sem_p[b:b + 1, : sp_lens[b]], sp_lens[b:b + 1], sem_t[b:b + 1, : st_lens[b]],
                              st_lens[b:b + 1], codes_p[b:b + 1, :, : cp_lens[b]], cp_lens[b:b + 1], cfg,
                              generator=gens([seed]))
        assert torch.equal(one[0], out[b, :, : frames[b]])


def test_align_frames_maps_by_rate():
    sem = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    out = align_frames(sem, torch.tensor([3, 2]), torch.tensor([7, 3]), 25, 50)
    assert out.tolist() == [[1, 1, 2, 2, 3, 3, 3], [4, 4, 5, 0, 0, 0, 0]]


def test_losses_are_finite_and_only_on_masked_positions(s2a):
    torch.manual_seed(0)
    t2s = T2SModel(10, 8, d_model=16, num_layers=1, num_heads=2)
    loss, stats, _ = t2s(torch.randint(1, 10, (4, 5)), torch.tensor([5, 4, 3, 2]), torch.randint(0, 8, (4, 9)),
                         torch.tensor([9, 2, 5, 1]))
    assert torch.isfinite(loss).all() and 0 <= float(stats["acc"]) <= 1
    s2a.train()
    codes = torch.randint(0, 12, (3, 3, 10))
    loss, _, _ = s2a(torch.randint(0, 16, (3, 5)), torch.tensor([5, 3, 1]), codes, torch.tensor([10, 6, 2]))
    s2a.eval()
    assert torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="codebooks"):
        s2a(torch.zeros(1, 5, dtype=torch.long), torch.tensor([5]), torch.zeros(1, 2, 10, dtype=torch.long),
            torch.tensor([10]))


def test_tied_heads_are_the_input_embeddings():
    """tie_embeddings: logits = hidden . (embedding rows of the real tokens) / sqrt(D) + bias."""
    torch.manual_seed(0)
    t2s = T2SModel(10, 8, d_model=16, num_layers=1, num_heads=2, tie_embeddings=True)
    h = torch.randn(2, 5, 16)
    want = h @ t2s.sem_emb.weight[:8].T / 4 + t2s.out_bias
    assert torch.allclose(t2s.head(h), want, atol=1e-6)
    assert t2s.out is None  # no separate output rows
    s2a = S2AModel(16, 3, 12, semantic_rate=25, acoustic_rate=50, d_model=16, num_layers=1, num_heads=2,
                   tie_embeddings=True)
    stage = torch.tensor([2, 0])
    rows = s2a.code_emb.weight.view(3, 13, 16)
    for b in range(2):  # codebook k's rows are k * (V + 1) .. k * (V + 1) + V - 1 (the mask row excluded)
        want = h[b] @ rows[int(stage[b]), :12].T / 4 + s2a.head_bias[stage[b]]
        assert torch.allclose(s2a.head(h, stage)[b], want, atol=1e-6)
    assert s2a.head_weight is None


def test_t2s_rope_numbers_phones_and_semantic_as_one_sequence():
    """With rotary positions, shifting every position by the same offset changes nothing: the
    semantic frames must sit right after each item's own phones (not after the batch's padded
    phone width), which the batch = items test checks; here: padding the phones changes nothing."""
    torch.manual_seed(0)
    model = T2SModel(10, 8, d_model=16, num_layers=2, num_heads=2, dropout=0.0, position="rope").eval()
    phones, sem = torch.randint(1, 10, (1, 4)), torch.randint(0, 8, (1, 6))
    a = model.hidden(phones, torch.tensor([4]), sem, torch.tensor([6]))
    padded = torch.cat([phones, torch.zeros(1, 3, dtype=torch.long)], 1)
    b = model.hidden(padded, torch.tensor([4]), sem, torch.tensor([6]))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cls", ["t2s", "s2a"])
def test_bad_local_options(cls):
    for bad in (2, -1):
        with pytest.raises(ValueError, match="input_conv"):
            if cls == "t2s":
                T2SModel(10, 8, d_model=16, num_layers=1, num_heads=2, input_conv=bad)
            else:
                S2AModel(16, 3, 12, 25, 50, d_model=16, num_layers=1, num_heads=2, input_conv=bad)
    with pytest.raises(ValueError, match="position"):
        T2SModel(10, 8, d_model=16, num_layers=1, num_heads=2, position="alibi")


@pytest.mark.parametrize("name", ["train_t2s", "train_s2a"])
def test_the_recipe_configs_build_their_models(name):
    conf = yaml.safe_load((ROOT / "egs/synth_en/tts1/conf" / f"{name}.yaml").read_text())
    torch.manual_seed(0)
    if conf["model"] == "t2s":
        model = T2SModel(40, 512, **conf["model_conf"])
        loss, _, _ = model(torch.randint(1, 40, (2, 6)), torch.tensor([6, 4]), torch.randint(0, 512, (2, 12)),
                           torch.tensor([12, 7]))
    else:
        assert conf["model"] == "s2a"
        model = S2AModel(512, 8, 1024, 25, 50, **conf["model_conf"])
        loss, _, _ = model(torch.randint(0, 512, (2, 6)), torch.tensor([6, 4]), torch.randint(0, 1024, (2, 8, 12)),
                           torch.tensor([12, 8]))
    assert torch.isfinite(loss)


def test_collate_pads_the_time_axis_of_each_name():
    import numpy as np

    batch = [("a", {"codes": np.ones((2, 3), np.int16), "phones": np.array([4, 5])}),
             ("b", {"codes": np.full((2, 5), 2, np.int16), "phones": np.array([7])})]
    ids, out = collate(batch)
    assert ids == ["a", "b"] and out["codes"].shape == (2, 2, 5) and out["codes_lengths"].tolist() == [3, 5]
    assert out["phones"].tolist() == [[4, 5], [7, 0]]
    with pytest.raises(ValueError, match="utterance b: codes"):
        collate([batch[0], ("b", {"codes": np.ones((3, 5)), "phones": np.array([1])})])


# --------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("local, steps, floor", [(False, 200, 0.95), (True, 400, 0.9)])
def test_tiny_t2s_learns_a_copy_task(local, steps, floor):
    """Semantic token = phone id, each phone lasting 2 frames: after training, greedy decoding
    without a prompt must reproduce it (the model has to learn the monotonic alignment). The
    local priors fit a copy-from-neighbours task, not this alignment: with all of them the model
    learns it more slowly (0.93 at 200 steps, 0.96 at 400 when written), hence more steps."""
    torch.manual_seed(0)
    model = T2SModel(8, 8, d_model=32, num_layers=2, num_heads=4, dropout=0.0, prompt_prob=0.5, uncond_prob=0.0,
                     **(LOCAL if local else {}))
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        lens = torch.randint(3, 7, (n,), generator=g)
        phones = torch.randint(1, 8, (n, 6), generator=g) * (torch.arange(6) < lens[:, None])
        return phones, lens, phones.repeat_interleave(2, dim=1), 2 * lens

    for _ in range(steps):
        loss = model(*batch(16))[0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    phones, lens, sem, sem_lens = batch(64)
    cfg = MaskPredictConfig(mask_id=8, steps=6, temperature=0.0)
    out, _ = model.generate(phones, lens, sem[:, :0], torch.zeros(64, dtype=torch.long), sem_lens, cfg)
    valid = torch.arange(out.shape[1]) < sem_lens[:, None]
    acc = float((out == sem[:, : out.shape[1]])[valid].float().mean())
    assert acc > floor, acc  # chance level is about 1/7


# --------------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def tts_dirs(tmp_path_factory):
    """Tiny tokenizers and random-init T2S/S2A checkpoints in the recipe's on-disk format."""
    from audio_gen.tokenizers.mel_rvq import MelRVQConfig, MelRVQTokenizer
    from tests.audio_gen.test_tokenizers import voiced
    from tts.semantic import SemanticTokenizer, TorchScriptFeatures
    from tts.text import PhoneTokenizer

    root = tmp_path_factory.mktemp("tts")
    wavs = [voiced(16000 + 1000 * i, seed=i) for i in range(6)]

    class Frames(torch.nn.Module):
        def forward(self, wav: torch.Tensor, lens: torch.Tensor):
            t = wav.shape[1] // 640
            x = wav[:, : t * 640].reshape(wav.shape[0], t, 640)
            return torch.stack([x.abs().mean(-1), x.pow(2).mean(-1), x.max(-1).values], -1), lens // 640

    torch.jit.script(Frames()).save(str(root / "enc.pt"))
    sem = SemanticTokenizer.fit(TorchScriptFeatures(root / "enc.pt", 16000, 25), wavs, codebook_size=8, iters=4)
    sem.save(root / "semantic")
    MelRVQTokenizer.fit(wavs, MelRVQConfig(n_mels=40, num_codebooks=2, codebook_size=16, griffin_lim_iters=4),
                        iters=4, seed=0).save(root / "acoustic")
    tokens = PhoneTokenizer.build_token_list([list("abcdefghijklmnopqrstuvwxyz"), ["ə", "ɪ", "ˈɪ", "ˈeɪ", "ɛ", "ð"]])
    torch.manual_seed(0)
    models = {"t2s": T2SModel(len(tokens), 8, d_model=32, num_layers=1, num_heads=2),
              "s2a": S2AModel(8, 2, 16, 25.0, 50.0, d_model=32, num_layers=1, num_heads=2)}
    confs = {"t2s": dict(d_model=32, num_layers=1, num_heads=2), "s2a": dict(d_model=32, num_layers=1, num_heads=2)}
    for name, model in models.items():
        d = root / name
        d.mkdir()
        cfg = {"model": name, "model_conf": confs[name], "semantic_tokenizer": str(root / "semantic"),
               "acoustic_tokenizer": str(root / "acoustic") if name == "s2a" else None,
               "token_list": tokens if name == "t2s" else None}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
        torch.save(model.state_dict(), d / "latest.pth")
    return root, wavs


@pytest.fixture(scope="module")
def tts(tts_dirs):
    from tts.inference import Text2Speech

    root, _ = tts_dirs
    return Text2Speech(root / "t2s", root / "s2a", t2s_config=sampling(8, 4),
                       s2a_config=sampling(16, (3, 1)))


@needs_espeak
def test_text2speech_batch_equals_singles_and_length_rule(tts, tts_dirs):
    _, wavs = tts_dirs
    texts = ["a big dog", "she had a cat and a hat"]
    prompt_texts = ["the bed", "this is it"]
    out = tts.batch(texts, wavs[:2], prompt_texts, prompt_sr=16000, seeds=[3, 4])
    for i in range(2):
        one = tts(texts[i], wavs[i], prompt_texts[i], prompt_sr=16000, seed=[3, 4][i])
        assert one.shape == out[i].shape and torch.allclose(one, out[i], atol=1e-3)
    # length: the prompt's speaking rate (semantic frames per phone) times the target phones
    from tts.duration import rule_frames

    prompt_frames = wavs[1].numel() // 640
    frames = round(rule_frames(tts.phonemizer(prompt_texts[1]), prompt_frames, tts.phonemizer(texts[1])))
    assert out[1].numel() == frames * 2 * 320  # 2 acoustic frames per semantic frame, hop 320
    fixed = tts(texts[0], wavs[0], prompt_texts[0], seconds=0.5)
    assert fixed.numel() == round(0.5 * 25) * 2 * 320


@needs_espeak
@pytest.mark.parametrize("kwargs, message", [
    (dict(text=""), "item 0: the text is missing or empty"),
    (dict(text="!!! ---"), "item 0"),
    (dict(prompt_text=""), "prompt text is missing or empty"),
    (dict(prompt_text=None), "transcript of the prompt"),
    (dict(prompt_wav=torch.zeros(2000)), "at least 0.5 s"),
    (dict(prompt_sr=8000), "8000 Hz but the model works at 16000 Hz"),
    (dict(prompt_wav=torch.zeros(2, 16000)), "mono"),
    (dict(prompt_wav=torch.full((16000,), math.nan)), "NaN"),
])
def test_text2speech_bad_inputs(tts, tts_dirs, kwargs, message):
    _, wavs = tts_dirs
    args = dict(text="a dog", prompt_wav=wavs[0], prompt_text="the cat", prompt_sr=16000) | kwargs
    with pytest.raises(ValueError, match=message):
        tts(**args)


def test_text2speech_missing_dirs(tmp_path, tts_dirs):
    from tts.inference import Text2Speech

    root, _ = tts_dirs
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        Text2Speech(tmp_path, root / "s2a")
    with pytest.raises(ValueError, match="must hold a t2s model"):
        Text2Speech(root / "s2a", root / "t2s")
    with pytest.raises(ValueError, match="duration_model"):
        Text2Speech(root / "t2s", root / "s2a", duration="model")


@needs_espeak
def test_text2speech_oracle_semantic_replaces_t2s(tts, tts_dirs):
    _, wavs = tts_dirs
    out = tts.batch(["a dog"], [wavs[0]], ["the cat"], target_semantic=[torch.tensor([1, 2, 3, 4, 5])])
    assert out[0].numel() == 5 * 2 * 320  # 5 semantic frames -> 10 acoustic frames of 320 samples
    with pytest.raises(ValueError, match="target_semantic has 2 items"):
        tts.batch(["a dog"], [wavs[0]], ["the cat"], target_semantic=[torch.tensor([1]), torch.tensor([2])])


@needs_espeak
def test_synthesize_cli_oracle_duration_takes_the_reference_length(tts_dirs, tmp_path):
    """--oracle_duration: each output is as long as its reference recording (in semantic frames),
    whatever the prompt's speaking rate says; without it the length follows the rule."""
    import soundfile as sf

    from tts.bin.synthesize import main

    root, wavs = tts_dirs
    data = tmp_path / "data"
    data.mkdir()
    utts = {f"spk{i % 2}-{i:03d}": w for i, w in enumerate(wavs[:4])}
    texts = ["a big dog", "she had a cat", "the bed is red", "this is it"]
    for name, lines in (("wav.scp", [f"{u} {tmp_path / u}.wav" for u in utts]),
                        ("text", [f"{u} {t}" for u, t in zip(utts, texts)]),
                        ("utt2spk", [f"{u} {u.split('-')[0]}" for u in utts])):
        (data / name).write_text("\n".join(sorted(lines)) + "\n")
    for u, w in utts.items():
        sf.write(tmp_path / f"{u}.wav", w.numpy(), 16000)
    common = ["--data_dir", str(data), "--t2s_dir", str(root / "t2s"), "--s2a_dir", str(root / "s2a"),
              "--t2s_steps", "2", "--s2a_steps", "2,1", "--batch_size", "2"]
    assert main([*common, "--out_dir", str(tmp_path / "oracle"), "--oracle_duration"]) == 0
    assert main([*common, "--out_dir", str(tmp_path / "rule")]) == 0
    differs = 0
    for u, w in utts.items():
        got = sf.info(str(tmp_path / "oracle" / "wav" / f"{u}.wav")).frames
        assert got == round(w.numel() / 16000 * 25) * 640  # 25 semantic frames/s, 640 samples each
        differs += sf.info(str(tmp_path / "rule" / "wav" / f"{u}.wav")).frames != got
    assert differs > 0  # the option changed something: the rule's lengths are not the references'
