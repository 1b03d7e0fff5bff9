#!/usr/bin/env bash
# nar-speech ASR recipe template (ESPnet egs2 shape). A corpus's run.sh sets options and calls it.
#
# Usage:
#   ./run.sh                                   # every stage with the corpus's defaults
#   ./run.sh --stage 5 --stop_stage 7          # train, decode and score only
#   ./run.sh --asr_config conf/train_ctc_large.yaml --token_type bpe --nbpe 300
#   ./run.sh --help                            # every option with its current value
#
# Stages:
#   1 data preparation (local/data.sh)      2 format/dump: validate, absolute paths, durations
#   3 token list (char or BPE); with --use_ngram true also a token n-gram LM (asr.bin.train_ngram)
#     and, for char models, a word n-gram LM (--word_ngram_order) for ngram_unit: word decoding
#   4 statistics collection (shapes, feats mean/var)
#   5 training (python -m asr.bin.train)   6 decoding of every test set and decode config
#     (--inference_nj N: N jobs through --cmd_backend local|slurm, gathered; reruns redo failed jobs)
#   7 scoring (WER/CER) and RESULTS.md
#
# Hand-off to the recipes that use the ASR model (recipes/codec.sh: semantic tokens and WER;
# recipes/tts.sh: WER judge): after a successful training (stage 5) of a CTC model (`model: ctc`
# in the trained config.yaml; --record_model true/false decides for any model), this script
# writes the absolute path of the model directory, one line, into ${expdir}/asr_model_dir and logs
# it. Those recipes read that file (their --asr_model_record) unless given --asr_model_dir, and
# stop with an error when it is missing. Rerunning stage 5 of a finished model rewrites it (the
# training resumes at its end); the last CTC model trained is the one recorded.
set -euo pipefail
recipe_utils="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/utils"
. "${recipe_utils}/options.sh"

usage_text "Usage: $0 [options]   (see the header of recipes/asr.sh)"
opt stage 1 "first stage to run"
opt stop_stage 100 "last stage to run"
opt nj 2 "parallel jobs for data preparation"
opt ngpu 0 "GPUs for training per node (0: CPU; > 1: ESPnet's multiprocessing DDP, one process per GPU)"
opt num_nodes 1 "nodes for training (> 1: one srun task per node inside a Slurm allocation, ESPnet's --dist_launcher slurm; needs --ngpu >= 1 and a shared exp/)"
opt srun_opts "" "extra srun options for --num_nodes > 1"
opt train_procs 1 "CPU training processes (--ngpu 0): > 1 runs torch DDP over gloo through torchrun"
opt decode_device cpu "device for decoding: cpu or cuda"
opt num_threads 2 "torch threads for training and decoding"
opt num_workers 0 "data loader workers for statistics and training (0 is fastest on 2 cores)"
opt train_set train "training data set name (under data/)"
opt valid_set dev "validation data set name"
opt test_sets "dev test" "space-separated evaluation sets"
opt local_data_opts "" "options passed to local/data.sh"
opt min_wav_duration 0.1 "drop training and validation utterances shorter than this (seconds; as ESPnet)"
opt max_wav_duration 20 "drop training and validation utterances longer than this (seconds; as ESPnet)"
opt token_type char "char or bpe"
opt nbpe 300 "BPE vocabulary size (token_type bpe)"
opt bpemode unigram "sentencepiece model type: unigram or bpe"
opt use_ngram false "stage 3 also trains a token n-gram LM; stage 6 gives it to decode configs that set ngram_weight"
opt ngram_order 8 "order of that n-gram LM"
opt word_ngram_order 3 "with --use_ngram true and a char model, stage 3 also trains a word n-gram LM of this order (0: none) for decode configs with ngram_unit: word"
opt lm_train_text "" "plain text (one sentence per line) for the n-gram LM (default: the training transcripts)"
opt asr_config "" "training config (YAML)" required
opt asr_tag "" "experiment name (default: from the config name and token type)"
opt asr_args "" "extra options for python -m asr.bin.train"
opt init_param "" "space-separated ESPnet --init_param entries (file:src_key:dst_key), e.g. exp/asr_train_ctc_char/valid.loss.ave.pth:encoder:encoder"
opt feats_normalize global_mvn "global_mvn (needs the stats stage) or utterance_mvn"
opt inference_configs "conf/decode_greedy.yaml" "space-separated decode configs"
opt inference_batch_size 16 "utterances per decoding batch"
opt inference_nj 1 "stage 6 as this many jobs, each a part of every set (speakers kept whole), gathered and then scored; a rerun redoes only failed jobs"
opt cmd_backend local "how the jobs of --inference_nj run: local (processes on this machine) or slurm (one sbatch --array)"
opt slurm_opts "" "extra sbatch options for --cmd_backend slurm, e.g. '-p gpu --gres=gpu:1 --mem=16G --time=4:00:00'"
opt inference_model "" "checkpoint in the experiment dir to decode with, e.g. dev_unseen.wer.ave.pth of asr.bin.select_checkpoints (default: asr.inference's choice, valid.loss.ave.pth first); decode dirs get its name as a suffix"
opt record_model auto "after training, write the model dir into <expdir>/asr_model_dir for the codec and tts recipes: auto (CTC models only), true or false"
opt results_title "" "section of RESULTS.md to write (default: the experiment tag)"
opt dumpdir dump "directory for formatted data"
opt expdir exp "directory for experiments"
parse_opts "$@"
require_opts

