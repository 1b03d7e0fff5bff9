"""Shared fixtures: one tiny end-to-end run of the synth_en recipe, reused by several tests."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_TRAIN = """\
# a tiny configuration for tests: every stage runs, nothing is expected to be learned
model: ctc
model_conf:
    interctc_weight: 0.3
frontend: default
frontend_conf: {n_fft: 512, hop_length: 160, win_length: 400, n_mels: 40}
encoder: conformer
encoder_conf:
    output_size: 32
    attention_heads: 2
    linear_units: 64
    num_blocks: 2
    dropout_rate: 0.0
    input_layer: conv2d
    cnn_module_kernel: 5
    rel_pos_type: latest
    interctc_layer_idx: [1]
    interctc_use_conditioning: true
batch_type: numel
batch_bins: 240000
max_epoch: 2
best_model_criterion: [[valid, loss, min]]
keep_nbest_models: 2
optim: adam
optim_conf: {lr: 0.001}
"""


TINY_PARAFORMER = TINY_TRAIN.replace(
    "model: ctc\nmodel_conf:\n    interctc_weight: 0.3\n",
    """model: paraformer
model_conf:
    ctc_weight: 0.3
    interctc_weight: 0.3
    predictor_bias: 1
    sampling_ratio: 0.4
decoder: paraformer
decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.0}
predictor: cif
predictor_conf: {l_order: 1, r_order: 1, tail_threshold: 0.45}
""",
)


TINY_CASSNAT = TINY_TRAIN.replace(
    "model: ctc\nmodel_conf:\n    interctc_weight: 0.3\n",
    """model: cassnat
model_conf:
    ctc_weight: 0.5
    interctc_weight: 0.3
    ar_weight: 0.3
    ar_decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.0}
decoder: cassnat
decoder_conf: {attention_heads: 2, linear_units: 64, num_self_blocks: 1, num_mix_blocks: 1, dropout_rate: 0.0}
""",
)

TINY_AED = TINY_TRAIN.replace(
    "model: ctc\nmodel_conf:\n    interctc_weight: 0.3\n",
    """model: espnet
model_conf:
    ctc_weight: 0.3
    interctc_weight: 0.3
decoder: transformer
decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.0}
""",
)


#: session fixtures that build (and share) the tiny recipe tree
RECIPE_FIXTURES = {"tiny_recipe", "tiny_paraformer_recipe", "tiny_cassnat_recipe", "tiny_aed_recipe",
                   "tiny_codec_recipe"}


#: tree groups: every file using the tiny tree runs on one worker, which builds the tree once.
#: (Measured with `make test` from a clean clone: one group 9:28, 673 CPU-s; the codec + TTS
#: files as a second group with their own tree on the other worker 9:35, 946 CPU-s: the two
#: cores are then saturated by the duplicated tree.)
TREE_GROUPS = (("tiny_recipe", RECIPE_FIXTURES),)


@functools.lru_cache(maxsize=None)
def _tree_group(path: str) -> str | None:
    """The tiny-tree group of test file ``path`` (relative to the repository), or None."""
    try:
        text = (ROOT / path).read_text(encoding="utf-8")
    except OSError:
        return None
    for group, names in TREE_GROUPS:
        if any(name in text for name in names):
            return group
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (``make test`` runs two workers): whole test files go to a worker; the files
    using the tiny recipe tree form one group (session fixtures are per worker, so the tree is
    built once), scheduled first so its long chain starts at once and the other files fill the
    second worker."""
    from xdist.scheduler import LoadScopeScheduling

    class TreeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return _tree_group(path) or path

        def schedule(self) -> None:
            self.config.option.loadscopereorder = False  # keep the order below
            super().schedule()

        def add_node_collection(self, node, collection) -> None:
            rank = {group: i for i, (group, _) in enumerate(TREE_GROUPS)}
            order = sorted(collection, key=lambda n: rank.get(self._split_scope(n), len(rank)))
            super().add_node_collection(node, order)

    return TreeScheduling(config, log)


