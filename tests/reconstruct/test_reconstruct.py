"""Reconstruct and mesh stages: views and masks, NeuS on a known shape, resume, marching cubes,
exports and their frame, previews, bad inputs, and the evaluation metric."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from typer.testing import CliRunner

from img2mesh.cli import app
from img2mesh.errors import InputError
from img2mesh.evaluation.gso import normalise_ground_truth
from img2mesh.evaluation.metrics import evaluate, occupancy
from img2mesh.mesh.export import WORLD_TO_EXPORT, export_mesh, to_world_frame
from img2mesh.mesh.extract import keep_components, marching_cubes
from img2mesh.reconstruct.fields import NeuSField
from img2mesh.reconstruct.trainer import train
from img2mesh.reconstruct.views import load_views, pixel_rays
from img2mesh.utils import cameras

from helpers.data import GSO
from helpers.scenes import RENDER, box_mesh, iou_with_truth, mesh_untrained_field, render_views, small_field, small_settings
from helpers.stages import snapshot


def test_pixel_rays_go_through_pixel_centres():
    K, pose = cameras.intrinsics(), cameras.target_poses()[0]
    origin, dirs = pixel_rays(K, pose, 256, 256)
    assert np.allclose(origin, [1.5 * math.cos(math.radians(30)), 0, 0.75], atol=1e-6)
    # the ray through pixel (127.5, 127.5) + 0.5 = the principal point looks at the origin
    centre = dirs[127, 127] + dirs[128, 128]
    assert np.allclose(centre / np.linalg.norm(centre), -origin / np.linalg.norm(origin), atol=1e-6)
    point = origin + dirs[0, 0] * 2.0
    cam = pose[:, :3] @ point + pose[:, 3]
    assert np.allclose((K @ cam)[:2] / cam[2], [0.5, 0.5], atol=1e-6)


def test_masks_from_alpha_or_white_background(tmp_path, img2mesh_log):
    mesh = box_mesh()
    with_alpha = load_views(render_views(mesh, tmp_path / "a", size=48), 0)
    on_white = load_views(render_views(mesh, tmp_path / "b", size=48, alpha=False, padding=1), 0)
    assert with_alpha.mask_source == "alpha" and on_white.mask_source == "white-background threshold"
    agreement = (with_alpha.silhouettes == on_white.silhouettes).mean()
    assert agreement > 0.98
    assert "masks from the white-background threshold" in img2mesh_log.text
    assert np.allclose(with_alpha.Ks[0], cameras.intrinsics(48))


def test_views_resized_scale_intrinsics(tmp_path):
    views = load_views(render_views(box_mesh(), tmp_path / "v", size=64), image_size=32)
    assert views.images.shape == (16, 32, 32, 3)
    assert np.allclose(views.Ks[0], cameras.intrinsics(32))


@pytest.mark.parametrize("problem, message", [
    ("gap", "views 5 are missing"),
    ("sizes", "different sizes"),
    ("cameras", "describes 3 cameras but the folder holds 16 views"),
    ("poses", "each pose must be a 3x4 world-to-camera matrix"),
    ("intrinsics", "has 2 intrinsics K for 16 views"),
    ("empty", "mask of view 2 is empty"),
])
def test_bad_view_folders(tmp_path, problem, message):
    folder = render_views(box_mesh(), tmp_path / "v", size=40)
    if problem == "gap":
        (folder / "005.png").unlink()
    elif problem == "sizes":
        Image.open(folder / "003.png").resize((30, 30)).save(folder / "003.png")
    elif problem == "cameras":
        (folder / "cameras.json").write_text(json.dumps({"K": cameras.intrinsics().tolist(),
                                                         "poses": cameras.target_poses()[:3].tolist()}))
    elif problem == "poses":  # 16 cameras, but 3x3 rotations without their translation
        (folder / "cameras.json").write_text(json.dumps({"K": cameras.intrinsics().tolist(),
                                                         "poses": cameras.target_poses()[:, :, :3].tolist()}))
    elif problem == "intrinsics":
        (folder / "cameras.json").write_text(json.dumps({"K": [cameras.intrinsics().tolist()] * 2,
                                                         "poses": cameras.target_poses().tolist()}))
    elif problem == "empty":
        Image.new("RGBA", (40, 40), (255, 255, 255, 0)).save(folder / "002.png")
    with pytest.raises(InputError, match=message):
        load_views(folder)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["reconstruct", str(folder), "-o", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 1 and message in " ".join(result.stderr.split())
    assert snapshot(out) == {}


def test_an_empty_views_folder_is_a_usage_error_as_with_run(tmp_path):
    """An empty folder is refused with exit 2 by ``reconstruct`` as by ``run`` (both: nothing to work on)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["reconstruct", str(empty)], ["run", str(empty)]):
        out = tmp_path / "out"
        result = CliRunner().invoke(app, [*command, "-o", str(out), "--device", "cpu", "-q"])
        assert result.exit_code == 2, (command, result.output)
        assert "error:" in result.stderr and ("holds no views" in result.stderr or "holds no images" in result.stderr)
        assert snapshot(out) == {}


