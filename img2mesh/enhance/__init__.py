"""HiFi-123 reference-guided view enhancement: DDIM inversion, injected sampling (the stage is not built yet)."""