def recipe_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "2"
    return env


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Path:
    """egs/synth_en/asr1 laid out in a temporary tree and run through every stage, tiny."""
    top = tmp_path_factory.mktemp("tree")
    (top / "recipes").symlink_to(ROOT / "recipes")
    recipe = top / "egs" / "synth_en" / "asr1"
    shutil.copytree(ROOT / "egs" / "synth_en" / "asr1", recipe,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))
    (recipe / "conf" / "train_tiny.yaml").write_text(TINY_TRAIN)
    cmd = [
        "./run.sh", "--asr_config", "conf/train_tiny.yaml",
        "--local_data_opts", "--train_hours 0.01 --dev_utts 4 --test_utts 4",
        "--inference_configs", "conf/decode_greedy.yaml conf/decode_beam.yaml",
        "--inference_batch_size", "3",
    ]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (recipe / "run.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    if r.returncode != 0:
        pytest.fail(f"tiny recipe failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return recipe


def _rerun_from_training(tiny_recipe: Path, name: str, config: str, extra: tuple = ()) -> Path:
    """Run the tiny recipe tree again from stage 5 (training) with ``conf/train_tiny_<name>.yaml``;
    run.sh picks the decode configs from the model type itself unless ``extra`` says."""
    assert config != TINY_TRAIN
    (tiny_recipe / "conf" / f"train_tiny_{name}.yaml").write_text(config)
    cmd = [
        "./run.sh", "--asr_config", f"conf/train_tiny_{name}.yaml", "--stage", "5",
        "--local_data_opts", "--train_hours 0.01 --dev_utts 4 --test_utts 4",
        "--inference_batch_size", "3",
        # the base tiny run decodes dev, test and test_real; each extra decode is a process
        # whose start (importing ESPnet) costs ~15 s, so the family reruns decode test only
        "--test_sets", "test", *extra,
    ]
    r = subprocess.run(cmd, cwd=tiny_recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (tiny_recipe / f"run_{name}.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    if r.returncode != 0:
        pytest.fail(f"tiny {name} recipe failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return tiny_recipe


@pytest.fixture(scope="session")
def tiny_paraformer_recipe(tiny_recipe) -> Path:
    """The tiny recipe tree trained and decoded again with a tiny Paraformer."""
    return _rerun_from_training(tiny_recipe, "paraformer", TINY_PARAFORMER)


@pytest.fixture(scope="session")
def tiny_cassnat_recipe(tiny_recipe) -> Path:
    """The tiny recipe tree trained and decoded again with a tiny CASS-NAT (with AR head)."""
    return _rerun_from_training(tiny_recipe, "cassnat", TINY_CASSNAT)


@pytest.fixture(scope="session")
def tiny_aed_recipe(tiny_recipe) -> Path:
    """The tiny recipe tree trained and decoded again with a tiny AR baseline (ESPnet AED)."""
    # conf/decode_aed.yaml with the search bounded: a 2-epoch AED hardly ever ends with <eos>,
    # so an unbounded beam search would run to one token per encoder frame
    conf = tiny_recipe / "conf"
    (conf / "decode_aed_tiny.yaml").write_text((conf / "decode_aed.yaml").read_text() + "maxlenratio: 0.2\n")
    return _rerun_from_training(tiny_recipe, "aed", TINY_AED, ("--inference_configs", "conf/decode_aed_tiny.yaml"))


@pytest.fixture(scope="session")
def tiny_codec_recipe(tiny_recipe) -> Path:
    """egs/synth_en/codec1 beside the tiny asr1 tree, run through stages 3-6 and 8 (tiny
    tokenizers on the tiny recipe's data and ASR model; evaluation of 2 utterances)."""
    recipe = tiny_recipe.parent / "codec1"
    if recipe.exists():
        shutil.rmtree(recipe)
    shutil.copytree(ROOT / "egs/synth_en/codec1", recipe, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))
    (recipe / "dump").mkdir()
    (recipe / "dump" / "raw").symlink_to(tiny_recipe / "dump" / "raw")
    cmd = ["./run.sh", "--stage", "3", "--valid_set", "test", "--test_sets", "test",
           "--tokenizer_opts", "--num_codebooks 2 --codebook_size 8 --n_mels 32 --iters 3 --griffin_lim_iters 4",
           "--asr_model_dir", str(tiny_recipe / "exp/asr_train_tiny_char"), "--semantic_codebook_size", "4",
           "--eval_opts", "--max_utts 2 --coarse 1"]
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (recipe / "run.out").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    if r.returncode != 0:
        pytest.fail(f"tiny codec recipe failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return recipe
