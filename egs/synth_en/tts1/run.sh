#!/usr/bin/env bash
# synth_en MaskGCT zero-shot TTS recipe: phonemes (espeak-ng), semantic tokens and mel-RVQ codes
# with the codec1 recipe's tokenizers, T2S and S2A trained by ESPnet's trainer, synthesis of the
# test sentences in held-out voices (prompt: another utterance of the same voice), evaluation
# against ground truth and codec resynthesis.
# The corpus is the asr1 recipe's: the same options (../asr1/conf/corpus.sh) and the same
# local/data.sh (a link to asr1's), which reuses the audio asr1 synthesised. Needs, in this order:
#   cd ../asr1 && ./run.sh        # the ASR model (semantic features, WER judge), or make demo
#   cd ../codec1 && ./run.sh      # the tokenizers
# The WER judge of stage 8 uses the ASR model the asr1 recipe recorded in
# ../asr1/exp/asr_model_dir; without that file stage 8 stops with an error before anything runs.
# --asr_model_dir DIR picks another model; --asr_model_dir none drops the judge asr.
# S2A decodes greedily without guidance (a dev sweep, RESULTS.md: better for these small models
# than Amphion's temperature 1.5 + guidance 2.5, which stay the API's defaults).
# Options: ./run.sh --help
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=SCRIPTDIR/../asr1/conf/corpus.sh
. ../asr1/conf/corpus.sh  # corpus_opts: the asr1 recipe's corpus

../../../recipes/tts.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test" \
    --local_data_opts "${corpus_opts}" \
    --semantic_tokenizer ../codec1/exp/semantic_l-1_k512 \
    --acoustic_tokenizer ../codec1/exp/tokenizer_mel_rvq \
    --asr_model_record ../asr1/exp/asr_model_dir \
    --asr_model_hint "cd ../asr1 && ./run.sh (or make demo in the repository root)" \
    --decode_opts "--s2a_temperature 0 --s2a_cfg_scale 0" \
    "$@"