if [ -f path.sh ]; then . ./path.sh; fi
export OMP_NUM_THREADS=${num_threads}

data_feats=${dumpdir}/raw
token_listdir=data/token_list/${token_type}
if [ "${token_type}" = bpe ]; then token_listdir=data/token_list/bpe_${bpemode}${nbpe}; fi
token_list=${token_listdir}/tokens.txt
bpemodel=none
if [ "${token_type}" = bpe ]; then bpemodel=${token_listdir}/bpe.model; fi
case "${token_type}" in char|bpe) ;; *) log "--token_type must be char or bpe, got '${token_type}'"; exit 2 ;; esac
if [ -z "${asr_tag}" ]; then
  asr_tag="$(basename "${asr_config}" .yaml)_${token_type}"
  [ "${token_type}" = bpe ] && asr_tag+="${nbpe}"
fi
asr_exp=${expdir}/asr_${asr_tag}
asr_stats_dir=${expdir}/asr_stats_${token_type}
[ "${token_type}" = bpe ] && asr_stats_dir+="${nbpe}"
ngram_file=${expdir}/ngram_${token_type}
[ "${token_type}" = bpe ] && ngram_file+="${nbpe}"
ngram_file+=/${ngram_order}gram.arpa
word_ngram_file=${expdir}/ngram_word/${word_ngram_order}gram.arpa
case "${use_ngram}" in true|false) ;; *) log "--use_ngram must be true or false, got '${use_ngram}'"; exit 2 ;; esac
case "${record_model}" in auto|true|false) ;; *) log "--record_model must be auto, true or false, got '${record_model}'"; exit 2 ;; esac
for _n in num_nodes train_procs ngpu; do
  case "${!_n}" in ''|*[!0-9]*) log "--${_n} must be a non-negative integer, got '${!_n}'"; exit 2 ;; esac
