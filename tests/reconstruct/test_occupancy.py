"""Occupancy-grid sampling (packed samples): weights, grid updates, marching, training and resume.

The PyTorch grid runs everywhere; nerfacc's CUDA kernels are compared with it only where a GPU and
a built nerfacc extension exist.
"""

from __future__ import annotations

import pytest
import torch

from img2mesh.reconstruct.occupancy import TorchGrid, make_grid, marching_step, nerfacc_status
from img2mesh.reconstruct.renderer import cube_near_far, packed_weights, render_packed
from img2mesh.reconstruct.trainer import train

from helpers.scenes import RENDER, box_mesh, iou_with_truth, render_views, small_field, small_settings

CPU = torch.device("cpu")


def test_packed_weights_equal_the_per_ray_product():
    torch.manual_seed(0)
    counts = torch.tensor([3, 0, 5, 1, 7])
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), counts)
    alpha = torch.rand(int(counts.sum()))
    weights = packed_weights(alpha, ray_indices, len(counts))
    start = 0
    for count in counts.tolist():
        a = alpha[start:start + count]
        transmittance = torch.cumprod(torch.cat([torch.ones(1), 1 - a]), 0)[:-1]
        assert torch.allclose(weights[start:start + count], a * transmittance, atol=1e-6)
        start += count


