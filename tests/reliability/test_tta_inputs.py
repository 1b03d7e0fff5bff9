"""TextToAudio and audio_gen.bin.generate: every bad input is refused (or warned about) where it
enters, with a message that names the input and the problem, before any model runs."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from audio_gen.models.magnet import GenerationLengthError, magnet_config

K, V = 2, 8
TOKENS = ["<blank>", "<unk>", "a", "quiet", "loud", "piece"]


class Stop(Exception):
    """Raised by a spy to end a call once what it checks has been seen."""


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A tiny codec (50 frames/s at 16 kHz) and random-init MAGNeT / AR directories (20 frames,
    0.4 s at most) in the training format (config.yaml + checkpoint)."""
    from audio_gen.models.ar import DelayAR
    from audio_gen.models.magnet import MAGNeT
    from audio_gen.tokenizers import MelRVQConfig, MelRVQTokenizer

    root = tmp_path_factory.mktemp("tta")
    torch.manual_seed(0)
    codec = MelRVQTokenizer.fit([torch.randn(8000) * 0.1 for _ in range(2)],
                                MelRVQConfig(num_codebooks=K, codebook_size=V, n_mels=16, griffin_lim_iters=2), iters=2)
    codec.save(root / "tok")
    conf = dict(d_model=16, num_layers=1, num_heads=2, text_layers=1, max_frames=20, dropout=0.0)
    for name, cls in (("magnet", MAGNeT), ("ar", DelayAR)):
        torch.manual_seed(0)
        model = cls(K, V, vocab_size=len(TOKENS), frame_rate=codec.frame_rate, sample_rate=codec.sample_rate, **conf)
        (root / name).mkdir()
        (root / name / "config.yaml").write_text(yaml.safe_dump(
            {"model": name, "model_conf": conf, "acoustic_tokenizer": str(root / "tok"), "token_list": TOKENS}))
        torch.save(model.state_dict(), root / name / "latest.pth")
    return root


@pytest.fixture(scope="module")
def t2a(model_dirs):
    from audio_gen.inference import TextToAudio

    t2a = TextToAudio(model_dirs / "magnet", ar_dir=model_dirs / "ar")
    t2a.config = magnet_config(V, K, steps=2)
    assert (t2a.frame_rate, t2a.max_seconds) == (50.0, 0.4)
    return t2a


@pytest.fixture
def no_models(t2a, monkeypatch):
    """Any model or codec call fails the test: the error under test must come first."""
    def ran(*args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")

    for obj, name in ((t2a.model, "generate"), (t2a.ar, "generate"), (t2a.ar, "rescorer"), (t2a.codec, "encode"),
                      (t2a.codec, "decode")):
        monkeypatch.setattr(obj, name, ran)


# ------------------------------------------------------------------------------------ seconds
@pytest.mark.parametrize("seconds", [math.inf, 36000.0, math.nan, 0.0, -1.0, 0.01])
def test_seconds_must_be_finite_and_within_the_model_range(t2a, no_models, seconds):
    with pytest.raises(GenerationLengthError) as err:
        t2a("a quiet piece", seconds=seconds)
    msg = str(err.value)
    assert msg.startswith("seconds must be in [0.02, 0.4] for method 'magnet' (from one codec frame at 50 Hz to "
                          "the training length of 20 frames)"), msg
    assert msg.endswith(f"got {seconds!r}")


def test_per_caption_seconds_name_the_caption(t2a, no_models):
    with pytest.raises(GenerationLengthError, match=r"^seconds\[1\] must be in \[0.02, 0.4\].*got inf$"):
        t2a.batch(["a quiet piece", "a loud piece"], [0.2, math.inf])


def test_hybrid_too_short_is_a_clear_error(t2a, no_models):
    with pytest.raises(GenerationLengthError,
                       match=r"^seconds must be in \[0.02, 0.4\] for method 'hybrid'.*got 1e-06$"):
        t2a("a quiet piece", seconds=1e-6, method="hybrid", hybrid_seconds=0.1)
    with pytest.raises(ValueError, match=r"^seconds \(0.1\) must be longer than hybrid_seconds \(0.2\) with method "
                                         r"'hybrid' .*lower hybrid_seconds or use method 'ar'$"):
        t2a("a quiet piece", seconds=0.1, method="hybrid", hybrid_seconds=0.2)


@pytest.mark.parametrize("hybrid_seconds", [-1.0, 0.0, 1e9, math.nan, math.inf])
def test_hybrid_seconds_out_of_range(t2a, no_models, hybrid_seconds):
    with pytest.raises(ValueError, match=r"^hybrid_seconds must be a finite number in \(0, 0.4\] \(the part the AR "
                                         r"model writes\), got " + re.escape(repr(hybrid_seconds))):
        t2a("a quiet piece", seconds=0.3, method="hybrid", hybrid_seconds=hybrid_seconds)


# ------------------------------------------------------------------------- decoding options
@pytest.mark.parametrize("value", [math.nan, -1.0, 1e6])
def test_cfg_scale_out_of_range(t2a, no_models, value):
    with pytest.raises(ValueError, match=r"^config.cfg_scale must be a finite number in \[0, 20\] \(0: no guidance\), "
                                         r"got " + re.escape(repr(value))):
        t2a("a quiet piece", seconds=0.2, config=replace(t2a.config, cfg_scale=value))
    with pytest.raises(ValueError, match=r"^magnet_config.cfg_scale must be a finite number in \[0, 20\]"):
        t2a.config = replace(t2a.config, cfg_scale=value)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rescore_weight=1.5), ValueError, r"^rescore_weight must be a finite number in \[0, 1\], got 1.5"),
    (dict(config=magnet_config(V, K, steps=(2, 5000))), ValueError, r"^config.steps must be in \[1, 1000\] per stage"),
    (dict(seeds=[0.5]), TypeError, r"^seeds\[0\] must be an int, got 0.5"),
    (dict(seeds=[1, 2]), ValueError, r"^seeds must have one entry per caption \(1\), got 2"),
    (dict(method="diffusion"), ValueError, r"^method must be one of \('magnet', 'magnet_rescore', 'hybrid', 'ar'\)"),
    (dict(batch_size=0), ValueError, r"^batch_size must be >= 1, got 0"),
])
def test_other_options_are_checked(t2a, no_models, kwargs, error, message):
    with pytest.raises(error, match=message):
        t2a.batch(["a quiet piece"], 0.2, **kwargs)


