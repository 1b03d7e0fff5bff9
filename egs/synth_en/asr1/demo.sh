#!/usr/bin/env bash
# The `make demo` job: the four ASR families on one encoder, compared side by side.
#
#   1  CTC from scratch: ./run.sh (corpus, tokens, n-gram LM, stats, training, decoding, scoring);
#      --ctc_config conf/train_ctc_sp.yaml (speed perturbation) with --feats_normalize
#      utterance_mvn, the configuration measured best on the held-out voices (RESULTS.md).
#      Its model directory (exp/asr_train_ctc_sp_char by default) is recorded in
#      exp/asr_model_dir (recipes/asr.sh --record_model true), where the codec1 and tts1 recipes
#      find their ASR model; the fine-tunings of stage 2 do not touch that record.
#   2  Paraformer, CASS-NAT and the AR baseline (ESPnet's hybrid CTC/attention model) start from
#      the CTC model's encoder and CTC head (ESPnet --init_param), which stay frozen
#      (--freeze_param; --finetune_freeze "" trains them too), and train their decoders with an
#      equal budget of --finetune_epochs epochs each (same encoder; ./run.sh --stage 5). Frozen,
#      every family decodes from the very same encoder output, so the comparison isolates the
#      decoders, and an epoch skips the encoder's backward pass. The fine-tunings run
#      --finetune_jobs at a time (default: all three at once, one torch thread each, which uses
#      2 cores better than one 2-thread job after another); logs in exp/demo_ft_<name>.log.
#   3  bench/asr_decode.py on the --bench_set: every system on the same batches, same threads;
#      WER, CER, times, real-time factor, speed-up over AR beam 10; table, JSON and plots
#
# Time: the README gives the measured time of the defaults; less time: --ctc_epochs 6
# --finetune_epochs 1.
# Everything resumes: a finished stage is skipped on a rerun (training resumes mid-way).
set -euo pipefail
cd "$(dirname "$0")"
. ../../../recipes/utils/options.sh

usage_text "Usage: $0 [options]   (see the header of $0)"
opt stage 1 "first demo stage (1 CTC recipe, 2 fine-tuning, 3 comparison)"
opt stop_stage 3 "last demo stage"
opt ctc_config conf/train_ctc_sp.yaml "training config of the CTC model (its encoder is every family's)"
opt feats_normalize utterance_mvn "feature normalisation of every model (global_mvn or utterance_mvn)"
opt ctc_epochs 12 "training epochs of the CTC model"
opt finetune_epochs 3 "fine-tuning epochs of each other family (equal budgets)"
opt finetune_freeze "encoder ctc" "parameters kept frozen while fine-tuning (ESPnet --freeze_param)"
opt finetune_configs "paraformer_ctcfire cassnat aed" "families fine-tuned from the CTC encoder (conf/train_<name>.yaml)"
opt finetune_jobs 3 "fine-tunings run at once (1: one after another with the recipe's threads; more: one thread each)"
opt ctc_decode_configs "conf/decode_greedy.yaml conf/decode_beam_ngram.yaml conf/decode_beam_wordlm.yaml conf/decode_beam_wordlm_vtln.yaml" "decode configs of the CTC model (stage 1)"
opt bench_set test "data set of the comparison (dump/raw/<set>)"
opt bench_batch_sizes "1" "batch sizes of the comparison (e.g. \"1 16\")"
opt run_args "" "extra options for every ./run.sh call"
parse_opts "$@"

