"""tts — MaskGCT-style zero-shot text-to-speech (text→semantic, semantic→acoustic)."""
