#!/usr/bin/env bash
# nar-speech text-to-audio recipe template (MAGNeT and its AR baseline; ESPnet egs2 shape;
# conventions of recipes/asr.sh). A corpus's run.sh sets options and calls it.
#
# Usage:
#   ./run.sh                                    # every stage with the corpus's defaults
#   ./run.sh --stage 4 --stop_stage 4           # train MAGNeT only
#   ./run.sh --stage 6 --gen_opts "--max_utts 20"   # generate and score a subset
#   ./run.sh --help                             # every option with its current value
#
# Stages:
#   1 data (local/data.sh: audio, captions, structured fields)
#   2 tokenise: fit the acoustic tokenizer on the training audio (mel-RVQ; kept if it exists or
#     --acoustic_tokenizer is given) and write the codes of every set
#   3 caption tokens (word tokens from the training captions, or a local T5's tokenizer)
#   4 train MAGNeT (ESPnet trainer)          5 train the AR baseline (same size, delay pattern)
#   6 generate the test captions with every method in --methods, and the codec round trip
#     of the real renders (the reference)
#   7 evaluate: train the field classifier on the real training renders, score caption
#     adherence and Frechet distance of real renders, codec round trip and every method;
#     append the table to RESULTS.md
# Training resumes after a kill (ESPnet --resume); tokens and generation skip finished items.
set -euo pipefail
recipe_utils="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/utils"
. "${recipe_utils}/options.sh"

usage_text "Usage: $0 [options]   (see the header of recipes/gen.sh)"
opt stage 1 "first stage to run"
opt stop_stage 100 "last stage to run"
opt nj 2 "parallel jobs for data preparation"
opt ngpu 0 "GPUs for training (0: CPU)"
opt device cpu "device for tokenization and generation: cpu or cuda"
opt num_threads 2 "torch threads"
opt train_set train "training data set name (under data/)"
opt valid_set dev "validation data set name"
opt test_sets "test" "space-separated sets to generate and evaluate"
opt local_data_opts "" "options passed to local/data.sh"
opt acoustic_tokenizer "" "saved acoustic tokenizer dir (empty: fit mel-RVQ into exp/tokenizer_<tokenizer_tag>)"
opt tokenizer_opts "--num_codebooks 4 --codebook_size 512" "options for python -m audio_gen.bin.fit_tokenizer"
opt tokenizer_tag mel_rvq "name of the fitted tokenizer"
opt t5_dir "" "local Hugging Face T5 directory for caption tokens (with model_conf.text_encoder: t5)"
opt magnet_config conf/train_magnet.yaml "MAGNeT training config"
opt ar_config conf/train_ar.yaml "AR baseline training config"
opt magnet_args "" "extra options for MAGNeT training (python -m audio_gen.bin.train)"
opt ar_args "" "extra options for AR training"
opt methods "magnet magnet_rescore hybrid ar" "generation methods of stage 6 (magnet, magnet_rescore, hybrid, ar)"
opt gen_opts "" "extra options for python -m audio_gen.bin.generate (e.g. --max_utts 50 --seconds 5)"
opt batch_size 16 "generation batch size"
opt classifier_opts "" "options for python -m audio_gen.evaluate fit (e.g. --epochs 40)"
opt eval_fields "" "fields scored for caption adherence (default: all the classifier predicts)"
opt eval_seconds "" "judge the first seconds of every clip (real and generated alike; default: whole clips)"
opt dumpdir dump "directory for tokens"
opt expdir exp "directory for experiments"
parse_opts "$@"
require_opts

if [ -f path.sh ]; then . ./path.sh; fi
export OMP_NUM_THREADS=${num_threads}

