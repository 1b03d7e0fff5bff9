#!/usr/bin/env bash
# synth_en ASR recipe: the demo configuration (CTC, char tokens, CPU). Options: ./run.sh --help
# Larger configuration: ./run.sh --asr_config conf/train_ctc_large.yaml --token_type bpe --nbpe 300 \
#   --local_data_opts "--train_hours 10" --ngpu 1        (see RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")"

../../../recipes/asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "dev test test_real" \
    --local_data_opts "--train_hours 2.0" \
    --token_type char \
    --asr_config conf/train_ctc.yaml \
    --inference_configs "conf/decode_greedy.yaml conf/decode_beam.yaml" \
    "$@"
