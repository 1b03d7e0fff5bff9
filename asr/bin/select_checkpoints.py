"""Choose and average a run's epoch checkpoints by their error on another validation set.

ESPnet keeps and averages the n best epochs by the *training* validation set (``dev`` here: the
training voices). To choose for held-out voices instead, decode every kept ``N epoch.pth`` on a
set of voices training never heard (``dev_unseen`` of ``asr.data.synth_en --unseen_dev_warps``),
score it, and average the n epochs with the lowest error:

    python -m asr.bin.select_checkpoints --model_dir exp/asr_x --data_dir dump/raw/dev_unseen \\
        --config conf/decode_greedy.yaml --nbest 3 5 7 --metric cer
        # -> exp/asr_x/dev_unseen.cer.ave_{3,5,7}best.pth, dev_unseen.cer.ave.pth (the one of
        #    them that scores best on the same set) and dev_unseen.cer.json

Train with ``--keep_nbest_models`` as large as ``--max_epoch`` so every epoch is there. The JSON
holds each epoch's and each average's WER/CER and the choice; it is also the cache that makes a
killed run resume (an epoch already scored is not decoded again, unless its checkpoint changed).
Ties go to the later epoch, and between averages to the smaller n. Decode the result with
``asr.bin.decode --model_file`` or the recipe's ``--inference_model dev_unseen.cer.ave.pth``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from asr.audio import as_waveform
from asr.bin.average_checkpoints import average
from asr.bin.decode import apply_ngram_file, load_decode_config
from nar.base.kaldi import read_kaldi_map
from asr.inference import Speech2Text
from nar.base.experiment import epoch_checkpoints
from nar.base.files import save_torch, write_json

METRICS = ("cer", "wer")


def choose(errors: dict[int, float], nbest: int) -> list[int]:
    """The ``nbest`` epochs of lowest error (ties: the later epoch), in epoch order."""
    if nbest < 1:
        raise ValueError(f"nbest must be >= 1, got {nbest}")
    if not errors:
        raise ValueError("no epoch to choose from")
    ranked = sorted(errors, key=lambda e: (errors[e], -e))
    return sorted(ranked[:nbest])


class ValidationSet:
    """A data dir's transcripts and audio, read once and shared by every checkpoint scored on it."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        wav_scp, text_file = data_dir / "wav.scp", data_dir / "text"
        for f in (wav_scp, text_file):
            if not f.is_file():
                raise FileNotFoundError(f"{data_dir}: no {f.name} (not a data dir)")
        self.utts = read_kaldi_map(str(wav_scp))
        self.refs = read_kaldi_map(str(text_file))
        missing = sorted(set(self.utts) - set(self.refs))
        if missing:
            raise ValueError(f"{text_file}: no transcript for {len(missing)} utterances of {wav_scp}, e.g. {missing[:3]}")
        self.keys = sorted(self.utts)
        self._wavs: dict[int, list] = {}

    def wavs(self, sample_rate: int) -> list:
        if sample_rate not in self._wavs:
            wav_scp = self.data_dir / "wav.scp"
            self._wavs[sample_rate] = [as_waveform(self.utts[k], sample_rate, name=f"{wav_scp}:{k}")
                                       for k in self.keys]
        return self._wavs[sample_rate]


def score_checkpoint(model_dir: Path, checkpoint: Path, data: ValidationSet, config: dict,
                     batch_size: int = 16) -> dict:
    """Decode ``data`` with one checkpoint; its WER/CER (in %) after ``asr.scoring``."""
    from asr.scoring import score

    s2t = Speech2Text(model_dir, model_file=checkpoint, batch_size=batch_size,
                      **{k: v for k, v in config.items() if k != "speaker_warps"})
    hyps = {k: h[0].text for k, h in zip(data.keys, s2t.recognize_nbest(data.wavs(s2t.sample_rate)))}
    report, _ = score({k: data.refs[k] for k in data.keys}, hyps)
    return {"wer": round(100 * report.wer, 3), "cer": round(100 * report.cer, 3), "utterances": len(data.keys)}


