#!/usr/bin/env bash
# synth_en ASR recipe: the demo configuration (CTC, char tokens, CPU, ~25 minutes on 2 cores).
# Demo corpus: 2 h of synthetic speech over a closed 1,000-word vocabulary; test voices held out.
# Options: ./run.sh --help
# Larger configuration: ./run.sh --asr_config conf/train_ctc_large.yaml --token_type bpe --nbpe 300 \
#   --local_data_opts "--train_hours 4" --ngpu 1 --num_workers 12   (see RESULTS.md)
# Token 8-gram LM (stage 3, from data/lm_train.txt: the corpus sentences minus dev/test) for
# conf/decode_beam_ngram.yaml; --use_ngram false skips it.
# Paraformer (same encoder and budget): ./run.sh --asr_config conf/train_paraformer.yaml
# CASS-NAT: ./run.sh --asr_config conf/train_cassnat.yaml; AR baseline: --asr_config conf/train_aed.yaml
set -euo pipefail
cd "$(dirname "$0")"

# Decode configs follow the model type of --asr_config (an explicit --inference_configs wins).
asr_config=conf/train_ctc.yaml
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    [ "${args[i]}" = --asr_config ] && asr_config=${args[i + 1]}
done
model_type=ctc
[ -f "${asr_config}" ] && model_type=$(sed -n 's/^model: *//p' "${asr_config}")
case "${model_type}" in
    paraformer) inference_configs="conf/decode_paraformer.yaml conf/decode_paraformer_rescore.yaml conf/decode_paraformer_ctcfire.yaml" ;;
    cassnat) inference_configs="conf/decode_cassnat.yaml conf/decode_cassnat_esa.yaml" ;;
    espnet) inference_configs="conf/decode_aed.yaml" ;;
    *) inference_configs="conf/decode_greedy.yaml conf/decode_beam.yaml conf/decode_beam_ngram.yaml" ;;
esac

../../../recipes/asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "dev test test_real" \
    --local_data_opts "--train_hours 2.0 --max_vocab 1000 --test_engine_shares espeak=0.6,flite=0.25,festival=0.15 --formant_warps 0.8,0.9,1.1,1.2,1.3" \
    --token_type char \
    --use_ngram true \
    --lm_train_text data/lm_train.txt \
    --asr_config "${asr_config}" \
    --inference_configs "${inference_configs}" \
    "$@"
