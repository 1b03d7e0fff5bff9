"""Token archives and the tokenizer CLIs: ESPnet-readable output, resumability, clear errors;
and the recipe's ESPnet codec configs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from audio_gen.bin import fit_tokenizer, tokenize
from audio_gen.data import AudioListError, TokenArchive, as_mono_wave, read_audio_list
from audio_gen.tokenizers import load_tokenizer
from tests.audio_gen.test_tokenizers import voiced, write_data_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data_dir(tmp_path_factory.mktemp("data"), (16000, 12345, 9001, 20000, 7777, 16001), "spk-u")


@pytest.fixture(scope="module")
def fitted(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "tok"
    fit_tokenizer.main(["--data_dir", str(data_dir), "--out_dir", str(out), *FIT_OPTIONS])
    return out


FIT_OPTIONS = ["--num_codebooks", "2", "--codebook_size", "16", "--n_mels", "32", "--iters", "5",
               "--griffin_lim_iters", "4"]


def test_tokenize_writes_espnet_readable_archives_and_resumes(data_dir, fitted, tmp_path):
    from espnet2.fileio.npy_scp import NpyScpReader

    out = tmp_path / "codes"
    assert tokenize.main(["--tokenizer", str(fitted), "--data_dir", str(data_dir), "--out_dir", str(out),
                          "--batch_seconds", "2.5"]) == 0
    tok = load_tokenizer(fitted)
    reader = NpyScpReader(str(out / "codes.scp"))
    shapes = dict(line.split() for line in (out / "codes_shape").read_text().splitlines())
    for item in read_audio_list(data_dir):
        wav, _ = sf.read(item.path, dtype="float32")
        ref, n = tok.encode(torch.from_numpy(wav))
        got = reader[item.key]
        assert got.dtype == np.int16
        assert np.array_equal(got, ref[0, :, : int(n[0])].numpy())
        assert shapes[item.key] == f"{int(n[0])},2"
    # a "killed" run: one archive entry missing, one entry replaced by a sentinel
    (out / "data" / "spk-u1.npy").unlink()
    sentinel = np.full((2, 3), 7, dtype=np.int16)
    np.save(out / "data" / "spk-u2.npy", sentinel)
    assert tokenize.main(["--tokenizer", str(fitted), "--data_dir", str(data_dir), "--out_dir", str(out)]) == 0
    assert np.array_equal(np.load(out / "data" / "spk-u2.npy"), sentinel)  # done items are kept
    assert (out / "data" / "spk-u1.npy").is_file()


def test_fit_keeps_a_finished_tokenizer(data_dir, fitted, capsys):
    before = (fitted / "codebooks.pt").stat().st_mtime_ns
    # the same command: kept (other options are an error: tests/reliability/test_worker_stamps.py)
    fit_tokenizer.main(["--data_dir", str(data_dir), "--out_dir", str(fitted), *FIT_OPTIONS])
    assert "already trained" in capsys.readouterr().out
    assert (fitted / "codebooks.pt").stat().st_mtime_ns == before


def test_audio_list_errors(tmp_path):
    with pytest.raises(AudioListError, match="no wav.scp"):
        read_audio_list(tmp_path)
    (tmp_path / "wav.scp").write_text("a sox x.wav -t wav - |\n")
    with pytest.raises(AudioListError, match="piped commands"):
        read_audio_list(tmp_path)
    (tmp_path / "wav.scp").write_text("a /nonexistent.wav\nbroken\n")
    with pytest.raises(AudioListError, match="wav.scp:2: key .broken. has no value"):
        read_audio_list(tmp_path)


def test_tokenize_names_a_too_short_utterance(data_dir, fitted, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    sf.write(short / "s.wav", np.zeros(100, dtype=np.float32) + 0.1, 16000)
    (short / "wav.scp").write_text(f"tiny-utt {short / 's.wav'}\n")
    with pytest.raises(ValueError, match="tiny-utt: 100 samples is shorter than one frame"):
        tokenize.main(["--tokenizer", str(fitted), "--data_dir", str(short), "--out_dir", str(tmp_path / "o")])


def test_archive_rejects_unsafe_keys(tmp_path):
    with pytest.raises(AudioListError, match="cannot be used as a file name"):
        TokenArchive(tmp_path).write("../evil", np.zeros(3))


@pytest.mark.parametrize("name", ["train_codec_smoke.yaml", "train_codec_16k.yaml"])
def test_codec_configs_build_a_50hz_codec(name):
    from espnet2.gan_codec.soundstream.soundstream import SoundStream

    conf = yaml.safe_load((ROOT / "egs/synth_en/codec1/conf" / name).read_text())
    assert conf["codec"] == "soundstream"
    codec = SoundStream(**conf["codec_conf"])
    info = codec.meta_info()
    assert info["fs"] == 16000 and info["fs"] / info["frame_shift"] == 50
    gen = codec.generator
    k = gen.quantizer.get_num_quantizers_for_bandwidth(gen.frame_rate, gen.target_bandwidths[-1])
    assert k == conf["codec_conf"]["generator_params"]["quantizer_n_q"]


def test_codec_train_patch_fixes_the_chunk_iterator():
    """ESPnet's chunk iterator draws int(state.choice(lengths, 1)); with the patch that works
    under this numpy, and draws the same value as the unpatched RandomState."""
    code = (
        "import numpy as np\n"
        "from audio_gen.bin.codec_train import patch_chunk_iterator\n"
        "patch_chunk_iterator()\n"
        "import espnet2.iterators.chunk_iter_factory as cif\n"
        "s = cif.np.random.RandomState(3)\n"
        "w = int(s.choice([8000, 16000, 24000], 1))\n"
        "ref = np.random.RandomState(3).choice([8000, 16000, 24000], 1)[0]\n"
        "assert w == ref, (w, ref)\n"
        "assert cif.np.arange is np.arange\n"
        "print('ok', w)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    # (importing ESPnet prints a note on stdout first)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("ok"), r.stderr[-2000:]


def test_espnet_codec_checkpoint_loads_behind_the_interface(tmp_path):
    """A codec checkpoint in ESPnet's format (the task's full config.yaml + model state dict),
    made here from the smoke config with random weights, loads through from_exp / load_tokenizer,
    and gives the generator's own codes, batch or not."""
    from audio_gen.tokenizers import EspnetCodecTokenizer
    from espnet2.tasks.gan_codec import GANCodecTask

    args = GANCodecTask.get_parser().parse_args(
        ["--config", str(ROOT / "egs/synth_en/codec1/conf/train_codec_smoke.yaml")])
    exp = tmp_path / "exp"
    exp.mkdir()
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    # what ESPnet's training writes as exp/<tag>/config.yaml
    (exp / "config.yaml").write_text(yaml_no_alias_safe_dump(vars(args), indent=4, sort_keys=False))
    torch.manual_seed(0)
    model = GANCodecTask.build_model(args)
    torch.save(model.state_dict(), exp / "latest.pth")

    tok = EspnetCodecTokenizer.from_exp(exp)
    assert (tok.sample_rate, tok.frame_rate, tok.num_codebooks, tok.codebook_size) == (16000, 50, 4, 256)
    wavs = [voiced(n, n) for n in (16000, 9600, 640)]
    x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    codes, lens = tok.encode(x, torch.tensor([w.numel() for w in wavs]))
    assert lens.tolist() == [50, 30, 2]
    with torch.no_grad():
        for i, w in enumerate(wavs):
            ref = model.codec.generator.encode(w[None, None])  # (K, 1, T)
            assert torch.equal(codes[i, :, : int(lens[i])], ref[:, 0, : int(lens[i])])
    y, ylens = tok.decode(codes, lens)
    assert ylens.tolist() == [16000, 9600, 640] and torch.isfinite(y).all()
    tok.save(tmp_path / "saved")
    assert torch.equal(load_tokenizer(tmp_path / "saved").encode(x, torch.tensor([w.numel() for w in wavs]))[0], codes)