def test_fields_start_from_a_sphere_and_differentiate():
    axes = torch.cat([torch.eye(3), -torch.eye(3)])
    for kind in ("mlp", "hashgrid"):
        field = small_field(kind)
        with torch.no_grad():
            centre, outside = field.sdf(torch.zeros(1, 3)), field.sdf(axes * 0.9)
        # geometric initialisation: roughly |x| - r (noisy for narrow networks)
        assert centre < -0.1 and outside.mean() > 0.2 and outside.min() > 0, (kind, centre, outside)
        _, _, grad = field.sdf_and_gradient(torch.tensor([[0.7, 0.0, 0.0]]), create_graph=True)
        assert grad[0, 0] > 0.2 and grad[0, 0] > grad[0, 1:].abs().max(), kind  # outward at +x
        grad.sum().backward()  # the eikonal loss needs gradients of the gradient
        first = list(field.sdf_net.linears[0].parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first), kind


def test_colour_network_reads_the_view_direction_reflected_about_the_normal():
    """``view_input: reflected`` (the official NeuS's input) is the direction network fed r = v - 2(v.n)n;
    fields saved before the key existed rebuild as ``direction``."""
    import dataclasses

    from img2mesh.reconstruct.fields import ColorNetwork, FieldConfig

    reflected_config = small_field().config
    assert reflected_config.view_input == "reflected" and reflected_config.feature_dim == 64
    torch.manual_seed(1)
    reflected = ColorNetwork(reflected_config)
    direct = ColorNetwork(dataclasses.replace(reflected_config, view_input="direction"))
    direct.load_state_dict(reflected.state_dict())
    x, features = torch.rand(5, 3), torch.rand(5, 64)
    normal = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    view = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    mirror = view - 2 * (view * normal).sum(-1, keepdim=True) * normal
    assert torch.allclose(reflected(x, normal, view, features), direct(x, normal, mirror, features), atol=1e-6)
    assert not torch.allclose(reflected(x, normal, view, features), direct(x, normal, view, features), atol=1e-3)
    saved = {k: v for k, v in reflected_config.to_dict().items() if k != "view_input"}
    assert FieldConfig.from_record(saved).view_input == "direction"  # fields saved before the key existed


@pytest.fixture(scope="module")
def box_views(tmp_path_factory):
    return load_views(render_views(box_mesh(), tmp_path_factory.mktemp("box"), size=64))


def test_neus_recovers_a_known_shape(box_views):
    """IoU of the 64³ occupancy (voxel 0.032) against the true box, which spans only 19 x 11 x 14
    voxels: a one-voxel shift of every face alone costs about a quarter of the IoU. The starting
    sphere scores 0.24; 160 steps at 64 px reach 0.76 (300 steps: 0.75, the grid's limit), so 0.7
    separates learning the box from keeping the sphere with margin."""
    truth = box_mesh()
    field = small_field()
    before = iou_with_truth(field, truth)
    stats = train(field, box_views, small_settings(), RENDER, torch.device("cpu"))
    after = iou_with_truth(field, truth)
    assert before < 0.4 and after > 0.7, (before, after)
    assert stats["loss_last"] < stats["loss_first"]


@pytest.mark.gpu
def test_tinycudann_encoding_learns_the_shape_like_the_pytorch_one(box_views):
    """Their hashing and grid alignment differ in detail (so no bit-wise comparison): both must
    recover the box from the same views, equally well."""
    pytest.importorskip("tinycudann", reason="tinycudann is not installed (see the README: Install)")
    cuda = torch.device("cuda")
    scores = {}
    for backend in ("tinycudann", "pytorch"):
        torch.manual_seed(0)
        field = NeuSField(small_field("hashgrid").config, backend=backend)
        train(field, box_views, small_settings(steps=300, curvature_weight=0.05), RENDER, cuda)
        scores[field.backend] = iou_with_truth(field, box_mesh())
    assert set(scores) == {"tinycudann", "pytorch"}
    assert scores["tinycudann"] > 0.6 and abs(scores["tinycudann"] - scores["pytorch"]) < 0.1, scores


