#!/usr/bin/env bash
# Data preparation for synth_en: a synthetic English corpus from Debian's offline TTS
# engines (python -m asr.data.synth_en) and real human speech for sanity checks
# (python -m asr.data.real). Run from the recipe directory (egs/synth_en/asr1).
#
# Usage:
#   local/data.sh                                   # 1 h of training audio, 200 dev, 200 test
#   local/data.sh --train_hours 10 --nj 8 --seed 1
#   local/data.sh --synth_opts "--engine_shares espeak=0.5,flite=0.3,festival=0.2"
#
# Writes data/{train,dev,test,test_real} (Kaldi data dirs, absolute wav paths; with
# --unseen_dev_warps also dev_unseen) and data/lm_train.txt (text for an n-gram LM: the sources'
# sentences minus dev and test); audio under --synth_dir (default
# <asr1>/downloads/synth_en/<options>, so other options never clash with a finished build).
# One synthesis per set of options for every synth_en recipe: codec1 and tts1 link their
# local/data.sh to this file, and the default --synth_dir is beside this file's real location
# (asr1), not the calling recipe's, so a corpus asr1 built is reused (the build is idempotent:
# a finished one is not synthesised again), whichever recipe asks first.
# Needs Debian packages espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k
# festvox-us-slt-hts sox fortunes bible-kjv pocketsphinx-testdata.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/../../../../recipes/utils/options.sh"

usage_text "Usage: $0 [options]   (see the header of $0)"
opt train_hours 1 "hours of synthetic training audio (estimated when planning)"
opt dev_utts 200 "dev utterances (training voices, unseen sentences)"
opt test_utts 200 "test utterances (held-out voices, unseen sentences)"
opt nj 2 "parallel synthesis workers"
opt seed 0 "random seed: same seed, same corpus (byte-identical audio)"
opt max_vocab 0 "keep only sentences within the N most frequent words (0: open vocabulary)"
opt test_engine_shares "" "engine shares of the test audio, e.g. espeak=0.6,flite=0.25,festival=0.15 (default: equal)"
opt formant_warps "" "formant warp factors of flite/festival voice variants, comma-separated, e.g. 0.88,1.12 (default: none)"
opt unseen_dev_warps "" "also write data/dev_unseen: dev's sentences by the flite/festival train voices at these formant warps (comma-separated, none a training warp, e.g. 0.7,1.4): a validation set of unseen vocal tracts"
opt synth_dir "" "where the corpus is synthesised (default downloads/synth_en/<options>)"
opt synth_opts "" "extra options for python -m asr.data.synth_en (e.g. --voices ...)"
opt datadir data "where the data dirs are written"
parse_opts "$@"

if [ -f path.sh ]; then . ./path.sh; fi
if [ -z "${synth_dir}" ]; then
  # the recipe this script belongs to (asr1), also when called through a link (codec1, tts1)
  corpus_home=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
  synth_dir=${corpus_home}/downloads/synth_en/h${train_hours}_dev${dev_utts}_test${test_utts}_seed${seed}
  [ "${max_vocab}" != 0 ] && synth_dir+="_vocab${max_vocab}"
  [ -n "${test_engine_shares}" ] && synth_dir+="_test${test_engine_shares//[=,]/}"
  [ -n "${formant_warps}" ] && synth_dir+="_warp${formant_warps}"
fi
extra=()
[ "${max_vocab}" != 0 ] && extra+=(--max_vocab "${max_vocab}")
[ -n "${test_engine_shares}" ] && extra+=(--test_engine_shares "${test_engine_shares}")
# shellcheck disable=SC2206
[ -n "${formant_warps}" ] && extra+=(--formant_warps ${formant_warps//,/ })
# shellcheck disable=SC2206
[ -n "${unseen_dev_warps}" ] && extra+=(--unseen_dev_warps ${unseen_dev_warps//,/ })

log "Synthesising into ${synth_dir} (train ${train_hours} h, dev ${dev_utts}, test ${test_utts}, seed ${seed}, nj ${nj})"
# shellcheck disable=SC2086
python -m asr.data.synth_en --out "${synth_dir}" --train_hours "${train_hours}" \
    --dev_utts "${dev_utts}" --test_utts "${test_utts}" --nj "${nj}" --seed "${seed}" \
    "${extra[@]}" ${synth_opts}

splits=(train dev test)
[ -n "${unseen_dev_warps}" ] && splits+=(dev_unseen)
for x in "${splits[@]}"; do
  mkdir -p "${datadir}/${x}"
  rm -f "${datadir}/${x}/segments" "${datadir}/${x}/feats.scp"
  for f in text utt2spk spk2utt utt2dur; do
    cp "${synth_dir}/${x}/${f}" "${datadir}/${x}/${f}"
  done
  # synth_en writes <out>/wav/<speaker>/<utt>.wav, relative when a corpus was built with a
  # relative --out (as this script did before): the paths are rewritten into ${synth_dir}, so
  # they hold from any recipe directory
  awk -v dir="${synth_dir}" '{ n = split($2, p, "/")
    if (n >= 3 && p[n - 2] == "wav") $2 = dir "/wav/" p[n - 1] "/" p[n]
    print }' "${synth_dir}/${x}/wav.scp" > "${datadir}/${x}/wav.scp"
done

# text-only LM corpus: every sentence of the sources that is in neither dev nor test
cp "${synth_dir}/lm_train.txt" "${datadir}/lm_train.txt"

log "Preparing ${datadir}/test_real from pocketsphinx-testdata"
python -m asr.data.real --out "${datadir}/test_real"

for x in "${splits[@]}" test_real; do
  python -c "import sys; from nar.base.kaldi import validate_data_dir; validate_data_dir(sys.argv[1])" \
      "${datadir}/${x}"
  log "${datadir}/${x}: $(wc -l < "${datadir}/${x}/text") utterances, $(wc -l < "${datadir}/${x}/spk2utt") speakers"
done
log "Corpus statistics: ${synth_dir}/stats.json"
