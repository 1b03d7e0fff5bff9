"""The recipe trains, decodes and scores a tiny CASS-NAT and a tiny AR baseline (ESPnet AED);
Speech2Text serves both (the AED exactly as ESPnet's own inference does)."""

from __future__ import annotations

import json
import warnings

import pytest
import soundfile
import torch

from nar.base.kaldi import read_kaldi_map
from asr.inference import Speech2Text

SETS = ("test",)  # the family reruns decode test only (conftest._rerun_from_training)


def read_wavs(recipe):
    scp = read_kaldi_map(str(recipe / "dump/raw/test/wav.scp"))
    return [torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in scp.values()]


def check_recipe_outputs(recipe, exp: str, decodes: tuple[str, ...]):
    model_dir = recipe / "exp" / exp
    assert (model_dir / "valid.loss.ave.pth").exists()
    for dec in decodes:  # run.sh chose the decode configs from the model type
        for dset in SETS:
            out = model_dir / dec / dset
            utts = (recipe / "dump/raw" / dset / "text").read_text().splitlines()
            assert len((out / "text").read_text().splitlines()) == len(utts)
            scores = json.loads((out / "scoring/scores.json").read_text())
            assert scores["utterances"] == len(utts)
    rows = [line for line in (recipe / "RESULTS.md").read_text().splitlines() if line.startswith(f"| {exp}")]
    assert len(rows) == len(decodes)
    return model_dir


# ---------------------------------------------------------------------------- CASS-NAT
@pytest.fixture(scope="module")
def cassnat_dir(tiny_cassnat_recipe):
    return tiny_cassnat_recipe / "exp/asr_train_tiny_cassnat_char"


def test_recipe_trains_decodes_and_scores_cassnat(tiny_cassnat_recipe):
    model_dir = check_recipe_outputs(tiny_cassnat_recipe, "asr_train_tiny_cassnat_char",
                                     ("decode_cassnat", "decode_cassnat_esa"))
    log = (model_dir / "train.log").read_text()
    assert "loss_att=" in log and "loss_ar=" in log  # NAR decoder and AR head were trained
    rtf = json.loads((model_dir / "decode_cassnat_esa/test/rtf.json").read_text())
    assert rtf["config"]["search"] == "esa" and rtf["config"]["num_samples"] == 16


@pytest.mark.parametrize("search", ["greedy", "esa"])
def test_cassnat_batch_equals_items_with_timestamps_inside_the_audio(cassnat_dir, tiny_cassnat_recipe, search):
    wavs = read_wavs(tiny_cassnat_recipe)
    s2t = Speech2Text(cassnat_dir, search=search, num_samples=4, threshold=1.0)
    batch = s2t(wavs)
    for wav, hyp in zip(wavs, batch):
        one = s2t(wav)
        assert one.token_ids == hyp.token_ids and one.timestamps == hyp.timestamps
        assert one.score == pytest.approx(hyp.score, abs=1e-3)
        assert len(hyp.timestamps) == len(hyp.token_ids)
        assert all(0 <= s < e <= wav.numel() / s2t.sample_rate + 1e-6 for s, e in hyp.timestamps)


def test_cassnat_short_input_gives_an_empty_hypothesis_with_a_warning(cassnat_dir, tiny_cassnat_recipe):
    s2t = Speech2Text(cassnat_dir)
    with torch.no_grad():  # make the CTC head say blank everywhere
        s2t.model.ctc.ctc_lo.bias.fill_(-30.0)
        s2t.model.ctc.ctc_lo.bias[0] = 30.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hyps = s2t(read_wavs(tiny_cassnat_recipe)[:2])
    assert all(h.text == "" and h.timestamps == () for h in hyps)
    assert any("inputs[1]" in str(w.message) and "no token" in str(w.message) for w in caught)


def test_cassnat_options_are_checked(cassnat_dir):
    with pytest.raises(ValueError, match="search in"):
        Speech2Text(cassnat_dir, search="beam")
    with pytest.raises(ValueError, match="rank"):
        Speech2Text(cassnat_dir, search="esa", rank="lm")
    with pytest.raises(ValueError, match=r"\['length_candidates'\] are not options of a cassnat model"):
        Speech2Text(cassnat_dir, length_candidates=1)


# ---------------------------------------------------------------------------- AR baseline
@pytest.fixture(scope="module")
def aed_dir(tiny_aed_recipe):
    return tiny_aed_recipe / "exp/asr_train_tiny_aed_char"


def test_recipe_trains_decodes_and_scores_the_ar_baseline(tiny_aed_recipe):
    model_dir = check_recipe_outputs(tiny_aed_recipe, "asr_train_tiny_aed_char", ("decode_aed_tiny",))
    rtf = json.loads((model_dir / "decode_aed_tiny/test/rtf.json").read_text())
    assert rtf["config"]["search"] == "beam" and rtf["config"]["beam_size"] == 10
    assert rtf["config"]["ctc_weight"] == 0.3


