#!/usr/bin/env bash
# Data preparation for synth_music: captioned music clips whose MIDI is written in Python and
# rendered by fluidsynth with a GM soundfont (python -m audio_gen.music). Run from the recipe
# directory (egs/synth_music/gen1).
#
# Usage:
#   local/data.sh                                   # 1200 train, 100 dev, 100 test clips of 10 s
#   local/data.sh --nj 8 --seed 1 --seconds 5
#   local/data.sh --families piano,strings,brass,reed --soundfont FluidR3_GM
#
# Writes data/{train,dev,test} (Kaldi data dirs; text = the caption, fields.jsonl = the captioned
# fields) and data/fields_stats.json; audio and MIDI under --out_dir (default
# downloads/synth_music/<options>, so other options never clash with a finished build).
# Needs Debian packages fluidsynth timgm6mb-soundfont (fluid-soundfont-gm for FluidR3_GM).
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/../../../../recipes/utils/options.sh"

usage_text "Usage: $0 [options]   (see the header of $0)"
opt num_train 1200 "training clips"
opt num_dev 100 "dev clips"
opt num_test 100 "test clips"
opt seconds 10 "length of every clip (seconds)"
opt sample_rate 16000 "sample rate of the WAV files (Hz)"
opt nj 2 "parallel rendering processes"
opt seed 0 "random seed: same seed, same corpus (byte-identical audio)"
opt soundfont TimGM6mb "TimGM6mb, FluidR3_GM or a path to a GM .sf2"
opt families "" "comma-separated instrument families (default: all; see python -m audio_gen.music --help)"
opt out_dir "" "where audio and MIDI are written (default downloads/synth_music/<options tag>)"
opt datadir data "where the data dirs are written"
parse_opts "$@"

if [ -f path.sh ]; then . ./path.sh; fi
extra=()
[ -n "${families}" ] && extra+=(--families "${families}")
[ -n "${out_dir}" ] && extra+=(--out_dir "${out_dir}")

log "Rendering ${num_train}/${num_dev}/${num_test} clips of ${seconds} s (seed ${seed}, nj ${nj})"
python -m audio_gen.music --datadir "${datadir}" \
    --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
    --seconds "${seconds}" --sample_rate "${sample_rate}" --seed "${seed}" --nj "${nj}" \
    --soundfont "${soundfont}" "${extra[@]}"

for x in train dev test; do
  python -c "import sys; from nar.base.kaldi import validate_data_dir; validate_data_dir(sys.argv[1])" \
      "${datadir}/${x}"
  log "${datadir}/${x}: $(wc -l < "${datadir}/${x}/text") clips"
done
log "Class balance of the fields: ${datadir}/fields_stats.json"