done
case "${cmd_backend}" in local|slurm) ;; *) log "--cmd_backend must be local or slurm, got '${cmd_backend}'"; exit 2 ;; esac
case "${inference_nj}" in ''|*[!0-9]*) log "--inference_nj must be a positive integer, got '${inference_nj}'"; exit 2 ;; esac
asr_model_record=${expdir}/asr_model_dir
inference_suffix=""
[ -n "${inference_model}" ] && inference_suffix=_$(basename "${inference_model}" .pth)
# The command line that reproduces this run, for RESULTS.md.
run_command="$0$(printf " %q" "$@")"

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
  # shellcheck disable=SC2086
  local/data.sh --nj "${nj}" ${local_data_opts}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: format data dirs into ${data_feats}"
  # format_data skips a set whose stamp (${data_feats}/<set>/.done) matches its inputs (data dir
  # files, audio files, options) and says why it reruns otherwise; fast when nothing changed.
  # Each set once, the first time it is named: the training set keeps its duration filter even
  # when it is also an evaluation set.
  _seen=" "
  for dset in ${train_set} ${valid_set} ${test_sets}; do
    case "${_seen}" in *" ${dset} "*) continue ;; esac
    _seen+="${dset} "
    _opts=""
    # as ESPnet's asr.sh: the training and validation sets are filtered by duration (a too-short
    # utterance would stop validation); test sets are kept whole (stage 6 skips, and names, an
    # utterance too short for the model)
    if [ "${dset}" = "${train_set}" ] || [ "${dset}" = "${valid_set}" ]; then
      _opts="--min_duration ${min_wav_duration} --max_duration ${max_wav_duration}"
    fi
    # shellcheck disable=SC2086
    python -m asr.bin.format_data --src "data/${dset}" --dst "${data_feats}/${dset}" ${_opts}
  done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: token list (${token_type}) in ${token_listdir}"
  mkdir -p "${token_listdir}"
  if [ "${token_type}" = bpe ]; then
    cut -f 2- -d " " "${data_feats}/${train_set}/text" > "${token_listdir}/train.txt"
    python -m asr.bin.train_bpe --input "${token_listdir}/train.txt" --vocab_size "${nbpe}" \
      --model_type "${bpemode}" --model_prefix "${token_listdir}/bpe"
  fi
  python -m espnet2.bin.tokenize_text --token_type "${token_type}" --bpemodel "${bpemodel}" \
    --input "${data_feats}/${train_set}/text" --output "${token_list}" --field 2- \
    --cleaner none --g2p none --write_vocabulary true \
    --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'
  if [ "${use_ngram}" = true ]; then
    _lm_text=(--kaldi_text "${data_feats}/${train_set}/text")
    if [ -n "${lm_train_text}" ]; then
      [ -f "${lm_train_text}" ] || { log "--lm_train_text ${lm_train_text} does not exist"; exit 1; }
      _lm_text=(--text "${lm_train_text}")
    fi
    log "Stage 3: ${ngram_order}-gram LM over the ${token_type} tokens into ${ngram_file}"
    python -m asr.bin.train_ngram --token_list "${token_list}" --token_type "${token_type}" \
      --bpemodel "${bpemodel}" "${_lm_text[@]}" --dev_kaldi_text "${data_feats}/${valid_set}/text" \
      --order "${ngram_order}" --output "${ngram_file}"
    if [ "${token_type}" = char ] && [ "${word_ngram_order}" -gt 0 ]; then
      log "Stage 3: word ${word_ngram_order}-gram LM (lexicon: its words) into ${word_ngram_file}"
      python -m asr.bin.train_ngram --token_type word "${_lm_text[@]}" \
        --dev_kaldi_text "${data_feats}/${valid_set}/text" --order "${word_ngram_order}" --output "${word_ngram_file}"
    fi
  fi
fi

