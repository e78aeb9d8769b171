"""Reconstruct stage: a NeuS signed-distance field (MLP or hash grid) fitted to the 16 views."""
