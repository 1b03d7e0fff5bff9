"""Convert a FunASR Paraformer model directory into a nar-speech model directory.

Usage:
    python -m asr.bin.convert_funasr --funasr_dir /path/to/funasr_model --out_dir exp/paraformer_funasr

The FunASR directory (a local path) holds config.yaml, model.pt (or model.pb), tokens.json (or
tokens.txt) and am.mvn. The output directory gets config.yaml, model.pth and feats_stats.npz,
loadable with ``asr.inference.Speech2Text``. Supported: ``Paraformer`` with ConformerEncoder or
TransformerEncoder, ParaformerSANDecoder, CifPredictor / CifPredictorV2, WavFrontend; see
:mod:`asr.convert.funasr_paraformer` for what is not.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--funasr_dir", required=True, help="FunASR model directory (local path)")
    p.add_argument("--out_dir", required=True, help="nar-speech model directory to write")
    p.add_argument(
        "--trust_pickle",
        action="store_true",
        help="load a checkpoint holding arbitrary pickled objects (trusted sources only)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    from asr.convert.funasr_paraformer import convert

    try:
        out = convert(args.funasr_dir, args.out_dir, trust_pickle=args.trust_pickle)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"converted {args.funasr_dir} -> {out} (config.yaml, model.pth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
