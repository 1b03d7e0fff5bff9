#!/usr/bin/env bash
# nar-speech audio tokenizer recipe template (ESPnet egs2 shape; conventions of recipes/asr.sh).
# A corpus's run.sh sets options and calls it.
#
# Usage:
#   ./run.sh                                   # every stage with the corpus's defaults
#   ./run.sh --stage 3 --stop_stage 4          # fit the acoustic tokenizer and dump codes only
#   ./run.sh --codec_config conf/train_codec_smoke.yaml --stage 7 --stop_stage 7   # ESPnet codec
#   ./run.sh --help                            # every option with its current value
#
# Stages:
#   1 data preparation (local/data.sh)          2 format/dump: validate, absolute paths, durations
#   3 fit the mel-RVQ acoustic tokenizer (+ train its vocoder with --vocoder_steps N > 0, into
#     exp/tokenizer_<tag>_vocoder: same codes, decoded by the trained vocoder instead of Griffin-Lim)
#                                               4 acoustic codes of every set (npy + codes.scp)
#   5 fit the semantic tokenizer (k-means over an encoder layer of the ASR model)
#   6 semantic tokens of every set              7 ESPnet GAN codec training (needs --codec_config)
#   8 evaluation of the tokenizers on the test sets (bench/tokenizers.py; WER by the ASR model)
#     and RESULTS.md
# Codes are written resumably: rerunning a killed stage 4/6 skips the utterances already done.
#
# The ASR model (stages 5 and 8): --asr_model_dir DIR, or else the directory named in the file
# --asr_model_record (one line, written by recipes/asr.sh after training: <asr expdir>/asr_model_dir).
# When stage 5 or 8 is in the stage range and neither gives a trained model directory, the
# script stops before its first stage with an error naming the record and --asr_model_hint (the
# command that trains the model). --asr_model_dir none skips stages 5, 6 and 8, saying so.
set -euo pipefail
recipe_utils="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/utils"
. "${recipe_utils}/options.sh"
. "${recipe_utils}/asr_model.sh"
. "${recipe_utils}/data_stages.sh"
project_root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage_text "Usage: $0 [options]   (see the header of recipes/codec.sh)"
opt stage 1 "first stage to run"
opt stop_stage 100 "last stage to run"
opt nj 2 "parallel jobs for data preparation"
opt ngpu 0 "GPUs for ESPnet codec training (0: CPU)"
opt device cpu "device for tokenization: cpu or cuda"
opt num_threads 2 "torch threads"
opt train_set train "training data set name (under data/)"
opt valid_set dev "validation data set name"
opt test_sets "dev test" "space-separated sets to tokenize (the train set is always tokenized)"
opt eval_sets "test" "sets evaluated in stage 8"
opt local_data_opts "" "options passed to local/data.sh"
opt tokenizer_opts "" "options for python -m audio_gen.bin.fit_tokenizer (e.g. --num_codebooks 8 --codebook_size 1024)"
opt tokenizer_tag "mel_rvq" "acoustic tokenizer name: exp/tokenizer_<tag>, dump/codes_<tag>"
opt vocoder_steps 0 "training steps of the mel vocoder in stage 3 (0: none, Griffin-Lim only)"
opt vocoder_opts "" "extra options for python -m audio_gen.bin.train_vocoder (e.g. --batch_size 16 --dim 256)"
opt asr_model_dir "" "trained ASR model dir for the semantic tokenizer and the WER of stage 8 (empty: the one --asr_model_record names; none: skip stages 5, 6 and 8)"
opt asr_model_record "" "file naming the trained ASR model dir (written by recipes/asr.sh: <asr expdir>/asr_model_dir), read when --asr_model_dir is empty"
opt asr_model_hint "" "the command that trains the ASR model and writes --asr_model_record (for the error when it is missing)"
opt semantic_layer -1 "ASR encoder block whose output is clustered (1-based; -1: last)"
opt semantic_codebook_size 512 "semantic k-means clusters"
opt semantic_tag "" "semantic tokenizer name (default: l<layer>_k<size>)"
opt codec_config "" "ESPnet gan_codec training config (stage 7; empty: skip)"
opt codec_tag "" "ESPnet codec experiment name (default: the config name)"
opt codec_args "" "extra options for the codec training (espnet2.bin.gan_codec_train options, run via audio_gen.bin.codec_train)"
opt eval_opts "" "extra options for bench/tokenizers.py (e.g. --max_utts 50)"
opt dumpdir dump "directory for formatted data and codes"
opt expdir exp "directory for experiments"
parse_opts "$@"
require_opts

