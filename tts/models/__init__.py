"""MaskGCT model classes."""
