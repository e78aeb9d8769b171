"""Refine stage: HiFi-123's reference-guided state distillation (RGSD) of the finished mesh's texture."""