if [ -f path.sh ]; then . ./path.sh; fi
export OMP_NUM_THREADS=${num_threads}

data_feats=${dumpdir}/raw
tok_dir=${expdir}/tokenizer_${tokenizer_tag}
codes_dir=${dumpdir}/codes_${tokenizer_tag}
[ -z "${semantic_tag}" ] && semantic_tag="l${semantic_layer}_k${semantic_codebook_size}"
semantic_dir=${expdir}/semantic_${semantic_tag}
[ -z "${codec_tag}" ] && [ -n "${codec_config}" ] && codec_tag=$(basename "${codec_config}" .yaml)
codec_exp=${expdir}/codec_${codec_tag}
run_command="$0$(printf " %q" "$@")"
all_sets=$(echo "${train_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')

# checked before any stage runs: a missing model stops the run at once, not after hours of stages
_asr_need=""
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then _asr_need="stage 5 (semantic tokenizer)"; fi
if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then _asr_need+="${_asr_need:+ and }stage 8 (evaluation)"; fi
if [ -n "${_asr_need}" ]; then resolve_asr_model "${_asr_need}" "--asr_model_dir none skips stages 5, 6 and 8"; fi

run_data_stages

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: fit the mel-RVQ tokenizer on ${train_set} into ${tok_dir}"
  # shellcheck disable=SC2086
  python -m audio_gen.bin.fit_tokenizer --data_dir "${data_feats}/${train_set}" --out_dir "${tok_dir}" ${tokenizer_opts}
  if [ "${vocoder_steps}" -gt 0 ]; then
    log "Stage 3: train the mel vocoder (${vocoder_steps} steps) into ${tok_dir}_vocoder (resumes after a kill)"
    # shellcheck disable=SC2086
    python -m audio_gen.bin.train_vocoder --data_dir "${data_feats}/${train_set}" --dev_dir "${data_feats}/${valid_set}" \
      --tokenizer_dir "${tok_dir}" --out_dir "${tok_dir}_vocoder" --steps "${vocoder_steps}" \
      --num_threads "${num_threads}" ${vocoder_opts}
  fi
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: acoustic codes of ${all_sets}into ${codes_dir}/<set>"
  _in=(); _out=()
  for dset in ${all_sets}; do _in+=("${data_feats}/${dset}"); _out+=("${codes_dir}/${dset}"); done
  python -m audio_gen.bin.tokenize --tokenizer "${tok_dir}" --data_dir "${_in[@]}" --out_dir "${_out[@]}" \
    --device "${device}"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 5 ] && [ "${asr_model_dir}" = none ]; then
  log "Stages 5-6: skipped (--asr_model_dir none: no semantic tokenizer)"
