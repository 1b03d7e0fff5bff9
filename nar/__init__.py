"""nar — the shared non-autoregressive core: alignment and parallel decoding on tensors.

Depends on torch and torchaudio only. Dimension legend used throughout:
B batch, T frames, L tokens, K codebooks, V vocabulary, D model dim.
"""