def test_codec_recipe_stages_on_the_tiny_tree(tiny_recipe, tiny_codec_recipe):
    """recipes/codec.sh stages 3-6 and 8 on the tiny recipe's data and model: tokenizer, codes,
    semantic tokens, and the evaluation table (2 utterances)."""
    recipe = tiny_codec_recipe
    for dset in ("train", "test"):
        n = len((tiny_recipe / "dump/raw" / dset / "wav.scp").read_text().splitlines())
        assert len((recipe / f"dump/codes_mel_rvq/{dset}/codes.scp").read_text().splitlines()) == n
        assert len((recipe / f"dump/semantic_l-1_k4/{dset}/semantic.scp").read_text().splitlines()) == n
    results = (recipe / "RESULTS.md").read_text()
    assert "| mel_rvq K=1 |" in results and "| original |" in results and "purity" in results
    # stage 3 trained the vocoder (--vocoder_steps 2); stage 8 evaluated it beside Griffin-Lim
    assert "| mel_rvq_vocoder mel+voc |" in results and "| mel_rvq mel+GL |" in results
    assert "trained vocoder" in load_tokenizer(recipe / "exp/tokenizer_mel_rvq_vocoder").describe()
    ev = json.loads((recipe / "exp/tokenizer_mel_rvq/eval_test.json").read_text())
    assert ev["utterances"] == 2 and 0.0 <= ev["rows"][1]["stoi"] <= 1.0


def test_as_mono_wave_shapes_and_errors():
    x = np.linspace(-0.5, 0.5, 160)
    for form in (x, x[None], x[:, None], torch.from_numpy(x)):
        wav = as_mono_wave(form, "prompt 0")
        assert wav.dtype == torch.float32 and wav.shape == (160,)
        assert torch.allclose(wav, torch.from_numpy(x).float())
    with pytest.raises(TypeError, match="prompt 1: expected a waveform"):
        as_mono_wave(list(x), "prompt 1")
    with pytest.raises(ValueError, match="prompt 2: .*shape \\(2, 80\\).*average a channel"):
        as_mono_wave(x.reshape(2, 80), "prompt 2")
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="prompt 3: .*NaN"):
        as_mono_wave(bad, "prompt 3")


def test_construct_model():
    from audio_gen.experiment import construct_model

    class Model(torch.nn.Module):
        def __init__(self, codebook_size: int, num_codebooks: int = 1, d_model: int = 8):
            super().__init__()
            self.args = (codebook_size, num_codebooks, d_model)
            self.lin = torch.nn.Linear(d_model, codebook_size)

    defaults = {"codebook_size": 16, "num_codebooks": 4, "frame_rate": 50.0}  # frame_rate: not accepted
    model = construct_model("toy", Model, {"num_codebooks": 2}, defaults, "hint")
    assert model.args == (16, 2, 8)  # defaults fill what conf leaves out; conf wins
    with pytest.raises(ValueError, match=r"model toy: bad model_conf \['codebook_size', 'layers'\].*pass the sizes"):
        construct_model("toy", Model, {"layers": 3}, {"codebook_size": 16}, "pass the sizes")
