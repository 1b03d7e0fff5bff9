#!/usr/bin/env bash
# Sourced by the recipe templates that use a trained ASR model (codec.sh: semantic features and
# the WER judge; tts.sh: the WER judge). Defines one function:
#
#   resolve_asr_model WHAT SKIP
#
# Sets asr_model_dir from the file --asr_model_record names (written by recipes/asr.sh after it
# trains a CTC model) when --asr_model_dir is empty, and stops with an error naming the record
# and the command that writes it (--asr_model_hint) unless asr_model_dir is a trained model
# directory (it has config.yaml). WHAT says what needs the model, SKIP how to do without it.
# asr_model_dir "none" (the explicit opt-out) returns at once. Needs log() from options.sh.

resolve_asr_model() {
  local what=$1 skip=$2 from=""
  [ "${asr_model_dir}" = none ] && return 0
  if [ -z "${asr_model_dir}" ]; then
    if [ -z "${asr_model_record}" ]; then
      log "Error: no ASR model for ${what}: pass --asr_model_dir DIR or --asr_model_record FILE (${skip})" >&2
      exit 1
    fi
    if [ ! -s "${asr_model_record}" ]; then
      log "Error: the ASR model for ${what} is not recorded: ${asr_model_record} does not exist." \
          "Train it first: ${asr_model_hint:-the ASR recipe writes that file after training};" \
          "or pass --asr_model_dir DIR (${skip})." >&2
      exit 1
    fi
    asr_model_dir=$(head -n 1 "${asr_model_record}")
    from=" (named in ${asr_model_record})"
  fi
  if [ ! -f "${asr_model_dir}/config.yaml" ]; then
    log "Error: the ASR model dir ${asr_model_dir}${from} has no config.yaml: not a trained model." \
        "Train it first: ${asr_model_hint:-see the ASR recipe}; or pass --asr_model_dir DIR (${skip})." >&2
    exit 1
  fi
  log "ASR model for ${what}: ${asr_model_dir}${from}"
}