@pytest.mark.parametrize("device, atol", [
    (torch.device("cpu"), 1e-6),
    # CUDA: the samplers' jitter draws from the CUDA generator, whose state the checkpoint keeps;
    # atomics in some CUDA backward kernels leave float noise, hence the looser tolerance
    pytest.param(torch.device("cuda"), 1e-4, marks=pytest.mark.gpu),
], ids=["cpu", "cuda"])
def test_interrupted_training_resumes_from_the_checkpoint(box_views, tmp_path, device, atol):
    settings = small_settings(steps=40, checkpoint_every=20)
    reference = small_field()
    train(reference, box_views, settings, RENDER, device)

    class Killed(Exception):
        pass

    def kill_at_25(step, loss):
        if step == 25:
            raise Killed

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        train(small_field(), box_views, settings, RENDER, device, checkpoint, on_step=kill_at_25)
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 20 and ("cuda_rng" in state) == (device.type == "cuda")
    resumed = small_field()
    stats = train(resumed, box_views, settings, RENDER, device, checkpoint)
    assert stats["resumed_from"] == 20
    for key, value in reference.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=atol), key  # the same run, continued


def test_a_step_in_chunks_has_the_gradient_of_the_whole_batch():
    """Chunk losses weighted by their share of the rays: a mean over rays accumulates exactly."""
    from img2mesh.reconstruct.trainer import ChunkedStep

    points = torch.rand(256, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    targets = torch.linspace(-0.2, 0.2, 256)

    def one_step(chunk: int) -> NeuSField:
        field = small_field()
        optimizer = torch.optim.SGD(field.parameters(), lr=0.1)
        ChunkedStep(chunk)(field, optimizer, (points, targets),
                           lambda p, t: (field.sdf(p).reshape(-1) - t).pow(2).mean())
        return field

    whole, chunked = one_step(256), one_step(48)  # 48 does not divide 256: a short last chunk
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, chunked.state_dict()[key], atol=1e-6), key
    untouched = small_field().state_dict()
    assert any(not torch.equal(untouched[k], v) for k, v in whole.state_dict().items())


def test_out_of_memory_halves_the_ray_chunk_and_retries(box_views, monkeypatch, img2mesh_log):
    import img2mesh.reconstruct.trainer as trainer

    real = trainer.render_batch
    sizes = []

    def flaky(field, origins, *args, **kwargs):
        sizes.append(origins.shape[0])
        if origins.shape[0] > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(field, origins, *args, **kwargs)

    monkeypatch.setattr(trainer, "render_batch", flaky)
    field = small_field()
    stats = train(field, box_views, small_settings(steps=12), RENDER, torch.device("cpu"))
    assert stats["ray_chunk"] == 64 and sizes[:4] == [256, 128, 64, 64]  # then 64 for good
    assert set(sizes[3:]) == {64} and len(sizes) == 2 + 12 * 4
    assert "retrying the step with 128 rays per chunk" in img2mesh_log.text
    assert "retrying the step with 64 rays per chunk" in img2mesh_log.text
    assert all(torch.isfinite(v).all() for v in field.state_dict().values())


def test_marching_cubes_of_an_analytic_sphere():
    line = np.linspace(-0.6, 0.6, 97)
    x, y, z = np.meshgrid(line, line, line, indexing="ij")
    values = (np.sqrt(x**2 + y**2 + z**2) - 0.4).astype(np.float32)
    values[:6, :6, :6] = -1.0  # a floater in a corner
    mesh, _, _ = keep_components(marching_cubes(values, 0.6), 1.0)
    assert mesh.is_watertight and mesh.volume > 0
    assert abs(mesh.volume - 4 / 3 * math.pi * 0.4**3) / (4 / 3 * math.pi * 0.4**3) < 0.02
    assert np.abs(mesh.vertices).max() < 0.42


def test_exports_reload_in_the_viewer_frame(tmp_path):
    tall = trimesh.creation.box(extents=(0.2, 0.3, 0.8))  # tallest along world z (up)
    tall.apply_translation((0.3, 0.0, 0.0))  # towards the input camera (world +x)
    tall.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(tall.vertices), 1))
    written = export_mesh(tall, tmp_path, ["glb", "ply", "obj"])
    assert [p.name for p in written] == ["mesh.glb", "mesh.ply", "mesh.obj"]
    for path in written:
        loaded = trimesh.load(path, force="mesh")
        extents = loaded.bounds[1] - loaded.bounds[0]
        assert np.argmax(extents) == 1, path.name  # glTF +Y up
        assert loaded.centroid[2] > 0.25, path.name  # facing the viewer: input view along +Z
        assert np.allclose(to_world_frame(loaded).bounds, tall.bounds, atol=1e-5), path.name
    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    assert tuple(glb.visual.vertex_colors[0][:3]) == (200, 30, 30)
    assert np.allclose(WORLD_TO_EXPORT @ [1, 0, 0], [0, 0, 1]) and np.linalg.det(WORLD_TO_EXPORT) == 1


