"""Train MAGNeT or its AR baseline through ESPnet's trainer.

Usage (see ``recipes/gen.sh`` for the full command lines):
    python -m audio_gen.bin.train --model magnet --config conf/train_magnet.yaml \
        --acoustic_tokenizer exp/tokenizer_mel_rvq --token_list dump/captions/tokens.txt \
        --train_data_path_and_name_and_type dump/codes/train/codes.scp,codes,npy \
        --train_data_path_and_name_and_type dump/captions/train/text_int,text,text_int \
        --train_shape_file dump/codes/train/codes_shape --valid_data_path_and_name_and_type ... \
        --valid_shape_file ... --output_dir exp/magnet --ngpu 0
    python -m audio_gen.bin.train --print_config --model ar

Every option of ESPnet's trainers is accepted (``--help`` lists them).
"""

from audio_gen.task import TextToAudioTask


def main(cmd=None):
    TextToAudioTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
