#!/usr/bin/env bash
# synth_en ASR recipe: CTC, char tokens, on the CPU (make demo runs it through demo.sh, with
# speed perturbation, and fine-tunes the other model families on its encoder).
# Corpus: 2 h of synthetic speech over a closed 1,000-word vocabulary; test voices held out. Its
# options are in conf/corpus.sh, shared with the codec1 and tts1 recipes (the same corpus).
# Hand-off: after training a CTC model (stage 5), exp/asr_model_dir names its directory (one
# line, absolute path; see recipes/asr.sh); codec1 and tts1 read it for their ASR model.
# Options: ./run.sh --help
# Larger configuration: ./run.sh --asr_config conf/train_ctc_large.yaml --token_type bpe --nbpe 300 \
#   --local_data_opts "--train_hours 4" --ngpu 1 --num_workers 12   (see RESULTS.md)
# Token 8-gram LM (stage 3, from data/lm_train.txt: the corpus sentences minus dev/test) for
# conf/decode_beam_ngram.yaml; --use_ngram false skips it.
# Paraformer (same encoder and budget): ./run.sh --asr_config conf/train_paraformer.yaml
# CASS-NAT: ./run.sh --asr_config conf/train_cassnat.yaml; AR baseline: --asr_config conf/train_aed.yaml
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=SCRIPTDIR/conf/corpus.sh
. conf/corpus.sh  # corpus_opts

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
    --local_data_opts "${corpus_opts}" \
    --token_type char \
    --use_ngram true \
    --lm_train_text data/lm_train.txt \
    --asr_config "${asr_config}" \
    --inference_configs "${inference_configs}" \
    "$@"
