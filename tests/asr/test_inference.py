"""asr.Speech2Text on the model of the tiny recipe run: batching, inputs, errors."""

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile
import torch
import yaml

from asr import Speech2Text
from nar.base.kaldi import read_kaldi_map
from asr.audio import AudioFileError


@pytest.fixture(scope="module")
def model_dir(tiny_recipe):
    return tiny_recipe / "exp/asr_train_tiny_char"


@pytest.fixture(scope="module")
def wavs(tiny_recipe):
    scp = read_kaldi_map(str(tiny_recipe / "dump/raw/test/wav.scp"))
    return [p for _, p in sorted(scp.items())][:4]


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batch_equals_items(model_dir, wavs, search):
    s2t = Speech2Text(model_dir, search=search, beam_size=4)
    batch = s2t(wavs)
    for path, hyp in zip(wavs, batch):
        alone = s2t(path)
        assert alone.token_ids == hyp.token_ids
        assert alone.timestamps == hyp.timestamps
        assert alone.score == pytest.approx(hyp.score, abs=1e-3)
    log_probs, lengths = s2t.ctc_log_probs([torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in wavs])
    for b, path in enumerate(wavs):
        one, n = s2t.ctc_log_probs([torch.from_numpy(soundfile.read(path, dtype="float32")[0])])
        assert int(n[0]) == int(lengths[b])
        torch.testing.assert_close(log_probs[b, : int(n[0])], one[0], atol=1e-4, rtol=1e-4)


def test_inputs_path_array_tensor_agree(model_dir, wavs):
    s2t = Speech2Text(model_dir)
    samples, rate = soundfile.read(wavs[0], dtype="float32")
    assert rate == s2t.sample_rate
    a, b, c = s2t([wavs[0], samples, torch.from_numpy(samples)])
    assert a.token_ids == b.token_ids == c.token_ids
    int16 = (samples * 32767).astype(np.int16)
    assert s2t(int16).token_ids == s2t(int16.astype(np.float32) / 32768).token_ids


def test_hypothesis_fields(model_dir, wavs):
    hyp = Speech2Text(model_dir)(wavs[0])
    assert len(hyp.tokens) == len(hyp.token_ids) == len(hyp.timestamps)
    for (s, e), (s2, _) in zip(hyp.timestamps, hyp.timestamps[1:]):
        assert 0 <= s < e <= s2 + 1e-9
    nbest = Speech2Text(model_dir, search="beam", beam_size=4, nbest=3).recognize_nbest([wavs[0]])[0]
    assert 1 <= len(nbest) <= 3
    assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)


def test_other_sample_rate_is_resampled_with_a_warning(model_dir, wavs, tmp_path, caplog):
    s2t = Speech2Text(model_dir)
    samples, rate = soundfile.read(wavs[0], dtype="float32")
    path8k = tmp_path / "x8k.wav"
    import torchaudio.functional as AF

    soundfile.write(path8k, AF.resample(torch.from_numpy(samples), rate, 8000).numpy(), 8000)
    with caplog.at_level(logging.WARNING):
        s2t(str(path8k))
        s2t(samples[::2].copy(), sample_rate=8000)
    assert str(path8k) in caplog.text and "resampl" in caplog.text.lower()


