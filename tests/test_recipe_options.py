"""recipes/utils/options.sh: declared options, generated help, clear errors."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
set -euo pipefail
. "{root}/recipes/utils/options.sh"
opt stage 1 "first stage"
opt asr_config "" "training config" required
opt test_sets "dev test" "sets to decode"
parse_opts "$@"
require_opts
echo "stage=$stage asr_config=$asr_config test_sets=$test_sets"
"""


def run(tmp_path, *args):
    script = tmp_path / "s.sh"
    script.write_text(SCRIPT.format(root=ROOT))
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_values_and_forms(tmp_path):
    r = run(tmp_path, "--stage", "3", "--asr-config=c.yaml", "--test_sets", "a b")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=3 asr_config=c.yaml test_sets=a b"


def test_help_is_generated_from_declarations(tmp_path):
    r = run(tmp_path, "--help")
    assert r.returncode == 0
    assert "--stage" in r.stdout and "[1]" in r.stdout and "[dev test]" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stag", "2", "--asr_config", "x"], "unknown option --stag"),
        (["--stage"], "needs a value"),
        (["stray"], "unexpected argument"),
        ([], "--asr_config is required"),
    ],
)
def test_errors(tmp_path, args, message):
    r = run(tmp_path, *args)
    assert r.returncode == 2
    assert message in r.stderr


def test_asr_template_help_lists_defaults():
    r = subprocess.run(["bash", str(ROOT / "recipes/asr.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "--token_type" in r.stdout and "[char]" in r.stdout
