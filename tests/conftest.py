"""Shared fixtures: one tiny end-to-end run of the synth_en recipe, reused by several tests."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# numba compiles librosa's jitted helpers (cache=True) into an on-disk cache beside librosa in the
# virtual environment; in a fresh environment both xdist workers compile the same function at once
# and one can load the other's half-written cache file: a clean-clone run crashed once with a
# segfault inside librosa.yin's localmin. Each worker (and the recipes it starts) gets its own
# cache directory. Set before any test module imports librosa.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"nar-speech-numba-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"))

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

#: Scheduling (``make test`` runs two xdist workers). Whole files go to a worker (module fixtures
#: are built once), longest first: TREE_STARTER (it builds the tiny tree, then the
#: CASS-NAT and AR baseline runs), the files of ORDER, every other file not using the tree, then
#: LAST_FILES and any other file using the tree. The tree and each run on it are built once per
#: test run, by whichever worker needs them first (see _build_once); until the tree is built, a
#: file using it is handed out only when no other file is left, so the second worker does not
#: wait for the first.
TREE_STARTER = "tests/asr/test_cassnat_recipe.py"
ORDER = (
    "tests/tts/test_tts_recipe.py",  # the codec and TTS recipes on the tree (~4 min)
    "tests/audio_gen/test_gen_recipe.py",  # recipes/gen.sh end to end (~3 min)
    "tests/audio_gen/test_magnet.py",
    "tests/asr/test_paraformer_recipe.py",  # the Paraformer run on the tree
    "tests/asr/test_inference_longform.py",
)
LAST_FILES = (
    "tests/audio_gen/test_token_data.py",
    "tests/tts/test_semantic.py",
    "tests/asr/test_inference.py",
    "tests/asr/test_recipe_e2e.py",
)


@functools.lru_cache(maxsize=None)
def _uses_tree(path: str) -> bool:
    """Whether test file ``path`` (relative to the repository) uses a tiny-tree fixture."""
    try:
        text = (ROOT / path).read_text(encoding="utf-8")
    except OSError:
        return False
    return any(name in text for name in RECIPE_FIXTURES)


def _schedule_rank(path: str) -> tuple:
    if path == TREE_STARTER:
        return (0,)
    if path in ORDER:
        return (1, ORDER.index(path))
    if not _uses_tree(path):
        return (2,)
    return (3, LAST_FILES.index(path) if path in LAST_FILES else len(LAST_FILES))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist: whole test files per worker, handed out as the comment on ORDER says.

    The collection itself must stay in the workers' order: the scheduler sends item *indices*,
    which each worker resolves in its own collection, so only the queue of work units is
    reordered here."""
    from xdist.scheduler import LoadScopeScheduling

    def tree_built() -> bool:
        # the workers' base temporary directories are in the controller's (as xdist makes them)
        factory = getattr(config, "_tmp_path_factory", None)
        return factory is None or (factory.getbasetemp() / "tiny_recipe.done").exists()

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::")[0]

        def _reschedule(self, node) -> None:
            # as xdist's, but a worker gets its next file only when it holds one test (it needs
            # the next test before it runs the last one): no worker holds files it cannot start
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

        def _assign_work_unit(self, node) -> None:
            files = sorted(self.workqueue, key=_schedule_rank)
            built = tree_built()
            pick = next((f for f in files if built or f == TREE_STARTER or not _uses_tree(f)), files[0])
            self.workqueue.move_to_end(pick, last=False)
            super()._assign_work_unit(node)

    return FileScheduling(config, log)


#: torch threads of every test process and recipe run. ``make test`` runs two xdist workers on
#: two cores, each of which may run a recipe subprocess: with two threads each, the cores are
#: oversubscribed and OpenMP's spinning threads wait on each other (a tiny training loop measured
#: 10x slower with two threads than with one while the other core was busy); tiny models gain
#: nothing from a second thread.
TORCH_THREADS = 1


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before each test: TORCH_THREADS torch threads (a test or a CLI it calls may have set others)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(TORCH_THREADS)