if [ -f path.sh ]; then . ./path.sh; fi
start=$(date +%s)
ctc_dir=exp/asr_$(basename "${ctc_config}" .yaml)_char
ctc_ckpt=${ctc_dir}/valid.loss.ave.pth

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Demo stage 1: CTC from scratch (${ctc_epochs} epochs)"
  # shellcheck disable=SC2086
  # greedy, beam + character 8-gram LM, beam + word 3-gram LM (lexicon), and the latter with
  # test-time VTLN (a warp factor per speaker, nine passes); demo stage 3 decodes test with
  # plain CTC prefix beam too
  ./run.sh --asr_config "${ctc_config}" --feats_normalize "${feats_normalize}" --asr_args "--max_epoch ${ctc_epochs}" \
    --inference_configs "${ctc_decode_configs}" --record_model true ${run_args}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  [ -f "${ctc_ckpt}" ] || { log "${ctc_ckpt} is missing: run demo stage 1 first"; exit 1; }
  finetune() {  # name [extra run.sh options]
    local name=$1; shift
    # shellcheck disable=SC2086
    ./run.sh --stage 5 --stop_stage 5 --asr_config "conf/train_${name}.yaml" --asr_tag "ft_${name}_char" \
      --init_param "${ctc_ckpt}:encoder:encoder ${ctc_ckpt}:ctc:ctc" --feats_normalize "${feats_normalize}" --record_model false \
      --asr_args "--max_epoch ${finetune_epochs}${finetune_freeze:+ --freeze_param ${finetune_freeze}}" \
      ${run_args} "$@"
  }
  if [ "${finetune_jobs}" -le 1 ]; then
    for name in ${finetune_configs}; do
      log "Demo stage 2: ${name} from the CTC encoder (${finetune_epochs} epochs)"
      finetune "${name}"
    done
  else
    declare -A ft_pid=()
    failed=()
    reap() {  # wait for one background fine-tuning; remember a failure
      local name=$1
      if wait "${ft_pid[${name}]}"; then
        log "Demo stage 2: ${name} finished (log: exp/demo_ft_${name}.log)"
      else
        log "Demo stage 2: ${name} FAILED; the end of exp/demo_ft_${name}.log:"
        tail -n 20 "exp/demo_ft_${name}.log" >&2
        failed+=("${name}")
      fi
    }
    running=()
    mkdir -p exp
    for name in ${finetune_configs}; do
      if [ "${#running[@]}" -ge "${finetune_jobs}" ]; then
        reap "${running[0]}"; running=("${running[@]:1}")
      fi
      log "Demo stage 2: ${name} from the CTC encoder (${finetune_epochs} epochs, 1 torch thread," \
          "in the background; log: exp/demo_ft_${name}.log)"
      finetune "${name}" --num_threads 1 > "exp/demo_ft_${name}.log" 2>&1 &
      ft_pid[${name}]=$!
      running+=("${name}")
    done
    for name in "${running[@]}"; do reap "${name}"; done
    if [ "${#failed[@]}" -gt 0 ]; then
      log "Demo stage 2: fine-tuning failed for: ${failed[*]} (./demo.sh --stage 2 resumes)"
      exit 1
    fi
  fi
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  out=exp/compare_${bench_set}/asr_decode.json
  log "Demo stage 3: side-by-side decoding of ${bench_set} into ${out%.json}.{json,md,png}"
  systems=("ctc=${ctc_dir##*/}:greedy" "ctc_beam=${ctc_dir##*/}:beam")
  lm=(); ngram=exp/ngram_char/8gram.arpa  # recipe stage 3 (run.sh --use_ngram true)
  if [ -f "${ngram}" ]; then
    systems+=("ctc_beam_lm=${ctc_dir##*/}:conf/decode_beam_ngram.yaml"); lm=(--ngram_file "${ngram}")
  fi
  baseline=""
  for name in ${finetune_configs}; do
    case "${name}" in
      aed*) systems=("ar=asr_ft_${name}_char:beam" "${systems[@]}"); baseline=ar ;;
      cassnat*) systems+=("${name}=asr_ft_${name}_char:greedy" "${name}_esa=asr_ft_${name}_char:esa") ;;
      *) systems+=("${name}=asr_ft_${name}_char:greedy") ;;
    esac
  done
  # shellcheck disable=SC2086
  python ../../../bench/asr_decode.py --exp_dir exp --data_dir "dump/raw/${bench_set}" \
    --systems "${systems[@]}" "${lm[@]}" ${baseline:+--baseline ${baseline}} --batch_sizes ${bench_batch_sizes} \
    --out "${out}" --plots
fi
log "Demo finished in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
