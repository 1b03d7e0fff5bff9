#!/usr/bin/env bash
# nar-speech zero-shot TTS recipe template (MaskGCT; ESPnet egs2 shape; conventions of
# recipes/asr.sh). A corpus's run.sh sets options and calls it.
#
# Usage:
#   ./run.sh                                   # every stage with the corpus's defaults
#   ./run.sh --stage 5 --stop_stage 5          # train T2S only
#   ./run.sh --stage 7 --synth_opts "--max_utts 20"   # synthesise and score a subset
#   ./run.sh --help                            # every option with its current value
#
# Stages:
#   1 data preparation (local/data.sh)          2 format/dump: validate, absolute paths, durations
#   3 phonemes (espeak-ng IPA + word boundaries) and the phone token list
#   4 audio tokens: semantic tokens and acoustic codes of every set, with the tokenizers of the
#     codec recipe (--semantic_tokenizer, --acoustic_tokenizer)
#   5 train T2S (ESPnet trainer) and fit the duration model
#   6 train S2A (ESPnet trainer)
#   7 synthesise the evaluation sets (each sentence in the voice of another utterance of its
#     speaker), and the codec resynthesis of the ground truth as the reference
#   8 evaluate ground truth, resynthesis and MaskGCT (WER by pocketsphinx and by our ASR,
#     DistillMOS, speaker similarity to the prompt) and append the table to RESULTS.md
# Training resumes after a kill (ESPnet --resume); tokens and synthesis skip finished utterances.
#
# The ASR model of the judge asr (stage 8): --asr_model_dir DIR, or else the directory named in
# the file --asr_model_record (one line, written by recipes/asr.sh after training:
# <asr expdir>/asr_model_dir). When stage 8 is in the stage range with the judge asr and neither
# gives a trained model directory, the script stops before its first stage with an error naming
# the record and --asr_model_hint (the command that trains the model). --asr_model_dir none
# drops the judge asr, saying so.
set -euo pipefail
recipe_utils="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/utils"
. "${recipe_utils}/options.sh"
. "${recipe_utils}/asr_model.sh"
. "${recipe_utils}/data_stages.sh"

usage_text "Usage: $0 [options]   (see the header of recipes/tts.sh)"
opt stage 1 "first stage to run"
opt stop_stage 100 "last stage to run"
opt nj 2 "parallel jobs for data preparation and phonemisation"
opt ngpu 0 "GPUs for training (0: CPU)"
opt device cpu "device for tokenization and synthesis: cpu or cuda"
opt num_threads 2 "torch threads"
opt train_set train "training data set name (under data/)"
opt valid_set dev "validation data set name"
opt test_sets "test" "space-separated sets to synthesise and evaluate"
opt local_data_opts "" "options passed to local/data.sh"
opt language en-us "espeak-ng voice for phonemes"
opt semantic_tokenizer "" "saved semantic tokenizer dir (the codec recipe's exp/semantic_<tag>)"
opt acoustic_tokenizer "" "saved acoustic tokenizer dir (the codec recipe's exp/tokenizer_<tag>)"
opt t2s_config conf/train_t2s.yaml "T2S training config"
opt s2a_config conf/train_s2a.yaml "S2A training config"
opt t2s_args "" "extra options for T2S training (python -m tts.bin.train)"
opt s2a_args "" "extra options for S2A training"
opt t2s_tag "" "T2S experiment name: exp/t2s_<tag> (default: the config name)"
opt s2a_tag "" "S2A experiment name: exp/s2a_<tag> (default: the config name)"
opt duration rule "target length at synthesis: rule (prompt speaking rate) or model (trained per-phone model)"
opt synth_opts "" "extra options for python -m tts.bin.synthesize (e.g. --max_utts 100)"
opt decode_opts "" "MaskGCT decoding options of stage 7 (python -m tts.bin.synthesize --t2s_*/--s2a_*: steps, temperature, cfg_scale)"
opt batch_size 16 "synthesis batch size"
opt synth_tag "" "name of the synthesis run under exp/synth (default maskgct_<duration>; give another when synth_opts or decode_opts change, since synthesis resumes)"
opt asr_model_dir "" "trained ASR model dir (our ASR for the WER of stage 8; empty: the one --asr_model_record names; none: no judge asr)"
opt asr_model_record "" "file naming the trained ASR model dir (written by recipes/asr.sh: <asr expdir>/asr_model_dir), read when --asr_model_dir is empty"
opt asr_model_hint "" "the command that trains the ASR model and writes --asr_model_record (for the error when it is missing)"
opt judges "pocketsphinx,asr,distillmos,sim" "stage 8 judges (python -m tts.evaluate)"
opt dumpdir dump "directory for formatted data and tokens"
opt expdir exp "directory for experiments"
parse_opts "$@"
require_opts

if [ -f path.sh ]; then . ./path.sh; fi
export OMP_NUM_THREADS=${num_threads}

