"""Stage 2: sky matching of finished products, keyed by mosaic group."""
