"""audio_gen — MAGNeT-style masked multi-codebook audio generation and acoustic tokenizers."""
