"""Text-to-music evaluation: caption adherence and Fréchet distance with a field classifier.

A small CNN is trained on real renders of the music corpus to recognise the structured fields a
caption was made from (``<data_dir>/fields.jsonl``: ``{"utt": ..., "melody_family": "piano",
"tempo_bucket": "slow", "mode": "minor", "drums": true, ...}``; the label set of each field is
learned from the training fields). Generated clips are then judged by it:

- caption adherence: the classifier's accuracy per field against the fields of the caption each
  clip was generated from (matched by utt id), and the mean over fields. The same score on the
  real renders of those captions is the reference row (it equals the classifier's accuracy).
- Fréchet distance (FD) between Gaussians fitted to the classifier's embeddings of a generated
  set and of a reference set (e.g. the real test renders):
  ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, in float64; the trace of the square root
  is taken from the eigenvalues of the symmetric PSD ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as
  ``S1 S2``), so no complex parts or non-symmetric ``sqrtm`` arise.
  Caveat: with ~100 clips and a 128-d embedding the covariances are rank-deficient and the
  estimate is biased upwards (the bias shrinks as 1/N); FD values are only comparable between
  systems scored with the same number of clips against the same reference set. The real
  renders scored against themselves give FD 0 by construction.

Classifier: log-mel (64 mels, hop 320 at 16 kHz = 50 frames/s; other rates are resampled),
normalised per mel bin with training statistics; 4 blocks of Conv2d-BatchNorm-ReLU-MaxPool
(frequency halved in each, time in the first two); mean and std pooling over time; a linear
projection to the embedding (D=128) and one linear head per field. Trained with Adam on random
crops (4 s) with the sum of the fields' cross-entropies; evaluation pools over the whole clip.
``model.pt`` holds the weights of the epoch with the best mean dev accuracy; ``config.json``
the features, model, label vocabularies and training history: inference reads only these two.
Training is resumable: ``checkpoint.pt`` (of :class:`nar.base.training.StepTrainer`, one step =
one epoch) is written after every epoch and a rerun of the same command continues from it (with a
larger ``--epochs`` it trains on); features are cached in
``<out_dir>/feats_{train,valid}.pt``.

Measured training times, accuracies and FD floors are in ``egs/synth_music/gen1/RESULTS.md``
(History); FD values of different classifiers are not comparable.
Limitation: 64 mels do not resolve semitones below ~1 kHz and pooling discards pitch relations,
so ``mode`` (major/minor) stays at chance (also on a tiny synthetic task of random-root triad
arpeggios, where timbre, drums and tempo reach >= 0.94); its column says nothing about a system.

Relative audio paths in wav.scp are read from the current directory, as in ESPnet recipes.

Usage::

    # train on real renders (rerun the same command after a kill to continue)
    python -m audio_gen.evaluate fit --train_dir data/train --valid_dir data/dev \\
        --out_dir exp/classifier --epochs 20
    # score generated clips (utt ids = the captions' source utts) and the real renders
    python -m audio_gen.evaluate score --classifier exp/classifier --name magnet \\
        --wav_scp exp/magnet/decode_test/wav.scp --fields data/test/fields.jsonl \\
        --reference_wav_scp data/test/wav.scp --out_dir exp/magnet/decode_test/eval
    python -m audio_gen.evaluate score --classifier exp/classifier --name real \\
        --wav_scp data/test/wav.scp --fields data/test/fields.jsonl \\
        --reference_wav_scp data/test/wav.scp --out_dir exp/real_test_eval
    # one markdown table (accuracies in %, adherence relative to the real row, FD)
    python -m audio_gen.evaluate table --results exp/real_test_eval/result.json \\
        exp/magnet/decode_test/eval/result.json --names "real,magnet" --relative_to real \\
        --out RESULTS_table.md

Shapes: B batch, F mel bins, T frames, N samples, M clips, D embedding dim, C classes of a field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torchaudio
from torch import nn
from tqdm import tqdm

from audio_gen.data import AudioItem, AudioListError, load_item
from nar.base import evalcli
from nar.base.files import save_torch, write_json
from nar.base.training import StepTrainer

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEFAULT_FIELDS = ("melody_family", "accomp_family", "tempo_bucket", "mode", "drums")
UNKNOWN_LABEL = -100  # a label the classifier never saw in training: ignored by the loss, always wrong


class EvaluationError(ValueError):
    """An input file or classifier directory is unusable (the message names it and the problem)."""


# --------------------------------------------------------------------------- inputs

def read_scp(path: PathLike) -> dict[str, str]:
    """``<utt> <path>`` lines -> ``{utt: path}`` in file order (blank lines skipped)."""
    return evalcli.read_scp(path, error=EvaluationError)


def read_fields(path: PathLike) -> dict[str, dict[str, Any]]:
    """``fields.jsonl`` (one JSON object with an ``utt`` key per line) -> ``{utt: fields}``."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: fields file not found")
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{path}:{n}: not valid JSON ({e})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("utt"), str):
            raise EvaluationError(f"{path}:{n}: expected a JSON object with a string 'utt'")
        if obj["utt"] in out:
            raise EvaluationError(f"{path}:{n}: duplicate utt {obj['utt']!r}")
        out[obj["utt"]] = obj
    return out


