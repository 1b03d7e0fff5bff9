"""Importers of checkpoints trained by other toolkits.

:mod:`asr.convert.funasr_paraformer`: FunASR Paraformer (Conformer / Transformer encoder) model
directories -> nar-speech ``model: paraformer`` directories.
"""
