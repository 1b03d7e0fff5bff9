"""The synth_en recipe chain's hand-offs: asr1 -> codec1 -> tts1 (issue #29 item 7).

asr1's recipes/asr.sh records the directory of the CTC model it trained in exp/asr_model_dir;
codec1 and tts1 read that record (unless given --asr_model_dir) and stop with a clear error when
a stage that needs the model is in range and the record is missing; the three recipes prepare
one corpus (the options of asr1/conf/corpus.sh, one synthesis under asr1/downloads).

The real run.sh files and templates run in a copy of the recipes, with a stand-in ``python`` on
PATH that records each call and writes the few files the scripts read next: the hand-offs are
shell logic, checked here in seconds; the Python stages behind them are tested on the tiny tree
(tests/asr/test_recipe_e2e.py, tests/tts/test_tts_recipe.py), where the last test below checks
the record the real training wrote.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, _copy_recipe

#: stand-in for python: one line per call in $STUB_LOG; writes what the recipe scripts read next
STUB = r"""#!/usr/bin/env bash
set -euo pipefail
echo "python $*" >> "${STUB_LOG}"
module=""
if [ "${1:-}" = -m ]; then module=$2; fi
opt() {  # opt NAME ARGS...: the value after --NAME
  local name=$1; shift
  while [ $# -gt 1 ]; do [ "$1" = "--${name}" ] && { echo "$2"; return; }; shift; done
}
case "${module}" in
  asr.bin.train)  # the trained model dir: ESPnet writes the config there
    out=$(opt output_dir "$@"); mkdir -p "${out}"
    case " $* " in *" --collect_stats true "*) ;; *) cp "$(opt config "$@")" "${out}/config.yaml" ;; esac ;;
  asr.data.synth_en)  # a one-utterance corpus per split, absolute wav paths (as synth_en writes them)
    out=$(opt out "$@")
    if [ ! -d "${out}" ]; then
      for s in train dev test; do
        mkdir -p "${out}/${s}" "${out}/wav/spk_${s}"
        echo "${s}1 ${out}/wav/spk_${s}/${s}1.wav" > "${out}/${s}/wav.scp"
        echo "${s}1 HELLO" > "${out}/${s}/text"
        echo "${s}1 spk_${s}" > "${out}/${s}/utt2spk"
        echo "spk_${s} ${s}1" > "${out}/${s}/spk2utt"
        echo "${s}1 1.0" > "${out}/${s}/utt2dur"
      done
      echo "HELLO WORLD" > "${out}/lm_train.txt"
    fi ;;
  asr.data.real)
    out=$(opt out "$@"); mkdir -p "${out}"
    echo "r1 HELLO" > "${out}/text"; echo "s r1" > "${out}/spk2utt" ;;
  tts.evaluate)
    if [ "$3" = table ]; then out=$(opt out "$@"); mkdir -p "$(dirname "${out}")"; echo "| table |" > "${out}"; fi ;;
esac
"""


class Chain:
    """egs/synth_en/{asr1,codec1,tts1} copied into a temporary tree, run with the stand-in python."""

    def __init__(self, top: Path):
        self.top = top
        (top / "recipes").symlink_to(ROOT / "recipes")
        for name in ("asr1", "codec1", "tts1"):
            _copy_recipe(name, top / "egs" / "synth_en" / name)
        self.bin = top / "bin"
        self.bin.mkdir()
        (self.bin / "python").write_text(STUB)
        (self.bin / "python").chmod(0o755)
        self.log = top / "calls.txt"
        self.log.touch()
        self.env = dict(os.environ, PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", STUB_LOG=str(self.log))
        self.env.pop("VIRTUAL_ENV", None)

    def dir(self, recipe: str) -> Path:
        return self.top / "egs" / "synth_en" / recipe

    def run(self, recipe: str, *args: str, script: str = "run.sh") -> subprocess.CompletedProcess:
        self.log.write_text("")
        return subprocess.run(["bash", script, *args], cwd=self.dir(recipe), env=self.env,
                              capture_output=True, text=True, timeout=120)

    def calls(self, module: str = "") -> list[str]:
        return [line for line in self.log.read_text().splitlines() if f" -m {module}" in line or not module]

    def train_asr(self, *args: str) -> subprocess.CompletedProcess:
        """asr1's stage 5 (training) alone: what writes the record."""
        r = self.run("asr1", "--stage", "5", "--stop_stage", "5", "--feats_normalize", "utterance_mvn", *args)
        assert r.returncode == 0, r.stdout + r.stderr
        return r


@pytest.fixture
def chain(tmp_path) -> Chain:
    return Chain(tmp_path)


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _arg(call: str, name: str) -> str:
    words = call.split()
    return words[words.index(name) + 1]


# --------------------------------------------------------------------------- (a) the record