codes_dir=${dumpdir}/codes
cap_dir=${dumpdir}/captions
magnet_exp=${expdir}/magnet_$(basename "${magnet_config}" .yaml)
ar_exp=${expdir}/ar_$(basename "${ar_config}" .yaml)
clf_dir=${expdir}/classifier
tok_dir=${acoustic_tokenizer:-${expdir}/tokenizer_${tokenizer_tag}}
run_command="$0$(printf " %q" "$@")"
all_sets=$(echo "${train_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
  # shellcheck disable=SC2086
  local/data.sh --nj "${nj}" ${local_data_opts}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  if [ -z "${acoustic_tokenizer}" ]; then
    log "Stage 2: fitting the acoustic tokenizer on data/${train_set} into ${tok_dir}"
    # shellcheck disable=SC2086
    python -m audio_gen.bin.fit_tokenizer --data_dir "data/${train_set}" --out_dir "${tok_dir}" ${tokenizer_opts}
  fi
  log "Stage 2: acoustic codes of ${all_sets}into ${codes_dir}/<set>"
  _in=(); _out=()
  for dset in ${all_sets}; do _in+=("data/${dset}"); _out+=("${codes_dir}/${dset}"); done
  python -m audio_gen.bin.tokenize --tokenizer "${tok_dir}" --data_dir "${_in[@]}" --out_dir "${_out[@]}" \
    --device "${device}"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: caption tokens of ${all_sets}into ${cap_dir}/<set>"
  _in=(); _out=()
  for dset in ${all_sets}; do _in+=("data/${dset}"); _out+=("${cap_dir}/${dset}"); done
  if [ -n "${t5_dir}" ]; then
    python -m audio_gen.bin.caption_tokens --t5_dir "${t5_dir}" --data_dir "${_in[@]}" --out_dir "${_out[@]}"
  else
    python -m audio_gen.bin.caption_tokens --train_dir "data/${train_set}" --token_list "${cap_dir}/tokens.txt" \
      --data_dir "${_in[@]}" --out_dir "${_out[@]}"
  fi
fi

train_opts=(--ngpu "${ngpu}" --resume true --num_workers 0 --use_matplotlib false --use_tensorboard false)
[ -z "${t5_dir}" ] && train_opts+=(--token_list "${cap_dir}/tokens.txt")

train_model() {  # <model> <config> <exp> <extra args>
  local model=$1 config=$2 exp=$3 extra=$4
  mkdir -p "${exp}"
  # shellcheck disable=SC2086
  python -m audio_gen.bin.train --model "${model}" --config "${config}" --acoustic_tokenizer "${tok_dir}" \
    "${train_opts[@]}" \
    --train_data_path_and_name_and_type "${codes_dir}/${train_set}/codes.scp,codes,npy" \
    --train_data_path_and_name_and_type "${cap_dir}/${train_set}/text_int,text,text_int" \
    --valid_data_path_and_name_and_type "${codes_dir}/${valid_set}/codes.scp,codes,npy" \
    --valid_data_path_and_name_and_type "${cap_dir}/${valid_set}/text_int,text,text_int" \
    --train_shape_file "${codes_dir}/${train_set}/codes_shape" --valid_shape_file "${codes_dir}/${valid_set}/codes_shape" \
    --output_dir "${exp}" ${extra} >> "${exp}/train.log" 2>&1 \
    || { log "${model} training failed; see ${exp}/train.log"; tail -n 30 "${exp}/train.log"; exit 1; }
}

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: MAGNeT training (${magnet_config}) into ${magnet_exp} (log, appended on resume: ${magnet_exp}/train.log)"
  train_model magnet "${magnet_config}" "${magnet_exp}" "${magnet_args}"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: AR baseline training (${ar_config}) into ${ar_exp} (log, appended on resume: ${ar_exp}/train.log)"
  train_model ar "${ar_config}" "${ar_exp}" "${ar_args}"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  for dset in ${test_sets}; do
    for method in ${methods}; do
      log "Stage 6: ${method} on the captions of ${dset} into ${expdir}/generate/${method}/${dset}"
      _ar=()
      [ "${method}" != magnet ] && _ar=(--ar_dir "${ar_exp}")
      # shellcheck disable=SC2086
      python -m audio_gen.bin.generate --model_dir "${magnet_exp}" "${_ar[@]}" --method "${method}" \
        --data_dir "data/${dset}" --out_dir "${expdir}/generate/${method}/${dset}" --batch_size "${batch_size}" \
        --device "${device}" ${gen_opts}
    done
    log "Stage 6: codec round trip of the real ${dset} renders into ${expdir}/generate/resynth/${dset}"
    # shellcheck disable=SC2086
    python -m audio_gen.bin.generate --resynth --acoustic_tokenizer "${tok_dir}" --data_dir "data/${dset}" \
      --out_dir "${expdir}/generate/resynth/${dset}" ${gen_opts}
  done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  log "Stage 7: field classifier on the real renders of data/${train_set} into ${clf_dir}"
  # shellcheck disable=SC2086
  python -m audio_gen.evaluate fit --train_dir "data/${train_set}" --valid_dir "data/${valid_set}" \
    --out_dir "${clf_dir}" ${classifier_opts}
  _eval=()
  [ -n "${eval_fields}" ] && _eval+=(--field_names "${eval_fields}")
  [ -n "${eval_seconds}" ] && _eval+=(--max_seconds "${eval_seconds}")
  for dset in ${test_sets}; do
    results=(); names=()
    for sys in real resynth ${methods}; do
      if [ "${sys}" = real ]; then
        # the real renders of the captions that were generated
        wavs=${expdir}/generate/real/${dset}; mkdir -p "${wavs}"
        awk 'NR==FNR {keep[$1]=1; next} ($1 in keep)' "${expdir}/generate/resynth/${dset}/wav.scp" \
          "data/${dset}/wav.scp" > "${wavs}/wav.scp"
      else
        wavs=${expdir}/generate/${sys}/${dset}
      fi
      log "Stage 7: scoring ${sys} on ${dset}"
      python -m audio_gen.evaluate score --classifier "${clf_dir}" --wav_scp "${wavs}/wav.scp" \
        --fields "data/${dset}/fields.jsonl" --reference_wav_scp "data/${dset}/wav.scp" --name "${sys}" \
        "${_eval[@]}" --out_dir "${expdir}/eval/${dset}/${sys}"
      results+=("${expdir}/eval/${dset}/${sys}/result.json"); names+=("${sys}")
    done
    _names=$(IFS=,; echo "${names[*]}")
    _rel=real
    [[ " ${methods} " == *" ar "* ]] && _rel=ar
    python -m audio_gen.evaluate table --results "${results[@]}" --names "${_names}" --relative_to "${_rel}" \
      --out "${expdir}/eval/${dset}/table.md"
    {
      echo "## Text-to-audio on ${dset}"
      echo
      echo "Command: \`${run_command}\`"
      echo
      cat "${expdir}/eval/${dset}/table.md"
      for method in ${methods}; do
        t=${expdir}/generate/${method}/${dset}/timing.json
        [ -f "${t}" ] && echo "- ${method} generation: $(python -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['items']} clips, {d['seconds']} s, RTF {d['rtf']} at batch {d['batch_size']}\")" "${t}")"
      done
      echo
    } >> RESULTS.md
    log "Stage 7: table appended to RESULTS.md"
  done
fi
log "Done."
