"""HiFi-123 reference-guided view enhancement (RGNV): SD-2-depth parts, DDIM inversion, K/V injection, the stage."""
