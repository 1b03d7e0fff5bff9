"""A tiny run of egs/synth_en/asr1 through every stage (corpus → RESULTS.md)."""

import json
import re
import subprocess

from tests.conftest import recipe_env


def test_every_stage_leaves_its_output(tiny_recipe):
    r = tiny_recipe
    for dset in ("train", "dev", "test", "test_real"):
        assert (r / "data" / dset / "wav.scp").is_file()
    for dset in ("train", "dev", "test", "test_real"):
        assert (r / "dump/raw" / dset / ".done").is_file()
    assert (r / "data/token_list/char/tokens.txt").read_text().splitlines()[0] == "<blank>"
    assert (r / "exp/asr_stats_char/train/feats_stats.npz").is_file()
    exp = r / "exp/asr_train_tiny_char"
    assert (exp / "config.yaml").is_file() and (exp / "valid.loss.ave.pth").exists()
    lm = r / "exp/ngram_char/3gram.arpa"  # --use_ngram true (run.sh), --ngram_order 3 (the fixture)
    info = json.loads((r / "exp/ngram_char/3gram.arpa.json").read_text())
    assert lm.is_file() and info["order"] == 3 and info["dev"]["perplexity"] > 1
    dev_text = {line.split(maxsplit=1)[1] for line in (r / "data/dev/text").read_text().splitlines()}
    test_text = {line.split(maxsplit=1)[1] for line in (r / "data/test/text").read_text().splitlines()}
    lm_text = set((r / "data/lm_train.txt").read_text().splitlines())
    assert lm_text and not (lm_text & (dev_text | test_text))  # no evaluation sentence in the LM text
    assert json.loads((exp / "decode_beam_ngram/dev/rtf.json").read_text())["config"]["ngram_file"] == str(
        lm.relative_to(r))
    word_lm = r / "exp/ngram_word/3gram.arpa"  # --word_ngram_order 3 (the default), for ngram_unit: word
    word_info = json.loads((r / "exp/ngram_word/3gram.arpa.json").read_text())
    assert word_info["token_type"] == "word" and word_info["sentences"] == len(
        [line for line in (r / "data/lm_train.txt").read_text().splitlines() if line.strip()])
    config = json.loads((exp / "decode_beam_wordlm/dev/rtf.json").read_text())["config"]
    assert config["ngram_file"] == str(word_lm.relative_to(r)) and config["ngram_unit"] == "word"
    lexicon = {w for line in lm_text for w in line.split()}
    for dset in ("dev", "test"):  # closed vocabulary: every decoded word is a word of the LM text
        for line in (exp / "decode_beam_wordlm" / dset / "text").read_text().splitlines():
            assert set(line.split()[1:]) <= lexicon, line
    for dec in ("decode_greedy", "decode_beam", "decode_beam_ngram", "decode_beam_wordlm"):
        for dset in ("dev", "test", "test_real"):
            out = exp / dec / dset
            utts = (r / "dump/raw" / dset / "text").read_text().splitlines()
            assert len((out / "text").read_text().splitlines()) == len(utts)
            scores = json.loads((out / "scoring/scores.json").read_text())
            assert scores["utterances"] == len(utts)
            assert 0 <= scores["cer"] and 0 <= scores["wer"]
            assert (out / "scoring/alignment.txt").is_file()


def test_results_md_has_the_table_and_command(tiny_recipe):
    text = (tiny_recipe / "RESULTS.md").read_text()
    assert "--asr_config conf/train_tiny.yaml" in text
    rows = [line for line in text.splitlines() if line.startswith("| asr_train_tiny_char")]
    assert len(rows) == 4  # greedy, beam, beam + n-gram, beam + word n-gram
    assert all(len(re.findall(r"\d+\.\d / \d+\.\d", row)) == 3 for row in rows)  # dev, test, test_real


def test_rerun_of_finished_stages_is_idempotent(tiny_recipe):
    # data preparation again: the corpus is complete (.done), so nothing is re-synthesised
    wav_scp = (tiny_recipe / "data/train/wav.scp").read_text()
    r = subprocess.run(["./run.sh", "--asr_config", "conf/train_tiny.yaml", "--stop_stage", "1",
                        "--local_data_opts", "--train_hours 0.01 --dev_utts 4 --test_utts 4"],
                       cwd=tiny_recipe, env=recipe_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tiny_recipe / "data/train/wav.scp").read_text() == wav_scp
