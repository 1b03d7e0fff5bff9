"""Importing FunASR Paraformer checkpoints: parity with FunASR's own modules.

A tiny FunASR ``Paraformer`` is built at random init with FunASR's code, saved in FunASR's
on-disk layout (config.yaml, model.pt, tokens, am.mvn), converted with
``asr.convert.funasr_paraformer.convert`` and loaded with ``Speech2Text``; both models then get
the same features (and waveforms) and must agree on the encoder output, the token counts, the
decoder log-probabilities and the argmax tokens.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("funasr")

from funasr.frontends.wav_frontend import WavFrontend, apply_cmvn, load_cmvn  # noqa: E402
from funasr.models.paraformer.model import Paraformer  # noqa: E402

from asr.convert.funasr_paraformer import (  # noqa: E402
    cmvn_to_stats,
    convert,
    read_kaldi_cmvn,
    translate_config,
)
from asr.frontends import KaldiFbankLFR  # noqa: E402
from asr.inference import Speech2Text  # noqa: E402

N_TOKENS = 20
ALPHA = 0.45  # the predictor's mean weight per encoder frame after the bias is set


def tokens(sos_eos_last: bool = False) -> list[str]:
    body = [f"t{i}" for i in range(N_TOKENS - 4)]
    if sos_eos_last:  # ESPnet layout: model_conf sos/eos null -> the last token
        return ["<blank>", "<unk>", *body, "<x>", "<sos/eos>"]
    return ["<blank>", "<s>", "</s>", *body, "<unk>"]  # FunASR layout: sos 1, eos 2


def write_am_mvn(path: Path, shift: np.ndarray, rescale: np.ndarray) -> None:
    """A Kaldi nnet1 text CMVN file as FunASR ships it."""
    dim = shift.size
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {fmt(shift)} ]\n<Rescale> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {fmt(rescale)} ]\n</Nnet>\n",
        encoding="utf-8",
    )


# Three FunASR configs: conformer + CifPredictorV2, conformer with LFR + linear input +
# CifPredictor (v1) + predictor_bias, transformer + shared embedding. Options FunASR defaults
# (rel_pos_type, tail_threshold of v1, sos/eos) are left out on purpose.
CASES = {
    "conformer_v2": dict(
        model_conf=dict(ctc_weight=0.3, predictor_weight=1.0, sampling_ratio=0.4),
        encoder="ConformerEncoder",
        encoder_conf=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                          input_layer="conv2d", macaron_style=True, cnn_module_kernel=5,
                          pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn"),
        predictor="CifPredictorV2",
        predictor_conf=dict(idim=32, threshold=1.0, l_order=1, r_order=1, tail_threshold=0.45),
        frontend_conf=dict(fs=16000, window="hamming", n_mels=20, frame_length=25, frame_shift=10,
                           lfr_m=1, lfr_n=1),
        tokens_file="tokens.json",
    ),
    "conformer_lfr_v1": dict(
        model_conf=dict(ctc_weight=0.0, predictor_bias=1, sos=None, eos=None),
        encoder="ConformerEncoder",
        encoder_conf=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                          input_layer="linear", rel_pos_type="latest", cnn_module_kernel=3),
        predictor="CifPredictor",
        predictor_conf=dict(idim=32, l_order=1, r_order=1),
        frontend_conf=dict(fs=16000, window="hamming", n_mels=8, frame_length=25, frame_shift=10,
                           lfr_m=3, lfr_n=2, dither=0.0),
        tokens_file="tokens.txt",
    ),
    "transformer_v2": dict(
        model_conf=dict(ctc_weight=0.5, share_embedding=True),
        encoder="TransformerEncoder",
        encoder_conf=dict(output_size=32, attention_heads=4, linear_units=48, num_blocks=2,
                          input_layer="conv2d"),
        predictor="CifPredictorV2",
        predictor_conf=dict(idim=32, l_order=1, r_order=1, tail_threshold=0.45),
        frontend_conf=dict(fs=16000, n_mels=20, lfr_m=1, lfr_n=1),
        tokens_file="tokens.json",
    ),
}


def funasr_config(case: dict) -> dict:
    """config.yaml as FunASR's training writes it (training-only sections included)."""
    return {
        "model": "Paraformer",
        "model_conf": dict(lsm_weight=0.1, length_normalized_loss=False, **case["model_conf"]),
        "encoder": case["encoder"],
        "encoder_conf": dict(case["encoder_conf"]),
        "decoder": "ParaformerSANDecoder",
        "decoder_conf": dict(attention_heads=2, linear_units=64, num_blocks=2, dropout_rate=0.1,
                             positional_dropout_rate=0.1, self_attention_dropout_rate=0.0,
                             src_attention_dropout_rate=0.0),
        "predictor": case["predictor"],
        "predictor_conf": dict(case["predictor_conf"]),
        "frontend": "WavFrontend",
        "frontend_conf": dict(case["frontend_conf"]),
        "specaug": "SpecAug",
        "specaug_conf": dict(apply_time_warp=True, num_freq_mask=2),
        "train_conf": dict(max_epoch=1),
        "optim": "adam",
        "optim_conf": dict(lr=0.0005),
        "dataset": "AudioDataset",
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": dict(unk_symbol="<unk>", split_with_space=True),
        "ctc_conf": dict(dropout_rate=0.0, ctc_type="builtin", reduce=True, ignore_nan_grad=True),
        "normalize": None,
    }


