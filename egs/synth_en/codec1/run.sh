#!/usr/bin/env bash
# synth_en audio tokenizer recipe: the offline mel-RVQ acoustic tokenizer (k-means, minutes on a
# CPU), semantic tokens from the asr1 recipe's CTC encoder, codes dumped for MaskGCT/MAGNeT
# recipes, and an evaluation table (PESQ, STOI, WER on reconstructions, DistillMOS, RTF).
# Stage 3 also trains the mel vocoder (3000 steps, ~13 min on 2 cores) into
# exp/tokenizer_mel_rvq_vocoder: the same codes, decoded by the vocoder instead of Griffin-Lim
# (--vocoder_steps 0 skips it).
# The corpus is the asr1 recipe's (same options, so the same audio); the semantic stages and the
# evaluation need the asr1 model (cd ../asr1 && ./run.sh) and are skipped without it.
# Options: ./run.sh --help
# ESPnet GAN codec (SoundStream/EnCodec-style, stage 7):
#   ./run.sh --codec_config conf/train_codec_smoke.yaml --stage 7 --stop_stage 7        # CPU smoke run
#   ./run.sh --codec_config conf/train_codec_16k.yaml --stage 7 --stop_stage 7 --ngpu 1 # the real one, GPU
set -euo pipefail
cd "$(dirname "$0")"

asr_model_dir=""
[ -f ../asr1/exp/asr_train_ctc_char/config.yaml ] && asr_model_dir=$(cd ../asr1/exp/asr_train_ctc_char && pwd)

../../../recipes/codec.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "dev test" \
    --local_data_opts "--train_hours 2.0 --max_vocab 1000 --test_engine_shares espeak=0.6,flite=0.25,festival=0.15" \
    --tokenizer_opts "--num_codebooks 8 --codebook_size 1024 --n_mels 100 --hop_length 320" \
    --vocoder_steps 3000 \
    --vocoder_opts "--dim 192 --intermediate_dim 576 --num_layers 6" \
    --asr_model_dir "${asr_model_dir}" \
    --semantic_layer -1 \
    "$@"
