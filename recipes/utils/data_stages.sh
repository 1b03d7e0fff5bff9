#!/usr/bin/env bash
# Sourced by the templates whose first two stages are the same (codec.sh, tts.sh): stage 1 runs
# the corpus's local/data.sh, stage 2 formats every set into ${data_feats}/<set> (asr.bin.format_data
# skips a set whose stamp, ${data_feats}/<set>/.done, matches its inputs: data dir files, audio
# files, options; and says why it reruns otherwise). Needs stage, stop_stage, nj, local_data_opts,
# data_feats, all_sets and log() (options.sh).

run_data_stages() {
  if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh --nj "${nj}" ${local_data_opts}
  fi
  if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: format data dirs into ${data_feats}"
    local dset
    for dset in ${all_sets}; do
      python -m asr.bin.format_data --src "data/${dset}" --dst "${data_feats}/${dset}"
    done
  fi
}