data_feats=${dumpdir}/raw
phones_dir=${dumpdir}/phones
sem_dir=${dumpdir}/semantic
codes_dir=${dumpdir}/codes
t2s_exp=${expdir}/t2s_${t2s_tag:-$(basename "${t2s_config}" .yaml)}
s2a_exp=${expdir}/s2a_${s2a_tag:-$(basename "${s2a_config}" .yaml)}
dur_dir=${expdir}/duration
synth_name="MaskGCT (${synth_tag:-${duration}})"  # its row in the results table
[ -n "${synth_tag}" ] || synth_tag="maskgct_${duration}"
run_command="$0$(printf " %q" "$@")"
all_sets=$(echo "${train_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')

# stage 8's judges; checked before any stage runs: a missing model stops the run at once
eval_judges=${judges}
if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ] && [[ ",${judges}," == *,asr,* ]]; then
  if [ "${asr_model_dir}" = none ]; then
    eval_judges=$(echo "${judges}" | tr ',' '\n' | { grep -vx asr || true; } | paste -sd, -)
    log "Stage 8: without the judge asr (--asr_model_dir none): ${eval_judges}"
    [ -n "${eval_judges}" ] || { log "Error: no stage 8 judge left (--judges ${judges})" >&2; exit 1; }
  else
    resolve_asr_model "the judge asr of stage 8" "--asr_model_dir none drops the judge asr"
  fi
fi

need_tokenizers() {
  if [ -z "${semantic_tokenizer}" ] || [ ! -f "${semantic_tokenizer}/semantic.json" ]; then
    log "Error: --semantic_tokenizer '${semantic_tokenizer}' is not a saved semantic tokenizer (run the codec recipe first)"; exit 1
  fi
  if [ -z "${acoustic_tokenizer}" ] || [ ! -f "${acoustic_tokenizer}/tokenizer.json" ]; then
    log "Error: --acoustic_tokenizer '${acoustic_tokenizer}' is not a saved acoustic tokenizer (run the codec recipe first)"; exit 1
  fi
}

run_data_stages

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: phonemes (espeak-ng ${language}) into ${phones_dir}/<set>, token list ${phones_dir}/tokens.txt"
  # The training set builds the token list; the other sets read it.
  for dset in ${all_sets}; do
    python -m tts.bin.phonemize --text "${data_feats}/${dset}/text" --out_dir "${phones_dir}/${dset}" \
      --token_list "${phones_dir}/tokens.txt" --language "${language}" --jobs "${nj}"
  done
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  need_tokenizers
  log "Stage 4: semantic tokens (${semantic_tokenizer}) and acoustic codes (${acoustic_tokenizer}) of ${all_sets}"
  _in=(); _sem=(); _codes=()
  for dset in ${all_sets}; do _in+=("${data_feats}/${dset}"); _sem+=("${sem_dir}/${dset}"); _codes+=("${codes_dir}/${dset}"); done
  python -m tts.bin.semantic_tokens encode --tokenizer "${semantic_tokenizer}" --data_dir "${_in[@]}" \
    --out_dir "${_sem[@]}" --device "${device}"
  python -m audio_gen.bin.tokenize --tokenizer "${acoustic_tokenizer}" --data_dir "${_in[@]}" \
    --out_dir "${_codes[@]}" --device "${device}"
fi

