"""tts.bin.synthesize: decoding options reach the mask-predict configs; bad values are refused."""

from __future__ import annotations

import pytest

from tts.bin.synthesize import decoding_configs, get_parser
from tts.inference import default_s2a_config, default_t2s_config


def configs(*argv):
    args = get_parser().parse_args(["--data_dir", "d", "--out_dir", "o", *argv])
    return decoding_configs(args, default_t2s_config(512, 512), default_s2a_config(4, 1024, 1024))


def test_no_option_keeps_the_api_defaults():
    t2s, s2a = configs()
    assert t2s == default_t2s_config(512, 512) and s2a == default_s2a_config(4, 1024, 1024)


def test_options_override_only_what_they_name():
    t2s, s2a = configs("--t2s_steps", "12", "--t2s_temperature", "0.5", "--s2a_steps", "8,4,2,1",
                       "--s2a_temperature", "0", "--s2a_cfg_scale", "0")
    assert (t2s.steps, t2s.temperature, t2s.cfg_scale) == (12, 0.5, 2.5)
    assert (s2a.steps, s2a.temperature, s2a.cfg_scale) == ((8, 4, 2, 1), 0.0, 0.0)
    assert s2a.top_k == default_s2a_config(4, 1024, 1024).top_k


@pytest.mark.parametrize("value, message", [("8,4", "one value per codebook"), ("8,x,1,1", "integers")])
def test_bad_s2a_steps(value, message):
    with pytest.raises(SystemExit, match=message):
        configs("--s2a_steps", value)
