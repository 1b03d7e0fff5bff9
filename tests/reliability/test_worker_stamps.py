"""The Python workers skip work only when every input it read is unchanged (stamps).

- token archives (audio_gen.data.encode_to_archive: audio_gen.bin.tokenize, tts.bin.semantic_tokens
  encode): a changed audio file or segment re-encodes that utterance, a changed tokenizer the
  whole archive, a removed utterance leaves it; a killed run resumes with what it wrote;
- fitted tokenizers and the trained vocoder (audio_gen.bin.fit_tokenizer, tts.bin.semantic_tokens
  fit, audio_gen.bin.train_vocoder): changed data or options are an error listing them, --force
  refits;
- the phone token list (tts.bin.phonemize): rebuilt when the set that built it gains phones;
- generated waves (audio_gen.bin.generate, tts.bin.synthesize): a changed model or option
  regenerates everything, a changed caption/sentence/prompt that utterance; one writer per
  output directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from audio_gen.data import TokenArchive, encode_to_archive, read_audio_list
from tests.audio_gen.test_tokenizers import voiced, write_data_dir
from tests.tts.test_maskgct import needs_espeak, tts_dirs  # noqa: F401  (tts_dirs: a fixture)

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


@pytest.fixture(autouse=True)
def grad_mode():
    """tts.bin.semantic_tokens.main turns autograd off for the process: on again for the next test."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


def mtimes(paths) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in paths}


def messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def rewrite_audio(path: Path, seed: int) -> None:
    """Other audio under the same name (another length, so the size changes too)."""
    n = sf.info(str(path)).frames + 160
    sf.write(path, voiced(n, seed).numpy(), SR, subtype="FLOAT")