def recipe_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    return env


def _shared_root(tmp_path_factory) -> Path:
    """The directory shared by every process of this test run: under xdist the workers' base
    temporary directories are siblings in the run's own one."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _build_once(root: Path, key: str, build) -> None:
    """Call ``build()`` once per test run for ``key``: the processes of the run (xdist workers)
    take a file lock; one that finds ``key`` built returns at once, one that finds it failed
    fails with the same message, one that comes while another builds it waits."""
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        done, failed = root / f"{key}.done", root / f"{key}.failed"
        if failed.exists():
            pytest.fail(failed.read_text())
        if done.exists():
            return
        try:
            build()
        except (Exception, pytest.fail.Exception) as e:
            failed.write_text(f"{key} (built by another test process): {e}")
            raise
        done.touch()


def _run_recipe(cmd: list, recipe: Path, log: str, what: str) -> None:
    r = subprocess.run(cmd, cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=900)
    (recipe / log).write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    if r.returncode != 0:
        pytest.fail(f"{what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def _copy_recipe(name: str, dst: Path) -> None:
    shutil.copytree(ROOT / "egs" / "synth_en" / name, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Path:
    """egs/synth_en/asr1 laid out in a temporary tree and run through every stage, tiny."""
    root = _shared_root(tmp_path_factory)
    top = root / "tree"
    recipe = top / "egs" / "synth_en" / "asr1"

    def build():
        if top.exists():
            shutil.rmtree(top)
        recipe.parent.mkdir(parents=True)
        (top / "recipes").symlink_to(ROOT / "recipes")
        _copy_recipe("asr1", recipe)
        (recipe / "conf" / "train_tiny.yaml").write_text(TINY_TRAIN)
        cmd = [
            "./run.sh", "--asr_config", "conf/train_tiny.yaml",
            "--local_data_opts", "--train_hours 0.01 --dev_utts 4 --test_utts 4",
            "--inference_configs", "conf/decode_greedy.yaml conf/decode_beam.yaml conf/decode_beam_ngram.yaml "
            "conf/decode_beam_wordlm.yaml",
            "--ngram_order", "3",  # the open-vocabulary LM text of a tiny corpus: a small order is quick
            "--inference_batch_size", "3", "--num_threads", str(TORCH_THREADS),
        ]
        _run_recipe(cmd, recipe, "run.out", "tiny recipe")

    _build_once(root, "tiny_recipe", build)
    return recipe


def _family_recipe(root: Path, tiny_recipe: Path, name: str) -> Path:
    """``asr1_<name>`` beside the tiny recipe: the recipe's files, its data, dumps, token list and
    statistics (symlinks to the tiny recipe's), and an exp/ and RESULTS.md of its own, so the
    model families train, decode and score in parallel without writing the same files."""
    recipe = tiny_recipe.parent / f"asr1_{name}"

    def build():
        if recipe.exists():
            shutil.rmtree(recipe)
        _copy_recipe("asr1", recipe)
        for d in ("data", "dump"):
            (recipe / d).symlink_to(tiny_recipe / d)
        (recipe / "exp").mkdir()
        (recipe / "exp" / "asr_stats_char").symlink_to(tiny_recipe / "exp" / "asr_stats_char")

    _build_once(root, f"asr1_{name}", build)
    return recipe


def _rerun_from_training(root: Path, recipe: Path, name: str, config: str, extra: tuple = (),
                         conf_files: tuple = ()) -> Path:
    """Run ``recipe`` (a _family_recipe) from stage 5 (training) with ``conf/train_tiny_<name>.yaml``
    and the (file name, text) pairs ``conf_files`` written into conf/, once per test run; run.sh
    picks the decode configs from the model type itself unless ``extra`` says."""
    assert config != TINY_TRAIN

    def build():
        (recipe / "conf" / f"train_tiny_{name}.yaml").write_text(config)
        for file_name, text in conf_files:
            (recipe / "conf" / file_name).write_text(text)
        cmd = [
            "./run.sh", "--asr_config", f"conf/train_tiny_{name}.yaml", "--stage", "5",
            "--local_data_opts", "--train_hours 0.01 --dev_utts 4 --test_utts 4",
            "--inference_batch_size", "3", "--num_threads", str(TORCH_THREADS),
            # the base tiny run decodes dev, test and test_real; the family reruns decode test only
            "--test_sets", "test", *extra,
        ]
        _run_recipe(cmd, recipe, f"run_{name}.out", f"tiny {name} recipe")

    _build_once(root, f"tiny_{name}_recipe", build)
    return recipe


@pytest.fixture(scope="session")
def tiny_paraformer_recipe(tiny_recipe, tmp_path_factory) -> Path:
    """The tiny recipe's data trained and decoded again with a tiny Paraformer (in asr1_paraformer)."""
    root = _shared_root(tmp_path_factory)
    return _rerun_from_training(root, _family_recipe(root, tiny_recipe, "paraformer"), "paraformer", TINY_PARAFORMER)


@pytest.fixture(scope="session")
def tiny_cassnat_recipe(tiny_recipe, tmp_path_factory) -> Path:
    """The tiny recipe's data trained and decoded again with a tiny CASS-NAT (with AR head), in
    asr1_cassnat (beside the AR baseline it is compared with)."""
    root = _shared_root(tmp_path_factory)
    return _rerun_from_training(root, _family_recipe(root, tiny_recipe, "cassnat"), "cassnat", TINY_CASSNAT)


@pytest.fixture(scope="session")
def tiny_aed_recipe(tiny_recipe, tmp_path_factory) -> Path:
    """The tiny recipe's data trained and decoded again with a tiny AR baseline (ESPnet AED), in
    asr1_cassnat (beside the CASS-NAT it is compared with)."""
    root = _shared_root(tmp_path_factory)
    recipe = _family_recipe(root, tiny_recipe, "cassnat")
    # conf/decode_aed.yaml with the search bounded: a 2-epoch AED hardly ever ends with <eos>,
    # so an unbounded beam search would run to one token per encoder frame
    decode = (ROOT / "egs/synth_en/asr1/conf/decode_aed.yaml").read_text() + "maxlenratio: 0.2\n"
    return _rerun_from_training(root, recipe, "aed", TINY_AED, ("--inference_configs", "conf/decode_aed_tiny.yaml"),
                                (("decode_aed_tiny.yaml", decode),))


@pytest.fixture(scope="session")
def tiny_codec_recipe(tiny_recipe, tmp_path_factory) -> Path:
    """egs/synth_en/codec1 beside the tiny asr1 tree, run through stages 3-6 and 8 (tiny
    tokenizers on the tiny recipe's data and ASR model; evaluation of 2 utterances)."""
    recipe = tiny_recipe.parent / "codec1"

    def build():
        if recipe.exists():
            shutil.rmtree(recipe)
        _copy_recipe("codec1", recipe)
        (recipe / "dump").mkdir()
        (recipe / "dump" / "raw").symlink_to(tiny_recipe / "dump" / "raw")
        cmd = ["./run.sh", "--stage", "3", "--valid_set", "test", "--test_sets", "test",
               "--tokenizer_opts", "--num_codebooks 2 --codebook_size 8 --n_mels 32 --iters 3 --griffin_lim_iters 4",
               "--asr_model_dir", str(tiny_recipe / "exp/asr_train_tiny_char"), "--semantic_codebook_size", "4",
               "--eval_opts", "--max_utts 2 --coarse 1", "--num_threads", str(TORCH_THREADS),
               "--vocoder_steps", "2", "--vocoder_opts", "--dim 16 --intermediate_dim 32 --num_layers 1 "
               "--batch_size 2 --segment_frames 4 --checkpoint_every 1 --dev_utts 2"]
        _run_recipe(cmd, recipe, "run.out", "tiny codec recipe")

    _build_once(_shared_root(tmp_path_factory), "tiny_codec_recipe", build)
    return recipe
