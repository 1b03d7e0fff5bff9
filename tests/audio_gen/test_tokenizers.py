"""audio_gen.tokenizers: the interface contract, mel-RVQ, k-means, STFT/Griffin-Lim, EnCodec loader."""

import logging
import math

import pytest
import soundfile as sf
import torch

from audio_gen.tokenizers import EncodecTokenizer, MelRVQConfig, MelRVQTokenizer, load_tokenizer
from audio_gen.tokenizers.kmeans import kmeans, nearest, residual_kmeans, rvq_decode, rvq_encode
from audio_gen.tokenizers.spectral import Spectral

SR = 16000


def voiced(n: int, seed: int) -> torch.Tensor:
    """A speech-like test signal: a gliding harmonic tone with a moving formant and pauses."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    f0 = 100 + 60 * torch.rand(1, generator=g) + 30 * torch.sin(2 * math.pi * 1.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    formant = 500 + 1500 * torch.rand(1, generator=g) * (1 + torch.sin(2 * math.pi * 0.7 * t)) / 2
    x = sum(torch.sin(h * phase) / h * torch.exp(-((h * f0 - formant) / 600) ** 2) for h in range(1, 30))
    env = (torch.sin(2 * math.pi * 2.0 * t + float(torch.rand(1, generator=g)) * 6) > -0.3).float()
    return (0.3 * x * env + 0.003 * torch.randn(n, generator=g)).float()


def write_data_dir(d, lengths, prefix: str = "u"):
    """A Kaldi data dir in ``d``: one ``voiced`` float wav per length, keys ``<prefix><i>``."""
    (d / "wav").mkdir()
    lines = []
    for i, n in enumerate(lengths):
        p = d / "wav" / f"u{i}.wav"
        sf.write(p, voiced(n, i).numpy(), SR, subtype="FLOAT")
        lines.append(f"{prefix}{i} {p}")
    (d / "wav.scp").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def train_wavs():
    return [voiced(SR + 997 * i, seed=i) for i in range(12)]


@pytest.fixture(scope="module")
def tok(train_wavs):
    cfg = MelRVQConfig(n_mels=40, num_codebooks=3, codebook_size=32, griffin_lim_iters=16)
    return MelRVQTokenizer.fit(train_wavs, cfg, iters=8, seed=0)


def batch_of(wavs):
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([w.numel() for w in wavs])


# ----------------------------------------------------------------------------- k-means


def test_nearest_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(3000, 7, generator=g), torch.randn(50, 7, generator=g)
    assert torch.equal(nearest(x, c), torch.cdist(x.double(), c.double()).argmin(1))


def test_kmeans_matches_sklearn_inertia_and_recovers_blobs():
    sklearn = pytest.importorskip("sklearn.cluster")
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(8, 5, generator=g) * 10
    x = (centers[torch.arange(4000) % 8] + torch.randn(4000, 5, generator=g)).float()
    c = kmeans(x, 8, iters=30, seed=0)
    inertia = float((x - c[nearest(x, c)]).pow(2).sum())
    ref = sklearn.KMeans(8, n_init=10, random_state=0).fit(x.numpy())
    assert inertia <= ref.inertia_ * 1.01
    # every true centre has a codeword close to it
    assert torch.cdist(centers, c).min(1).values.max() < 0.5


def test_residual_stages_never_increase_training_error():
    x = torch.randn(5000, 6, generator=torch.Generator().manual_seed(2)) * torch.tensor([5, 3, 2, 1, 1, 0.5])
    books = residual_kmeans(x, num_codebooks=4, codebook_size=16, iters=10, refine_rounds=0)
    errs = [float(x.pow(2).mean())]
    for k in range(1, 5):
        errs.append(float((x - rvq_decode(rvq_encode(x, books[:k]), books[:k])).pow(2).mean()))
    assert all(b <= a + 1e-6 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.3 * errs[0]


def test_kmeans_errors():
    with pytest.raises(ValueError, match="cannot make 10 clusters"):
        kmeans(torch.randn(5, 2), 10)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[float("nan"), 0.0]] * 20), 2)


# ----------------------------------------------------------------------------- STFT / GL


def test_stft_equals_torch_stft_with_zero_padding():
    sp = Spectral(SR, 512, 128, 40)
    x = voiced(5000, 3)
    spec, n = sp.stft(x[None], torch.tensor([5000]))
    ref = torch.stft(x, 512, 128, window=torch.hann_window(512), center=True, pad_mode="constant",
                     return_complex=True)
    assert int(n[0]) == math.ceil(5000 / 128)
    torch.testing.assert_close(spec[0], ref[:, : int(n[0])], atol=1e-4, rtol=1e-4)


def test_istft_inverts_stft_and_batch_equals_items():
    sp = Spectral(SR, 512, 128, 40)
    wavs = [voiced(n, s) for s, n in enumerate((5000, 3333, 129))]
    x, lens = batch_of(wavs)
    spec, n = sp.stft(x, lens)
    y, ylens = sp.istft(spec, n)
    assert ylens.tolist() == [math.ceil(v / 128) * 128 for v in lens.tolist()]
    for i, w in enumerate(wavs):
        torch.testing.assert_close(y[i, : w.numel()], w, atol=1e-5, rtol=0)
        assert y[i, int(ylens[i]):].abs().max() == 0 if int(ylens[i]) < y.shape[1] else True
        alone, _ = sp.stft(w[None], torch.tensor([w.numel()]))
        torch.testing.assert_close(spec[i, :, : int(n[i])], alone[0], atol=1e-5, rtol=0)


def test_griffin_lim_recovers_a_consistent_magnitude():
    sp = Spectral(SR, 512, 128, 40)
    x = voiced(8000, 4)
    spec, n = sp.stft(x[None], torch.tensor([8000]))
    mag = spec.abs()

    def convergence(iters):
        y, lens = sp.griffin_lim(mag, n, n_iter=iters)
        rebuilt, _ = sp.stft(y, lens)
        return float((rebuilt.abs() - mag).norm() / mag.norm())

    c0, c32 = convergence(0), convergence(32)
    assert c32 < 0.15 and c32 < 0.5 * c0, (c0, c32)


# ----------------------------------------------------------------------------- mel-RVQ


def test_shapes_and_lengths_for_odd_lengths(tok):
    wavs = [voiced(n, n) for n in (16000, 12345, 321, 320)]
    codes, code_lens = tok.encode(*batch_of(wavs))
    assert codes.dtype == torch.long and codes.shape == (4, 3, 50)
    assert code_lens.tolist() == [50, 39, 2, 1]
    assert int(codes.min()) >= 0 and int(codes.max()) < tok.codebook_size
    assert bool((codes[1, :, 39:] == 0).all())
    wav, wav_lens = tok.decode(codes, code_lens)
    assert wav_lens.tolist() == [16000, 39 * 320, 640, 320]
    assert wav.shape == (4, 16000)
    assert tok.frame_rate == 50 and tok.samples_per_frame == 320


def test_batch_equals_items_and_deterministic(tok):
    wavs = [voiced(n, n) for n in (16000, 9001, 4444)]
    codes, code_lens = tok.encode(*batch_of(wavs))
    wav, wav_lens = tok.decode(codes, code_lens)
    for i, w in enumerate(wavs):
        c1, l1 = tok.encode(w)
        assert torch.equal(c1[0], codes[i, :, : int(code_lens[i])])
        y1, n1 = tok.decode(c1, l1)
        # Griffin-Lim iterates FFTs of different batch shapes: equal up to float rounding
        err = (y1[0] - wav[i, : int(n1[0])]).abs().max()
        assert err < 1e-3 * max(1.0, float(y1.abs().max())), float(err)
    again, _ = tok.encode(*batch_of(wavs))
    assert torch.equal(again, codes)
    wav2, _ = tok.decode(codes, code_lens)
    assert torch.equal(wav2, wav)


def test_fit_is_deterministic_and_more_codebooks_reconstruct_better(tok, train_wavs):
    again = MelRVQTokenizer.fit(train_wavs, tok.config, iters=8, seed=0)
    assert torch.equal(again.codebooks, tok.codebooks)
    x, lens = batch_of(train_wavs[:4])
    lm, nf = tok.log_mel(x, lens)
    codes, _ = tok.encode(x, lens)
    mask = (torch.arange(lm.shape[2])[None, :] < nf[:, None])[:, None, :]
    errs = [float(((tok.codes_to_log_mel(codes[:, :k]) - lm).pow(2) * mask).sum()) for k in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]


def test_reconstruction_keeps_the_spectrum(tok, train_wavs):
    """Decoded audio re-analysed gives log-mels close to the codes' log-mels (the vocoder is
    consistent) and much closer to the input's than a different signal's."""
    w = train_wavs[0]
    codes, n = tok.encode(w)
    y, ylen = tok.decode(codes, n)
    target = tok.codes_to_log_mel(codes)
    lm_y, _ = tok.log_mel(y, ylen)
    lm_x, _ = tok.log_mel(w[None], torch.tensor([w.numel()]))
    lm_other, _ = tok.log_mel(train_wavs[5][None, : w.numel()], torch.tensor([w.numel()]))
    d_vocoder = float((lm_y - target).abs().mean())
    d_input = float((lm_y - lm_x).abs().mean())
    d_other = float((lm_other[..., : lm_x.shape[2]] - lm_x).abs().mean())
    assert d_vocoder < 0.6 and d_input < 0.5 * d_other, (d_vocoder, d_input, d_other)


def test_save_load_round_trip(tok, tmp_path, train_wavs):
    tok.save(tmp_path / "t")
    back = load_tokenizer(tmp_path / "t")
    assert isinstance(back, MelRVQTokenizer) and back.config == tok.config
    x, lens = batch_of(train_wavs[:3])
    c1, l1 = tok.encode(x, lens)
    c2, l2 = back.encode(x, lens)
    assert torch.equal(c1, c2) and torch.equal(l1, l2)
    assert torch.equal(tok.decode(c1, l1)[0], back.decode(c2, l2)[0])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "nope"}')
    with pytest.raises(ValueError, match="unknown tokenizer type 'nope'"):
        load_tokenizer(tmp_path)
    with pytest.raises(RuntimeError, match="not trained"):
        MelRVQTokenizer(MelRVQConfig()).encode(torch.zeros(1000))


# ----------------------------------------------------------------------------- bad input


def test_wrong_sample_rate_is_resampled_and_logged(tok, caplog):
    w = voiced(SR, 7)
    w8k = torch.nn.functional.interpolate(w[None, None], scale_factor=0.5, mode="linear")[0, 0]
    with caplog.at_level(logging.WARNING):
        codes, n = tok.encode(w8k, sample_rate=8000)
    assert "resampling the input from 8000 Hz" in caplog.text
    assert int(n[0]) == 50  # the duration, not the sample count, decides the frames


def test_bad_audio_errors(tok):
    with pytest.raises(ValueError, match="wav\\[1\\]: 100 samples is shorter than one frame"):
        tok.encode(*batch_of([voiced(4000, 1), voiced(100, 2)]))
    with pytest.raises(ValueError, match="utt7: the signal contains NaN"):
        tok.encode(torch.full((1, 800), float("nan")), names=["utt7"])
    with pytest.raises(ValueError, match="mono"):
        tok.encode(torch.zeros(1, 2, 800))
    with pytest.raises(ValueError, match="float samples"):
        tok.encode(torch.zeros(800, dtype=torch.int16))
    with pytest.raises(ValueError, match="outside"):
        tok.encode(torch.zeros(1, 800), torch.tensor([900]))


def test_silence_encodes_and_decodes_to_silence(tok):
    codes, n = tok.encode(torch.zeros(1, 3200))
    assert (codes == codes[:, :, :1]).all()  # one code per codebook for the whole pause
    y, _ = tok.decode(codes, n)
    assert float(y.abs().max()) < 0.05


def test_clipping_warns(tok, caplog):
    w = (voiced(SR, 3) * 20).clamp(-1, 1)
    with caplog.at_level(logging.WARNING):
        tok.encode(w, names=["loud.wav"])
    assert "loud.wav" in caplog.text and "clipped" in caplog.text


def test_decode_rejects_bad_codes(tok):
    good = torch.zeros(1, 3, 10, dtype=torch.long)
    bad = good.clone()
    bad[0, 2, 7] = 32
    with pytest.raises(ValueError, match="code 32 at item 0, codebook 2, frame 7 is out of range \\[0, 32\\)"):
        tok.decode(bad)
    with pytest.raises(ValueError, match="code -1"):
        tok.decode(good - 1)
    with pytest.raises(ValueError, match="integers"):
        tok.decode(good.float())
    with pytest.raises(ValueError, match="4 codebooks; this tokenizer has 3"):
        tok.decode(torch.zeros(1, 4, 10, dtype=torch.long))
    # padding past code_lens may hold a mask id; it is ignored
    padded = good.clone()
    padded[0, :, 8:] = 999
    y, n = tok.decode(padded, torch.tensor([8]))
    assert n.tolist() == [8 * 320]
    # fewer codebooks: a coarser decode
    y2, _ = tok.decode(good[:, :1])
    assert y2.shape == (1, 3200)


# ----------------------------------------------------------------------------- EnCodec


@pytest.fixture(scope="module")
def encodec_ckpt(tmp_path_factory):
    """A randomly initialised EnCodec 24 kHz saved in the released checkpoint's format (a state dict)."""
    from encodec import EncodecModel

    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    d = tmp_path_factory.mktemp("encodec")
    torch.save(model.state_dict(), d / "encodec_24khz-d7cc33bc.th")
    return d, model


