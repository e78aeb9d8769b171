"""What reconstruct saves beside the field for the texture bake: the views, the cameras after pose
refinement and each view's colour correction (``reconstruct/fitted.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from img2mesh.errors import StageError
from img2mesh.reconstruct.fitted import fit_affine, load_fitted, refined_poses, save_fitted
from img2mesh.reconstruct.poses import PoseCorrection
from img2mesh.reconstruct.views import Views, pixel_rays
from img2mesh.utils import cameras


def test_refined_poses_cast_the_rays_training_cast():
    """The saved camera of a view casts exactly the rays PoseCorrection moved during training."""
    torch.manual_seed(0)
    correction = PoseCorrection(16)
    with torch.no_grad():
        correction.rotation.normal_(0, 0.02)
        correction.translation.normal_(0, 0.01)
    poses, K = cameras.target_poses(), cameras.intrinsics(32)
    saved = refined_poses(poses, correction)
    for i in (0, 5, 11):
        origin, dirs = pixel_rays(K, poses[i], 32, 32)
        d = torch.tensor(dirs.reshape(-1, 3))
        o = torch.tensor(origin).expand_as(d)
        with torch.no_grad():
            moved_o, moved_d = correction(o.float(), d.float(), torch.full((len(d),), i))
        origin2, dirs2 = pixel_rays(K, saved[i], 32, 32)
        assert np.allclose(moved_o[0].numpy(), origin2, atol=1e-6)
        assert np.allclose(moved_d.numpy(), dirs2.reshape(-1, 3), atol=1e-5)
    assert not np.allclose(saved, poses)  # the corrections were not zero
    assert np.array_equal(refined_poses(poses, None), poses)


def test_fit_affine_recovers_a_colour_transform_and_holds_to_identity_without_data():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 1, (500, 3))
    truth = np.array([[1.1, 0.05, 0.0, -0.03], [0.0, 0.9, 0.0, 0.02], [0.02, 0.0, 1.05, 0.0]])
    target = source @ truth[:, :3].T + truth[:, 3]
    assert np.allclose(fit_affine(source, target, 1e-6), truth, atol=1e-3)
    # held towards the identity: one point cannot move the map far
    one = fit_affine(source[:1], source[:1] * 0.5, 0.05)
    assert np.abs(one - np.eye(3, 4)).max() < 0.7 and np.abs(one[:, :3] - np.eye(3)).max() < 0.5


def test_fitted_views_round_trip_and_refuse_a_mismatch(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    masks = (rng.uniform(0, 1, (3, 8, 8)) > 0.5).astype(np.float32)
    views = Views(images, masks, np.repeat(cameras.intrinsics(8)[None], 3, 0), cameras.target_poses()[:3], "alpha")
    colour = np.tile(np.eye(3, 4), (3, 1, 1))
    colour[1, 0, 0] = 1.2
    fitted_poses = cameras.target_poses()[3:6]
    save_fitted(tmp_path, views, fitted_poses, colour)
    loaded = load_fitted(tmp_path)
    assert np.allclose(loaded.images, images, atol=1 / 255) and np.allclose(loaded.masks, masks)
    assert np.allclose(loaded.poses, fitted_poses) and np.allclose(loaded.colour, colour)
    assert np.allclose(loaded.centres, -np.einsum("nji,nj->ni", fitted_poses[:, :, :3], fitted_poses[:, :, 3]))
    assert np.allclose(loaded.corrected(1)[..., 0], np.clip(loaded.images[1][..., 0] * 1.2, 0, 1), atol=1e-6)
    assert load_fitted(tmp_path / "elsewhere") is None  # a field saved before views were
    save_fitted(tmp_path, views, fitted_poses[:2], colour)
    with pytest.raises(StageError, match="does not match"):
        load_fitted(tmp_path)