def test_asr_training_records_the_ctc_model_dir(chain):
    record = chain.dir("asr1") / "exp" / "asr_model_dir"
    ctc = (chain.dir("asr1") / "exp" / "asr_train_ctc_char").resolve()
    out = chain.train_asr().stdout
    assert record.read_text() == f"{ctc}\n"  # one line: the absolute path of the trained dir
    assert (ctc / "config.yaml").is_file()
    assert f"recorded {ctc} in exp/asr_model_dir" in out  # and the recipe's log says so
    # another family (model: paraformer) trains without touching the record ...
    chain.train_asr("--asr_config", "conf/train_paraformer.yaml")
    assert (chain.dir("asr1") / "exp/asr_train_paraformer_char/config.yaml").is_file()
    assert record.read_text() == f"{ctc}\n"
    # ... unless asked; and --record_model false keeps it for a CTC config too
    chain.train_asr("--asr_config", "conf/train_ctc_large.yaml", "--record_model", "false")
    assert record.read_text() == f"{ctc}\n"
    chain.train_asr("--asr_config", "conf/train_paraformer.yaml", "--record_model", "true")
    assert record.read_text().strip() == str(ctc.parent / "asr_train_paraformer_char")
    # the last CTC model trained is the one recorded
    chain.train_asr("--asr_config", "conf/train_ctc_large.yaml")
    assert record.read_text().strip() == str(ctc.parent / "asr_train_ctc_large_char")


def test_demo_records_its_ctc_model_not_the_finetunings(chain):
    """make demo: stage 1 trains conf/train_ctc_sp.yaml (its tag differs from run.sh's default);
    the fine-tunings of stage 2, even of a CTC config, leave the record alone."""
    record = chain.dir("asr1") / "exp" / "asr_model_dir"
    ctc_sp = chain.dir("asr1").resolve() / "exp" / "asr_train_ctc_sp_char"
    _ok(chain.run("asr1", "--stop_stage", "1", "--run_args", "--stage 5 --stop_stage 5", script="demo.sh"))
    assert record.read_text() == f"{ctc_sp}\n"
    (ctc_sp / "valid.loss.ave.pth").write_bytes(b"")  # the averaged checkpoint stage 2 starts from
    _ok(chain.run("asr1", "--stage", "2", "--stop_stage", "2", "--finetune_configs", "ctc_sp_fw paraformer_ctcfire",
                  "--finetune_jobs", "1", script="demo.sh"))
    assert len(chain.calls("asr.bin.train")) == 2  # both fine-tunings ran
    assert record.read_text() == f"{ctc_sp}\n"


# --------------------------------------------------------------------------- (b) picked up downstream


def _fake_tts_outputs(chain: Chain) -> None:
    """The files stage 8 of recipes/tts.sh reads: the synthesised and the reference test set."""
    tts = chain.dir("tts1")
    for d in ("exp/synth/maskgct_rule/test", "dump/raw/test"):
        (tts / d).mkdir(parents=True)
        (tts / d / "wav.scp").write_text("test1 /x/test1.wav\n")


def test_codec_and_tts_use_the_recorded_model(chain):
    chain.train_asr()
    model = str((chain.dir("asr1") / "exp" / "asr_train_ctc_char").resolve())
    out = _ok(chain.run("codec1", "--stage", "5", "--stop_stage", "5"))
    [fit] = chain.calls("tts.bin.semantic_tokens fit")
    assert _arg(fit, "--asr_model_dir") == model
    assert f"{model} (named in ../asr1/exp/asr_model_dir)" in out

    _fake_tts_outputs(chain)
    _ok(chain.run("tts1", "--stage", "8", "--stop_stage", "8"))
    judged = [c for c in chain.calls("tts.evaluate") if " table " not in c]
    assert len(judged) == 3  # ground truth, resynthesis, MaskGCT
    for call in judged:
        assert _arg(call, "--judges") == "pocketsphinx,asr,distillmos,sim"
        assert _arg(call, "--asr_model_dir") == model


def test_an_explicit_asr_model_dir_wins_over_the_record(chain):
    chain.train_asr()
    other = chain.top / "my_asr"
    other.mkdir()
    (other / "config.yaml").write_text("model: ctc\n")
    _ok(chain.run("codec1", "--stage", "5", "--stop_stage", "5", "--asr_model_dir", str(other)))
    assert _arg(chain.calls("tts.bin.semantic_tokens fit")[0], "--asr_model_dir") == str(other)


# --------------------------------------------------------------------------- (c) no record: a clear error


def test_codec_without_the_record_stops_before_its_first_stage(chain):
    r = chain.run("codec1", "--stage", "3")  # stages 3-8: 5 and 8 need the model
    assert r.returncode == 1
    err = r.stderr
    assert "../asr1/exp/asr_model_dir does not exist" in err
    assert "cd ../asr1 && ./run.sh" in err and "make demo" in err and "--asr_model_dir" in err
    assert chain.calls() == []  # nothing ran: no hours of tokenizer training before the error
    # stages that need no ASR model run without it
    _ok(chain.run("codec1", "--stage", "3", "--stop_stage", "4"))
    assert chain.calls("audio_gen.bin.fit_tokenizer") and chain.calls("audio_gen.bin.tokenize")
    # an explicit opt-out skips the stages that need it, saying so
    out = _ok(chain.run("codec1", "--stage", "5", "--asr_model_dir", "none"))
    assert "Stages 5-6: skipped (--asr_model_dir none" in out and "Stage 8: skipped (--asr_model_dir none" in out
    assert chain.calls() == []


