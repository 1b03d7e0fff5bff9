"""Train an ASR model through ESPnet's trainer with the nar-speech model choices.

Usage:
    python -m asr.bin.train --config conf/train_ctc.yaml --token_list data/token_list/char/tokens.txt \
        --train_data_path_and_name_and_type dump/raw/train/wav.scp,speech,sound \
        --train_data_path_and_name_and_type dump/raw/train/text,text,text \
        --valid_data_path_and_name_and_type dump/raw/dev/wav.scp,speech,sound \
        --valid_data_path_and_name_and_type dump/raw/dev/text,text,text \
        --train_shape_file exp/asr_stats/train/speech_shape --valid_shape_file exp/asr_stats/valid/speech_shape \
        --output_dir exp/asr_ctc --ngpu 0
    python -m asr.bin.train --print_config --model ctc --encoder conformer

Every option of ESPnet's ``asr_train`` is accepted (``--help`` lists them).
"""

from asr.task import NARASRTask


def main(cmd=None):
    NARASRTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
