"""Embedding: the model registry (presets), weights on disk, and the one loader that makes an Embedder."""
