"""HiFi-123 (Yu et al., ECCV 2024) on Stable Diffusion 2 depth, as a library that stages use.

The model's parts (``components``), MasaCtrl-style self-attention K/V injection (``injection``),
deterministic DDIM inversion and sampling (``inversion``), reference-guided novel-view enhancement
(``rgnv``), RGSD's distillation target and loss (``distillation``), the model for a running stage
(``runtime``), its weight files (``weights``) and the ``sd2_depth`` configuration section the stages
that use it share (``config``). The ``enhance`` stage (RGNV of the generated views) and the ``refine``
stage (RGSD of the mesh's texture) both build on it; neither owns it, and neither imports the other.
"""