def test_bad_inputs_name_the_input(model_dir, tmp_path):
    s2t = Speech2Text(model_dir)
    with pytest.raises(AudioFileError, match="nope.wav"):
        s2t(str(tmp_path / "nope.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(AudioFileError, match="junk.wav"):
        s2t(str(junk))
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.random.default_rng(0).normal(size=(16000, 2)).astype(np.float32) * 0.1, 16000)
    with pytest.raises(AudioFileError, match="stereo.wav.*channels"):
        s2t(str(stereo))
    with pytest.raises(ValueError, match=r"inputs\[1\].*all zeros"):
        s2t([np.ones(1600, np.float32) * 0.1, np.zeros(1600, np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        s2t(np.full(1600, np.nan, np.float32))
    with pytest.raises(ValueError, match="empty"):
        s2t(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        s2t(np.ones((2, 1600), np.float32))
    with pytest.raises(ValueError, match="inputs is empty"):
        s2t([])
    signal = np.ones(1600, np.float32) * 0.1
    with pytest.raises(ValueError, match=r"inputs\[0\]: sample_rate must be >= 1, got 0"):
        s2t(signal, sample_rate=0)  # was taken as "not given"
    with pytest.raises(TypeError, match=r"inputs\[0\]: sample_rate must be an int, got 16000.5"):
        s2t(signal, sample_rate=16000.5)  # was an error deep inside the resampler


def test_bad_model_dirs(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Speech2Text(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    config = yaml.safe_load((broken / "config.yaml").read_text())
    del config["encoder_conf"]
    (broken / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="encoder_conf"):
        Speech2Text(broken)
    (broken / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        Speech2Text(broken)
    with pytest.raises(ValueError, match="search"):
        Speech2Text(model_dir, search="viterbi")


def test_ngram_fusion_batch_score_and_errors(tiny_recipe, model_dir, wavs, tmp_path):
    from asr.lm import BOS, NgramLM

    arpa = tiny_recipe / "exp/ngram_char/3gram.arpa"  # the recipe's stage 3 (--use_ngram true)
    s2t = Speech2Text(model_dir, search="beam", beam_size=4, ngram_file=arpa, ngram_weight=0.5, penalty=1.0)
    batch = s2t(wavs)
    for path, hyp in zip(wavs, batch):
        alone = s2t(path)
        assert alone.token_ids == hyp.token_ids and alone.score == pytest.approx(hyp.score, abs=1e-3)
    # score = log P_ctc(y | x) + weight * log P_lm(y </s>) + penalty * |y|, each part computed
    # independently; on peaky posteriors, where the beam's path sum is the exact P_ctc(y | x)
    lm = NgramLM.load(str(arpa))
    vocab = len(s2t.token_list)
    path = [0, 5, 5, 0, 7, 0, 0, 9, 9, 0]
    log_probs = torch.full((1, len(path), vocab), -30.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    log_probs = log_probs.log_softmax(-1)
    lengths = torch.tensor([len(path)])
    hyp = s2t.to_hypotheses(s2t.decoder.decode_log_probs(log_probs, lengths))[0][0]
    assert list(hyp.token_ids) == [5, 7, 9]
    acoustic = -torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.tensor([list(hyp.token_ids)]), lengths,
                                             torch.tensor([3]), reduction="sum")
    words = [s2t.token_list[i] for i in hyp.token_ids]
    expected = float(acoustic) + 0.5 * lm.sentence_logprob(words) + 1.0 * len(words)
    assert hyp.score == pytest.approx(expected, abs=1e-3)
    assert lm.sentence_logprob(words) == pytest.approx(
        sum(lm.logprob([BOS] + words[:i], w) for i, w in enumerate(words + ["</s>"])))
    with pytest.raises(ValueError, match="CTC prefix beam search only"):
        Speech2Text(model_dir, search="greedy", ngram_file=arpa)
    with pytest.raises(ValueError, match="needs ngram_file"):
        Speech2Text(model_dir, search="beam", ngram_weight=0.5)
    with pytest.raises(ValueError, match="penalty"):
        Speech2Text(model_dir, search="beam", penalty=1.0)
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        Speech2Text(model_dir, search="beam", ngram_file=tmp_path / "missing.arpa")
    other = tmp_path / "words.arpa"  # an LM over words, not this model's characters
    other.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t</s>\n-99\t<s>\t-0.1\n-0.5\thello\n\n\\end\\\n")
    with pytest.raises(ValueError, match="words.arpa"):
        Speech2Text(model_dir, search="beam", ngram_file=other)


def test_tune_ngram_grid(tiny_recipe, model_dir, tmp_path):
    from asr.bin.tune_ngram import main as tune

    out = tmp_path / "tune.json"
    rows = tune(["--model_dir", str(model_dir), "--data_dir", str(tiny_recipe / "dump/raw/dev"),
                 "--ngram_file", str(tiny_recipe / "exp/ngram_char/3gram.arpa"), "--weights", "0", "0.5",
                 "--penalties", "0", "1", "--beam_sizes", "4", "--num_threads", "1", "--output", str(out)])
    assert len(rows) == 3 and json.loads(out.read_text())["rows"] == rows  # no LM once, 2 fused points
    assert [r["wer"] for r in rows] == sorted(r["wer"] for r in rows)
    # each point is what Speech2Text decodes with the same options
    point = next(r for r in rows if r["ngram_weight"] == 0.5 and r["penalty"] == 1.0)
    s2t = Speech2Text(model_dir, search="beam", beam_size=4, ngram_file=tiny_recipe / "exp/ngram_char/3gram.arpa",
                      ngram_weight=0.5, penalty=1.0, timestamps=False)
    scp = read_kaldi_map(str(tiny_recipe / "dump/raw/dev/wav.scp"))
    refs = read_kaldi_map(str(tiny_recipe / "dump/raw/dev/text"))
    from asr.scoring import score

    hyps = dict(zip(scp, (h.text for h in s2t(list(scp.values())))))
    assert point["wer"] == pytest.approx(100 * score(refs, hyps)[0].wer, abs=0.01)


def test_word_lm_fusion_batch_and_errors(tiny_recipe, model_dir, wavs):
    from asr.lm import ArpaError, NgramLM

    word_lm = tiny_recipe / "exp/ngram_word/3gram.arpa"  # the recipe's stage 3 (--word_ngram_order 3)
    s2t = Speech2Text(model_dir, search="beam", beam_size=4, ngram_file=word_lm, ngram_unit="word",
                      ngram_weight=0.8, penalty=1.0)
    lexicon = {w for w in NgramLM.load(str(word_lm)).vocab if not w.startswith("<")}
    batch = s2t(wavs)
    for path, hyp in zip(wavs, batch):
        alone = s2t(path)
        assert alone.token_ids == hyp.token_ids and alone.score == pytest.approx(hyp.score, abs=1e-3)
        assert set(hyp.text.split()) <= lexicon
    opened = Speech2Text(model_dir, search="beam", beam_size=4, ngram_file=word_lm, ngram_unit="word",
                         ngram_weight=0.8, oov_penalty=-5.0)
    assert len(opened(wavs)) == len(wavs)
    with pytest.raises(ArpaError, match="token LM"):  # a char LM given as a word LM
        Speech2Text(model_dir, search="beam", ngram_file=tiny_recipe / "exp/ngram_char/3gram.arpa",
                    ngram_unit="word")
    with pytest.raises(ValueError, match="ngram_unit"):
        Speech2Text(model_dir, search="beam", ngram_file=word_lm, ngram_unit="phone")
    with pytest.raises(ValueError, match="oov_penalty"):
        Speech2Text(model_dir, search="beam", ngram_file=word_lm, oov_penalty=-1.0)
