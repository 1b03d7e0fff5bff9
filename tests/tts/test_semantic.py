"""tts.semantic: k-means semantic tokens over an ASR encoder layer (tiny recipe model), purity."""

import random

import pytest
import torch

from audio_gen.data import load_item, read_audio_list
from tts.semantic import (ASREncoderFeatures, SemanticTokenizer, TorchScriptFeatures, encoder_layer_outputs,
                          label_purity, purity)


def brute_purity(codes, labels):
    total = 0
    for c in set(codes):
        members = [lab for cc, lab in zip(codes, labels) if cc == c]
        total += max(members.count(x) for x in set(members))
    return total / len(codes)


@pytest.mark.parametrize("seed", range(5))
def test_purity_equals_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    codes = [rng.randrange(7) for _ in range(n)]
    labels = [rng.randrange(5) for _ in range(n)]
    c, y = torch.tensor(codes), torch.tensor(labels)
    assert purity(c, y, 7, 5) == pytest.approx(brute_purity(codes, labels))
    assert label_purity(c, y, 7, 5) == pytest.approx(brute_purity(labels, codes))


def test_purity_extremes():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert purity(y.clone(), y, 3, 3) == 1.0          # codes = labels
    assert purity(torch.zeros(6, dtype=torch.long), y, 3, 3) == pytest.approx(1 / 3)  # one code
    with pytest.raises(ValueError, match="differ"):
        purity(y[:3], y, 3, 3)


@pytest.fixture(scope="module")
def model_dir(tiny_recipe):
    return tiny_recipe / "exp/asr_train_tiny_char"


@pytest.fixture(scope="module")
def wavs(tiny_recipe):
    items = read_audio_list(tiny_recipe / "dump/raw/train")[:6]
    return [load_item(it, 16000) for it in items]


def test_layers_follow_the_encoder(model_dir, wavs):
    feats = ASREncoderFeatures(model_dir, layer=-1)
    assert feats.layer == feats.num_layers == 2 and feats.frame_rate == pytest.approx(25.0)
    outs, enc = encoder_layer_outputs(feats.s2t, wavs[:2], [0, 1, 2])
    assert outs[0].shape == outs[1].shape == outs[2].shape == enc.hidden.shape
    # ESPnet's own outputs (pre-norm encoder): the final output and the intermediate-CTC output
    # of block 1 are after_norm of the captured block outputs
    norm = feats.s2t.model.encoder.after_norm
    valid = (torch.arange(enc.hidden.shape[1])[None, :] < enc.lengths[:, None])[..., None]
    torch.testing.assert_close(norm(outs[2]) * valid, enc.hidden * valid, atol=1e-5, rtol=1e-5)
    inter = dict(enc.intermediate)[1]
    torch.testing.assert_close(norm(outs[1]) * valid, inter * valid, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[0], outs[1])
    with pytest.raises(ValueError, match="layer 5 is outside 0..2"):
        ASREncoderFeatures(model_dir, layer=5)


def test_fit_encode_batch_equals_items_and_round_trip(model_dir, wavs, tmp_path):
    feats = ASREncoderFeatures(model_dir, layer=1)
    tok = SemanticTokenizer.fit(feats, wavs, codebook_size=8, iters=5)
    assert tok.codebook_size == 8 and tok.frame_rate == pytest.approx(25.0)
    codes, lens = tok.encode_list(wavs[:4])
    assert codes.dtype == torch.long and int(codes.max()) < 8
    for i, w in enumerate(wavs[:4]):
        one, n = tok.encode(w)
        assert int(n[0]) == int(lens[i])
        assert torch.equal(one[0, : int(n[0])], codes[i, : int(lens[i])])
    # the frames of ~4 x 40 ms per output frame cover the audio
    assert all(abs(int(lens[i]) - w.numel() / 640) <= 2 for i, w in enumerate(wavs[:4]))
    tok.save(tmp_path / "sem")
    back = SemanticTokenizer.load(tmp_path / "sem")
    assert torch.equal(back.encode_list(wavs[:4])[0], codes)
    assert back.features.layer == 1


def test_torchscript_feature_source(tmp_path, wavs):
    class Frames(torch.nn.Module):
        def forward(self, wav: torch.Tensor, lens: torch.Tensor):
            t = wav.shape[1] // 320
            x = wav[:, : t * 320].reshape(wav.shape[0], t, 320)
            return torch.stack([x.abs().mean(-1), x.pow(2).mean(-1), x.max(-1).values], -1), lens // 320

    path = tmp_path / "enc.pt"
    torch.jit.script(Frames()).save(str(path))
    feats = TorchScriptFeatures(path, sample_rate=16000, frame_rate=50)
    tok = SemanticTokenizer.fit(feats, wavs, codebook_size=4, iters=5)
    tok.save(tmp_path / "ts")
    back = SemanticTokenizer.load(tmp_path / "ts")
    assert torch.equal(back.encode_list(wavs[:2])[0], tok.encode_list(wavs[:2])[0])
    with pytest.raises(FileNotFoundError, match="no such TorchScript encoder"):
        TorchScriptFeatures(tmp_path / "missing.pt", 16000, 50)
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.pt: cannot be loaded as a TorchScript module"):
        TorchScriptFeatures(tmp_path / "bad.pt", 16000, 50)


def test_from_frames_and_quantize_recover_blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, -5.0], [-5.0, 5.0, 0.0]])
    labels = torch.randint(0, 3, (300,), generator=g)
    x = centers[labels] + 0.1 * torch.randn(300, 3, generator=g)
    tok = SemanticTokenizer.from_frames(None, x, codebook_size=3, iters=10)
    codes = tok.quantize(x.reshape(3, 100, 3))
    assert codes.shape == (3, 100)
    # a bijection between blobs and codes: every frame of a blob gets the same code
    pairs = set(zip(labels.tolist(), codes.reshape(-1).tolist()))
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    with pytest.raises(ValueError, match="frames must be"):
        SemanticTokenizer.from_frames(None, torch.zeros(0, 3), codebook_size=2)
