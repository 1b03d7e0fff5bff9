"""nar.base — the base layer beneath the families: what every family needs and no algorithm is.

Depends on torch, PyYAML, tqdm and the standard library only (never on espnet, asr, tts or
audio_gen), so ``asr``, ``tts`` and ``audio_gen`` all import it; the algorithms of :mod:`nar`
(alignment, CIF, CTC search, masking, mask-predict) use its tensor helpers and validators.

==========================  ==================================================================
:mod:`nar.base.files`       atomic writes: a file under its final name is complete
:mod:`nar.base.kaldi`       Kaldi ``<key> <value>`` maps and data directories
:mod:`nar.base.tokens`      token lists (a file, one token per line, or an inline list)
:mod:`nar.base.experiment`  experiment directories ``exp/<tag>``: ``config.yaml`` and the one
                            checkpoint preference order of every family
:mod:`nar.base.tensors`     length masks
:mod:`nar.base.checks`      input validators whose errors name the argument
:mod:`nar.base.evalcli`     the scaffold of the evaluation command-line tools
:mod:`nar.base.training`    the one training loop outside ESPnet: steps, atomic checkpoints, resume
:mod:`nar.base.resume`      ESPnet trainings that survive any kill (atomic saves, epoch repair)
:mod:`nar.base.lock`        one writer per experiment or output directory
:mod:`nar.base.stamps`      stage stamps: a stage is skipped only if every input is unchanged
==========================  ==================================================================

The submodules are imported by name (``from nar.base.kaldi import read_kaldi_map``); this
package re-exports nothing, so importing one does not import the others.
"""
