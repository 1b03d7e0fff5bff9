"""asr.speaker_warp: per-speaker warp-factor selection (test-time VTLN) and its decode stage.

Independent truths: a voice warped by a known factor must be unwarped by the factor the search
picks when the score measures closeness to the original envelope (spectral centroid); the
recipe's decoding with ``speaker_warps`` must equal decoding each speaker's audio warped by its
chosen factor directly, and the chosen factor must be the best of the written criterion.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from asr.speaker_warp import DEFAULT_WARPS, check_warps, choose_speaker_warp, choose_warps, warp_waveform
from tests.asr.test_formant import SR, _vowel


def _centroid(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float((spec * freqs).sum() / spec.sum())


@pytest.mark.parametrize("applied", [0.85, 1.15])
def test_the_search_undoes_a_known_warp(applied):
    clean = [_vowel(f0=f0, formants=((700.0, 80.0), (1800.0, 120.0), (2600.0, 150.0))) for f0 in (110.0, 190.0)]
    voice = [torch.from_numpy(warp_waveform(torch.from_numpy(x), applied).numpy()) for x in clean]
    targets = [_centroid(x) for x in clean]
    calls = []

    def recognize(wavs):  # score: how close the envelope is to the unwarped voice's (x seconds)
        calls.append(len(wavs))
        return [[SimpleNamespace(score=-abs(_centroid(w.numpy()) - t) * w.numel() / SR)]
                for w, t in zip(wavs, targets)]

    choice = choose_speaker_warp(recognize, voice, SR)
    inverse = 1.0 / applied  # 1.176 or 0.870
    assert abs(choice.alpha - inverse) <= 0.05 + 1e-9
    assert set(choice.criterion) == set(DEFAULT_WARPS) and calls == [2] * len(DEFAULT_WARPS)
    assert choice.criterion[choice.alpha] == max(choice.criterion.values())
    assert len(choice.hyps) == 2


def test_speakers_are_chosen_independently_in_one_pass():
    clean = [_vowel(f0=f0) for f0 in (100.0, 150.0, 210.0)]
    applied = {0: 0.85, 1: 1.15, 2: 0.85}  # utterance -> its speaker's vocal tract
    speakers = ["a", "b", "a"]
    voice = [warp_waveform(torch.from_numpy(x), applied[i]) for i, x in enumerate(clean)]
    targets = {id(v): _centroid(x) for v, x in zip(voice, clean)}
    passes = []

    def recognize(wavs):
        passes.append(len(wavs))
        return [[SimpleNamespace(score=-abs(_centroid(w.numpy()) - t) * w.numel() / SR)]
                for w, t in zip(wavs, current)]

    current = [targets[id(v)] for v in voice]
    both = choose_warps(recognize, voice, speakers, SR)
    assert passes == [3] * len(DEFAULT_WARPS)  # one pass per factor over every speaker
    assert abs(both["a"].alpha - 1 / 0.85) <= 0.05 + 1e-9 and abs(both["b"].alpha - 1 / 1.15) <= 0.05 + 1e-9
    assert both["a"].indices == [0, 2] and both["b"].indices == [1]
    current = [targets[id(voice[1])]]
    alone = choose_speaker_warp(recognize, [voice[1]], SR)
    assert alone.alpha == both["b"].alpha and alone.criterion == pytest.approx(both["b"].criterion)
    with pytest.raises(ValueError, match="speakers"):
        choose_warps(recognize, voice, ["a"], SR)


def test_ties_go_to_no_warp_and_input_checks():
    wav = torch.from_numpy(_vowel(seconds=0.3))
    flat = choose_speaker_warp(lambda ws: [[SimpleNamespace(score=-1.0)] for _ in ws], [wav], SR,
                               factors=[0.9, 1.1, 1.0], warp=lambda w, a: w)
    assert flat.alpha == 1.0
    assert check_warps([0.9, 1, 1.1]) == (0.9, 1.0, 1.1)
    for bad in ([], 1.1, [0.9, 0.9], [0.3], ["x"], [True]):
        with pytest.raises(ValueError, match="speaker_warps"):
            check_warps(bad)
    with pytest.raises(ValueError, match="no utterances"):
        choose_speaker_warp(lambda ws: [], [], SR)
    assert warp_waveform(wav, 1.0) is wav


def test_decode_with_speaker_warps_matches_direct_decoding(tiny_recipe, tmp_path):
    from asr.audio import as_waveform
    from asr.bin import decode
    from nar.base.kaldi import read_kaldi_map
    from asr.inference import Speech2Text

    model_dir = tiny_recipe / "exp/asr_train_tiny_char"
    data = tiny_recipe / "dump/raw/test"
    conf = tmp_path / "decode_vtln.yaml"
    conf.write_text(yaml.safe_dump(dict(search="greedy", speaker_warps=[0.9, 1.0, 1.1], timestamps=False)))
    out = tmp_path / "out"
    decode.main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(out),
                 "--config", str(conf), "--num_threads", "1"])
    utt2spk = read_kaldi_map(str(data / "utt2spk"))
    spk2warp = {k: float(v) for k, v in read_kaldi_map(str(out / "spk2warp")).items()}
    assert set(spk2warp) == set(utt2spk.values())
    report = json.loads((out / "speaker_warps.json").read_text())
    for spk, info in report["speakers"].items():
        assert info["alpha"] == spk2warp[spk] and info["criterion"][str(info["alpha"])] == max(info["criterion"].values())
    s2t = Speech2Text(model_dir, search="greedy", timestamps=False)
    texts = read_kaldi_map(str(out / "text"), allow_empty_value=True)
    wav_scp = read_kaldi_map(str(data / "wav.scp"))
    for utt, spk in utt2spk.items():
        wav = warp_waveform(as_waveform(wav_scp[utt], s2t.sample_rate, name=utt), spk2warp[spk])
        assert s2t(wav).text == texts[utt]
    assert json.loads((out / "rtf.json").read_text())["config"]["speaker_warps"] == [0.9, 1.0, 1.1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("speaker_warps: [0.9, 5.0]\n")
    with pytest.raises(SystemExit):
        decode.main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(out),
                     "--config", str(bad)])


def test_api_recognize_speaker(tiny_recipe):
    from asr.audio import as_waveform
    from nar.base.kaldi import read_kaldi_map
    from asr.inference import Speech2Text

    s2t = Speech2Text(tiny_recipe / "exp/asr_train_tiny_char", search="greedy", timestamps=False)
    paths = list(read_kaldi_map(str(tiny_recipe / "dump/raw/test/wav.scp")).values())[:2]
    choice = s2t.recognize_speaker(paths, factors=[0.95, 1.05])
    assert choice.alpha in (0.95, 1.05) and len(choice.hyps) == 2
    direct = s2t([warp_waveform(as_waveform(p, s2t.sample_rate), choice.alpha) for p in paths])
    assert [h.text for h in direct] == [h[0].text for h in choice.hyps]
    with pytest.raises(ValueError, match="empty"):
        s2t.recognize_speaker([])
