#!/usr/bin/env bash
# synth_en audio tokenizer recipe: the offline mel-RVQ acoustic tokenizer (k-means on the CPU),
# semantic tokens from the asr1 recipe's CTC encoder, codes dumped for MaskGCT/MAGNeT
# recipes, and an evaluation table (PESQ, STOI, WER on reconstructions, DistillMOS, RTF).
# Stage 3 also trains the mel vocoder (3000 steps) into exp/tokenizer_mel_rvq_vocoder: the same
# codes, decoded by the vocoder instead of Griffin-Lim (--vocoder_steps 0 skips it).
# The corpus is the asr1 recipe's: the same options (../asr1/conf/corpus.sh) and the same
# local/data.sh (a link to asr1's), which reuses the audio asr1 synthesised.
# The ASR model (the semantic tokenizer of stage 5, the WER of stage 8) is the one the asr1
# recipe recorded in ../asr1/exp/asr_model_dir after training (cd ../asr1 && ./run.sh, or make
# demo); without that file a run through stage 5 or 8 stops with an error before its first
# stage. --asr_model_dir DIR picks another model; --asr_model_dir none skips stages 5, 6 and 8
# (--stop_stage 4 needs no model).
# Options: ./run.sh --help
# ESPnet GAN codec (SoundStream/EnCodec-style, stage 7):
#   ./run.sh --codec_config conf/train_codec_smoke.yaml --stage 7 --stop_stage 7        # CPU smoke run
#   ./run.sh --codec_config conf/train_codec_16k.yaml --stage 7 --stop_stage 7 --ngpu 1 # the real one, GPU
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=SCRIPTDIR/../asr1/conf/corpus.sh
. ../asr1/conf/corpus.sh  # corpus_opts: the asr1 recipe's corpus

../../../recipes/codec.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "dev test" \
    --local_data_opts "${corpus_opts}" \
    --tokenizer_opts "--num_codebooks 8 --codebook_size 1024 --n_mels 100 --hop_length 320" \
    --vocoder_steps 3000 \
    --vocoder_opts "--dim 192 --intermediate_dim 576 --num_layers 6" \
    --asr_model_record ../asr1/exp/asr_model_dir \
    --asr_model_hint "cd ../asr1 && ./run.sh (or make demo in the repository root)" \
    --semantic_layer -1 \
    "$@"
