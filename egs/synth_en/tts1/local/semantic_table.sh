#!/usr/bin/env bash
# Compare a semantic tokenizer without training (RESULTS.md, "Fourth run"): fit k-means on block
# LAYER of an asr1 model, encode train and test, synthesise test from the counted S2A table
# (python -m tts.bin.s2a_table) and score it with the ASR judge. Outputs under exp/probe/.
# Usage: local/semantic_table.sh TAG ASR_MODEL_DIR LAYER K [JUDGE_ASR_DIR]
#   JUDGE_ASR_DIR defaults to the model asr1 recorded in ../asr1/exp/asr_model_dir
#   e.g. local/semantic_table.sh eq12_l2_k512 ../asr1/exp/asr_x_ctc_sp_eq_umvn12 2 512
# Needs stages 1-4 of run.sh (dump/raw, dump/codes) and a synthesis dir exp/synth/resynth/test
# (its wav.scp chooses the test utterances).
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
[ $# -ge 4 ] || { sed -n 2,8p "$0"; exit 1; }
tag=$1; asr=$2; layer=$3; k=$4; judge=${5:-}
if [ -z "$judge" ]; then
  [ -f ../asr1/exp/asr_model_dir ] || { echo "$0: no JUDGE_ASR_DIR and no ../asr1/exp/asr_model_dir (train asr1 first: cd ../asr1 && ./run.sh)" >&2; exit 1; }
  judge=$(cat ../asr1/exp/asr_model_dir)
fi
d=exp/probe; acoustic=../codec1/exp/tokenizer_mel_rvq
[ -f "$d/sem_$tag/semantic.json" ] || python -m tts.bin.semantic_tokens fit --asr_model_dir "$asr" \
    --layer "$layer" --codebook_size "$k" --data_dir dump/raw/train --out_dir "$d/sem_$tag"
python -m tts.bin.semantic_tokens encode --tokenizer "$d/sem_$tag" --data_dir dump/raw/train dump/raw/test \
    --out_dir "$d/dump_$tag/train" "$d/dump_$tag/test"
rate=$(python -c "import json; print(json.load(open('$d/sem_$tag/semantic.json'))['frame_rate'])")
arate=$(python -c "import json; print(json.load(open('$acoustic/tokenizer.json'))['frame_rate'])")
python -m tts.bin.s2a_table --train_semantic "$d/dump_$tag/train/semantic.scp" --train_codes dump/codes/train/codes.scp \
    --semantic_rate "$rate" --acoustic_rate "$arate" --semantic "$d/dump_$tag/test/semantic.scp" \
    --text dump/raw/test/text --acoustic_tokenizer "$acoustic" --out_dir "$d/table_$tag/test" \
    --utt_list exp/synth/resynth/test/wav.scp
python -m tts.evaluate score --wav_scp "$d/table_$tag/test/wav.scp" --text "$d/table_$tag/test/text" \
    --judges asr --asr_model_dir "$judge" --out_dir "$d/eval_table_$tag"
