"""Plumbing between the CLI and the stages: config, stage runner, manifest, locks, reporting."""