def test_aed_decodes_as_espnets_own_inference(aed_dir, tiny_aed_recipe, monkeypatch):
    """Our serving of the AR baseline gives ESPnet's espnet2.bin.asr_inference results."""
    from espnet2.bin.asr_inference import Speech2Text as ESPnetSpeech2Text

    monkeypatch.chdir(tiny_aed_recipe)  # config.yaml names the stats file relative to the recipe

    ours = Speech2Text(aed_dir, search="beam", beam_size=4, ctc_weight=0.3, maxlenratio=0.3, timestamps=False)
    theirs = ESPnetSpeech2Text(
        asr_train_config=str(aed_dir / "config.yaml"), asr_model_file=str(ours.model_file),
        beam_size=4, ctc_weight=0.3, lm_weight=0.0, penalty=0.0, nbest=1, maxlenratio=0.3, device="cpu",
    )
    for wav in read_wavs(tiny_aed_recipe):
        hyp = ours(wav)
        res = theirs(wav)
        if isinstance(res, tuple):  # with intermediate CTC ESPnet returns (results, interCTC results)
            res = res[0]
        text, tokens, token_ids, _ = res[0]
        assert list(hyp.token_ids) == [int(t) for t in token_ids]
        assert list(hyp.tokens) == list(tokens)


def test_cassnat_esa_ranked_by_the_ar_baseline(cassnat_dir, aed_dir, tiny_aed_recipe, tiny_cassnat_recipe):
    wavs = read_wavs(tiny_cassnat_recipe)
    s2t = Speech2Text(cassnat_dir, search="esa", num_samples=4, threshold=1.0, rank_model_dir=aed_dir)
    batch = s2t(wavs)
    for wav, hyp in zip(wavs, batch):  # the AR baseline's own score of the chosen hypothesis
        one = s2t(wav)
        assert one.token_ids == hyp.token_ids
        assert one.score == pytest.approx(hyp.score, abs=1e-3)
    with pytest.raises(ValueError, match="must be an AED"):
        Speech2Text(cassnat_dir, search="esa", rank_model_dir=cassnat_dir)
    with pytest.raises(ValueError, match=r"\['rank_model_dir'\] are not options of a aed model"):
        Speech2Text(aed_dir, search="beam", rank_model_dir=aed_dir)


def test_aed_batch_equals_items_and_options_are_checked(aed_dir, tiny_aed_recipe):
    wavs = read_wavs(tiny_aed_recipe)
    s2t = Speech2Text(aed_dir, search="beam", beam_size=3, maxlenratio=0.2)
    for wav, hyp in zip(wavs, s2t(wavs)):
        one = s2t(wav)
        assert one.token_ids == hyp.token_ids and one.timestamps == hyp.timestamps
        assert len(hyp.timestamps) == len(hyp.token_ids)
    with pytest.raises(ValueError, match="search in"):
        Speech2Text(aed_dir, search="esa")
    with pytest.raises(ValueError, match="ctc_weight"):
        Speech2Text(aed_dir, search="beam", ctc_weight=1.5)


# ---------------------------------------------------------------------------- benchmark
def test_bench_compares_systems_side_by_side(tiny_recipe, tiny_aed_recipe, tiny_cassnat_recipe, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("asr_decode_bench", Path(__file__).parents[2] / "bench/asr_decode.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    exp = tiny_aed_recipe / "exp"
    rc = bench.main([
        "--exp_dir", str(exp), "--data_dir", str(tiny_aed_recipe / "dump/raw/test"),
        "--systems", "ar=asr_train_tiny_aed_char:beam", "nat=asr_train_tiny_cassnat_char:greedy",
        "esa=asr_train_tiny_cassnat_char:esa",
        f"ctc_lm={tiny_recipe / 'exp/asr_train_tiny_char'}:{tiny_recipe / 'conf/decode_beam_ngram.yaml'}",
        "--ngram_file", str(tiny_recipe / "exp/ngram_char/3gram.arpa"), "--baseline", "ar", "--batch_sizes", "1", "2", "--out", str(out), "--plots",
        "--maxlenratio", "0.1",  # the tiny AED barely learned <eos>: bound its search
        "--threads", "1",  # as every test process (conftest.TORCH_THREADS)
    ])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["system"], r["batch_size"]) for r in rows] == [
        (s, b) for b in (1, 2) for s in ("ar", "nat", "esa", "ctc_lm")]
    refs = (tiny_aed_recipe / "exp/asr_train_tiny_cassnat_char/decode_cassnat/test/scoring/scores.json")
    for r in rows:
        assert r["total_s"] > 0 and r["encoder_s"] > 0 and r["utterances"] == 4
        assert r["speedup"] == pytest.approx(
            next(b for b in rows if b["system"] == "ar" and b["batch_size"] == r["batch_size"])["total_s"] / r["total_s"])
    with pytest.raises(ValueError, match="speaker_warps"):  # per-speaker VTLN is not a timed system
        bench.search_options(str(tiny_recipe / "conf/decode_beam_ngram_vtln.yaml"),
                             str(tiny_recipe / "exp/ngram_char/3gram.arpa"))
    # the bench's greedy CASS-NAT WER is the recipe's own scoring of the same decode
    nat = next(r for r in rows if r["system"] == "nat" and r["batch_size"] == 1)
    assert nat["wer"] == pytest.approx(json.loads(refs.read_text())["wer"], abs=0.01)
    lm = next(r for r in rows if r["system"] == "ctc_lm" and r["batch_size"] == 2)  # a decode config as the search
    lm_ref = tiny_recipe / "exp/asr_train_tiny_char/decode_beam_ngram/test/scoring/scores.json"
    assert lm["wer"] == pytest.approx(json.loads(lm_ref.read_text())["wer"], abs=0.01)
    # the training column comes from the model's config.yaml (2 epochs in the tiny config)
    assert "| esa | 2 ep | 2 |" in out.with_suffix(".md").read_text()
    for png in ("bench_wer_speedup.png", "bench_time.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