# ----------------------------------------------------------------------------------- captions
def test_unknown_caption_words_are_listed_in_one_warning(t2a, caplog):
    with caplog.at_level(logging.WARNING, logger="audio_gen.inference"):
        wavs = t2a.batch(["a quiet piece", "a xylophone solo", "quiet xylophone"], 0.1, method="hybrid",
                         hybrid_seconds=0.04, seeds=[0, 1, 2], batch_size=1)
    assert len(wavs) == 3
    warned = [r.getMessage() for r in caplog.records if r.name == "audio_gen.inference"]
    assert len(warned) == 1, warned  # once per call: not per batch of 1, nor per caption model
    assert warned[0] == ("captions: words not in the caption vocabulary, read as <unk>: 'xylophone' (captions 1, 2), "
                         "'solo' (caption 1) [MAGNeT and AR models]")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="audio_gen.inference"):
        t2a.batch(["a quiet piece", ""], 0.1, seeds=[0, 1])
    assert not [r for r in caplog.records if r.name == "audio_gen.inference"]


# ----------------------------------------------------------------------------------- prompts
def test_int16_prompts_are_rescaled(t2a, monkeypatch):
    pcm = (np.sin(np.arange(1600) / 5.0) * 20000).astype(np.int16)
    seen = []

    def encode(wav, lens, sample_rate=None, names=None):
        seen.append((wav.clone(), sample_rate, names))
        raise Stop

    monkeypatch.setattr(t2a.codec, "encode", encode)
    with pytest.raises(Stop):
        t2a.batch(["a quiet piece"], 0.3, prompts=[pcm], prompt_sr=16000)
    wav, sr, names = seen[0]
    assert (sr, names) == (16000, ["prompt 0"]) and float(wav.abs().max()) <= 1.0
    assert torch.allclose(wav[0], torch.from_numpy(pcm).float() / 32768)


def test_float_prompts_at_the_int16_scale_are_refused(t2a, no_models):
    prompts = [torch.zeros(1600).uniform_(-0.5, 0.5), torch.zeros(1600).uniform_(-20000, 20000)]
    with pytest.raises(ValueError, match=r"^prompt 1: float samples peak at .* looks like int16 samples stored"):
        t2a.batch(["a quiet piece", "a loud piece"], 0.3, prompts=prompts, prompt_sr=16000, batch_size=1)


def test_a_prompt_must_be_shorter_than_the_generation(t2a, no_models):
    with pytest.raises(ValueError, match=r"^prompt 0 \(0.3 s\) must be shorter than seconds \(0.2\)"):
        t2a("a quiet piece", seconds=0.2, prompts=[torch.zeros(4800)], prompt_sr=16000)


# ------------------------------------------------------------------------------------- CLI
def write_text(tmp_path, lines: bytes):
    data = tmp_path / "data"
    data.mkdir()
    (data / "text").write_bytes(lines)
    return data


def test_cli_names_file_line_and_byte_of_a_non_utf8_text(tmp_path, capsys):
    from audio_gen.bin.generate import main

    data = write_text(tmp_path, "u1 a quiet piece\nu2 a na\xefve piece\n".encode("latin-1"))
    assert main(["--data_dir", str(data), "--out_dir", str(tmp_path / "out"), "--model_dir", "nowhere"]) == 1
    err = capsys.readouterr().err
    offset = len(b"u1 a quiet piece\nu2 a na")
    assert err.strip().startswith(
        f"audio_gen.bin.generate: error: {data / 'text'}:2: not valid UTF-8: byte 0xef at byte offset {offset} of the "
        "file (column 8 of the line, after 'u2 a na'); re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 ")


@pytest.mark.parametrize("argv, message", [
    (["--seconds", "inf"], r"seconds must be in \[0.02, 0.4\] for method 'magnet' .*got inf"),
    (["--method", "hybrid", "--seconds", "0.2", "--hybrid_seconds", "-1"],
     r"hybrid_seconds must be a finite number in \(0, 0.4\]"),
    (["--steps", "2,x"], r"--steps must be comma-separated integers"),
    (["--steps", "2,2,2"], r"--steps 2,2,2: magnet_config.steps must be one int or 2"),
    (["--batch_size", "0"], r"--batch_size must be >= 1, got 0"),
])
def test_cli_reports_bad_options_as_one_line(model_dirs, tmp_path, capsys, argv, message):
    from audio_gen.bin.generate import main

    data = write_text(tmp_path, b"u1 a quiet piece\n")
    assert main(["--data_dir", str(data), "--out_dir", str(tmp_path / "out"), "--model_dir",
                 str(model_dirs / "magnet"), "--ar_dir", str(model_dirs / "ar"), *argv]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^audio_gen.bin.generate: error: " + message, err, re.M), err
    assert "Traceback" not in err and not (tmp_path / "out" / "wav" / "u1.wav").exists()