def _label_key(value: Any) -> str:
    """Labels compare by their JSON text (so ``true`` never equals ``1``)."""
    return json.dumps(value, sort_keys=True)


def check_fields(utts: Sequence[str], fields: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                 wav_scp: PathLike, fields_path: PathLike) -> None:
    """Every utt of ``wav_scp`` has a fields entry holding every field in ``names``."""
    missing = [u for u in utts if u not in fields]
    if missing:
        raise EvaluationError(f"{wav_scp}: {len(missing)} utts are not in {fields_path} "
                              f"(e.g. {', '.join(missing[:3])})")
    for u in utts:
        absent = [f for f in names if f not in fields[u]]
        if absent:
            raise EvaluationError(f"{fields_path}: utt {u!r} has no field {absent[0]!r}")


def load_clips(wavs: Mapping[str, str], feature: FeatureConfig, source: PathLike,
               progress: Optional[bool] = None, max_seconds: Optional[float] = None) -> list[torch.Tensor]:
    """Read each clip (mono, resampled; its first ``max_seconds`` only, if given) and return its
    log-mel features, each (F, T)."""
    extract = LogMel(feature)
    feats = []
    for utt, path in tqdm(wavs.items(), desc=f"features {Path(source).name}", unit="clip",
                          file=sys.stderr, disable=progress is False, leave=False):
        try:
            wav = load_item(AudioItem(utt, path), feature.sample_rate)
        except AudioListError as e:
            raise EvaluationError(f"{source}: {e}") from None
        if max_seconds:
            wav = wav[: int(round(max_seconds * feature.sample_rate))]
        if wav.numel() < feature.n_fft:
            raise EvaluationError(f"{source}: {utt}: {path} is too short ({wav.numel()} samples at "
                                  f"{feature.sample_rate} Hz; at least {feature.n_fft})")
        feats.append(extract(wav))
    return feats


# --------------------------------------------------------------------------- features and model

@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 320


class LogMel:
    """``wav (N,)`` at ``sample_rate`` -> ``log(mel power + 1e-6)`` (F, T), T = N // hop + 1."""

    def __init__(self, cfg: FeatureConfig):
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 1:
            raise ValueError(f"wav must have shape (N,), got {tuple(wav.shape)}")
        with torch.no_grad():
            return torch.log(self.mel(wav.float()) + 1e-6)


@dataclass(frozen=True)
class ClassifierOutput:
    embedding: torch.Tensor  # (B, D)
    logits: dict[str, torch.Tensor]  # field -> (B, C)


