#!/usr/bin/env bash
# synth_en MaskGCT zero-shot TTS recipe: phonemes (espeak-ng), semantic tokens and mel-RVQ codes
# with the codec1 recipe's tokenizers, T2S and S2A trained by ESPnet's trainer, synthesis of the
# test sentences in held-out voices (prompt: another utterance of the same voice), evaluation
# against ground truth and codec resynthesis.
# The corpus is the asr1 recipe's (same options, so the same audio). Needs, in this order:
#   cd ../asr1 && ./run.sh        # the ASR model (semantic features, WER judge)
#   cd ../codec1 && ./run.sh      # the tokenizers
# S2A decodes greedily without guidance (a dev sweep, RESULTS.md: better for these small models
# than Amphion's temperature 1.5 + guidance 2.5, which stay the API's defaults).
# Options: ./run.sh --help
set -euo pipefail
cd "$(dirname "$0")"

asr_model_dir=""
[ -f ../asr1/exp/asr_train_ctc_char/config.yaml ] && asr_model_dir=$(cd ../asr1/exp/asr_train_ctc_char && pwd)

../../../recipes/tts.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test" \
    --local_data_opts "--train_hours 2.0 --max_vocab 1000 --test_engine_shares espeak=0.6,flite=0.25,festival=0.15" \
    --semantic_tokenizer ../codec1/exp/semantic_l-1_k512 \
    --acoustic_tokenizer ../codec1/exp/tokenizer_mel_rvq \
    --asr_model_dir "${asr_model_dir}" \
    --decode_opts "--s2a_temperature 0 --s2a_cfg_scale 0" \
    "$@"
