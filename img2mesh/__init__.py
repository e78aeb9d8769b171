"""img2mesh: one command from a single photo to a coloured 3D mesh."""

__version__ = "0.1.0"