train_data_opts=(
  --token_type "${token_type}" --token_list "${token_list}" --bpemodel "${bpemodel}"
  --non_linguistic_symbols none --cleaner none --g2p none
  --train_data_path_and_name_and_type "${data_feats}/${train_set}/wav.scp,speech,sound"
  --train_data_path_and_name_and_type "${data_feats}/${train_set}/text,text,text"
  --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/wav.scp,speech,sound"
  --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/text,text,text"
  --frontend_conf fs=16k --num_workers "${num_workers}" --use_matplotlib false --use_tensorboard false
)

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  log "Stage 4: statistics collection into ${asr_stats_dir}"
  mkdir -p "${asr_stats_dir}"
  python -m asr.bin.train --collect_stats true --config "${asr_config}" "${train_data_opts[@]}" \
    --train_shape_file "${data_feats}/${train_set}/wav.scp" \
    --valid_shape_file "${data_feats}/${valid_set}/wav.scp" \
    --output_dir "${asr_stats_dir}" --ngpu 0 > "${asr_stats_dir}/collect_stats.log" 2>&1 \
    || { log "statistics collection failed; see ${asr_stats_dir}/collect_stats.log"; tail -n 20 "${asr_stats_dir}/collect_stats.log"; exit 1; }
  ntok=$(wc -l < "${token_list}")
  for s in train valid; do
    awk -v N="${ntok}" '{ print $0 "," N }' "${asr_stats_dir}/${s}/text_shape" \
      > "${asr_stats_dir}/${s}/text_shape.${token_type}"
  done
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  log "Stage 5: training ${asr_exp} (log, appended on resume: ${asr_exp}/train.log)"
  mkdir -p "${asr_exp}"
  _norm=(--normalize "${feats_normalize}")
  if [ "${feats_normalize}" = global_mvn ]; then
    _norm+=(--normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz")
  fi
  _init=()
  if [ -n "${init_param}" ]; then
    for _p in ${init_param}; do
      [ -f "${_p%%:*}" ] || { log "--init_param: ${_p%%:*} does not exist (train that model first)"; exit 1; }
    done
    # shellcheck disable=SC2206
    _init=(--init_param ${init_param})
  fi
  # the launcher: one process; ESPnet's own multi-GPU spawn; srun across nodes; torchrun for CPU DDP
  _launch=(python -m asr.bin.train); _dist=()
  if [ "${num_nodes}" -gt 1 ]; then
    [ "${ngpu}" -ge 1 ] || { log "--num_nodes ${num_nodes} needs --ngpu >= 1 (GPUs per node)"; exit 2; }
    # shellcheck disable=SC2206
    _launch=(srun --nodes "${num_nodes}" --ntasks-per-node 1 ${srun_opts} python -m asr.bin.train)
    _dist=(--dist_launcher slurm --multiprocessing_distributed true
           --dist_init_method "file://$(cd "${asr_exp}" && pwd)/.dist_init_$$")
  elif [ "${ngpu}" -gt 1 ]; then
    _dist=(--multiprocessing_distributed true)
  elif [ "${ngpu}" -eq 0 ] && [ "${train_procs}" -gt 1 ]; then
    _launch=(torchrun --standalone --nproc_per_node "${train_procs}" -m asr.bin.train)
    _dist=(--multiprocessing_distributed false --dist_backend gloo)
  fi
  log "Stage 5: launcher: ${_launch[*]} ${_dist[*]}"
  # shellcheck disable=SC2086
  "${_launch[@]}" "${_dist[@]}" --config "${asr_config}" "${train_data_opts[@]}" "${_norm[@]}" "${_init[@]}" \
    --train_shape_file "${asr_stats_dir}/train/speech_shape" \
    --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}" \
    --valid_shape_file "${asr_stats_dir}/valid/speech_shape" \
    --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}" \
    --resume true --output_dir "${asr_exp}" --ngpu "${ngpu}" ${asr_args} \
    >> "${asr_exp}/train.log" 2>&1 \
    || { log "training failed; see ${asr_exp}/train.log"; tail -n 30 "${asr_exp}/train.log"; exit 1; }
  if [ "${feats_normalize}" = global_mvn ]; then
    # beside the checkpoint, so the model directory is self-contained for inference
    cp "${asr_stats_dir}/train/feats_stats.npz" "${asr_exp}/feats_stats.npz"
  fi
  grep -E "[0-9]+epoch results" "${asr_exp}/train.log" | tail -n 3 || true
  _record=${record_model}
  if [ "${_record}" = auto ]; then
    # the model type the trainer wrote (ESPnet fills in the default); the config's before that
    _cfg=${asr_exp}/config.yaml
    [ -f "${_cfg}" ] || _cfg=${asr_config}
    _record=false
    if [ "$(awk '$1 == "model:" { print $2; exit }' "${_cfg}")" = ctc ]; then _record=true; fi
  fi
  if [ "${_record}" = true ]; then
    _dir=$(cd "${asr_exp}" && pwd)
    printf '%s\n' "${_dir}" > "${asr_model_record}.tmp"
    mv "${asr_model_record}.tmp" "${asr_model_record}"
    log "Stage 5: recorded ${_dir} in ${asr_model_record} (the ASR model of the codec and tts recipes)"
  fi
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  _conf=(); _in=(); _out=()
  for inference_config in ${inference_configs}; do
    inference_tag=$(basename "${inference_config}" .yaml); inference_tag=decode_${inference_tag#decode_}${inference_suffix}
    for dset in ${test_sets}; do
      _conf+=("${inference_config}"); _in+=("${data_feats}/${dset}"); _out+=("${asr_exp}/${inference_tag}/${dset}")
    done
  done
  log "Stage 6: decoding ${test_sets} with ${inference_configs} into ${asr_exp}/decode_<config>/<set>"
  # one process for every set and decode config: ESPnet is imported once, the model loaded once per config
  _lm=()
  # shellcheck disable=SC2086
  if [ "${use_ngram}" = true ] && grep -qE "^ngram_weight:" ${inference_configs}; then
    [ -f "${ngram_file}" ] || { log "--use_ngram true but ${ngram_file} does not exist (run stage 3)"; exit 1; }
    _lm=(--ngram_file "${ngram_file}")
    # shellcheck disable=SC2086
    if grep -qE "^ngram_unit: *word" ${inference_configs}; then
      [ -f "${word_ngram_file}" ] || { log "a decode config uses a word LM but ${word_ngram_file} does not exist (stage 3 with --word_ngram_order > 0 and --token_type char)"; exit 1; }
      _lm+=(--word_ngram_file "${word_ngram_file}")
    fi
  fi
  _model=()
  if [ -n "${inference_model}" ]; then
    [ -f "${asr_exp}/${inference_model}" ] || { log "--inference_model: ${asr_exp}/${inference_model} does not exist"; exit 1; }
    _model=(--model_file "${asr_exp}/${inference_model}")
  fi
  if [ "${inference_nj}" -le 1 ]; then
    python -m asr.bin.decode --model_dir "${asr_exp}" "${_model[@]}" --config "${_conf[@]}" --data_dir "${_in[@]}" "${_lm[@]}" \
      --output_dir "${_out[@]}" --batch_size "${inference_batch_size}" --device "${decode_device}" \
      --num_threads "${num_threads}"
  else
    # job J decodes part J of every set with every config into <out>/split<N>/J; then the parts
    # are gathered into <out> (asr.bin.decode --merge). Logs: ${asr_exp}/decode_logs/decode.J.log
    _split_out=()
    for _o in "${_out[@]}"; do _split_out+=("${_o}/split${inference_nj}/JOB"); done
    log "Stage 6: ${inference_nj} jobs (${cmd_backend}); logs in ${asr_exp}/decode_logs"
    # shellcheck disable=SC2086
    python -m nar.base.jobs --nj "${inference_nj}" --backend "${cmd_backend}" --slurm_opts "${slurm_opts}" \
      --log "${asr_exp}/decode_logs/decode.JOB.log" -- \
      python -m asr.bin.decode --model_dir "${asr_exp}" "${_model[@]}" --config "${_conf[@]}" --data_dir "${_in[@]}" "${_lm[@]}" \
      --output_dir "${_split_out[@]}" --batch_size "${inference_batch_size}" --device "${decode_device}" \
      --num_threads "${num_threads}" --split "JOB/${inference_nj}"
    python -m asr.bin.decode --merge "${inference_nj}" --data_dir "${_in[@]}" --output_dir "${_out[@]}"
  fi
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  log "Stage 7: scoring"
  for inference_config in ${inference_configs}; do
    inference_tag=$(basename "${inference_config}" .yaml); inference_tag=decode_${inference_tag#decode_}${inference_suffix}
    for dset in ${test_sets}; do
      _dir=${asr_exp}/${inference_tag}/${dset}
      _spk=()
      [ -f "${data_feats}/${dset}/utt2spk" ] && _spk=(--utt2spk "${data_feats}/${dset}/utt2spk")
      python -m asr.bin.score --ref "${data_feats}/${dset}/text" --hyp "${_dir}/text" \
        --output_dir "${_dir}/scoring" "${_spk[@]}"
    done
  done
  python -m asr.bin.results --exp_dir "${expdir}" --exps "$(basename "${asr_exp}")" \
    --output RESULTS.md --title "${results_title:-${asr_tag}}" --command "${run_command}"
  cat RESULTS.md
fi
log "Successfully finished (stages ${stage}-${stop_stage})"
