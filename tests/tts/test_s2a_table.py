"""tts.bin.s2a_table: the counted semantic-to-acoustic table.

Truths: a brute-force count with collections.Counter (most frequent, ties to the smallest code);
a mapping that is a function of (semantic, code below) is reproduced exactly on unseen
utterances; the frame alignment is the S2A model's own (align_frames); the CLI writes audio the
acoustic tokenizer decodes from exactly the table's codes.
"""

from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tts.bin.s2a_table import S2ATable, frame_index, main
from tts.models.maskgct import align_frames


def _brute_mode(pairs):
    """{key: most frequent value, ties to the smallest} from (key, value) pairs."""
    by_key = {}
    for k, v in pairs:
        by_key.setdefault(k, Counter())[v] += 1
    return {k: min(c, key=lambda v: (-c[v], v)) for k, c in by_key.items()}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(0, 2 ** 31 - 1)), min_size=1, max_size=5))
def test_table_counts_match_brute_force(utts):
    rng_pairs = []
    for ts, seed in utts:
        rng = np.random.default_rng(seed)
        rng_pairs.append((rng.integers(0, 4, ts), rng.integers(0, 3, (2, 2 * ts))))
    table = S2ATable.count(rng_pairs, 25.0, 50.0)
    first, second = [], []
    for sem, codes in rng_pairs:
        s = sem[frame_index(len(sem), codes.shape[1], 25.0, 50.0)]
        first += list(zip(s.tolist(), codes[0].tolist()))
        second += [((a, b), c) for a, b, c in zip(s.tolist(), codes[0].tolist(), codes[1].tolist())]
    assert table.first == _brute_mode(first)
    v = table.codebook_size
    assert {(k // v, k % v): c for k, c in table.given_prev[1].items()} == _brute_mode(second)


def test_frame_index_is_the_s2a_alignment():
    for ts, t in [(5, 10), (5, 11), (7, 9), (1, 3)]:
        sem = torch.arange(100, 100 + ts)[None]
        expected = align_frames(sem, torch.tensor([ts]), torch.tensor([t]), 25.0, 50.0)[0] - 100
        assert frame_index(ts, t, 25.0, 50.0).tolist() == expected.tolist()


def test_a_deterministic_mapping_is_reproduced_on_unseen_utterances():
    rng = np.random.default_rng(0)

    def codes_of(sem):
        s = sem.repeat(2)
        c0 = (s * 7 + 3) % 16
        c1 = (s + 5 * c0) % 16
        return np.stack([c0, c1])

    train = [rng.integers(0, 8, rng.integers(5, 20)) for _ in range(30)]
    table = S2ATable.count([(s, codes_of(s)) for s in train], 25.0, 50.0)
    for _ in range(5):
        sem = rng.integers(0, 8, 13)
        assert np.array_equal(table.apply(sem, 26, 25.0, 50.0), codes_of(sem))


def test_unseen_tokens_fall_back():
    sem = np.array([0, 0, 1])
    codes = np.array([[2, 2, 2, 2, 5, 5], [1, 1, 1, 1, 4, 4]])
    table = S2ATable.count([(sem, codes)], 25.0, 50.0)
    out = table.apply(np.array([3]), 2, 25.0, 50.0)  # token 3 never seen
    assert out[:, 0].tolist() == [2, 1]  # codebook modes; then codebook 1 given code 2 alone
    with pytest.raises(ValueError, match="no training pairs"):
        S2ATable.count([], 25.0, 50.0)
    with pytest.raises(ValueError, match="codes \\(K, T\\)"):
        S2ATable.count([(sem, codes[0])], 25.0, 50.0)


def test_cli_writes_the_decoded_table_codes(tmp_path):
    from audio_gen.tokenizers import load_tokenizer
    from audio_gen.tokenizers.mel_rvq import MelRVQConfig, MelRVQTokenizer
    from tests.audio_gen.test_tokenizers import voiced

    wavs = [voiced(16000 + 1000 * i, seed=i) for i in range(3)]
    MelRVQTokenizer.fit(wavs, MelRVQConfig(n_mels=40, num_codebooks=2, codebook_size=16, griffin_lim_iters=4),
                        iters=4, seed=0).save(tmp_path / "acoustic")
    tok = load_tokenizer(tmp_path / "acoustic")
    rng = np.random.default_rng(1)
    sem_lines, code_lines, text_lines = [], [], []
    sems = {}
    for i, w in enumerate(wavs):
        codes, lens = tok.encode(w[None], torch.tensor([w.numel()]))
        c = codes[0, :, : int(lens[0])].numpy()
        s = rng.integers(0, 4, (c.shape[1] + 1) // 2)
        sems[f"u{i}"] = s
        np.save(tmp_path / f"s{i}.npy", s)
        np.save(tmp_path / f"c{i}.npy", c)
        sem_lines.append(f"u{i} {tmp_path / f's{i}.npy'}")
        code_lines.append(f"u{i} {tmp_path / f'c{i}.npy'}")
        text_lines.append(f"u{i} word {i}")
    (tmp_path / "sem.scp").write_text("\n".join(sem_lines) + "\n")
    (tmp_path / "codes.scp").write_text("\n".join(code_lines) + "\n")
    (tmp_path / "text").write_text("\n".join(text_lines) + "\n")
    (tmp_path / "list").write_text("u1 x\nu2 x\n")
    out = tmp_path / "out"
    argv = ["--train_semantic", str(tmp_path / "sem.scp"), "--train_codes", str(tmp_path / "codes.scp"),
            "--semantic_rate", "25", "--acoustic_rate", "50", "--semantic", str(tmp_path / "sem.scp"),
            "--text", str(tmp_path / "text"), "--acoustic_tokenizer", str(tmp_path / "acoustic"),
            "--out_dir", str(out), "--utt_list", str(tmp_path / "list")]
    assert main(argv) == 0
    assert (out / "wav.scp").read_text().split()[::2] == ["u1", "u2"]
    assert (out / "text").read_text() == "u1 word 1\nu2 word 2\n"
    table = S2ATable.count([(sems[f"u{i}"], np.load(tmp_path / f"c{i}.npy")) for i in range(3)], 25.0, 50.0)
    s = sems["u2"]
    codes = torch.from_numpy(table.apply(s, 2 * len(s), 25.0, 50.0))[None]
    expected, lens = tok.decode(codes, torch.tensor([2 * len(s)]))
    got, sr = sf.read(out / "wav" / "u2.wav", dtype="float32")
    assert sr == 16000
    assert np.allclose(got, expected[0, : int(lens[0])].clamp(-1, 1).numpy(), atol=1e-4)
    with pytest.raises(SystemExit, match="missing"):
        (tmp_path / "list").write_text("u9 x\n")
        main(argv)
