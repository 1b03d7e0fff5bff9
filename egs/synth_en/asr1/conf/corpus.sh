# shellcheck shell=bash
# The synth_en corpus: the options of local/data.sh, in this one place for every synth_en recipe.
# Sourced by asr1/run.sh, codec1/run.sh and tts1/run.sh, which pass them as --local_data_opts, so
# the three prepare the same corpus; and since their local/data.sh is asr1's (codec1 and tts1
# link to it), the audio is synthesised once, into asr1/downloads/synth_en/<options>, and reused.
# A --local_data_opts on a run.sh command line replaces these for that call (give the same to
# every recipe of the chain to keep one corpus).
# Kept inside asr1 (the corpus's recipe) so that a copy of the asr1 directory is complete.
# shellcheck disable=SC2034  # read by the run.sh that sources this file
corpus_opts="--train_hours 2.0 --max_vocab 1000 --test_engine_shares espeak=0.6,flite=0.25,festival=0.15 --formant_warps 0.8,0.9,1.1,1.2,1.3"
