"""The trained mel vocoder: batch = items, losses, a tiny learned task, persistence with the
mel-RVQ tokenizer, and the training CLI (deterministic resume, GAN path, clear errors)."""

import json

import pytest
import torch

from audio_gen.bin import fit_tokenizer, train_vocoder
from audio_gen.tokenizers import MelRVQTokenizer, load_tokenizer
from audio_gen.tokenizers.vocoder import MelVocoder, VocoderConfig, mel_l1, multi_resolution_stft_loss
from tests.audio_gen.test_tokenizers import voiced, write_data_dir

SMALL = dict(n_fft=256, hop_length=64, n_mels=32, dim=32, intermediate_dim=64, num_layers=2)


def small_vocoder(seed=0, **kw) -> MelVocoder:
    torch.manual_seed(seed)
    return MelVocoder(VocoderConfig(**{**SMALL, **kw})).eval()


def test_batch_gives_every_item_its_own_waveform():
    voc = small_vocoder()
    lens = torch.tensor([3000, 1111, 640])
    wav = torch.zeros(3, 3000)
    for i, n in enumerate(lens.tolist()):
        wav[i, :n] = voiced(n, i)
    lm, n = voc.log_mel(wav, lens)
    lm[1, :, int(n[1]):] = 50.0  # garbage in padding frames must not leak
    with torch.no_grad():
        batch, blens = voc(lm, n)
        for i in range(3):
            alone, alens = voc(lm[i:i + 1, :, : int(n[i])], n[i:i + 1])
            assert int(alens[0]) == int(blens[i]) == int(n[i]) * 64
            torch.testing.assert_close(batch[i, : int(alens[0])], alone[0], atol=1e-5, rtol=1e-4)
            assert bool((batch[i, int(alens[0]):] == 0).all())


