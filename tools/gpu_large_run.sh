#!/usr/bin/env bash
# Train egs/synth_en/asr1's larger configuration on a lent GPU machine (no registry access).
# Prepared beforehand on a machine with registry access:
#   .whl/  wheels of every Python package the recipe imports that the GPU host lacks (espnet
#          and the dependencies of it and of nar-speech that are not on the host; torch with
#          CUDA is expected there, being far larger than what can travel), fetched with
#          `pip download --no-deps --only-binary=:all: --python-version <host's> --platform
#          <host's> -d .whl <package==version> ...` at the versions pinned in pyproject.toml;
#          installed below with --no-index --no-deps, so the list must be complete.
#   .gpu/  train/dev data dirs whose wav.scp points to Opus files .gpu/audio/*.ogg (~20 kbit/s,
#          made from the synthesised 16 kHz WAVs because at most 64 MiB travel).
# Decoding and scoring happen back on the CPU machine, on the original WAVs, with the model
# this script writes to $OUT.
# Usage (device run, carry [".whl", ".gpu"]): bash tools/gpu_large_run.sh [train_seconds]
set -uo pipefail
budget=${1:-330}
root=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$root PYTHONUNBUFFERED=1
rm -rf /tmp/bin; mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 "$@"\n' > /tmp/bin/python && chmod +x /tmp/bin/python && export PATH=$PATH:/tmp/bin
python tools/offline_nltk.py
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cd egs/synth_en/asr1
mkdir -p data
for s in train dev; do
  rm -rf data/$s; cp -r "$root/.gpu/data/$s" data/$s
  sed -i "s| .gpu/| $root/.gpu/|" data/$s/wav.scp
done
nbpe=${NBPE:-300}
opts=(--asr_config conf/train_ctc_large.yaml --token_type bpe --nbpe ${nbpe} --test_sets dev
      --ngpu 1 --num_workers 12)
time ../../../recipes/asr.sh "${opts[@]}" --stage 2 --stop_stage 4 || exit 1
exp=exp/asr_train_ctc_large_bpe${nbpe}
( timeout "$budget" ../../../recipes/asr.sh "${opts[@]}" --stage 5 --stop_stage 5 ) ; echo "training exit $?"
pkill -f asr.bin.train; sleep 3  # timeout stops asr.sh, not always its python child
grep -E "epoch results" $exp/train.log | sed -E 's/, (iter_time|forward_time|backward_time|optim_step_time|train_time|loss_scale|clip|grad_norm)=[^,]*//g' | cut -c1-400
if [ ! -e $exp/valid.loss.ave.pth ]; then
  ls $exp/*epoch.pth && python -m asr.bin.average_checkpoints --output $exp/valid.loss.ave.pth $exp/*epoch.pth
fi
python - "$exp" "$OUT" <<'PY'
import sys, torch, io
exp, out = sys.argv[1], sys.argv[2]
state = torch.load(f"{exp}/valid.loss.ave.pth", map_location="cpu")
buf = io.BytesIO(); torch.save(state, buf); data = buf.getvalue()
n = 15 * 2**20
for i in range(0, len(data), n):
    open(f"{out}/model.pth.part{i // n}", "wb").write(data[i:i + n])
print("model bytes", len(data), "params", sum(v.numel() for v in state.values()))
PY
cp $exp/config.yaml "$OUT"/
cp exp/asr_stats_bpe${nbpe}/train/feats_stats.npz "$OUT"/
gzip -c $exp/train.log > "$OUT"/train.log.gz