def test_codec_with_a_record_of_a_missing_model_stops(chain):
    chain.train_asr()
    model = chain.dir("asr1") / "exp" / "asr_train_ctc_char"
    (model / "config.yaml").unlink()
    r = chain.run("codec1", "--stage", "5", "--stop_stage", "5")
    assert r.returncode == 1
    assert f"{model.resolve()} (named in ../asr1/exp/asr_model_dir) has no config.yaml" in r.stderr
    assert chain.calls() == []


def test_tts_without_the_record(chain):
    _fake_tts_outputs(chain)
    r = chain.run("tts1", "--stage", "8", "--stop_stage", "8")
    assert r.returncode == 1
    assert "judge asr of stage 8" in r.stderr and "../asr1/exp/asr_model_dir does not exist" in r.stderr
    assert "cd ../asr1 && ./run.sh" in r.stderr and "make demo" in r.stderr
    assert chain.calls() == []
    # no judge asr asked: no model needed
    _ok(chain.run("tts1", "--stage", "8", "--stop_stage", "8", "--judges", "sim"))
    assert all("--asr_model_dir" not in c for c in chain.calls("tts.evaluate"))
    # --asr_model_dir none drops the judge, saying so
    out = _ok(chain.run("tts1", "--stage", "8", "--stop_stage", "8", "--asr_model_dir", "none"))
    assert "without the judge asr (--asr_model_dir none)" in out
    judged = [c for c in chain.calls("tts.evaluate") if " table " not in c]
    assert judged and all(_arg(c, "--judges") == "pocketsphinx,distillmos,sim" for c in judged)
    # stages before 8 need no ASR model: the tokenizer check is the first error
    r = chain.run("tts1", "--stage", "4", "--stop_stage", "4")
    assert r.returncode == 1 and "run the codec recipe first" in r.stdout + r.stderr
    assert "asr_model_dir" not in r.stdout + r.stderr


# --------------------------------------------------------------------------- (d) one corpus


def test_the_three_recipes_prepare_one_corpus(chain):
    synth, stage1 = {}, {}
    for recipe in ("asr1", "codec1", "tts1"):
        out = _ok(chain.run(recipe, "--stop_stage", "1"))
        [call] = chain.calls("asr.data.synth_en")
        synth[recipe] = call
        stage1[recipe] = next(line.split(") ", 1)[1] for line in out.splitlines() if "Stage 1: data preparation" in line)
    assert synth["asr1"] == synth["codec1"] == synth["tts1"]  # same options, same output dir
    assert stage1["asr1"] == stage1["codec1"] == stage1["tts1"]
    assert "--formant_warps 0.8 0.9 1.1 1.2 1.3" in synth["asr1"] and "--max_vocab 1000" in synth["asr1"]
    corpus = Path(_arg(synth["asr1"], "--out"))
    assert corpus.parent == chain.dir("asr1").resolve() / "downloads" / "synth_en"  # asr1's, reused
    for recipe in ("codec1", "tts1"):
        for dset in ("train", "dev", "test"):
            scp = (chain.dir(recipe) / "data" / dset / "wav.scp").read_text()
            assert scp == (chain.dir("asr1") / "data" / dset / "wav.scp").read_text()
            assert scp.split()[1].startswith(f"{corpus}/wav/")
    assert not (chain.dir("tts1") / "downloads").exists()


def test_a_corpus_built_with_relative_paths_is_reused_from_another_recipe(chain):
    """Corpora built before the shared synthesis have wav paths relative to asr1 (synth_en was
    given a relative --out there): local/data.sh rewrites them, so tts1 can use them too."""
    _ok(chain.run("asr1", "--stop_stage", "1"))
    corpus = Path(_arg(chain.calls("asr.data.synth_en")[0], "--out"))
    rel = corpus.relative_to(chain.dir("asr1").resolve())
    (corpus / "train" / "wav.scp").write_text(f"train1 {rel}/wav/spk_train/train1.wav\n")
    _ok(chain.run("tts1", "--stop_stage", "1"))
    assert (chain.dir("tts1") / "data/train/wav.scp").read_text() == f"train1 {corpus}/wav/spk_train/train1.wav\n"


# --------------------------------------------------------------------------- the real training


def test_the_tiny_recipe_recorded_its_model(tiny_recipe):
    """The tiny tree's asr1 run (the real trainer, conf/train_tiny.yaml: model ctc) left the record."""
    model = (tiny_recipe / "exp" / "asr_train_tiny_char").resolve()
    assert (tiny_recipe / "exp" / "asr_model_dir").read_text() == f"{model}\n"
    assert (model / "config.yaml").is_file() and (model / "valid.loss.ave.pth").exists()
