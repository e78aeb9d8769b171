"""Which connected components of the extracted surface are kept."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from img2mesh.app import load_config
from img2mesh.errors import UsageError
from img2mesh.mesh.extract import keep_components, marching_cubes


def two_parts_and_a_floater() -> trimesh.Trimesh:
    """Marching cubes of a body, a separate smaller part (a lid lifted off) and a speck."""
    line = np.linspace(-0.6, 0.6, 96)
    x, y, z = np.meshgrid(line, line, line, indexing="ij")
    body = np.sqrt(x**2 + y**2 + (z + 0.1) ** 2) - 0.3
    part = np.sqrt((x - 0.05) ** 2 + y**2 + (z - 0.35) ** 2) - 0.12
    speck = np.sqrt((x + 0.45) ** 2 + (y - 0.45) ** 2 + z**2) - 0.02
    return marching_cubes(np.minimum(np.minimum(body, part), speck).astype(np.float32), 0.6)


def test_separate_parts_are_kept_and_floaters_dropped():
    mesh = two_parts_and_a_floater()
    assert len(mesh.split(only_watertight=False)) == 3
    kept, count, dropped = keep_components(mesh, load_config().mesh.min_component)
    assert (count, dropped) == (2, 1)
    assert kept.bounds[1][2] > 0.45  # the part above the body is still there
    assert kept.bounds[0][0] > -0.4  # the speck at x = -0.45 is gone
    largest, count, dropped = keep_components(mesh, 1.0)
    assert (count, dropped) == (1, 2) and largest.bounds[1][2] < 0.25


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_min_component_is_a_fraction(value):
    with pytest.raises(UsageError, match="mesh.min_component"):
        load_config(overrides=[f"mesh.min_component={value}"])