class FieldClassifierNet(nn.Module):
    """Log-mel (B, F, T) -> embedding (B, D) and one logit vector per field (see module docs)."""

    def __init__(self, n_mels: int, num_classes: Mapping[str, int], channels: Sequence[int] = (16, 32, 64, 128),
                 embed_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        if n_mels % (2 ** len(channels)):
            raise ValueError(f"n_mels={n_mels} must be divisible by 2**len(channels)={2 ** len(channels)}")
        for name, c in num_classes.items():
            if "." in name or c < 1:
                raise ValueError(f"num_classes: bad field {name!r} with {c} classes")
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        blocks, c_in = [], 1
        for i, c in enumerate(channels):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d((2, 2 if i < 2 else 1))]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(2 * channels[-1] * (n_mels // 2 ** len(channels)), embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(embed_dim, c) for name, c in num_classes.items()})

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, F, T), T >= 4 -> embedding (B, D), pooled over all T frames."""
        x = (feats - self.feat_mean[:, None]) / self.feat_std[:, None]
        x = self.blocks(x.unsqueeze(1))  # (B, C, F', T')
        x = x.flatten(1, 2)  # (B, C * F', T')
        stats = torch.cat([x.mean(-1), x.std(-1, unbiased=False)], dim=-1)  # (B, 2 C F')
        return self.proj(stats)

    def forward(self, feats: torch.Tensor) -> ClassifierOutput:
        emb = self.embed(feats)
        h = self.dropout(torch.relu(emb))
        return ClassifierOutput(emb, {name: head(h) for name, head in self.heads.items()})


def _batches_by_length(feats: Sequence[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal frame count (no padding, so a clip's result
    does not depend on its batch)."""
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(feats):
        by_len.setdefault(f.shape[-1], []).append(i)
    return [idx[s:s + batch_size] for idx in by_len.values() for s in range(0, len(idx), batch_size)]


@torch.no_grad()
def _run_full(net: FieldClassifierNet, feats: Sequence[torch.Tensor], batch_size: int = 16
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Whole clips -> embeddings (M, D) and predicted class indices per field, each (M,)."""
    net.eval()
    emb = torch.zeros(len(feats), net.proj.out_features)
    pred = {name: torch.zeros(len(feats), dtype=torch.long) for name in net.heads}
    for idx in _batches_by_length(feats, batch_size):
        out = net(torch.stack([feats[i].float() for i in idx]))
        emb[idx] = out.embedding
        for name, logits in out.logits.items():
            pred[name][idx] = logits.argmax(-1)
    return emb, pred


# --------------------------------------------------------------------------- the trained classifier

@dataclass(frozen=True)
class ClipPrediction:
    utt: str
    labels: dict[str, Any]  # field -> predicted value (as in fields.jsonl)
    embedding: np.ndarray  # (D,)


class FieldClassifier:
    """A trained classifier: ``FieldClassifier.from_dir("exp/classifier").predict(wav_paths)``."""

    def __init__(self, net: FieldClassifierNet, config: Mapping[str, Any]):
        self.net = net.eval()
        self.config = dict(config)
        self.feature = FeatureConfig(**config["feature"])
        self.labels: dict[str, list[Any]] = {f: list(v) for f, v in config["labels"].items()}

    @property
    def fields(self) -> list[str]:
        return list(self.labels)

    @classmethod
    def from_dir(cls, path: PathLike) -> FieldClassifier:
        path = Path(path)
        cfg_path, model_path = path / "config.json", path / "model.pt"
        if not cfg_path.is_file():
            raise EvaluationError(f"{path}: no config.json; is this a classifier dir written by "
                                  "'python -m audio_gen.evaluate fit'?")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
            labels, model_cfg = config["labels"], config["model"]
            feature = FeatureConfig(**config["feature"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise EvaluationError(f"{cfg_path}: not a classifier config ({type(e).__name__}: {e})") from None
        if not model_path.is_file():
            raise EvaluationError(f"{path}: no model.pt (training has not finished an epoch yet?)")
        net = FieldClassifierNet(feature.n_mels, {f: len(v) for f, v in labels.items()}, **model_cfg)
        net.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
        return cls(net, config)

    def check_fields(self, names: Sequence[str]) -> None:
        absent = [f for f in names if f not in self.labels]
        if absent:
            raise EvaluationError(f"field {absent[0]!r} is not predicted by the classifier "
                                  f"(it has: {', '.join(self.fields)})")

    def predict_features(self, feats: Sequence[torch.Tensor]) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """Log-mel clips, each (F, T) -> embeddings (M, D) float64 and predicted values per field."""
        emb, pred = _run_full(self.net, feats)
        values = {f: [self.labels[f][i] for i in pred[f].tolist()] for f in self.labels}
        return emb.double().numpy(), values

    def predict(self, wavs: Mapping[str, str], source: PathLike = "wav.scp",
                progress: Optional[bool] = None, max_seconds: Optional[float] = None) -> dict[str, ClipPrediction]:
        """``{utt: audio path}`` -> ``{utt: ClipPrediction}``; ``source`` names the list in errors;
        ``max_seconds``: judge only the first seconds of every clip."""
        emb, values = self.predict_features(load_clips(wavs, self.feature, source, progress, max_seconds))
        return {u: ClipPrediction(u, {f: values[f][i] for f in values}, emb[i]) for i, u in enumerate(wavs)}


# --------------------------------------------------------------------------- Fréchet distance

def fit_gaussian(x: Union[np.ndarray, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (M, D), M >= 2 -> mean (D,) and unbiased covariance (D, D), float64."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (M, D) with M >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x has non-finite values")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def psd_sqrtm(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (D, D) by eigendecomposition; eigenvalues
    below 0 (rounding) are taken as 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _check_gaussian(mu: Any, sigma: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"mu{name} must be (D,) and sigma{name} (D, D); got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{name}/sigma{name} have non-finite values")
    scale = max(np.abs(sigma).max(), 1e-300)
    if np.abs(sigma - sigma.T).max() > 1e-8 * scale:
        raise ValueError(f"sigma{name} is not symmetric")
    return mu, sigma


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu (D,), sigma (D, D) PSD.

    ``Tr((S1 S2)^(1/2))`` = sum of the square roots of the eigenvalues of the symmetric PSD
    ``S1^(1/2) S2 S1^(1/2)``. The result is clipped at 0 (rounding can give about -1e-12).
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 differ in dimension: {mu1.shape} vs {mu2.shape}")
    root1 = psd_sqrtm(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(fd, 0.0))


def frechet_distance_embeddings(x: Any, y: Any) -> float:
    """FD between Gaussians fitted to embeddings x (M1, D) and y (M2, D)."""
    return frechet_distance(*fit_gaussian(x), *fit_gaussian(y))


# --------------------------------------------------------------------------- adherence and scoring

@dataclass(frozen=True)
class Adherence:
    accuracy: dict[str, float]  # field -> fraction of clips whose predicted value equals the caption's
    mean: float  # mean of accuracy over fields
    n_clips: int


def caption_adherence(predicted: Mapping[str, Mapping[str, Any]], fields: Mapping[str, Mapping[str, Any]],
                      names: Sequence[str]) -> Adherence:
    """``{utt: {field: predicted value}}`` against ``{utt: caption fields}`` for ``names``."""
    if not predicted or not names:
        raise ValueError("predicted and names must not be empty")
    acc = {}
    for f in names:
        hits = [_label_key(p[f]) == _label_key(fields[u][f]) for u, p in predicted.items()]
        acc[f] = sum(hits) / len(hits)
    return Adherence(acc, sum(acc.values()) / len(acc), len(predicted))


@dataclass(frozen=True)
class Score:
    name: str
    adherence: Adherence
    frechet_distance: Optional[float]
    n_reference: Optional[int]
    predictions: list[dict[str, Any]]  # one row per clip: utt, predicted, caption, correct


def score_system(classifier: FieldClassifier, wav_scp: PathLike, fields_path: PathLike,
                 reference_wav_scp: Optional[PathLike] = None, name: str = "system",
                 field_names: Optional[Sequence[str]] = None, progress: Optional[bool] = None,
                 max_seconds: Optional[float] = None) -> Score:
    """Caption adherence of the clips in ``wav_scp`` and (with a reference) their FD to it.
    ``max_seconds``: judge the first seconds of every clip, generated and reference alike (so
    sets of different clip lengths are compared on equal footing)."""
    names = list(field_names or classifier.fields)
    classifier.check_fields(names)
    wavs, fields = read_scp(wav_scp), read_fields(fields_path)
    check_fields(list(wavs), fields, names, wav_scp, fields_path)
    preds = classifier.predict(wavs, wav_scp, progress, max_seconds)
    adherence = caption_adherence({u: p.labels for u, p in preds.items()}, fields, names)
    fd = n_ref = None
    if reference_wav_scp is not None:
        ref = classifier.predict(read_scp(reference_wav_scp), reference_wav_scp, progress, max_seconds)
        n_ref = len(ref)
        if len(preds) < 2 or n_ref < 2:
            raise EvaluationError(f"Fréchet distance needs at least 2 clips per set ({len(preds)} in "
                                  f"{wav_scp}, {n_ref} in {reference_wav_scp})")
        fd = frechet_distance_embeddings(np.stack([p.embedding for p in preds.values()]),
                                         np.stack([p.embedding for p in ref.values()]))
    rows = [{"utt": u, "predicted": {f: p.labels[f] for f in names},
             "caption": {f: fields[u][f] for f in names},
             "correct": {f: _label_key(p.labels[f]) == _label_key(fields[u][f]) for f in names}}
            for u, p in preds.items()]
    return Score(name, adherence, fd, n_ref, rows)


def write_score(score: Score, out_dir: PathLike, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """``out_dir/result.json`` and ``out_dir/predictions.jsonl`` (each atomically); returns the
    result path."""
    result = {"name": score.name, "n_clips": score.adherence.n_clips, "accuracy": score.adherence.accuracy,
              "adherence": score.adherence.mean, "frechet_distance": score.frechet_distance,
              "n_reference": score.n_reference, **(extra or {})}
    evalcli.write_rows(Path(out_dir) / "predictions.jsonl", (json.dumps(row) for row in score.predictions))
    return evalcli.write_result_json(out_dir, result)


def read_result(path: PathLike) -> dict[str, Any]:
    """A ``result.json`` of ``score``; errors name the file."""
    result = evalcli.read_result_json(path, error=EvaluationError, missing=EvaluationError)
    if not isinstance(result.get("accuracy"), dict) or "adherence" not in result:
        raise EvaluationError(f"{path}: not a result.json of 'python -m audio_gen.evaluate score'")
    return result


def _fd_cell(fd: Optional[float]) -> Optional[str]:
    return None if fd is None else f"{fd:.1f}" if fd >= 10 else f"{fd:.3f}"


def format_table(rows: Sequence[tuple[str, Mapping[str, Any]]], relative_to: Optional[str] = None) -> str:
    """Markdown: one row per ``(name, result)``; accuracy per field and mean adherence in %,
    the mean relative to row ``relative_to`` in %, the number of clips and FD."""
    if not rows:
        raise ValueError("rows is empty")
    names = [n for n, _ in rows]
    if relative_to is not None and relative_to not in names:
        raise ValueError(f"relative_to={relative_to!r} is not one of the rows ({', '.join(names)})")
    fields = list(dict.fromkeys(f for _, r in rows for f in r["accuracy"]))
    ref = dict(rows)[relative_to]["adherence"] if relative_to is not None else None
    head = ["system", "clips", *fields, "mean"] + ([f"rel. to {relative_to}"] if ref is not None else []) + ["FD"]
    body = []
    for name, r in rows:
        cells = [name, r.get("n_clips")]
        cells += [f"{100 * r['accuracy'][f]:.1f}" if f in r["accuracy"] else None for f in fields]
        cells.append(f"{100 * r['adherence']:.1f}")
        if ref is not None:
            cells.append(f"{100 * r['adherence'] / ref:.1f}" if ref > 0 else None)
        cells.append(_fd_cell(r.get("frechet_distance")))
        body.append(cells)
    return evalcli.markdown_table(head, body, right_align=True)


# --------------------------------------------------------------------------- training

@dataclass(frozen=True)
class TrainOptions:
    fields: tuple[str, ...] = DEFAULT_FIELDS
    epochs: int = 20
    crop_seconds: float = 4.0
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embed_dim: int = 128
    dropout: float = 0.2
    feature: FeatureConfig = field(default_factory=FeatureConfig)


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    best_epoch: int
    valid_accuracy: dict[str, float]  # at best_epoch
    history: list[dict[str, Any]]  # per epoch: epoch, loss, valid accuracy, seconds


def _cached_features(data_dir: Path, names: Sequence[str], feature: FeatureConfig, cache: Path
                     ) -> tuple[list[str], list[torch.Tensor], dict[str, dict[str, Any]]]:
    """Utts, log-mel features (each (F, T)) and fields of a data dir; cached in ``cache`` (float32,
    so that the dev accuracy of training equals what ``score`` measures on the same clips)."""
    wav_scp, fields_path = data_dir / "wav.scp", data_dir / "fields.jsonl"
    wavs, fields = read_scp(wav_scp), read_fields(fields_path)
    check_fields(list(wavs), fields, names, wav_scp, fields_path)
    meta = {"feature": asdict(feature), "items": [[u, p] for u, p in wavs.items()]}
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored["meta"] == meta:
            return list(wavs), stored["feats"], fields
        logger.info(f"{cache}: made from other audio or features; recomputing")
    feats = load_clips(wavs, feature, wav_scp)
    save_torch({"meta": meta, "feats": feats}, cache)
    return list(wavs), feats, fields


def _label_matrix(utts: Sequence[str], fields: Mapping[str, Mapping[str, Any]],
                  labels: Mapping[str, Sequence[Any]]) -> torch.Tensor:
    """(M, n_fields) class indices; values outside the vocabulary -> UNKNOWN_LABEL."""
    index = {f: {_label_key(v): i for i, v in enumerate(vals)} for f, vals in labels.items()}
    return torch.tensor([[index[f].get(_label_key(fields[u][f]), UNKNOWN_LABEL) for f in labels] for u in utts],
                        dtype=torch.long).reshape(len(utts), len(labels))


def _crop_batch(feats: Sequence[torch.Tensor], idx: Sequence[int], frames: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops of ``frames`` frames -> (B, F, frames); shorter clips are repeated cyclically."""
    out = []
    for i in idx:
        f = feats[i]
        if f.shape[-1] < frames:
            f = f.repeat(1, -(-frames // f.shape[-1]))  # (F, >= frames)
        start = int(torch.randint(0, f.shape[-1] - frames + 1, (1,), generator=gen))
        out.append(f[:, start:start + frames].float())
    return torch.stack(out)


def _accuracy(net: FieldClassifierNet, feats: Sequence[torch.Tensor], y: torch.Tensor) -> dict[str, float]:
    _, pred = _run_full(net, feats)
    return {f: (pred[f] == y[:, j]).double().mean().item() for j, f in enumerate(net.heads)}


def _train_epoch(net: FieldClassifierNet, opt: torch.optim.Optimizer, feats: Sequence[torch.Tensor],
                 y: torch.Tensor, opts: TrainOptions, epoch: int) -> float:
    net.train()
    torch.manual_seed(opts.seed * 100003 + epoch)  # dropout: the same draws after a resume
    gen = torch.Generator().manual_seed(opts.seed * 7919 + epoch)
    frames = max(4, round(opts.crop_seconds * opts.feature.sample_rate / opts.feature.hop_length))
    order = torch.randperm(len(feats), generator=gen).tolist()
    batches = [order[s:s + opts.batch_size] for s in range(0, len(order), opts.batch_size)]
    total = 0.0
    bar = tqdm(batches, desc=f"epoch {epoch}/{opts.epochs}", unit="batch", file=sys.stderr, leave=False)
    for idx in bar:
        out = net(_crop_batch(feats, idx, frames, gen))
        loss = sum(nn.functional.cross_entropy(out.logits[f], y[idx, j], ignore_index=UNKNOWN_LABEL)
                   for j, f in enumerate(net.heads))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / len(feats)


def _prepare_fit(train_dir: Path, valid_dir: Path, out_dir: Path, opts: TrainOptions):
    names = list(opts.fields)
    utts, feats, fields = _cached_features(train_dir, names, opts.feature, out_dir / "feats_train.pt")
    v_utts, v_feats, v_fields = _cached_features(valid_dir, names, opts.feature, out_dir / "feats_valid.pt")
    labels = {f: sorted({_label_key(fields[u][f]): fields[u][f] for u in utts}.values(), key=_label_key)
              for f in names}
    y, v_y = _label_matrix(utts, fields, labels), _label_matrix(v_utts, v_fields, labels)
    for j, f in enumerate(names):
        if (v_y[:, j] == UNKNOWN_LABEL).any():
            logger.warning(f"{valid_dir}: {int((v_y[:, j] == UNKNOWN_LABEL).sum())} clips have a {f} "
                           "value never seen in training (counted as errors)")
    majority = {f: (v_y[:, j] == torch.mode(y[:, j]).values).double().mean().item() for j, f in enumerate(names)}
    return feats, y, v_feats, v_y, labels, majority


def fit_classifier(train_dir: PathLike, valid_dir: PathLike, out_dir: PathLike,
                   opts: TrainOptions = TrainOptions()) -> FitResult:
    """Train (or continue training) the field classifier; see the module docs for the files."""
    train_dir, valid_dir, out_dir = Path(train_dir), Path(valid_dir), Path(out_dir)
    if opts.epochs < 1 or opts.batch_size < 1 or opts.crop_seconds <= 0:
        raise ValueError(f"epochs, batch_size and crop_seconds must be positive, got {opts}")
    if not opts.fields or len(set(opts.fields)) != len(opts.fields):
        raise ValueError(f"fields must be non-empty and distinct, got {opts.fields}")
    out_dir.mkdir(parents=True, exist_ok=True)
    feats, y, v_feats, v_y, labels, majority = _prepare_fit(train_dir, valid_dir, out_dir, opts)
    torch.manual_seed(opts.seed)
    model_cfg = {"channels": list(opts.channels), "embed_dim": opts.embed_dim, "dropout": opts.dropout}
    net = FieldClassifierNet(opts.feature.n_mels, {f: len(v) for f, v in labels.items()}, **model_cfg)
    n_frames = sum(f.shape[-1] for f in feats)
    mean = sum(f.double().sum(-1) for f in feats) / n_frames  # (F,)
    var = sum(((f.double() - mean[:, None]) ** 2).sum(-1) for f in feats) / n_frames
    net.feat_mean.copy_(mean)
    net.feat_std.copy_(var.sqrt().clamp_min(1e-3))
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
    train_cfg = {**asdict(opts), "train_dir": str(train_dir.resolve()), "valid_dir": str(valid_dir.resolve())}
    train_cfg.pop("epochs")
    fingerprint = {"train": json.loads(json.dumps(train_cfg)), "labels": labels}
    trainer = StepTrainer(out_dir / "checkpoint.pt", {"net": net, "opt": opt}, fingerprint, opts.epochs,
                          mismatch=lambda _: EvaluationError(
                              f"{out_dir}: holds a run with other options, data or labels; "
                              "use a new --out_dir (or delete checkpoint.pt)"),
                          desc="classifier", unit="epoch")
    history: list[dict[str, Any]] = []
    if trainer.resume():
        history = list(trainer.extra["history"])
        logger.info(f"{out_dir}: resuming after epoch {len(history)}")
    config = {"feature": asdict(opts.feature), "model": model_cfg, "labels": labels,
              "train": {**train_cfg, "epochs": opts.epochs}, "valid_majority_baseline": majority}

    def train_epoch(done: int) -> dict[str, float]:
        epoch = done + 1
        start = time.perf_counter()
        loss = _train_epoch(net, opt, feats, y, opts, epoch)
        acc = _accuracy(net, v_feats, v_y)
        row = {"epoch": epoch, "loss": loss, "valid_accuracy": acc,
               "valid_mean": sum(acc.values()) / len(acc), "seconds": time.perf_counter() - start}
        history.append(row)
        if row["valid_mean"] >= max(h["valid_mean"] for h in history):
            save_torch(net.state_dict(), out_dir / "model.pt")
        logger.info(f"epoch {epoch}: loss {loss:.3f}, dev accuracy "
                    + " ".join(f"{f}={a:.3f}" for f, a in acc.items()) + f" (mean {row['valid_mean']:.3f}), "
                    f"{row['seconds']:.1f} s")
        return {"loss": loss, "dev": row["valid_mean"]}

    trainer.run(train_epoch, extra=lambda: {"history": history},
                after_save=lambda _step, _stats: _write_config(config, history, out_dir))
    best = _write_config(config, history, out_dir)
    return FitResult(out_dir, best["epoch"], best["valid_accuracy"], history)


def _write_config(config: dict[str, Any], history: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """config.json with the history so far and the epoch model.pt holds (latest of the best)."""
    best = max(history, key=lambda h: (h["valid_mean"], h["epoch"]))
    write_json(out_dir / "config.json", {**config, "best_epoch": best["epoch"],
                                         "valid_accuracy": best["valid_accuracy"], "history": history}, indent=2)
    return best


# --------------------------------------------------------------------------- CLI

PROG = "python -m audio_gen.evaluate"


def _fit_main(args: argparse.Namespace) -> int:
    feature = FeatureConfig(n_mels=args.n_mels, n_fft=args.n_fft, hop_length=args.hop_length)
    opts = TrainOptions(fields=tuple(evalcli.split_csv(args.fields)), epochs=args.epochs,
                        crop_seconds=args.crop_seconds, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        channels=tuple(int(c) for c in evalcli.split_csv(args.channels)),
                        embed_dim=args.embed_dim, feature=feature)
    start = time.perf_counter()
    res = fit_classifier(args.train_dir, args.valid_dir, args.out_dir, opts)
    print(f"best epoch {res.best_epoch}: dev accuracy "
          + " ".join(f"{f}={a:.3f}" for f, a in res.valid_accuracy.items())
          + f" ({time.perf_counter() - start:.0f} s) -> {res.out_dir}", flush=True)
    return 0


def _score_main(args: argparse.Namespace) -> int:
    classifier = FieldClassifier.from_dir(args.classifier)
    names = evalcli.split_csv(args.field_names) if args.field_names else None
    score = score_system(classifier, args.wav_scp, args.fields, args.reference_wav_scp, args.name, names,
                         max_seconds=args.max_seconds)
    extra = {"classifier": str(args.classifier), "wav_scp": str(args.wav_scp), "fields": str(args.fields),
             "reference_wav_scp": None if args.reference_wav_scp is None else str(args.reference_wav_scp)}
    path = write_score(score, args.out_dir, extra)
    fd = "–" if score.frechet_distance is None else f"{score.frechet_distance:.4g}"
    print(f"{score.name}: n={score.adherence.n_clips} "
          + " ".join(f"{f}={a:.3f}" for f, a in score.adherence.accuracy.items())
          + f" mean={score.adherence.mean:.3f} FD={fd} -> {path}", flush=True)
    return 0


def _table_main(args: argparse.Namespace) -> int:
    results = [read_result(p) for p in args.results]
    names = evalcli.table_names(args.names, args.results, [r.get("name", p.parent.name) for r, p in
                                                           zip(results, args.results, strict=True)],
                                error=EvaluationError)
    evalcli.emit_table(format_table(list(zip(names, results, strict=True)), args.relative_to), args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    evalcli.add_threads_argument(p)
    sub = p.add_subparsers(dest="command", required=True)
    d = TrainOptions()
    f = sub.add_parser("fit", help="train the field classifier on real renders (resumable)")
    f.add_argument("--train_dir", type=Path, required=True, help="data dir with wav.scp and fields.jsonl")
    f.add_argument("--valid_dir", type=Path, required=True, help="data dir with wav.scp and fields.jsonl")
    f.add_argument("--out_dir", type=Path, required=True, help="writes model.pt, config.json, checkpoint.pt")
    f.add_argument("--fields", default=",".join(d.fields), help="comma-separated (default: %(default)s)")
    f.add_argument("--epochs", type=int, default=d.epochs)
    f.add_argument("--crop_seconds", type=float, default=d.crop_seconds)
    f.add_argument("--batch_size", type=int, default=d.batch_size)
    f.add_argument("--lr", type=float, default=d.lr)
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--channels", default=",".join(map(str, d.channels)), help="conv channels per block")
    f.add_argument("--embed_dim", type=int, default=d.embed_dim)
    f.add_argument("--n_mels", type=int, default=d.feature.n_mels)
    f.add_argument("--n_fft", type=int, default=d.feature.n_fft)
    f.add_argument("--hop_length", type=int, default=d.feature.hop_length)
    f.set_defaults(func=_fit_main)
    s = sub.add_parser("score", help="caption adherence (+ FD to a reference) of one set of clips")
    s.add_argument("--classifier", type=Path, required=True, help="the out_dir of fit")
    s.add_argument("--wav_scp", type=Path, required=True, help="<utt> <wav> lines (generated clips)")
    s.add_argument("--fields", type=Path, required=True, help="fields.jsonl of the captions, by utt")
    s.add_argument("--reference_wav_scp", type=Path, default=None, help="reference clips for FD")
    s.add_argument("--name", default="system", help="row name stored in result.json")
    s.add_argument("--field_names", default=None, help="comma-separated subset (default: all of the classifier's)")
    s.add_argument("--max_seconds", type=float, default=None,
                   help="judge only the first seconds of every clip, generated and reference alike")
    s.add_argument("--out_dir", type=Path, required=True, help="writes result.json and predictions.jsonl")
    s.set_defaults(func=_score_main)
    t = evalcli.add_table_command(sub, _table_main, "the results' names")
    t.add_argument("--relative_to", default=None, help="row name: adherence relative to it, in %%")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return evalcli.run_cli(PROG, build_parser(), argv, logger)


if __name__ == "__main__":
    sys.exit(main())