def test_stft_loss_is_zero_only_for_the_same_signal():
    x = voiced(4000, 0)[None]
    assert float(multi_resolution_stft_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(multi_resolution_stft_loss(0.5 * x, x)) > 0.1
    assert float(multi_resolution_stft_loss(x + 0.05 * torch.randn_like(x), x)) > 0.1
    with pytest.raises(ValueError, match="shapes differ"):
        multi_resolution_stft_loss(x[:, :100], x)


def test_tiny_vocoder_learns_to_invert_mels():
    """Trained a little on speech-like tones, its log-mel error on held-out tones must fall to
    under half its untrained error, and below that of the right magnitudes with random phase
    (the error a vocoder that models no phase would make)."""
    torch.manual_seed(0)
    voc = MelVocoder(VocoderConfig(**SMALL))
    train = [voiced(8000, s) for s in range(16)]
    voc.set_normalisation(*train_vocoder.log_mel_statistics(
        [voc.log_mel(w[None], torch.tensor([w.numel()]))[0][0] for w in train]))
    test = torch.stack([voiced(6400, 100 + s) for s in range(4)])
    lens = torch.full((4,), 6400)

    def error() -> float:
        with torch.no_grad():
            feats, n = voc.log_mel(test, lens)
            out, olens = voc(feats, n)
            return float(mel_l1(voc, out, test, olens))

    before = error()
    opt = torch.optim.AdamW(voc.parameters(), lr=3e-3, betas=(0.8, 0.99))
    for step in range(200):
        wav = train_vocoder.draw_batch(train, 8, 32 * 64, seed=0, step=step)
        batch_lens = torch.full((8,), wav.shape[1])
        with torch.no_grad():
            feats, n = voc.log_mel(wav, batch_lens)
        y, _ = voc(feats, n)
        loss = mel_l1(voc, y, wav, batch_lens) + multi_resolution_stft_loss(y, wav, ((128, 32), (256, 64), (512, 128)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    voc.eval()
    after = error()
    with torch.no_grad():
        spec, n = voc.spectral.stft(test, lens)
        phase = torch.rand(spec.shape, generator=torch.Generator().manual_seed(0)) * 6.2832
        rnd, rlens = voc.spectral.istft(torch.polar(spec.abs(), phase), n)
        random_phase = float(mel_l1(voc, rnd, test, rlens))
    assert after < 0.5 * before and after < random_phase, (before, after, random_phase)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data_dir(tmp_path_factory.mktemp("vdata"), (16000, 12345, 9001, 20000, 700))


@pytest.fixture(scope="module")
def tokenizer_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vexp") / "tok"
    fit_tokenizer.main(["--data_dir", str(data_dir), "--out_dir", str(out), "--num_codebooks", "2",
                        "--codebook_size", "16", "--n_mels", "32", "--iters", "3", "--griffin_lim_iters", "4"])
    return out


def _train(data_dir, tokenizer_dir, out, steps, *extra):
    return train_vocoder.main(["--data_dir", str(data_dir), "--dev_dir", str(data_dir), "--tokenizer_dir",
                               str(tokenizer_dir), "--out_dir", str(out), "--steps", str(steps), "--batch_size", "3",
                               "--segment_frames", "8", "--dim", "16", "--intermediate_dim", "32", "--num_layers", "2",
                               "--checkpoint_every", "2", "--dev_utts", "2", "--num_threads", "1", *extra])


def test_cli_resumes_a_killed_run_to_the_same_weights(data_dir, tokenizer_dir, tmp_path, monkeypatch):
    assert _train(data_dir, tokenizer_dir, tmp_path / "once", 4) == 0
    # killed right after the step-2 checkpoint (the evaluation that follows it is interrupted)
    real_evaluate = train_vocoder.evaluate

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_vocoder, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(data_dir, tokenizer_dir, tmp_path / "twice", 4)
    assert not (tmp_path / "twice" / "tokenizer.json").exists()
    assert torch.load(tmp_path / "twice" / "train" / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(train_vocoder, "evaluate", real_evaluate)
    assert _train(data_dir, tokenizer_dir, tmp_path / "twice", 4) == 0
    a, b = load_tokenizer(tmp_path / "once"), load_tokenizer(tmp_path / "twice")
    assert isinstance(a, MelRVQTokenizer) and a.vocoder is not None and "trained vocoder" in a.describe()
    for (k, va), (_, vb) in zip(a.vocoder.state_dict().items(), b.vocoder.state_dict().items()):
        torch.testing.assert_close(va, vb, msg=k)
    log = [json.loads(line) for line in (tmp_path / "once" / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all("dev_mel_l1_quantised" in r for r in log)
    # the saved tokenizer decodes through the vocoder; the fallback is still reachable
    tok = load_tokenizer(tmp_path / "once")
    wav = voiced(5000, 3)
    codes, n = tok.encode(wav)
    y, ylens = tok.decode(codes, n)
    with torch.no_grad():
        ref, _ = tok.vocoder(tok.codes_to_log_mel(codes), n)
    torch.testing.assert_close(y, ref)
    gl, _ = tok.decode_mel(tok.codes_to_log_mel(codes), n, vocoder="griffin_lim")
    assert gl.shape == y.shape and not torch.allclose(gl, y)
    # a finished run is not retrained
    assert _train(data_dir, tokenizer_dir, tmp_path / "once", 4) == 0


def test_cli_adversarial_path_runs(data_dir, tokenizer_dir, tmp_path):
    assert _train(data_dir, tokenizer_dir, tmp_path / "gan", 2, "--adversarial_start", "1", "--disc_channels", "4") == 0
    state = torch.load(tmp_path / "gan" / "train" / "checkpoint.pt", weights_only=False)
    assert state["disc"] is not None and state["step"] == 2
    log = [json.loads(line) for line in (tmp_path / "gan" / "train" / "log.jsonl").read_text().splitlines()]
    assert "disc" in log[-1] and "fm" in log[-1]


def test_errors_are_clear(data_dir, tokenizer_dir, tmp_path):
    with pytest.raises(SystemExit, match="no utterance is as long as one crop"):
        _train(data_dir, tokenizer_dir, tmp_path / "long", 2, "--segment_frames", "100000")
    tok = load_tokenizer(tokenizer_dir)
    with pytest.raises(ValueError, match="features"):
        tok.attach_vocoder(MelVocoder(VocoderConfig(n_mels=40, dim=8, intermediate_dim=8, num_layers=1)))
    with pytest.raises(ValueError, match="vocoder must be"):
        tok.decode_mel(torch.zeros(1, 32, 3), torch.tensor([3]), vocoder="hifigan")
    assert _train(data_dir, tokenizer_dir, tmp_path / "v", 2) == 0
    (tmp_path / "v" / "vocoder.pt").unlink()
    with pytest.raises(FileNotFoundError, match="vocoder.pt"):
        load_tokenizer(tmp_path / "v")
    # a checkpoint of another network size is not silently resumed
    (tmp_path / "v" / "tokenizer.json").unlink()
    with pytest.raises(SystemExit, match="was trained with"):
        _train(data_dir, tokenizer_dir, tmp_path / "v", 4, "--dim", "24")