def build_funasr(config: dict, vocab: int) -> Paraformer:
    """FunASR's Paraformer at random init, as FunASR's AutoModel builds it; the predictor's
    output bias is set so alphas are around ALPHA (several tokens fire)."""
    fe = config["frontend_conf"]
    input_size = fe.get("n_mels", 80) * fe.get("lfr_m", 1)
    parts = {k: config[k] for k in ("encoder", "encoder_conf", "decoder", "decoder_conf",
                                    "predictor", "predictor_conf", "ctc_conf")}
    model = Paraformer(**config["model_conf"], **parts, input_size=input_size, vocab_size=vocab)
    with torch.no_grad():
        model.predictor.cif_output.weight.mul_(0.3)
        model.predictor.cif_output.bias.fill_(math.log(ALPHA / (1 - ALPHA)))
    return model.eval()


def write_funasr_dir(path: Path, name: str, seed: int = 0):
    """FunASR model directory for CASES[name] -> (FunASR model, config, tokens, cmvn arrays)."""
    torch.manual_seed(seed)
    case = CASES[name]
    sos_eos_last = case["model_conf"].get("sos", 1) is None
    toks = tokens(sos_eos_last)
    config = funasr_config(case)
    model = build_funasr(config, len(toks))
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    torch.save(model.state_dict(), path / "model.pt")
    if case["tokens_file"] == "tokens.json":
        (path / "tokens.json").write_text(json.dumps(toks, ensure_ascii=False), encoding="utf-8")
    else:
        (path / "tokens.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    fe = config["frontend_conf"]
    dim = fe["n_mels"] * fe["lfr_m"]
    g = np.random.default_rng(seed)
    shift = -g.uniform(5.0, 12.0, dim)
    rescale = g.uniform(0.2, 0.8, dim)
    write_am_mvn(path / "am.mvn", shift, rescale)
    return model, config, toks


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (FunASR model, our Speech2Text, FunASR dir, output dir)."""
    logging.getLogger().setLevel(logging.ERROR)
    out = {}
    for i, name in enumerate(CASES):
        root = tmp_path_factory.mktemp(name)
        model, _, _ = write_funasr_dir(root / "funasr", name, seed=i)
        convert(root / "funasr", root / "out")
        s2t = Speech2Text(root / "out")  # finds model.pth itself
        assert s2t.model_file.name == "model.pth"
        fe = s2t.config["frontend_conf"]
        layer = s2t.config["encoder_conf"].get("input_layer")
        subsampling = {"conv2d": 4, "linear": 1, None: 1}[layer]
        assert s2t.frame_shift == pytest.approx(fe["frame_shift"] / 1000 * fe["lfr_n"] * subsampling)
        out[name] = (model, s2t, root / "funasr", root / "out")
    return out


def funasr_decode(model: Paraformer, feats: torch.Tensor, lengths: torch.Tensor, cmvn: torch.Tensor):
    """FunASR's inference path on raw features: CMVN, encode, predictor, decoder."""
    normed = torch.stack([apply_cmvn(f.clone(), cmvn) for f in feats])
    enc, enc_lens = model.encode(normed, lengths)
    embeds, token_num, _, _ = model.calc_predictor(enc, enc_lens)
    counts = token_num.round().long()
    log_probs, _ = model.cal_decoder_with_predictor(enc, enc_lens, embeds, counts)
    return enc, counts, log_probs


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_feature_level_parity(converted, name, batch):
    model, s2t, funasr_dir, _ = converted[name]
    ours = s2t.model
    cmvn = load_cmvn(str(funasr_dir / "am.mvn"))
    dim = cmvn.shape[1]
    g = torch.Generator().manual_seed(batch)
    frames = 61
    feats = torch.randn(batch, frames, dim, generator=g) * 2.0 + 8.0
    lengths = torch.full((batch,), frames)
    with torch.no_grad():
        enc_f, counts_f, lp_f = funasr_decode(model, feats, lengths, cmvn)
        enc = ours.encode_feats(feats.clone(), lengths)
        res = ours.recognize(enc)
    torch.testing.assert_close(enc.hidden, enc_f, atol=1e-5, rtol=1e-5)
    assert res.token_counts.tolist() == counts_f.tolist()
    assert int(res.token_counts.min()) > 2
    n = int(counts_f.max())
    torch.testing.assert_close(res.log_probs[:, :n], lp_f[:, :n], atol=1e-4, rtol=1e-4)
    special = {ours.blank_id, ours.sos, ours.eos}
    for b in range(batch):
        argmax = lp_f[b, : int(counts_f[b])].argmax(-1).tolist()
        assert res.token_ids[b] == [t for t in argmax if t not in special]


@pytest.mark.parametrize("name", ["conformer_v2", "conformer_lfr_v1"])
def test_waveform_parity(converted, name):
    """Our frontend + GlobalMVN + encoder on a waveform equals FunASR's WavFrontend + encoder."""
    model, s2t, funasr_dir, _ = converted[name]
    fe_conf = dict(CASES[name]["frontend_conf"], dither=0.0)
    frontend = WavFrontend(cmvn_file=str(funasr_dir / "am.mvn"), **fe_conf)
    g = torch.Generator().manual_seed(0)
    wav = (torch.rand(1, 9000, generator=g) - 0.5) * 0.4
    n = torch.tensor([9000])
    with torch.no_grad():
        feats_f, lens_f = frontend(wav, n)
        enc_f, enc_lens_f = model.encode(feats_f, lens_f)
        feats, lens = s2t.model.extract_feats(wav, n)
        enc = s2t.model.encode_feats(feats, lens)
    assert lens.tolist() == lens_f.tolist()
    assert enc.lengths.tolist() == enc_lens_f.tolist()
    torch.testing.assert_close(enc.hidden, enc_f, atol=1e-4, rtol=1e-4)
    # end to end: Speech2Text's tokens are FunASR's argmax without blank / sos / eos
    with torch.no_grad():
        embeds, token_num, _, _ = model.calc_predictor(enc_f, enc_lens_f)
        counts = token_num.round().long()
        log_probs, _ = model.cal_decoder_with_predictor(enc_f, enc_lens_f, embeds, counts)
    special = {model.blank_id, model.sos, model.eos}
    expected = [t for t in log_probs[0, : int(counts[0])].argmax(-1).tolist() if t not in special]
    assert int(counts[0]) > 2
    assert list(s2t(wav[0]).token_ids) == expected


def test_converted_config(converted):
    _, s2t, _, out = converted["conformer_v2"]
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert config["model"] == "paraformer" and config["frontend"] == "kaldi_fbank_lfr"
    assert config["encoder_conf"]["rel_pos_type"] == "legacy"  # FunASR's default, written out
    assert config["predictor_conf"]["variant"] == "v2"
    assert (config["model_conf"]["sos"], config["model_conf"]["eos"], config["model_conf"]["blank_id"]) == (1, 2, 0)
    assert config["token_list"] == tokens()
    assert (out / "feats_stats.npz").is_file()
    v1 = yaml.safe_load((converted["conformer_lfr_v1"][3] / "config.yaml").read_text(encoding="utf-8"))
    assert v1["predictor_conf"]["variant"] == "v1" and v1["predictor_conf"]["tail_threshold"] == 0.45
    assert (v1["model_conf"]["sos"], v1["model_conf"]["eos"]) == (N_TOKENS - 1, N_TOKENS - 1)
    assert v1["model_conf"]["ctc_weight"] == 0.0 and s2t.model.ctc is not None
    assert converted["conformer_lfr_v1"][1].model.ctc is None


def test_cli(converted, tmp_path):
    from asr.bin.convert_funasr import main

    funasr_dir = converted["transformer_v2"][2]
    assert main(["--funasr_dir", str(funasr_dir), "--out_dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.pth").is_file()
    assert main(["--funasr_dir", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o2")]) == 1


# ------------------------------------------------------------------------------ frontend, CMVN
def test_frontend_matches_wav_frontend():
    g = torch.Generator().manual_seed(0)
    for conf in (dict(lfr_m=7, lfr_n=6, n_mels=80), dict(lfr_m=1, lfr_n=1, n_mels=40, window="povey")):
        theirs = WavFrontend(dither=0.0, **conf)
        ours = KaldiFbankLFR(**conf).eval()
        assert ours.output_size() == theirs.output_size()
        wav = (torch.rand(3, 8000, generator=g) - 0.5) * 0.5
        lengths = torch.tensor([8000, 5123, 390])  # the last one is shorter than a window
        f_theirs, n_theirs = theirs(wav, lengths)
        f_ours, n_ours = ours(wav, lengths)
        assert n_ours.tolist() == n_theirs.tolist()
        torch.testing.assert_close(f_ours, f_theirs, atol=1e-4, rtol=1e-5)


def test_lfr_padding_rule():
    from funasr.frontends.wav_frontend import apply_lfr

    from asr.frontends import lfr_stack

    for m, n in ((7, 6), (5, 3), (3, 1), (1, 2), (11, 4)):
        for frames in range(1, 40):
            x = torch.randn(frames, 3)
            torch.testing.assert_close(lfr_stack(x, m, n), apply_lfr(x.clone(), m, n), atol=0, rtol=0)


def test_am_mvn_to_global_mvn(tmp_path):
    from espnet2.layers.global_mvn import GlobalMVN

    g = np.random.default_rng(0)
    shift, rescale = -g.uniform(5, 15, 24), g.uniform(0.05, 2.0, 24)
    write_am_mvn(tmp_path / "am.mvn", shift, rescale)
    s, r = read_kaldi_cmvn(tmp_path / "am.mvn")
    np.testing.assert_allclose(s, shift, atol=1e-6)
    np.testing.assert_allclose(r, rescale, atol=1e-6)
    np.savez(tmp_path / "feats_stats.npz", **cmvn_to_stats(s, r))
    mvn = GlobalMVN(tmp_path / "feats_stats.npz")
    x = torch.randn(2, 30, 24) * 3 + 10
    ours, _ = mvn(x.clone(), torch.tensor([30, 30]))
    theirs = apply_cmvn(x[0].clone(), load_cmvn(str(tmp_path / "am.mvn")))
    torch.testing.assert_close(ours[0], theirs, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ errors
def _copy_dir(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_sanm_and_other_unsupported_configs():
    base = funasr_config(CASES["conformer_v2"])
    toks = tokens()
    sanm = dict(base, encoder="SANMEncoder", decoder="ParaformerSANMDecoder")
    with pytest.raises(ValueError, match="SANM") as err:
        translate_config(sanm, toks, None, "dir/config.yaml")
    assert "dir/config.yaml" in str(err.value) and "ParaformerSANMDecoder" in str(err.value)
    for bad, match in (
        (dict(base, predictor="CifPredictorV3"), "BiCIF"),
        (dict(base, model="BiCifParaformer"), "BiCIF"),
        (dict(base, model="SeacoParaformer"), "SeACo"),
        (dict(base, model="ContextualParaformer"), "contextual"),
        (dict(base, model="ParaformerStreaming"), "streaming"),
        (dict(base, encoder="MysteryEncoder"), "MysteryEncoder"),
        (dict(base, encoder_conf=dict(base["encoder_conf"], input_layer="conv2dpad")), "conv2dpad"),
        (dict(base, encoder_conf=dict(base["encoder_conf"], foo=1)), "foo"),
        (dict(base, predictor_conf=dict(base["predictor_conf"], threshold=2.0)), "threshold"),
        (dict(base, normalize="GlobalMVN"), "normalize"),
        (dict(base, model_conf=dict(base["model_conf"], ctc_weight=1.0)), "ctc_weight"),
    ):
        with pytest.raises(ValueError, match=match):
            translate_config(bad, toks, None, "dir/config.yaml")


def test_corrupt_checkpoint(converted, tmp_path):
    funasr_dir = _copy_dir(converted["conformer_v2"][2], tmp_path / "funasr")
    (funasr_dir / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pt.*cannot be loaded"):
        convert(funasr_dir, tmp_path / "out")


def test_checkpoint_missing_and_misshapen_tensors(converted, tmp_path):
    funasr_dir = _copy_dir(converted["conformer_v2"][2], tmp_path / "funasr")
    state = torch.load(funasr_dir / "model.pt")
    del state["predictor.cif_output.bias"]
    state["encoder.after_norm.weight"] = torch.ones(7)
    torch.save(state, funasr_dir / "model.pt")
    with pytest.raises(ValueError, match="model.pt") as err:
        convert(funasr_dir, tmp_path / "out")
    assert "predictor.cif_output.bias" in str(err.value) and "encoder.after_norm.weight" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_token_count_mismatch(converted, tmp_path):
    funasr_dir = _copy_dir(converted["conformer_v2"][2], tmp_path / "funasr")
    (funasr_dir / "tokens.json").write_text(json.dumps(tokens()[:-1]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokens.json.*19 tokens.*20 outputs"):
        convert(funasr_dir, tmp_path / "out")


def test_missing_files(converted, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        convert(tmp_path, tmp_path / "out")
    funasr_dir = _copy_dir(converted["conformer_v2"][2], tmp_path / "funasr")
    (funasr_dir / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        convert(funasr_dir, tmp_path / "out")