def test_turntable_and_still(tmp_path):
    import imageio.v3 as iio

    from img2mesh.mesh.preview import write_previews

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    sphere.visual.vertex_colors = np.tile([30, 200, 30, 255], (len(sphere.vertices), 1))
    written = write_previews(sphere, tmp_path, frames=8)
    still = np.asarray(Image.open(written[0]))
    assert still.shape == (256, 256, 3) and still[128, 128, 1] > still[128, 128, 0] and still[0, 0].min() == 255
    frames = iio.imread(written[1], index=None)
    assert written[1].suffix in (".mp4", ".gif") and frames.shape[0] == 8


def test_eval_metric_on_ground_truth_and_a_sphere(tmp_path):
    gt_path = GSO / "bell" / "model.obj"
    if not gt_path.is_file():
        pytest.skip(f"{gt_path} not found (../shared/gso)")
    gt = normalise_ground_truth(trimesh.load(gt_path, force="mesh"), 0.0)
    assert np.isclose((gt.bounds[1] - gt.bounds[0]).max(), 1.0) and np.allclose(gt.bounds.sum(0), 0, atol=1e-6)
    same = evaluate(gt, gt)
    assert same.chamfer < 1e-6 and same.iou == 1.0
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    other = evaluate(sphere, gt)
    assert other.chamfer > 0.01 and other.iou < 0.9
    export_mesh(gt, tmp_path, ["glb"])  # an img2mesh export of the GT itself
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "mesh.glb"), "--gt", str(gt_path), "--object", "bell"])
    assert result.exit_code == 0 and "iou 1.0000" in result.stdout
    bad = CliRunner().invoke(app, ["eval", str(tmp_path / "mesh.glb"), "--gt", str(gt_path), "--object", "dragon"])
    assert bad.exit_code == 2 and "unknown object" in bad.stderr


def test_occupancy_is_exact_on_a_box():
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.3))
    line = np.linspace(-1, 1, 64)
    x, y, z = np.meshgrid(line, line, line, indexing="ij")
    assert np.array_equal(occupancy(box), (abs(x) < 0.5) & (abs(y) < 0.25) & (abs(z) < 0.15))


def test_reconstruct_command_end_to_end(tmp_path):
    folder = render_views(box_mesh(), tmp_path / "views", size=48, padding=1)
    out = tmp_path / "out"
    args = ["reconstruct", str(folder), "-o", str(out), "--preset", "smoke", "--device", "cpu", "-q",
            "--set", "reconstruct.steps=30", "--set", "reconstruct.rays_per_step=128", "--set", "reconstruct.image_size=0",
            "--set", "mesh.resolution=48", "--format", "glb,ply"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "mesh.glb").is_file() and (out / "mesh.ply").is_file() and (out / "reconstruct" / "field.json").is_file()
    assert not (out / "reconstruct" / "checkpoint.pt").exists()
    info = json.loads((out / "img2mesh.json").read_text())["stages"]
    assert info["reconstruct"]["info"]["mask_source"] == "alpha" and info["mesh"]["info"]["faces"] > 0
    assert info["reconstruct"]["info"]["init"] == "hull" and info["reconstruct"]["info"]["hull_fit_error"] < 0.05
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped" in again.stdout
    glb_only = CliRunner().invoke(app, args[:-1] + ["glb"])  # a format no longer asked for is removed
    assert glb_only.exit_code == 0 and (out / "mesh.glb").is_file() and not (out / "mesh.ply").exists()
    # the same seed gives the same field, whatever state torch's global generator was in (it is seeded
    # at random when a process starts)
    torch.manual_seed(12345)
    elsewhere = tmp_path / "again"
    assert CliRunner().invoke(app, [*args[:3], str(elsewhere), *args[4:]]).exit_code == 0
    field = (out / "reconstruct" / "field.safetensors").read_bytes()
    assert (elsewhere / "reconstruct" / "field.safetensors").read_bytes() == field


def test_mesh_stage_decimates_to_the_face_budget(tmp_path):
    """The mesh stage on an analytic field: marching cubes, colours, decimation, export."""
    _, info = mesh_untrained_field(tmp_path, ["mesh.resolution=64", "mesh.target_faces=1000", "mesh.preview=false",
                                              "mesh.formats=[ply]"])
    assert info["faces_before_cleanup"] > 2000 and abs(info["faces"] - 1000) <= 50
    mesh = trimesh.load(tmp_path / "out" / "mesh.ply")
    assert len(mesh.faces) == info["faces"] and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