# ============================================================================ token archives
class Encoder:
    """A cheap deterministic 'tokenizer': one code per 10 ms (the mean magnitude), counting calls."""

    def __init__(self, fail_after: int | None = None):
        self.encoded: list[str] = []
        self.fail_after = fail_after

    def __call__(self, batch):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise KeyboardInterrupt  # the run is "killed" here
        out = []
        for item, wav in batch:
            self.encoded.append(item.key)
            x = wav.numpy()[: len(wav) // 160 * 160].reshape(-1, 160)
            out.append(np.round(np.abs(x).mean(1) * 1000).astype(np.int64)[None])
        return out


def encode(data, out, identity=None, encoder=None):
    encoder = encoder or Encoder()
    encode_to_archive(read_audio_list(data), TokenArchive(out, "codes"), SR, 0.5, encoder, "test",
                      identity=identity or {"tokenizer": "A"})
    return encoder


@pytest.fixture
def data(tmp_path):
    """A data dir of 4 utterances u0..u3 (1, 0.77, 0.56, 1.25 s)."""
    (tmp_path / "data").mkdir()
    return write_data_dir(tmp_path / "data", (16000, 12345, 9001, 20000), "u")


def test_archive_unchanged_rerun_skips_without_rewriting(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "codes"
    assert sorted(encode(data, out).encoded) == ["u0", "u1", "u2", "u3"]
    files = list((out / "data").glob("*.npy")) + [out / "codes.scp", out / "codes_shape"]
    before = mtimes(files)
    stamp = json.loads((out / ".stamp.json").read_text())
    assert stamp["complete"] is True and set(stamp["items"]) == {"u0", "u1", "u2", "u3"}
    assert stamp["items"]["u1"]["audio"]["size"] == (data / "wav" / "u1.wav").stat().st_size
    caplog.clear()
    assert encode(data, out).encoded == []
    assert f"{out}: inputs unchanged since {stamp['written']}, skipped (4 utterances)" in messages(caplog)
    assert mtimes(files) == before


def test_archive_reencodes_an_utterance_whose_audio_changed(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "codes"
    encode(data, out)
    old = np.load(out / "data" / "u1.npy")
    others = mtimes(out / "data" / f"u{i}.npy" for i in (0, 2, 3))
    rewrite_audio(data / "wav" / "u1.wav", seed=99)
    caplog.clear()
    assert encode(data, out).encoded == ["u1"]
    log = messages(caplog)
    assert f"{out}: 1 utterances changed since they were done, e.g. u1 (audio changed (size, mtime)); redoing them" in log
    assert not np.array_equal(np.load(out / "data" / "u1.npy"), old)
    assert mtimes(out / "data" / f"u{i}.npy" for i in (0, 2, 3)) == others
    # the audio now points elsewhere: also a change of that utterance
    (data / "wav.scp").write_text((data / "wav.scp").read_text().replace("u2.wav", "u0.wav"))
    caplog.clear()
    assert encode(data, out).encoded == ["u2"]
    assert f"u2 (audio is now {data / 'wav' / 'u0.wav'} (was {data / 'wav' / 'u2.wav'}))" in messages(caplog)
    assert np.array_equal(np.load(out / "data" / "u2.npy"), np.load(out / "data" / "u0.npy"))


def test_archive_follows_segments_and_drops_removed_utterances(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    wav = data / "wav" / "u3.wav"
    (data / "wav.scp").write_text(f"rec {wav}\n")
    (data / "segments").write_text("s1 rec 0.0 0.5\ns2 rec 0.5 1.0\ns3 rec 1.0 1.25\n")
    out = tmp_path / "codes"
    encode(data, out)
    (data / "segments").write_text("s1 rec 0.0 0.5\ns2 rec 0.5 0.75\n")  # s2 shorter, s3 gone
    caplog.clear()
    assert encode(data, out).encoded == ["s2"]
    log = messages(caplog)
    assert "e.g. s2 (segment [0.5, 1.0] -> [0.5, 0.75])" in log
    assert f"{out}: 1 utterances no longer listed, their outputs removed: s3" in log
    assert not (out / "data" / "s3.npy").exists()
    assert [line.split()[0] for line in (out / "codes.scp").read_text().splitlines()] == ["s1", "s2"]
    assert (out / "codes_shape").read_text().splitlines()[1] == "s2 25,1"  # 0.25 s at 100 codes/s


def test_archive_of_another_tokenizer_is_encoded_again(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "codes"
    encode(data, out, identity={"files": {"weights": 1}})
    caplog.clear()
    assert sorted(encode(data, out, identity={"files": {"weights": 2}}).encoded) == ["u0", "u1", "u2", "u3"]
    assert f"{out}: the tokenizer changed: tokenizer/files/weights 1 -> 2; redoing all 4 utterances" in messages(caplog)


def test_archive_resumes_after_a_kill_and_redoes_only_what_changed(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "codes"
    with pytest.raises(KeyboardInterrupt):
        encode(data, out, encoder=Encoder(fail_after=2))  # killed after two utterances
    stamp = json.loads((out / ".stamp.json").read_text())
    assert stamp["complete"] is False and not (out / "codes.scp").exists()
    done = mtimes((out / "data").glob("*.npy"))
    assert sorted(Path(p).stem for p in done) == ["u0", "u1"]
    caplog.clear()
    assert encode(data, out).encoded == ["u2", "u3"]  # the entries written before the kill are kept
    assert "2 of 4 utterances already done" in messages(caplog)
    assert {p: t for p, t in mtimes((out / "data").glob("*.npy")).items() if p in done} == done
    assert len((out / "codes.scp").read_text().splitlines()) == 4
    # killed again, and an entry written before the kill has other audio now: that one is redone
    (out / "data" / "u3.npy").unlink()
    with pytest.raises(KeyboardInterrupt):
        encode(data, out, encoder=Encoder(fail_after=0))
    rewrite_audio(data / "wav" / "u0.wav", seed=7)
    assert encode(data, out).encoded == ["u0", "u3"]


def test_tokenize_cli_follows_the_tokenizer_directory(data, tmp_path, caplog):
    from audio_gen.bin import fit_tokenizer, tokenize

    caplog.set_level(logging.INFO)
    tok, out = tmp_path / "tok", tmp_path / "codes"
    fit = ["--data_dir", str(data), "--out_dir", str(tok), "--num_codebooks", "2", "--codebook_size", "8",
           "--n_mels", "32", "--iters", "2", "--griffin_lim_iters", "2"]
    fit_tokenizer.main(fit)
    argv = ["--tokenizer", str(tok), "--data_dir", str(data), "--out_dir", str(out)]
    assert tokenize.main(argv) == 0
    before = mtimes((out / "data").glob("*.npy"))
    caplog.clear()
    assert tokenize.main(argv) == 0
    assert "inputs unchanged since" in messages(caplog) and mtimes((out / "data").glob("*.npy")) == before
    fit_tokenizer.main(fit[:-4] + ["--iters", "3", "--griffin_lim_iters", "2", "--seed", "5", "--force"])
    caplog.clear()
    assert tokenize.main(argv) == 0
    log = messages(caplog)
    assert f"{out}: the tokenizer changed: tokenizer/files/codebooks.pt changed (sha256 differs)" in log
    assert "redoing all 4 utterances" in log
    after = mtimes((out / "data").glob("*.npy"))
    assert all(after[p] != t for p, t in before.items())


def test_semantic_encode_follows_the_feature_source(tts_dirs, data, tmp_path, caplog):
    from tts.bin import semantic_tokens

    caplog.set_level(logging.INFO)
    root, _ = tts_dirs
    sem = tmp_path / "semantic"
    meta = json.loads((root / "semantic" / "semantic.json").read_text())
    enc = tmp_path / "enc.pt"
    enc.write_bytes((root / "enc.pt").read_bytes())
    meta["features"]["path"] = str(enc)
    sem.mkdir()
    (sem / "semantic.json").write_text(json.dumps(meta))
    (sem / "kmeans.pt").write_bytes((root / "semantic" / "kmeans.pt").read_bytes())
    out = tmp_path / "sem_codes"
    argv = ["encode", "--tokenizer", str(sem), "--data_dir", str(data), "--out_dir", str(out)]
    assert semantic_tokens.main(argv) == 0
    before = mtimes((out / "data").glob("*.npy"))
    caplog.clear()
    assert semantic_tokens.main(argv) == 0
    assert "inputs unchanged since" in messages(caplog) and mtimes((out / "data").glob("*.npy")) == before
    class Louder(torch.nn.Module):  # another encoder in the file the tokenizer names
        def forward(self, wav: torch.Tensor, lens: torch.Tensor):
            t = wav.shape[1] // 640
            x = 2 * wav[:, : t * 640].reshape(wav.shape[0], t, 640)
            return torch.stack([x.abs().mean(-1), x.pow(2).mean(-1), x.max(-1).values], -1), lens // 640

    torch.jit.script(Louder()).save(str(enc))
    caplog.clear()
    assert semantic_tokens.main(argv) == 0
    assert "the tokenizer changed: tokenizer/features/module changed" in messages(caplog)
    assert len((out / "semantic.scp").read_text().splitlines()) == 4


# ============================================================================ fitted models
FIT_OPTS = ["--num_codebooks", "2", "--codebook_size", "8", "--n_mels", "32", "--iters", "2", "--griffin_lim_iters", "2"]


def test_fit_tokenizer_keeps_refuses_and_refits(data, tmp_path, capsys):
    from audio_gen.bin import fit_tokenizer

    out = tmp_path / "tok"
    argv = ["--data_dir", str(data), "--out_dir", str(out), *FIT_OPTS]
    assert fit_tokenizer.main(argv) == 0
    stamp = json.loads((out / ".stamp.json").read_text())
    assert stamp["options"]["codebook_size"] == 8 and "wav.scp" in stamp["inputs"] and len(stamp["audio"]) == 4
    before = mtimes([out / "codebooks.pt", out / "tokenizer.json"])
    capsys.readouterr()
    assert fit_tokenizer.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{out}: already trained (" in printed and "delete it to refit" in printed
    assert mtimes([out / "codebooks.pt", out / "tokenizer.json"]) == before
    # other options: an error listing them; the trained tokenizer is kept
    with pytest.raises(SystemExit) as err:
        fit_tokenizer.main([*argv, "--codebook_size", "4", "--seed", "3"])
    msg = str(err.value)
    assert msg.startswith(f"{out}: already trained (stamp of {stamp['written']}), but with other inputs: ")
    assert "option codebook_size 8 -> 4" in msg and "option seed 0 -> 3" in msg
    assert f"delete {out} or pass --force to fit it again" in msg
    # other data: an audio file re-recorded, an utterance added
    rewrite_audio(data / "wav" / "u1.wav", seed=42)
    with pytest.raises(SystemExit, match=r"wav.scp changed \(sha256 differs\)|1 audio file changed") as err:
        fit_tokenizer.main(argv)
    assert f"1 audio file changed: {data / 'wav' / 'u1.wav'} (size, mtime)" in str(err.value)
    assert mtimes([out / "codebooks.pt", out / "tokenizer.json"]) == before
    # --force refits on the current data and options, then a rerun keeps it
    assert fit_tokenizer.main([*argv, "--codebook_size", "4", "--force"]) == 0
    assert json.loads((out / "tokenizer.json").read_text())["codebook_size"] == 4
    assert fit_tokenizer.main([*argv, "--codebook_size", "4"]) == 0
    with pytest.raises(SystemExit, match="option codebook_size 4 -> 8"):
        fit_tokenizer.main(argv)


class FakeASRFeatures:
    """Stands in for ASREncoderFeatures (no trained ASR model here): a frame statistic."""

    kind = "asr_encoder"

    def __init__(self, model_dir, layer=-1, device="cpu"):
        self.model_dir, self.layer, self.num_layers = Path(model_dir).resolve(), layer, 2
        self.sample_rate, self.frame_rate = SR, 25.0

    def describe(self):
        return {"type": "fake", "model_dir": str(self.model_dir), "layer": self.layer}

    def __call__(self, wavs):
        t = min(w.numel() for w in wavs) // 640
        x = torch.stack([w[: t * 640].reshape(t, 640) for w in wavs])
        return torch.stack([x.abs().mean(-1), x.pow(2).mean(-1), x.max(-1).values], -1), torch.full((len(wavs),), t)


def test_semantic_fit_keeps_refuses_and_refits(data, tmp_path, monkeypatch, capsys):
    from tts.bin import semantic_tokens

    monkeypatch.setattr(semantic_tokens, "ASREncoderFeatures", FakeASRFeatures)
    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.yaml").write_text("model: ctc\n")
    (asr / "valid.acc.best.pth").write_bytes(b"weights v1")
    out = tmp_path / "sem"
    argv = ["fit", "--asr_model_dir", str(asr), "--layer", "1", "--data_dir", str(data), "--out_dir", str(out),
            "--codebook_size", "4"]
    assert semantic_tokens.main(argv) == 0
    before = mtimes([out / "kmeans.pt"])
    capsys.readouterr()
    assert semantic_tokens.main(argv) == 0
    assert f"{out}: already trained; delete it to refit" in capsys.readouterr().out
    assert mtimes([out / "kmeans.pt"]) == before
    with pytest.raises(SystemExit) as err:
        semantic_tokens.main([*argv, "--layer", "2"])
    assert "option layer 1 -> 2" in str(err.value) and "--force" in str(err.value)
    (asr / "valid.acc.best.pth").write_bytes(b"weights v2 (retrained)")
    with pytest.raises(SystemExit, match=r"asr checkpoint changed \(sha256 differs\)"):
        semantic_tokens.main(argv)
    assert mtimes([out / "kmeans.pt"]) == before
    assert semantic_tokens.main([*argv, "--force"]) == 0
    assert mtimes([out / "kmeans.pt"]) != before
    assert semantic_tokens.main(argv) == 0


def test_train_vocoder_keeps_refuses_and_retrains(data, tmp_path, capsys):
    from audio_gen.bin import fit_tokenizer, train_vocoder

    tok, out = tmp_path / "tok", tmp_path / "voc"
    fit_tokenizer.main(["--data_dir", str(data), "--out_dir", str(tok), *FIT_OPTS])
    argv = ["--data_dir", str(data), "--tokenizer_dir", str(tok), "--out_dir", str(out), "--steps", "2",
            "--batch_size", "2", "--segment_frames", "4", "--dim", "8", "--intermediate_dim", "16", "--num_layers", "1",
            "--checkpoint_every", "1", "--num_threads", "1"]
    assert train_vocoder.main(argv) == 0
    assert json.loads((out / ".stamp.json").read_text())["options"]["steps"] == 2
    before = mtimes([out / "vocoder.pt", out / "train" / "checkpoint.pt"])
    capsys.readouterr()
    # the speed and logging options are not part of the stamp
    assert train_vocoder.main([*argv, "--checkpoint_every", "2", "--num_threads", "2"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert mtimes([out / "vocoder.pt", out / "train" / "checkpoint.pt"]) == before
    with pytest.raises(SystemExit) as err:
        train_vocoder.main([*argv, "--lr", "0.002"])
    assert "option lr 0.001 -> 0.002" in str(err.value) and "pass --force to train it again" in str(err.value)
    fit_tokenizer.main(["--data_dir", str(data), "--out_dir", str(tok), *FIT_OPTS, "--seed", "1", "--force"])
    with pytest.raises(SystemExit, match=r"tokenizer codebooks.pt changed \(sha256 differs\)"):
        train_vocoder.main(argv)
    assert mtimes([out / "vocoder.pt", out / "train" / "checkpoint.pt"]) == before
    assert train_vocoder.main([*argv, "--force"]) == 0
    after = mtimes([out / "vocoder.pt", out / "train" / "checkpoint.pt"])
    assert all(after[p] != t for p, t in before.items())
    log = [json.loads(line)["step"] for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]  # trained from scratch: the old run's log was not appended to
    assert train_vocoder.main(argv) == 0


def test_train_vocoder_resumes_a_killed_run_without_a_stamp(data, tmp_path, monkeypatch):
    from audio_gen.bin import fit_tokenizer, train_vocoder

    tok, out = tmp_path / "tok", tmp_path / "voc"
    fit_tokenizer.main(["--data_dir", str(data), "--out_dir", str(tok), *FIT_OPTS])
    argv = ["--data_dir", str(data), "--tokenizer_dir", str(tok), "--out_dir", str(out), "--steps", "4",
            "--batch_size", "2", "--segment_frames", "4", "--dim", "8", "--intermediate_dim", "16", "--num_layers", "1",
            "--checkpoint_every", "2", "--num_threads", "1"]
    real = train_vocoder.StepTrainer.run

    def killed_after_the_first_save(self, step_fn, after_save=None, **kw):
        def kill(step, stats):
            raise KeyboardInterrupt

        return real(self, step_fn, after_save=kill, **kw)

    monkeypatch.setattr(train_vocoder.StepTrainer, "run", killed_after_the_first_save)
    with pytest.raises(KeyboardInterrupt):
        train_vocoder.main(argv)
    assert not (out / ".stamp.json").exists() and not (out / "tokenizer.json").exists()
    assert torch.load(out / "train" / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(train_vocoder.StepTrainer, "run", real)
    assert train_vocoder.main(argv) == 0
    assert torch.load(out / "train" / "checkpoint.pt", weights_only=False)["step"] == 4
    assert (out / ".stamp.json").is_file()


# ============================================================================ phone token list
@needs_espeak
def test_phonemize_rebuilds_the_list_of_the_set_that_built_it(tmp_path, caplog):
    from tts.bin import phonemize
    from tts.text import PhoneTokenizer

    caplog.set_level(logging.INFO)
    text, tokens = tmp_path / "train_text", tmp_path / "phones" / "tokens.txt"
    text.write_text("u1 a big dog\nu2 she had a cat\n", encoding="utf-8")

    def run(src, out, *extra):
        return phonemize.main(["--text", str(src), "--out_dir", str(tmp_path / "phones" / out), "--token_list",
                               str(tokens), "--jobs", "1", *extra])

    assert run(text, "train") == 0
    first = tokens.read_text(encoding="utf-8")
    stamp = tmp_path / "phones" / ".tokens.txt.stamp.json"
    assert json.loads(stamp.read_text())["options"]["out_dir"] == str(tmp_path / "phones" / "train")
    before = tokens.stat().st_mtime_ns
    assert run(text, "train") == 0
    assert tokens.stat().st_mtime_ns == before  # the same phones: the list is kept as it is
    # another set: phones not in the list become <unk>, named in a warning; the list is kept
    other = tmp_path / "test_text"
    other.write_text("t1 the zebra jumped quickly\n", encoding="utf-8")
    caplog.clear()
    assert run(other, "test") == 0
    assert tokens.stat().st_mtime_ns == before
    assert re.search(r"\d+ phones of .*test_text are not in .*tokens.txt and become <unk>: ", messages(caplog))
    # the training text gains words with new phones: the list it built is rebuilt
    text.write_text("u1 a big dog\nu2 she had a cat\nu3 the zebra jumped quickly\n", encoding="utf-8")
    caplog.clear()
    assert run(text, "train") == 0
    rebuilt = PhoneTokenizer.load(tokens)
    new = set(rebuilt.tokens) - set(first.splitlines())
    assert new and f"{tokens} was built from this set ({text}), whose phones changed since" in messages(caplog)
    assert "new phones: " + " ".join(sorted(new)) in messages(caplog)
    ids = (tmp_path / "phones" / "train" / "phones_int").read_text().splitlines()
    assert all(str(rebuilt.unk_id) not in line.split()[1:] for line in ids)
    # a list edited by hand is not overwritten: phones of the training text missing from it are an error
    edited = [t for t in rebuilt.tokens if t != sorted(new)[0]]
    tokens.write_text("\n".join(edited) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as err:
        run(text, "train")
    msg = str(err.value)
    assert msg.startswith(f"{tokens}: 1 phones of {text} are not in this token list") and sorted(new)[0] in msg
    assert f"delete {tokens} to rebuild it" in msg
    assert tokens.read_text(encoding="utf-8") == "\n".join(edited) + "\n"


# ============================================================================ generation
K, V = 2, 8
CAPTIONS = ["<blank>", "<unk>", "a", "quiet", "loud", "piece"]


@pytest.fixture(scope="module")
def gen_dirs(tmp_path_factory):
    """A tiny codec and a random-init MAGNeT directory (config.yaml + checkpoint)."""
    from audio_gen.models.magnet import MAGNeT
    from audio_gen.tokenizers import MelRVQConfig, MelRVQTokenizer

    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    MelRVQTokenizer.fit([torch.randn(8000) * 0.1 for _ in range(2)],
                        MelRVQConfig(num_codebooks=K, codebook_size=V, n_mels=16, griffin_lim_iters=2),
                        iters=2).save(root / "tok")
    conf = dict(d_model=16, num_layers=1, num_heads=2, text_layers=1, max_frames=20, dropout=0.0)
    model = MAGNeT(K, V, vocab_size=len(CAPTIONS), frame_rate=50.0, sample_rate=SR, **conf)
    (root / "magnet").mkdir()
    (root / "magnet" / "config.yaml").write_text(yaml.safe_dump(
        {"model": "magnet", "model_conf": conf, "acoustic_tokenizer": str(root / "tok"), "token_list": CAPTIONS}))
    torch.save(model.state_dict(), root / "magnet" / "latest.pth")
    return root


def captions(tmp_path, lines):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "text").write_text("".join(f"{u} {c}\n" for u, c in lines))
    return data


def generate(gen_dirs, data, out, *extra):
    from audio_gen.bin.generate import main

    return main(["--model_dir", str(gen_dirs / "magnet"), "--data_dir", str(data), "--out_dir", str(out),
                 "--seconds", "0.2", "--steps", "2,2", "--batch_size", "2", *extra])


def test_generate_reruns_what_changed(gen_dirs, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    data = captions(tmp_path, [("u1", "a quiet piece"), ("u2", "a loud piece"), ("u3", "")])
    out = tmp_path / "gen"
    wavs = [out / "wav" / f"u{i}.wav" for i in (1, 2, 3)]
    assert generate(gen_dirs, data, out) == 0
    stamp = json.loads((out / ".stamp.json").read_text())
    assert stamp["complete"] and stamp["items"]["u2"] == {"caption": "a loud piece", "seed": 1}
    assert stamp["setup"]["options"]["seconds"] == 0.2 and "checkpoint" in stamp["setup"]["magnet"]
    before = mtimes(wavs + [out / "wav.scp"])
    capsys.readouterr()
    caplog.clear()
    assert generate(gen_dirs, data, out) == 0
    assert "0 generated" in capsys.readouterr().out and "inputs unchanged since" in messages(caplog)
    assert mtimes(wavs + [out / "wav.scp"]) == before
    # one caption changed: that utterance only
    captions(tmp_path, [("u1", "a quiet piece"), ("u2", "a quiet piece"), ("u3", "")])
    caplog.clear()
    assert generate(gen_dirs, data, out) == 0
    assert "e.g. u2 (caption 'a loud piece' -> 'a quiet piece'); redoing them" in messages(caplog)
    after = mtimes(wavs)
    assert [after[str(w)] != before[str(w)] for w in wavs] == [False, True, False]
    assert "1 generated" in capsys.readouterr().out
    # another duration: everything again, saying why
    caplog.clear()
    assert generate(gen_dirs, data, out, "--seconds", "0.3") == 0
    assert f"{out}: the model or the options changed: option seconds 0.2 -> 0.3; redoing all 3 utterances" \
        in messages(caplog)
    assert all(sf.info(str(w)).frames == round(0.3 * 50) * 320 for w in wavs)
    # a retrained model (another checkpoint): everything again
    ckpt = gen_dirs / "magnet" / "latest.pth"
    state = torch.load(ckpt)
    saved = ckpt.read_bytes()
    try:
        torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, ckpt)
        caplog.clear()
        assert generate(gen_dirs, data, out, "--seconds", "0.3") == 0
        assert "the model or the options changed: magnet/checkpoint changed (sha256 differs)" in messages(caplog)
    finally:
        ckpt.write_bytes(saved)
    # a caption removed: its wave goes, the listings follow
    captions(tmp_path, [("u1", "a quiet piece"), ("u2", "a quiet piece")])
    caplog.clear()
    assert generate(gen_dirs, data, out, "--seconds", "0.3") == 0
    assert not wavs[2].exists() and len((out / "wav.scp").read_text().splitlines()) == 2


def test_generate_resumes_a_killed_run(gen_dirs, tmp_path, monkeypatch, capsys):
    from audio_gen.bin import generate as gen

    data = captions(tmp_path, [("u1", "a quiet piece"), ("u2", "a loud piece"), ("u3", "a piece")])
    out = tmp_path / "gen"
    real = gen._write_wav
    written = []

    def killed(path, wav, sr):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path.name)
        real(path, wav, sr)

    monkeypatch.setattr(gen, "_write_wav", killed)
    with pytest.raises(KeyboardInterrupt):
        generate(gen_dirs, data, out, "--batch_size", "1")
    monkeypatch.setattr(gen, "_write_wav", real)
    assert not json.loads((out / ".stamp.json").read_text())["complete"] and not (out / "wav.scp").exists()
    kept = mtimes([out / "wav" / "u1.wav", out / "wav" / "u2.wav"])
    capsys.readouterr()
    assert generate(gen_dirs, data, out) == 0
    assert "1 generated" in capsys.readouterr().out
    assert mtimes([out / "wav" / "u1.wav", out / "wav" / "u2.wav"]) == kept


def hold_lock(directory: Path):
    code = textwrap.dedent(f"""
        import sys
        from nar.base.lock import DirectoryLock
        with DirectoryLock({str(directory)!r}, "someone else"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "locked"
    return holder


def release(holder):
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=30)


def test_generate_refuses_a_second_writer(gen_dirs, tmp_path, capsys):
    data = captions(tmp_path, [("u1", "a quiet piece")])
    out = tmp_path / "gen"
    holder = hold_lock(out)
    try:
        assert generate(gen_dirs, data, out) == 1
        err = capsys.readouterr().err
        assert f"audio_gen.bin.generate: error: {out}: already in use by pid {holder.pid}" in err
        assert not (out / "wav").exists()
    finally:
        release(holder)
    assert generate(gen_dirs, data, out) == 0


def test_generate_resynth_follows_the_audio(gen_dirs, data, tmp_path, caplog):
    from audio_gen.bin.generate import main

    caplog.set_level(logging.INFO)
    (data / "text").write_text("u0 x\nu1 y\n")
    out = tmp_path / "resynth"
    argv = ["--resynth", "--acoustic_tokenizer", str(gen_dirs / "tok"), "--data_dir", str(data), "--out_dir", str(out)]
    assert main(argv) == 0
    before = mtimes([out / "wav" / "u0.wav", out / "wav" / "u1.wav"])
    rewrite_audio(data / "wav" / "u1.wav", seed=5)
    caplog.clear()
    assert main(argv) == 0
    assert "e.g. u1 (audio changed (size, mtime))" in messages(caplog)
    after = mtimes([out / "wav" / "u0.wav", out / "wav" / "u1.wav"])
    assert [after[p] != t for p, t in before.items()] == [False, True]


# ============================================================================ synthesis
def tts_data(tmp_path, wavs, texts):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    utts = [f"spk0-{i:03d}" for i in range(len(texts))]
    for u, w in zip(utts, wavs):
        if not (tmp_path / f"{u}.wav").exists():
            sf.write(tmp_path / f"{u}.wav", w.numpy(), SR)
    (data / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in utts))
    (data / "utt2spk").write_text("".join(f"{u} spk0\n" for u in utts))
    (data / "text").write_text("".join(f"{u} {t}\n" for u, t in zip(utts, texts)))
    return data, utts


@needs_espeak
def test_synthesize_reruns_what_changed(tts_dirs, tmp_path, caplog):
    from tts.bin.synthesize import main

    caplog.set_level(logging.INFO)
    root, wavs = tts_dirs
    data, utts = tts_data(tmp_path, wavs, ["a big dog", "she had a cat", "the bed is red"])
    out = tmp_path / "synth"
    argv = ["--data_dir", str(data), "--out_dir", str(out), "--t2s_dir", str(root / "t2s"), "--s2a_dir",
            str(root / "s2a"), "--t2s_steps", "2", "--s2a_steps", "2,1", "--batch_size", "2"]
    # prompts: the next utterance of the speaker (spk0-000 <- 001, 001 <- 002, 002 <- 000)
    assert main(argv) == 0
    out_wavs = [out / "wav" / f"{u}.wav" for u in utts]
    stamp = json.loads((out / ".stamp.json").read_text())
    assert stamp["items"]["spk0-000"]["prompt_text"] == "she had a cat"
    before = mtimes(out_wavs + [out / "wav.scp", out / "prompt.scp"])
    caplog.clear()
    assert main(argv) == 0
    assert "inputs unchanged since" in messages(caplog)
    assert mtimes(out_wavs + [out / "wav.scp", out / "prompt.scp"]) == before
    # the transcript of spk0-001 changed: its own sentence, and the prompt text of spk0-000
    tts_data(tmp_path, wavs, ["a big dog", "she had a hat", "the bed is red"])
    caplog.clear()
    assert main(argv) == 0
    log = messages(caplog)
    assert "2 utterances changed since they were done" in log
    assert "spk0-000 (prompt_text 'she had a cat' -> 'she had a hat')" in log
    assert "spk0-001 (text 'she had a cat' -> 'she had a hat')" in log
    after = mtimes(out_wavs)
    assert [after[str(w)] != before[str(w)] for w in out_wavs] == [True, True, False]
    # the prompt audio of spk0-002 (the recording of spk0-000) re-recorded
    sf.write(tmp_path / "spk0-000.wav", wavs[3].numpy(), SR)
    caplog.clear()
    assert main(argv) == 0
    assert "spk0-002 (prompt_audio/audio changed (size, mtime)" in messages(caplog)
    # other decoding options: everything again
    caplog.clear()
    assert main([*argv, "--t2s_steps", "3"]) == 0
    log = messages(caplog)
    assert "the models or the options changed: option t2s_decoding" in log and "redoing all 3 utterances" in log


@needs_espeak
def test_synthesize_refuses_a_second_writer(tts_dirs, tmp_path, capsys):
    from tts.bin.synthesize import main

    root, wavs = tts_dirs
    data, _ = tts_data(tmp_path, wavs, ["a big dog", "she had a cat"])
    out = tmp_path / "synth"
    holder = hold_lock(out)
    try:
        argv = ["--data_dir", str(data), "--out_dir", str(out), "--t2s_dir", str(root / "t2s"), "--s2a_dir",
                str(root / "s2a"), "--t2s_steps", "2", "--s2a_steps", "2,1"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"tts.bin.synthesize: error: {out}: already in use by pid {holder.pid} on " in err
        assert "(someone else, since" in err and not (out / "wav").exists()
    finally:
        release(holder)