train_opts=(--ngpu "${ngpu}" --resume true --num_workers 0 --use_matplotlib false --use_tensorboard false)

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  need_tokenizers
  log "Stage 5: T2S training (${t2s_config}) into ${t2s_exp} (log, appended on resume: ${t2s_exp}/train.log)"
  mkdir -p "${t2s_exp}"
  # shellcheck disable=SC2086
  python -m tts.bin.train --model t2s --config "${t2s_config}" --token_list "${phones_dir}/tokens.txt" \
    --semantic_tokenizer "${semantic_tokenizer}" "${train_opts[@]}" \
    --train_data_path_and_name_and_type "${phones_dir}/${train_set}/phones_int,phones,text_int" \
    --train_data_path_and_name_and_type "${sem_dir}/${train_set}/semantic.scp,semantic,npy" \
    --valid_data_path_and_name_and_type "${phones_dir}/${valid_set}/phones_int,phones,text_int" \
    --valid_data_path_and_name_and_type "${sem_dir}/${valid_set}/semantic.scp,semantic,npy" \
    --train_shape_file "${phones_dir}/${train_set}/phones_shape" --train_shape_file "${sem_dir}/${train_set}/semantic_shape" \
    --valid_shape_file "${phones_dir}/${valid_set}/phones_shape" --valid_shape_file "${sem_dir}/${valid_set}/semantic_shape" \
    --output_dir "${t2s_exp}" ${t2s_args} >> "${t2s_exp}/train.log" 2>&1 \
    || { log "T2S training failed; see ${t2s_exp}/train.log"; tail -n 30 "${t2s_exp}/train.log"; exit 1; }
  log "Stage 5: duration model (per-phone weights, per-speaker rates) into ${dur_dir}"
  python -m tts.bin.fit_duration --phones "${phones_dir}/${train_set}/phones" \
    --shape "${sem_dir}/${train_set}/semantic_shape" --utt2spk "${data_feats}/${train_set}/utt2spk" \
    --dev_phones "${phones_dir}/${valid_set}/phones" --dev_shape "${sem_dir}/${valid_set}/semantic_shape" \
    --dev_utt2spk "${data_feats}/${valid_set}/utt2spk" --out "${dur_dir}/duration.json"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  need_tokenizers
  log "Stage 6: S2A training (${s2a_config}) into ${s2a_exp} (log, appended on resume: ${s2a_exp}/train.log)"
  mkdir -p "${s2a_exp}"
  # shellcheck disable=SC2086
  python -m tts.bin.train --model s2a --config "${s2a_config}" \
    --semantic_tokenizer "${semantic_tokenizer}" --acoustic_tokenizer "${acoustic_tokenizer}" "${train_opts[@]}" \
    --train_data_path_and_name_and_type "${sem_dir}/${train_set}/semantic.scp,semantic,npy" \
    --train_data_path_and_name_and_type "${codes_dir}/${train_set}/codes.scp,codes,npy" \
    --valid_data_path_and_name_and_type "${sem_dir}/${valid_set}/semantic.scp,semantic,npy" \
    --valid_data_path_and_name_and_type "${codes_dir}/${valid_set}/codes.scp,codes,npy" \
    --train_shape_file "${sem_dir}/${train_set}/semantic_shape" --train_shape_file "${codes_dir}/${train_set}/codes_shape" \
    --valid_shape_file "${sem_dir}/${valid_set}/semantic_shape" --valid_shape_file "${codes_dir}/${valid_set}/codes_shape" \
    --output_dir "${s2a_exp}" ${s2a_args} >> "${s2a_exp}/train.log" 2>&1 \
    || { log "S2A training failed; see ${s2a_exp}/train.log"; tail -n 30 "${s2a_exp}/train.log"; exit 1; }
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  _dur=()
  [ "${duration}" = model ] && _dur=(--duration model --duration_model "${dur_dir}/duration.json")
  for dset in ${test_sets}; do
    log "Stage 7: synthesising ${dset} into ${expdir}/synth/${synth_tag}/${dset} (duration: ${duration})"
    # shellcheck disable=SC2086
    python -m tts.bin.synthesize --t2s_dir "${t2s_exp}" --s2a_dir "${s2a_exp}" --data_dir "${data_feats}/${dset}" \
      --out_dir "${expdir}/synth/${synth_tag}/${dset}" --batch_size "${batch_size}" --device "${device}" \
      "${_dur[@]}" ${synth_opts} ${decode_opts}
    log "Stage 7: codec resynthesis of ${dset} (the reference) into ${expdir}/synth/resynth/${dset}"
    # shellcheck disable=SC2086
    python -m tts.bin.synthesize --resynth --acoustic_tokenizer "${acoustic_tokenizer}" --data_dir "${data_feats}/${dset}" \
      --out_dir "${expdir}/synth/resynth/${dset}" --batch_size "${batch_size}" ${synth_opts}
  done
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
  _asr=()
  case ",${eval_judges}," in *,asr,*) _asr=(--asr_model_dir "${asr_model_dir}") ;; esac
  _judges=${eval_judges}
  for dset in ${test_sets}; do
    synth=${expdir}/synth/${synth_tag}/${dset}
    results=()
    for sys in ground_truth resynth "${synth_tag}"; do
      case ${sys} in
        ground_truth) scp=${synth}/prompt.scp; wavs=${expdir}/synth/ground_truth/${dset}
          # the ground truth of the synthesised sentences (same utterance ids and prompts)
          mkdir -p "${wavs}"
          awk 'NR==FNR {keep[$1]=1; next} ($1 in keep)' "${synth}/wav.scp" "${data_feats}/${dset}/wav.scp" > "${wavs}/wav.scp" ;;
        resynth) wavs=${expdir}/synth/resynth/${dset} ;;
        *) wavs=${synth} ;;
      esac
      log "Stage 8: scoring ${sys} on ${dset} (${_judges})"
      python -m tts.evaluate --wav_scp "${wavs}/wav.scp" --text "${synth}/text" --prompt_scp "${synth}/prompt.scp" \
        --judges "${_judges}" "${_asr[@]}" --out_dir "${expdir}/eval/${dset}/${sys}"
      results+=("${expdir}/eval/${dset}/${sys}/result.json")
    done
    python -m tts.evaluate table --results "${results[@]}" --names "ground truth,codec resynthesis,${synth_name}" \
      --out "${expdir}/eval/${dset}/table.md"
    {
      echo "## MaskGCT on ${dset}"
      echo
      echo "Command: \`${run_command}\`"
      echo
      cat "${expdir}/eval/${dset}/table.md"
      echo
    } >> RESULTS.md
  done
fi
log "Done."
