"""Mesh stage: marching cubes, clean-up, coloured export and previews."""
