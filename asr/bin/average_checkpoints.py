"""Average the parameters of several checkpoints (e.g. the epochs a killed run kept).

Usage:
    python -m asr.bin.average_checkpoints --output exp/x/valid.loss.ave.pth exp/x/*epoch.pth

ESPnet averages the n best epochs itself when training ends; this is for a run stopped
early (time budget, kill) whose ``N epoch.pth`` files remain. Integer buffers (e.g. batch
counters) are taken from the last checkpoint.
"""

from __future__ import annotations

import argparse

import torch

from nar.base.files import save_torch


def average(paths: list[str]) -> dict[str, torch.Tensor]:
    if not paths:
        raise ValueError("no checkpoints given")
    states = [torch.load(p, map_location="cpu") for p in paths]
    keys = set(states[0])
    for p, s in zip(paths, states):
        if set(s) != keys:
            raise ValueError(f"{p} has other parameters than {paths[0]}")
    out = {}
    for k in states[0]:
        if states[0][k].is_floating_point():
            out[k] = sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype)
        else:
            out[k] = states[-1][k]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True)
    p.add_argument("checkpoints", nargs="+")
    args = p.parse_args(argv)
    save_torch(average(args.checkpoints), args.output)
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.output}")


if __name__ == "__main__":
    main()