def test_cube_near_far():
    origins = torch.tensor([[2.0, 0.0, 0.0], [2.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    dirs = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far = cube_near_far(origins, dirs, 0.5)
    assert torch.allclose(near[[0, 2]], torch.tensor([1.5, 0.0])) and torch.allclose(far[[0, 2]], torch.tensor([2.5, 0.5]))
    assert far[1] == near[1]  # misses the cube: an empty interval, no samples


def test_grid_keeps_samples_near_the_surface_only():
    """Untrained, the field is a rough sphere: after an update the cells far outside it are empty,
    rays that miss it get no samples, and every kept sample lies in an occupied cell."""
    torch.manual_seed(0)
    field = small_field()
    with torch.no_grad():
        field.variance.fill_(0.6)  # a sharp surface (inv_s = e^6), as after some training
    grid = TorchGrid(0.6, 32, marching_step(0.6, 256))
    grid.update(field)
    assert 0.05 < grid.binary.float().mean() < 0.9
    # free space empties; the interior stays occupied (NeuS's head-on opacity is high inside the
    # surface too), which costs samples but no accuracy: transmittance ends at the surface
    assert not grid.binary[0, 0, 0] and not grid.binary[0, 16, 16] and grid.binary[16, 16, 16]
    origins = torch.tensor([[1.5, 0.0, 0.0], [1.5, 0.0, 0.0]])
    dirs = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # through the centre; away from the cube
    ray_indices, t_starts, t_ends = grid.sample(origins, dirs, perturb=False)
    assert (ray_indices == 0).all() and len(ray_indices) > 0
    assert torch.allclose(t_ends - t_starts, torch.full_like(t_starts, grid.step), atol=1e-5)
    points = origins[ray_indices] + dirs[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
    assert grid._occupied(points).all()
    with torch.no_grad():
        assert field.sdf(points).abs().min() < 0.05  # samples straddle the surface


def test_packed_rendering_of_a_full_grid_matches_dense_uniform_samples():
    """With every cell occupied the march is uniform; the packed renderer must then equal the
    straightforward dense composite of the same samples."""
    from img2mesh.reconstruct.renderer import shade

    torch.manual_seed(0)
    field = small_field()
    grid = TorchGrid(0.6, 8, marching_step(0.6, 64))
    origins = torch.tensor([[1.5, 0.0, 0.2], [0.0, 1.5, -0.1]])
    dirs = torch.nn.functional.normalize(-origins, dim=-1)
    ray_indices, t_starts, t_ends = grid.sample(origins, dirs, perturb=False)
    out = render_packed(field, origins, dirs, ray_indices, t_starts, t_ends, RENDER)
    for r in range(2):
        sel = ray_indices == r
        mid = (t_starts[sel] + t_ends[sel]) / 2
        points = origins[r] + dirs[r] * mid[:, None]
        s = shade(field, points, dirs[r].expand_as(points), t_ends[sel] - t_starts[sel], 1.0, False)
        transmittance = torch.cumprod(torch.cat([torch.ones(1), 1 - s["alpha"]]), 0)[:-1]
        w = s["alpha"] * transmittance
        color = (w[:, None] * s["rgb"]).sum(0) + (1 - w.sum())
        assert torch.allclose(out["color"][r], color, atol=1e-5) and torch.isclose(out["opacity"][r], w.sum(), atol=1e-5)


def test_make_grid_picks_dense_unless_asked():
    assert make_grid("auto", CPU, 0.6, 16, 128) is None and make_grid("dense", CPU, 0.6, 16, 128) is None
    # until a GPU run shows the grid matches the dense sampler, auto is dense on CUDA too
    assert make_grid("auto", torch.device("cuda"), 0.6, 16, 128) is None
    assert isinstance(make_grid("occupancy", CPU, 0.6, 16, 128), TorchGrid)


def test_occupancy_training_recovers_the_box_and_resumes_exactly(box_views, tmp_path):
    """The same known-shape test as the dense sampler (see test_reconstruct), through the grid:
    IoU above 0.7 against the true box; and a run stopped at its checkpoint and resumed ends with
    the same weights as an uninterrupted one (the grid is in the checkpoint)."""
    settings = small_settings(grid_update_every=8)

    def run(checkpoint=None):
        field = small_field()
        grid = TorchGrid(0.6, 32, marching_step(0.6, 192))
        stats = train(field, box_views, settings, RENDER, CPU, checkpoint, grid=grid)
        return field, grid, stats

    field, grid, stats = run()
    assert stats["sampler"] == "occupancy grid (torch)"
    assert iou_with_truth(field, box_mesh()) > 0.7
    # free space is skipped: 51 % of the cells stay occupied after these 160 steps (the surface is
    # still soft and the moving average forgets slowly); the box itself fills 5.5 %
    assert grid.binary.float().mean() < 0.75

    checkpoint = tmp_path / "checkpoint.pt"
    run(checkpoint)  # leaves its last checkpoint (step 120), as a run killed after it would
    resumed, _, stats = run(checkpoint)
    assert stats["resumed_from"] == 120
    for key, value in field.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-5), key


@pytest.mark.gpu
def test_nerfacc_matches_the_pytorch_grid_on_cuda():
    usable, why = nerfacc_status()
    if not usable:
        pytest.skip(f"nerfacc's CUDA path is not available here: {why}")
    from img2mesh.reconstruct.occupancy import NerfaccGrid

    cuda = torch.device("cuda")
    torch.manual_seed(0)
    counts = torch.randint(0, 30, (200,))
    ray_indices = torch.repeat_interleave(torch.arange(200), counts).to(cuda)
    alpha = torch.rand(int(counts.sum()), device=cuda)
    assert torch.allclose(NerfaccGrid.weights(alpha, ray_indices, 200), packed_weights(alpha, ray_indices, 200),
                          atol=1e-5)
    field = small_field().to(cuda)
    a, b = TorchGrid(0.6, 32, 0.01).to(cuda), NerfaccGrid(0.6, 32, 0.01).to(cuda)
    a.update(field)
    b.update(field)
    origins = torch.tensor([[1.5, 0.0, 0.0]], device=cuda)
    dirs = torch.tensor([[-1.0, 0.0, 0.0]], device=cuda)
    na, nb = len(a.sample(origins, dirs, False)[0]), len(b.sample(origins, dirs, False)[0])
    assert abs(na - nb) <= 0.2 * max(na, nb), (na, nb)


@pytest.fixture(scope="module")
def box_views(tmp_path_factory):
    from img2mesh.reconstruct.views import load_views

    return load_views(render_views(box_mesh(), tmp_path_factory.mktemp("box"), size=64))
