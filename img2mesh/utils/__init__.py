"""Plumbing shared by several stages: atomic files, devices, weight files."""
