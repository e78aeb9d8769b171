"""Elevation stage: the elevation of the input camera, given by the user or estimated."""