def select(model_dir: Path, data_dir: Path, config_path: str | None, nbests: list[int], metric: str,
           prefix: Path, batch_size: int = 16, ngram_file: str | None = None,
           word_ngram_file: str | None = None, progress: bool = True) -> dict:
    """Score every epoch, average the n best for each n of ``nbests`` and score each average.

    Writes ``<prefix>.ave_<n>best.pth`` per n and ``<prefix>.ave.pth``: the average that scores
    best (ties: the smaller n). ``<prefix>.json`` records every score and is the cache that
    makes a rerun decode only what changed. Returns that record.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not nbests or min(nbests) < 1:
        raise ValueError(f"nbest must be >= 1, got {nbests}")
    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.yaml (not a training output directory)")
    data = ValidationSet(data_dir)
    checkpoints = epoch_checkpoints(model_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{model_dir}: no 'N epoch.pth' checkpoint (train with --keep_nbest_models"
                                " as large as --max_epoch to keep every epoch)")
    config = apply_ngram_file(load_decode_config(config_path), ngram_file, str(config_path), word_ngram_file)
    if config.get("speaker_warps"):
        raise ValueError(f"{config_path}: speaker_warps (test-time VTLN) is not supported here; "
                         "choose checkpoints with a plain decode config")
    record_path = Path(f"{prefix}.json")
    setup = {"data_dir": str(data_dir), "config": config, "model_dir": str(model_dir)}
    record = {"setup": setup, "epochs": {}, "averages": {}}
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        if old.get("setup") == json.loads(json.dumps(setup)):
            record = {**record, **old}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    todo = [e for e, p in checkpoints.items()
            if record["epochs"].get(str(e), {}).get("mtime") != os.path.getmtime(p)]
    from tqdm import tqdm

    for epoch in tqdm(todo, desc=f"score epochs on {data_dir}", unit="epoch", disable=not progress):
        result = score_checkpoint(model_dir, checkpoints[epoch], data, config, batch_size)
        result["mtime"] = os.path.getmtime(checkpoints[epoch])
        record["epochs"][str(epoch)] = result
        write_json(record_path, record)  # after every epoch: a killed run resumes here
    errors = {e: record["epochs"][str(e)][metric] for e in checkpoints}
    scored = len(set(nbests)) > 1  # the averages compete: each is decoded and scored
    for n in sorted(set(nbests)):
        chosen = choose(errors, n)
        out = Path(f"{prefix}.ave_{n}best.pth")
        key = f"ave_{n}best"
        mtimes = [os.path.getmtime(checkpoints[e]) for e in chosen]
        cached = record["averages"].get(key, {})
        if (cached.get("epochs") == chosen and cached.get("mtimes") == mtimes and out.is_file()
                and (metric in cached or not scored)):
            continue
        save_torch(average([str(checkpoints[e]) for e in chosen]), out)
        result = score_checkpoint(model_dir, out, data, config, batch_size) if scored else {}
        record["averages"][key] = {"epochs": chosen, "mtimes": mtimes, "file": str(out), **result}
        write_json(record_path, record)
    keys = [f"ave_{n}best" for n in sorted(set(nbests))]
    best = min(keys, key=lambda k: record["averages"][k].get(metric, 0.0))  # min keeps the first (smaller n) on ties
    output = Path(f"{prefix}.ave.pth")
    save_torch(torch.load(record["averages"][best]["file"], map_location="cpu"), output)
    record.update(metric=metric, nbests=sorted(set(nbests)), best=best, chosen=record["averages"][best]["epochs"],
                  output=str(output))
    write_json(record_path, record)
    return record


def format_table(record: dict) -> str:
    chosen = set(record.get("chosen", []))
    lines = ["| checkpoint | WER | CER | chosen |", "|---|---|---|---|"]
    for e, r in sorted(record["epochs"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| epoch {e} | {r['wer']:.1f} | {r['cer']:.1f} | {'x' if int(e) in chosen else ''} |")
    for key, r in record.get("averages", {}).items():
        if "wer" in r:
            lines.append(f"| {key} {r['epochs']} | {r['wer']:.1f} | {r['cer']:.1f} | "
                         f"{'x' if key == record.get('best') else ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, type=Path)
    p.add_argument("--data_dir", required=True, type=Path, help="validation data dir (wav.scp, text)")
    p.add_argument("--config", default=None, help="decode YAML (default: greedy)")
    p.add_argument("--nbest", type=int, nargs="+", default=[3],
                   help="epochs to average; several values: each average is scored, the best kept")
    p.add_argument("--metric", default="cer", choices=METRICS)
    p.add_argument("--output_prefix", type=Path, default=None,
                   help="default MODEL_DIR/<data dir name>.<metric>: writes .json, .ave_<n>best.pth, .ave.pth")
    p.add_argument("--ngram_file", default=None, help="as asr.bin.decode")
    p.add_argument("--word_ngram_file", default=None, help="as asr.bin.decode")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    prefix = args.output_prefix or args.model_dir / f"{args.data_dir.name}.{args.metric}"
    try:
        record = select(args.model_dir, args.data_dir, args.config, args.nbest, args.metric, prefix,
                        args.batch_size, args.ngram_file, args.word_ngram_file)
    except (FileNotFoundError, ValueError) as err:
        print(f"select_checkpoints: {err}", file=sys.stderr)
        return 1
    print(format_table(record))
    print(f"{record['best']}: epochs {record['chosen']} (lowest {args.metric.upper()} on {args.data_dir}) "
          f"-> {record['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
