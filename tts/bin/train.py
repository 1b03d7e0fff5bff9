"""Train a MaskGCT model (T2S or S2A) through ESPnet's trainer.

Usage (see ``recipes/tts.sh`` stages 5-6 for the full command lines):
    python -m tts.bin.train --model t2s --config conf/train_t2s.yaml --token_list dump/phones/tokens.txt \
        --semantic_tokenizer ../codec1/exp/semantic_l-1_k512 \
        --train_data_path_and_name_and_type dump/phones/train/phones_int,phones,text_int \
        --train_data_path_and_name_and_type dump/semantic/train/semantic.scp,semantic,npy \
        --train_shape_file dump/phones/train/phones_shape --train_shape_file dump/semantic/train/semantic_shape \
        --valid_data_path_and_name_and_type ... --valid_shape_file ... --output_dir exp/t2s --ngpu 0
    python -m tts.bin.train --print_config --model s2a

Every option of ESPnet's trainers is accepted (``--help`` lists them).
"""

from tts.task import MaskGCTTask


def main(cmd=None):
    MaskGCTTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