def test_encodec_local_checkpoint_matches_the_package(encodec_ckpt, tmp_path):
    d, model = encodec_ckpt
    tok = EncodecTokenizer.from_pretrained(d, bandwidth=3.0)
    assert (tok.sample_rate, tok.frame_rate, tok.num_codebooks, tok.codebook_size) == (24000, 75, 4, 1024)
    wavs = [voiced(n, n) * 0.5 for n in (24000, 13001, 700)]
    codes, code_lens = tok.encode(*batch_of(wavs))
    assert code_lens.tolist() == [75, 41, 3]
    model.set_target_bandwidth(3.0)
    with torch.no_grad():
        for i, w in enumerate(wavs):
            ref_codes = model.encode(w[None, None])[0][0]
            n = int(code_lens[i])
            assert torch.equal(codes[i, :, :n], ref_codes[0, :, :n])
            ref_wav = model.decode([(ref_codes[:, :, :n], None)])[0, 0]
            y, ylen = tok.decode(codes[i:i + 1, :, :n])
            torch.testing.assert_close(y[0], ref_wav[: int(ylen[0])], atol=1e-5, rtol=1e-4)
    # save -> load_tokenizer keeps the codes
    tok.save(tmp_path / "enc")
    back = load_tokenizer(tmp_path / "enc")
    assert isinstance(back, EncodecTokenizer) and back.num_codebooks == 4
    assert torch.equal(back.encode(*batch_of(wavs))[0], codes)


def test_encodec_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such EnCodec checkpoint"):
        EncodecTokenizer.from_pretrained(tmp_path / "missing.th")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.th")
    with pytest.raises(ValueError, match="other.th: not an EnCodec 24 kHz checkpoint"):
        EncodecTokenizer.from_pretrained(tmp_path / "other.th")
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.th: cannot be read"):
        EncodecTokenizer.from_pretrained(tmp_path / "junk.th")
