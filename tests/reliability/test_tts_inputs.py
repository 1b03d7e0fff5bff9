"""Text2Speech and tts.bin.synthesize: every bad input is refused (or cleaned, with a warning) where
it enters, with a message that names the input and the problem, before any model runs."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.tts.test_maskgct import needs_espeak, sampling, tts_dirs  # noqa: F401  (tts_dirs: a fixture)

pytestmark = needs_espeak


class Stop(Exception):
    """Raised by a spy to end a call once what it checks has been seen."""


@pytest.fixture(scope="module")
def tts(tts_dirs):
    from tts.inference import Text2Speech

    root, _ = tts_dirs
    return Text2Speech(root / "t2s", root / "s2a", t2s_config=sampling(8, 4), s2a_config=sampling(16, (3, 1)))


@pytest.fixture
def no_models(tts, monkeypatch):
    """Any model or tokenizer call fails the test: the error under test must come first."""
    def ran(*args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")

    for obj, name in ((tts.semantic, "encode"), (tts.acoustic, "encode"), (tts.t2s, "generate"),
                      (tts.s2a, "generate")):
        monkeypatch.setattr(obj, name, ran)


def call(tts, tts_dirs, **kwargs):
    _, wavs = tts_dirs
    args = dict(text="a dog", prompt_wav=wavs[0], prompt_text="the cat", prompt_sr=16000) | kwargs
    return tts(**args)


# ------------------------------------------------------------------------------------ seconds
@pytest.mark.parametrize("seconds", [math.inf, 36000.0, math.nan, 0.0, -1.0, 1e-6])
def test_seconds_must_be_finite_and_within_the_model_range(tts, tts_dirs, no_models, seconds):
    assert tts.max_seconds == 60.0  # MaskGCT has no hard limit: the documented cap
    with pytest.raises(ValueError) as err:
        call(tts, tts_dirs, seconds=seconds)
    msg = str(err.value)
    assert msg.startswith("item 0: seconds must be a finite number in [0.04, 60]"), msg
    assert "MAX_SECONDS" in msg and f"got {seconds!r}" in msg


def test_a_duration_estimate_beyond_the_cap_is_an_error_naming_the_text(tts, tts_dirs, monkeypatch):
    monkeypatch.setattr(tts.t2s, "generate", lambda *a, **k: pytest.fail("T2S ran on a 2-minute target"))
    with pytest.raises(ValueError, match=r"item 0 \(text\): the rule duration estimate is \d+\.\d s, beyond the "
                                         r"60 s allowed .*split the text"):
        call(tts, tts_dirs, text="a big dog sat on the bed " * 60)


# ------------------------------------------------------------------------- decoding options
@pytest.mark.parametrize("which, field, value, message", [
    ("t2s_config", "cfg_scale", math.nan, r"t2s_config.cfg_scale must be a finite number in \[0, 20\]"),
    ("t2s_config", "cfg_scale", -1.0, r"t2s_config.cfg_scale must be a finite number in \[0, 20\]"),
    ("s2a_config", "cfg_scale", 1e6, r"s2a_config.cfg_scale must be a finite number in \[0, 20\]"),
    ("t2s_config", "cfg_scale_end", -0.5, r"t2s_config.cfg_scale_end must be a finite number in \[0, 20\]"),
    ("t2s_config", "temperature", math.inf, r"t2s_config.temperature must be a finite number in \[0, 10\]"),
    ("s2a_config", "min_temperature", 50.0, r"s2a_config.min_temperature must be a finite number in \[0, 10\]"),
    ("t2s_config", "confidence_noise", math.inf, r"t2s_config.confidence_noise must be a finite number in \[0, 10\]"),
    ("t2s_config", "steps", 5000, r"t2s_config.steps must be in \[1, 1000\]"),
    ("s2a_config", "steps", (3, 1, 1), r"s2a_config.steps must be one int or 2 \(one per codebook stage\)"),
    ("t2s_config", "top_k", 9, r"t2s_config.top_k must be in \[0, 8\]"),
    ("s2a_config", "mask_id", 3, r"s2a_config.mask_id must be 16"),
])
def test_decoding_options_out_of_range_are_refused(tts, which, field, value, message):
    before = getattr(tts, which)
    with pytest.raises(ValueError, match=message):
        setattr(tts, which, replace(before, **{field: value}))
    assert getattr(tts, which) is before  # nothing half-set


def test_cli_decoding_options_out_of_range_exit_with_the_option_name():
    from tts.bin.synthesize import decoding_configs, get_parser
    from tts.inference import default_s2a_config, default_t2s_config

    for argv, message in ((["--t2s_cfg_scale", "nan"], r"--t2s_cfg_scale must be a finite number in \[0, 20\]"),
                          (["--s2a_temperature", "-1"], r"--s2a_temperature must be a finite number in \[0, 10\]"),
                          (["--t2s_steps", "0"], r"--t2s_steps must be in \[1, 1000\]"),
                          (["--s2a_steps", "25,0,1,1"], r"--s2a_steps must be integers in \[1, 1000\]")):
        args = get_parser().parse_args(["--data_dir", "d", "--out_dir", "o", *argv])
        with pytest.raises(SystemExit, match=message):
            decoding_configs(args, default_t2s_config(512, 512), default_s2a_config(4, 1024, 1024))


def test_seeds_and_prompt_sr_are_checked(tts, tts_dirs, no_models):
    with pytest.raises(TypeError, match=r"seeds\[0\] must be an int, got 1.5"):
        call(tts, tts_dirs, seed=1.5)
    with pytest.raises(ValueError, match="prompt_sr must be >= 1000, got 0"):
        call(tts, tts_dirs, prompt_sr=0)


# ------------------------------------------------------------------------------------- text
def spy_phones(tts, monkeypatch):
    """Record the phone sequence the T2S model would get ([prompt | target]); stop before T2S."""
    seen = []
    encode = tts.phone_tokenizer.encode
    monkeypatch.setattr(tts.phone_tokenizer, "encode", lambda phones: seen.append(list(phones)) or encode(phones))

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(tts.t2s, "generate", stop)
    return seen


def test_control_characters_become_spaces_with_a_warning(tts, tts_dirs, monkeypatch, caplog):
    seen = spy_phones(tts, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tts.text"), pytest.raises(Stop):
        call(tts, tts_dirs, text="hello\x00world\x07")
    warned = [r.getMessage() for r in caplog.records if "control characters" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("item 0 (text): control characters")
    assert "'\\x00' (U+0000)" in warned[0] and "'\\x07' (U+0007)" in warned[0]
    # the model gets "hello world": espeak-ng given the NUL would stop at "hello"
    world = tts.phonemizer("world")
    assert seen == [tts.phonemizer("the cat") + ["|"] + tts.phonemizer("hello world")]
    assert seen[0][-len(world):] == world


def test_emoji_and_symbols_are_dropped_with_a_warning_not_read_out(tts, tts_dirs, monkeypatch, caplog):
    seen = spy_phones(tts, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tts.text"), pytest.raises(Stop):
        call(tts, tts_dirs, text="I love 😀 dogs ♥\ufe0f, 5 $")
    warned = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("item 0 (text): dropped")
    assert "'😀' (U+1F600 GRINNING FACE)" in warned[0] and "U+2665 BLACK HEART SUIT" in warned[0]
    assert "'$'" not in warned[0]  # currency signs are said ("five dollars"), so kept
    target = seen[0][len(tts.phonemizer("the cat")) + 1:]
    assert target == tts.phonemizer("I love dogs, 5 $")  # not "grinning face", "heart suit"


def test_text_left_empty_by_the_cleaning_is_an_error(tts, tts_dirs, no_models):
    from tts.text import PhonemizeError

    with pytest.raises(PhonemizeError, match=r"item 0 \(text\): text '😀 ♥\\x00' is empty once the characters"):
        call(tts, tts_dirs, text="😀 ♥\x00")


# ----------------------------------------------------------------------------------- prompts
def test_int16_prompts_are_rescaled(tts, tts_dirs, monkeypatch):
    _, wavs = tts_dirs
    pcm = (wavs[0] * 32767).round().to(torch.int16).numpy()
    seen = []

    def encode(wav, lens):
        seen.append(wav.clone())
        raise Stop

    monkeypatch.setattr(tts.semantic, "encode", encode)
    with pytest.raises(Stop):
        call(tts, tts_dirs, prompt_wav=pcm)
    assert seen[0].shape == (1, pcm.size) and float(seen[0].abs().max()) <= 1.0
    assert torch.allclose(seen[0][0], torch.from_numpy(pcm).float() / 32768)


def test_float_prompts_at_the_int16_scale_are_refused(tts, tts_dirs, no_models):
    _, wavs = tts_dirs
    with pytest.raises(ValueError, match=r"item 0 \(prompt_wav\): float samples peak at .* looks like int16 samples"):
        call(tts, tts_dirs, prompt_wav=(wavs[0] * 32767).round())


@pytest.mark.parametrize("silence", [torch.zeros(16000), np.zeros(16000, dtype=np.int16)])
def test_an_all_zero_prompt_is_an_error_naming_it(tts, tts_dirs, no_models, silence):
    with pytest.raises(ValueError, match=r"item 0 \(prompt_wav\): the prompt is all zeros .*no voice to clone"):
        call(tts, tts_dirs, prompt_wav=silence)


def test_a_prompt_at_another_rate_is_an_error(tts, tts_dirs, no_models):
    with pytest.raises(ValueError, match="item 0: the prompt is at 8000 Hz but the model works at 16000 Hz"):
        call(tts, tts_dirs, prompt_sr=8000)


# ------------------------------------------------------------------------------------- CLI
def data_dir(tmp_path, tts_dirs, texts):
    import soundfile as sf

    _, wavs = tts_dirs
    data = tmp_path / "data"
    data.mkdir()
    utts = [f"spk0-{i:03d}" for i in range(len(texts))]
    for u, w in zip(utts, wavs):
        sf.write(tmp_path / f"{u}.wav", w.numpy(), 16000)
    (data / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in utts))
    (data / "utt2spk").write_text("".join(f"{u} spk0\n" for u in utts))
    (data / "text").write_bytes(b"".join(f"{u} ".encode() + t + b"\n" for u, t in zip(utts, texts)))
    return data


def test_cli_names_file_line_and_byte_of_a_non_utf8_text(tmp_path, tts_dirs, capsys):
    from tts.bin.synthesize import main

    data = data_dir(tmp_path, tts_dirs, [b"a big dog", "caf\xe9 au lait".encode("latin-1")])
    assert main(["--data_dir", str(data), "--out_dir", str(tmp_path / "out"), "--t2s_dir", "x", "--s2a_dir", "y"]) == 1
    err = capsys.readouterr().err
    offset = len(b"spk0-000 a big dog\nspk0-001 caf")
    assert f"tts.bin.synthesize: error: {data / 'text'}:2: not valid UTF-8: byte 0xe9 at byte offset {offset}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_reports_bad_input_as_one_line(tmp_path, tts_dirs, capsys):
    from tts.bin.synthesize import main

    root, _ = tts_dirs
    data = data_dir(tmp_path, tts_dirs, ["a big dog".encode(), "😀 ♥".encode()])
    common = ["--data_dir", str(data), "--out_dir", str(tmp_path / "out"), "--t2s_dir", str(root / "t2s"),
              "--s2a_dir", str(root / "s2a"), "--t2s_steps", "2", "--s2a_steps", "2,1"]
    assert main([*common, "--batch_size", "0"]) == 1
    assert re.search(r"^tts.bin.synthesize: error: --batch_size must be >= 1, got 0$", capsys.readouterr().err, re.M)
    assert main(common) == 1
    err = capsys.readouterr().err
    # spk0-001 (all emoji) is the prompt of spk0-000: its transcript is the prompt text
    assert "tts.bin.synthesize: error: spk0-000 (prompt text): text '😀 ♥' is empty once the characters" in err
    assert "Traceback" not in err
