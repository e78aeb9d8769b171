"""Scoring reconstructions: the papers' metric (``metrics``) and the shared GSO objects (``gso``)."""