elif [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 5 ]; then
  if [ "${stage}" -le 5 ]; then
    log "Stage 5: semantic tokenizer (layer ${semantic_layer} of ${asr_model_dir}, k=${semantic_codebook_size}) into ${semantic_dir}"
    python -m tts.bin.semantic_tokens fit --asr_model_dir "${asr_model_dir}" --layer "${semantic_layer}" \
      --codebook_size "${semantic_codebook_size}" --data_dir "${data_feats}/${train_set}" --out_dir "${semantic_dir}" \
      --device "${device}"
  fi
  if [ "${stop_stage}" -ge 6 ]; then
    [ -f "${semantic_dir}/semantic.json" ] || { log "Error: ${semantic_dir} is not a fitted semantic tokenizer (run stage 5)" >&2; exit 1; }
    log "Stage 6: semantic tokens of ${all_sets}into ${dumpdir}/semantic_${semantic_tag}/<set>"
    _in=(); _out=()
    for dset in ${all_sets}; do _in+=("${data_feats}/${dset}"); _out+=("${dumpdir}/semantic_${semantic_tag}/${dset}"); done
    python -m tts.bin.semantic_tokens encode --tokenizer "${semantic_dir}" --data_dir "${_in[@]}" \
      --out_dir "${_out[@]}" --device "${device}"
  fi
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && [ -n "${codec_config}" ]; then
  log "Stage 7: ESPnet GAN codec training (${codec_config}) into ${codec_exp}"
  stats=${codec_exp}/stats
  mkdir -p "${stats}"
  data_opts=(
    --train_data_path_and_name_and_type "${data_feats}/${train_set}/wav.scp,audio,sound"
    --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/wav.scp,audio,sound"
    --use_preprocessor true --num_workers 0 --use_matplotlib false --use_tensorboard false
  )
  # the statistics are kept while everything they were computed from is unchanged (nar.base.stamps:
  # the dumped lists hashed, the audio stat'ed, the config, the options; the shape files as written)
  _stats_stamp=(--stamp "${stats}/.stamp.json" --what "Stage 7: statistics ${stats}"
    --audio_scp "${data_feats}/${train_set}/wav.scp" --audio_scp "${data_feats}/${valid_set}/wav.scp"
    --input "train_utt2num_samples=${data_feats}/${train_set}/utt2num_samples"
    --input "valid_utt2num_samples=${data_feats}/${valid_set}/utt2num_samples"
    --input "config=${codec_config}" --option "codec_args=${codec_args}"
    --output "train_shape=${stats}/train/audio_shape" --output "valid_shape=${stats}/valid/audio_shape")
  if ! python -m nar.base.stamps check "${_stats_stamp[@]}"; then
    rm -f "${stats}/.stamp.json"
    # shellcheck disable=SC2086
    python -m audio_gen.bin.codec_train --collect_stats true --config "${codec_config}" "${data_opts[@]}" \
      --train_shape_file "${data_feats}/${train_set}/wav.scp" --valid_shape_file "${data_feats}/${valid_set}/wav.scp" \
      --output_dir "${stats}" --ngpu 0 ${codec_args} > "${stats}/collect_stats.log" 2>&1 \
      || { log "codec statistics failed; see ${stats}/collect_stats.log"; tail -n 20 "${stats}/collect_stats.log"; exit 1; }
    python -m nar.base.stamps write "${_stats_stamp[@]}"
  fi
  # --resume true: a killed run continues from its last checkpoint
  # shellcheck disable=SC2086
  python -m audio_gen.bin.codec_train --config "${codec_config}" "${data_opts[@]}" --resume true \
    --train_shape_file "${stats}/train/audio_shape" --valid_shape_file "${stats}/valid/audio_shape" \
    --output_dir "${codec_exp}" --ngpu "${ngpu}" ${codec_args} >> "${codec_exp}/train.log" 2>&1 \
    || { log "codec training failed; see ${codec_exp}/train.log"; tail -n 30 "${codec_exp}/train.log"; exit 1; }
  log "codec trained: ${codec_exp} (load with audio_gen.tokenizers.EspnetCodecTokenizer.from_exp)"
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
  if [ "${asr_model_dir}" = none ]; then
    log "Stage 8: skipped (--asr_model_dir none: the evaluation scores intelligibility with the ASR model)"
  else
    tokenizers="${tokenizer_tag}=${tok_dir}"
    [ -f "${tok_dir}_vocoder/vocoder.pt" ] && tokenizers+=" ${tokenizer_tag}_vocoder=${tok_dir}_vocoder"
    for dset in ${eval_sets}; do
      log "Stage 8: evaluating ${tokenizers} on ${dset}"
      _sem=()
      [ -f "${semantic_dir}/semantic.json" ] && _sem=(--semantic_train_dir "${data_feats}/${train_set}")
      # shellcheck disable=SC2086
      python "${project_root}/bench/tokenizers.py" --data_dir "${data_feats}/${dset}" --tokenizers ${tokenizers} \
        --asr_model_dir "${asr_model_dir}" --semantic_layers "${semantic_layer}" \
        --semantic_codebook_size "${semantic_codebook_size}" "${_sem[@]}" \
        --threads "${num_threads}" --out "${tok_dir}/eval_${dset}.json" ${eval_opts}
      {
        echo "## ${tokenizer_tag} on ${dset}"
        echo
        echo "Command: \`${run_command}\`"
        echo
        tail -n +3 "${tok_dir}/eval_${dset}.md"
        echo
      } >> RESULTS.md
    done
  fi
fi
log "Done."
