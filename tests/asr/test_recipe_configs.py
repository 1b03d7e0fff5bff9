"""Every training config of egs/synth_en/asr1 builds its model (a typo in a new config or an
option a model does not take fails here, not an hour into a recipe run)."""

from pathlib import Path

import pytest
import torch
import yaml

from asr.task import NARASRTask
from tests.asr.tiny import TOKENS

CONF = Path(__file__).resolve().parents[2] / "egs/synth_en/asr1/conf"
#: training-loop options of the config that build_model does not read
TRAINER_KEYS = {"batch_type", "batch_bins", "accum_grad", "max_epoch", "patience", "num_iters_per_epoch",
                "best_model_criterion", "keep_nbest_models", "seed", "optim", "optim_conf", "scheduler",
                "scheduler_conf", "val_scheduler_criterion", "grad_clip", "init", "unused_parameters",
                "num_att_plot", "log_interval"}


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("train_*.yaml")))
def test_training_config_builds_and_runs_a_step(name):
    config = yaml.safe_load((CONF / name).read_text())
    config = {k: v for k, v in config.items() if k not in TRAINER_KEYS}
    config["token_list"] = list(TOKENS)
    config.pop("normalize", None)  # global_mvn needs the recipe's statistics file
    config.pop("normalize_conf", None)
    config["normalize"] = None
    torch.manual_seed(0)
    model = NARASRTask.build_model_from_dict(config)
    model.train()
    speech = torch.randn(2, 16000) * 0.1
    text = torch.tensor([[3, 4, 5, 6], [4, 5, -1, -1]])
    loss, stats, _ = model(speech, torch.tensor([16000, 12000]), text, torch.tensor([4, 2]))
    assert torch.isfinite(loss) and "loss" in stats
